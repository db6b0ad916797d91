"""``HOST:PORT`` text as users write it on the command line, for every emu command.

Accepted: ``ADDR``, ``ADDR:PORT``, ``[V6ADDR]:PORT``, ``[V6ADDR]``, a bare IPv6 address (no port:
its colons are the address's), and ``:PORT`` where a default host applies.
"""

from __future__ import annotations

from emu.errors import UsageError

__all__ = ["parse_host_port"]


def parse_host_port(
    text: str, default_port: int, *, default_host: str | None = None, min_port: int = 0
) -> tuple[str, int]:
    """(host, port) from ``text``.

    Args:
        default_port: used when the text has no port.
        default_host: used when the text has no host (``":1688"``); None makes that an error.
        min_port: the smallest port accepted (0 lets a server pick a free port; clients need 1).

    Raises:
        UsageError: a missing ']' or host, a port that is not a number in range.
    """
    raw = text
    text = text.strip()
    if not text:
        raise UsageError("empty address: write HOST:PORT or [IPv6]:PORT")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise UsageError(f"{raw!r}: missing ']' after an IPv6 address")
        if rest and not rest.startswith(":"):
            raise UsageError(f"{raw!r}: expected ':PORT' after ']'")
        port_text = rest[1:]
    elif text.count(":") > 1:
        host, port_text = text, ""
    else:
        host, _, port_text = text.partition(":")
    if not host:
        if default_host is None:
            raise UsageError(f"{raw!r} has no host (write HOST:PORT or [IPv6]:PORT)")
        host = default_host
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise UsageError(f"{raw!r}: port {port_text!r} is not a number") from None
    if not min_port <= port <= 65535:
        raise UsageError(f"{raw!r}: port {port} is out of range ({min_port}..65535)")
    return host, port
