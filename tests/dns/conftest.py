"""Fixtures of the DNS tests (helpers and constants live in ``dns_testing``)."""

from dns_testing import key, keyring, resolver, zone  # noqa: F401  (pytest fixtures)
