"""The resolver configuration (resolv.conf(5)) as emu's clients read it: the first nameserver and the search list.

Used by ``emu client activate`` (the ``.domain`` and ``-`` targets) and ``emu diagnose``.
"""

from __future__ import annotations

from emu.errors import UsageError

__all__ = ["RESOLV_CONF", "search_domains", "system_dns_server"]

#: Where the system resolver's configuration lives.
RESOLV_CONF = "/etc/resolv.conf"


def _resolv_conf_lines(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.split() for line in handle if line.strip() and line.lstrip()[0] not in "#;"]
    except OSError:
        return []


def system_dns_server(path: str = RESOLV_CONF) -> tuple[str, int]:
    """The first nameserver of resolv.conf.

    Raises:
        UsageError: none is configured (then --dns-server is needed).
    """
    for words in _resolv_conf_lines(path):
        if len(words) >= 2 and words[0] == "nameserver":
            return words[1], 53
    raise UsageError(f"no nameserver in {path}: give --dns-server ADDR[:PORT] for a .domain or - target")


def search_domains(path: str = RESOLV_CONF) -> list[str]:
    """The resolver's search list from resolv.conf: the last ``search`` or ``domain`` line wins
    (they are mutually exclusive, resolv.conf(5)); ``domain x`` searches just x. Root is dropped.

    Raises:
        UsageError: the file is unreadable or has neither line (the - target needs a domain).
    """
    domains: list[str] | None = None
    for words in _resolv_conf_lines(path):
        if words[0] in ("search", "domain"):
            domains = words[1:] if words[0] == "search" else words[1:2]
    found = [d.strip(".") for d in domains or [] if d.strip(".")]
    if not found:
        raise UsageError(
            f"target -: no search or domain line in {path}, so no domain to look up _vlmcs._tcp in; "
            "give .domain instead"
        )
    return list(dict.fromkeys(found))
