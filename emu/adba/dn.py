"""Distinguished names (RFC 4514), as far as an AD-shaped directory needs them: split into RDNs, compare
case-insensitively, take the parent."""

from __future__ import annotations

__all__ = ["DnError", "is_under", "normalise_dn", "parent_dn", "rdn_of", "split_dn"]


class DnError(ValueError):
    """Text that is not a DN (an RDN without ``=``, an empty attribute type, a dangling escape)."""


def split_dn(dn: str) -> list[tuple[str, str]]:
    """``"CN=a\\,b,DC=x"`` -> ``[("CN", "a,b"), ("DC", "x")]`` (escapes resolved, spaces trimmed)."""
    if not dn.strip():
        return []
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(dn):
        ch = dn[i]
        if ch == "\\":
            if i + 1 >= len(dn):
                raise DnError(f"dangling escape in DN {dn!r}")
            current.append(dn[i : i + 2])
            i += 2
            continue
        if ch in ",;":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    out = []
    for part in parts:
        if "=" not in part:
            raise DnError(f"RDN {part.strip()!r} of DN {dn!r} has no '='")
        attr, value = part.split("=", 1)
        attr = attr.strip()
        if not attr or not value.strip():
            raise DnError(f"RDN {part.strip()!r} of DN {dn!r} is incomplete")
        out.append((attr, _unescape(value.strip())))
    return out


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            pair = value[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out.append(chr(int(pair, 16)))
                i += 3
                continue
            out.append(value[i + 1])
            i += 2
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def _escape(value: str) -> str:
    return "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)


def join_dn(rdns: list[tuple[str, str]]) -> str:
    """The inverse of :func:`split_dn` (values escaped)."""
    return ",".join(f"{a}={_escape(v)}" for a, v in rdns)


def normalise_dn(dn: str) -> str:
    """The comparison key of a DN: attribute types and values lower-cased, spacing removed."""
    return ",".join(f"{a.lower()}={v.lower()}" for a, v in split_dn(dn))


def parent_dn(dn: str) -> str:
    """The DN one level up (``""`` for a single RDN)."""
    return join_dn(split_dn(dn)[1:])


def rdn_of(dn: str) -> tuple[str, str]:
    """The first RDN's (type, value)."""
    rdns = split_dn(dn)
    if not rdns:
        raise DnError("the empty DN has no RDN")
    return rdns[0]


def is_under(dn_key: str, base_key: str) -> bool:
    """Whether normalised ``dn_key`` is ``base_key`` or below it."""
    return not base_key or dn_key == base_key or dn_key.endswith("," + base_key)
