"""Conformance suites: point emu at someone else's KMS host, KMS client or DNS server and get a
verdict per documented rule (docs/conformance.md).

Every case is data (:class:`emu.conform.model.Case`): an id, a group, the rule in one sentence, its
source (a docs/ section or an RFC), the probe that sends something and the judge that reads the
evidence, both referenced by name. Adding a case is adding an entry to a suite's ``CASES`` table.
"""
