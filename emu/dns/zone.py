"""Zone data: immutable snapshots of RRsets, RFC 1035 master files, RFC 1982 serials.

A :class:`Zone` is never modified. An update builds a new one through a :class:`ZoneEditor`
(copy-on-write per name) and the caller swaps the reference, so a query sees the old or the new
zone, never a mix (RFC 2136 3.7, docs/dns.md).

Names are keyed canonically: lower case, trailing dot (``"kms1.kms.test."``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

from dnslib import CLASS, QTYPE, RD, RDMAP, RR, SOA, SRV, DNSBuffer, DNSLabel

from emu.durations import parse_duration
from emu.errors import DecodeError, UsageError
from emu.wire.dns import CLASS_IN, TYPE_SOA, canonical_name

__all__ = [
    "NAME_TYPES",
    "RRset",
    "Zone",
    "ZoneChange",
    "ZoneEditor",
    "dump_master_file",
    "is_subdomain",
    "load_master_file",
    "rdata_from_wire",
    "rdata_key",
    "rdata_to_wire",
    "serial_gt",
    "serial_next",
]

#: Types whose RDATA holds domain names, compared case-insensitively (RFC 4034 6.2 list, subset dnslib knows).
NAME_TYPES = frozenset(
    {QTYPE.NS, QTYPE.CNAME, QTYPE.SOA, QTYPE.PTR, QTYPE.MX, QTYPE.SRV, QTYPE.DNAME, QTYPE.NAPTR, QTYPE.RP}
)

#: TTL applied to records that name none and follow no $TTL (RFC 2308 4 asks for $TTL; BIND warns and uses the SOA minimum).
DEFAULT_TTL = 3600


@dataclass(frozen=True, slots=True)
class RRset:
    """All RDATA of one (name, type); one TTL for the whole set (RFC 2181 5.2)."""

    ttl: int
    rdatas: tuple[RD, ...]


@dataclass(frozen=True, slots=True)
class ZoneChange:
    """One RRset as it is after an update (``rrset`` None: the RRset is gone). Journaled."""

    zone: str
    name: str
    rtype: int
    rrset: RRset | None


def rdata_key(rtype: int, rdata: RD) -> bytes:
    """Identity of an RDATA for "same RR" comparisons: wire bytes, names lower-cased (RFC 2136 1.1.1)."""
    if rtype in NAME_TYPES:
        return str(rdata).lower().encode()
    return rdata_to_wire(rdata)


def rdata_to_wire(rdata: RD) -> bytes:
    """RDATA in wire form, self-contained (names not compressed against anything outside it)."""
    buf = DNSBuffer()
    rdata.pack(buf)
    return bytes(buf.data)


def rdata_from_wire(rtype: int, data: bytes) -> RD:
    """Inverse of :func:`rdata_to_wire`.

    Raises:
        DecodeError: the bytes are not a valid RDATA of that type.
    """
    try:
        buf = DNSBuffer(data)
        rdata = RDMAP.get(QTYPE.get(rtype), RD).parse(buf, len(data)) if data else RD(b"")
    except Exception as exc:  # dnslib raises several unrelated exception types
        raise DecodeError(f"bad RDATA of type {rtype}: {exc}") from exc
    if buf.offset != len(data):
        raise DecodeError(f"RDATA of type {rtype} has {len(data) - buf.offset} trailing bytes")
    return rdata


def serial_gt(a: int, b: int) -> bool:
    """RFC 1982 3.2: is serial ``a`` newer than ``b`` (32-bit sequence space)?"""
    return a != b and ((a < b and b - a > 2**31) or (a > b and a - b < 2**31))


def serial_next(serial: int) -> int:
    """The serial after ``serial`` (RFC 1982 3.1 addition of 1, skipping nothing)."""
    return (serial + 1) % 2**32


def is_subdomain(name: str, origin: str) -> bool:
    """Is canonical ``name`` at or below canonical ``origin``? Label-wise (``notkms.test`` is not under ``kms.test``)."""
    return origin == "." or name == origin or name.endswith("." + origin)


_T = TypeVar("_T")


class Zone:
    """An immutable zone snapshot: origin, class IN, RRsets by name and type."""

    __slots__ = ("_derived", "_names", "_nonterminals", "origin")

    def __init__(self, origin: str, names: Mapping[str, Mapping[int, RRset]]) -> None:
        self.origin = canonical_name(origin)
        self._names = names
        self._nonterminals: frozenset[str] | None = None
        self._derived: dict[Hashable, object] = {}
        soa = names.get(self.origin, {}).get(TYPE_SOA)
        if soa is None or len(soa.rdatas) != 1:
            raise UsageError(f"zone {self.origin} needs exactly one SOA record at its apex")

    @property
    def soa_rrset(self) -> RRset:
        return self._names[self.origin][TYPE_SOA]

    @property
    def soa(self) -> SOA:
        rdata = self.soa_rrset.rdatas[0]
        assert isinstance(rdata, SOA)
        return rdata

    @property
    def serial(self) -> int:
        return int(self.soa.times[0])

    @property
    def negative_ttl(self) -> int:
        """TTL of the SOA in negative answers: min(SOA TTL, SOA MINIMUM) (RFC 2308 3)."""
        return min(self.soa_rrset.ttl, int(self.soa.times[4]))

    def contains(self, name: str) -> bool:
        return is_subdomain(name, self.origin)

    def node(self, name: str) -> Mapping[int, RRset] | None:
        return self._names.get(name)

    def rrset(self, name: str, rtype: int) -> RRset | None:
        node = self._names.get(name)
        return node.get(rtype) if node else None

    def name_exists(self, name: str) -> bool:
        """The name owns RRs, or is an empty non-terminal (RFC 4592 2.2.2); NXDOMAIN otherwise."""
        if name in self._names:
            return True
        if self._nonterminals is None:
            ents = set()
            for owner in self._names:
                labels = owner.split(".")
                for i in range(1, len(labels) - 1):
                    ents.add(".".join(labels[i:]))
            self._nonterminals = frozenset(ents)
        return name in self._nonterminals

    def names(self) -> Iterator[str]:
        return iter(self._names)

    def derived(self, key: Hashable, make: Callable[[], _T]) -> _T:
        """A value computed from this snapshot, made once (a snapshot never changes; an update
        makes a new one, which starts empty). ``key`` must say what ``make`` computes."""
        try:
            return cast(_T, self._derived[key])
        except KeyError:
            value = self._derived[key] = make()
            return value

    def records(self) -> Iterator[RR]:
        """Every RR, SOA first, then by name and type."""

        def order(name: str) -> tuple[int, list[str]]:
            return (0 if name == self.origin else 1, list(reversed(name.split("."))))

        for name in sorted(self._names, key=order):
            node = self._names[name]
            for rtype in sorted(node, key=lambda t: (t != TYPE_SOA, t)):
                rrset = node[rtype]
                for rdata in rrset.rdatas:
                    yield RR(name, rtype, CLASS_IN, rrset.ttl, rdata)

    def edit(self) -> ZoneEditor:
        return ZoneEditor(self)

    def _raw_names(self) -> Mapping[str, Mapping[int, RRset]]:
        return self._names


class ZoneEditor:
    """Copy-on-write changes to a zone; :meth:`commit` returns the new snapshot and its changes."""

    def __init__(self, zone: Zone) -> None:
        self.base = zone
        self._names: dict[str, dict[int, RRset]] | None = None
        self._touched: dict[tuple[str, int], RRset | None] = {}

    def rrset(self, name: str, rtype: int) -> RRset | None:
        if (name, rtype) in self._touched:
            return self._touched[(name, rtype)]
        return self.base.rrset(name, rtype)

    def node(self, name: str) -> Mapping[int, RRset]:
        if self._names is not None:
            return self._names.get(name, {})
        return self.base.node(name) or {}

    def set_rrset(self, name: str, rtype: int, rrset: RRset | None) -> None:
        """Replace (or with None, remove) one RRset."""
        if self._names is None:
            self._names = dict(self.base._raw_names())  # type: ignore[arg-type]
        node = dict(self._names.get(name, {}))
        if rrset is None or not rrset.rdatas:
            node.pop(rtype, None)
            rrset = None
        else:
            node[rtype] = rrset
        if node:
            self._names[name] = node
        else:
            self._names.pop(name, None)
        self._touched[(name, rtype)] = rrset

    @property
    def changes(self) -> list[ZoneChange]:
        """Net changes against the base zone, in a stable order."""
        out = []
        for (name, rtype), rrset in self._touched.items():
            before = self.base.rrset(name, rtype)
            if not _same_rrset(rtype, before, rrset):
                out.append(ZoneChange(self.base.origin, name, rtype, rrset))
        return out

    def commit(self) -> Zone:
        if self._names is None:
            return self.base
        return Zone(self.base.origin, self._names)


def _same_rrset(rtype: int, a: RRset | None, b: RRset | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.ttl == b.ttl and [rdata_key(rtype, r) for r in a.rdatas] == [rdata_key(rtype, r) for r in b.rdatas]


def apply_changes(zone: Zone, changes: list[ZoneChange]) -> Zone:
    """Replay journaled changes onto a zone (used at restart)."""
    editor = zone.edit()
    for change in changes:
        editor.set_rrset(change.name, change.rtype, change.rrset)
    return editor.commit()


__all__.append("apply_changes")


# --- RFC 1035 5.1 master files -------------------------------------------------------------

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\(|\)|;[^\n]*|[^\s();"]+')
_CLASSES = {"IN", "CS", "CH", "HS"}


def _logical_lines(text: str) -> Iterator[tuple[int, bool, list[str]]]:
    """(line number, starts with blank, tokens) with parentheses joined and comments dropped."""
    depth = 0
    tokens: list[str] = []
    first_line = 0
    leading_blank = False
    for number, line in enumerate(text.splitlines(), 1):
        if depth == 0:
            tokens = []
            first_line = number
            leading_blank = bool(line) and line[0] in " \t"
        for token in _TOKEN.findall(line):
            if token.startswith(";"):
                break
            if token == "(":
                depth += 1
            elif token == ")":
                depth -= 1
                if depth < 0:
                    raise UsageError(f"line {number}: unbalanced ')'")
            else:
                tokens.append(token)
        if depth == 0 and tokens:
            yield first_line, leading_blank, tokens
    if depth:
        raise UsageError(f"line {first_line}: unclosed '('")


def _qualify(name: str, origin: str) -> str:
    if name == "@":
        return origin
    if name.endswith("."):
        return name.lower()
    return f"{name}.{origin}".lower() if origin != "." else f"{name}.".lower()


def _unquote(token: str) -> str:
    """A quoted <character-string> without its quotes and backslash escapes (RFC 1035 5.1)."""
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def _parse_ttl(token: str) -> int | None:
    """A TTL: whole seconds, or BIND's unit form (``1h30m``); None when the token is not one."""
    if not re.fullmatch(r"(?:\d+[wdhms]?)+", token.lower()):
        return None
    return int(parse_duration(token, "TTL"))


def load_master_file(text: str, origin: str, source: str = "zone file") -> Zone:
    """Parse an RFC 1035 master file (with $ORIGIN, $TTL, parentheses, relative names, '@').

    RDATA is read by dnslib's record classes; SRV targets are qualified here because dnslib
    0.9.26 leaves a relative SRV target unqualified.

    Raises:
        UsageError: a syntax error (with the line number), a record outside the zone, a class
            other than IN, no SOA at the apex.
    """
    zone_origin = canonical_name(origin)
    current_origin = zone_origin
    default_ttl: int | None = None
    last_owner: str | None = None
    names: dict[str, dict[int, RRset]] = {}
    for number, blank, tokens in _logical_lines(text):
        where = f"{source}, line {number}"
        if tokens[0].upper() == "$ORIGIN":
            current_origin = canonical_name(_qualify(tokens[1], current_origin)) if len(tokens) > 1 else current_origin
            continue
        if tokens[0].upper() == "$TTL":
            ttl = _parse_ttl(tokens[1]) if len(tokens) > 1 else None
            if ttl is None:
                raise UsageError(f"{where}: $TTL needs a number")
            default_ttl = ttl
            continue
        if tokens[0].startswith("$"):
            raise UsageError(f"{where}: {tokens[0]} is not supported")
        if blank:
            if last_owner is None:
                raise UsageError(f"{where}: a record without owner name comes first")
            owner = last_owner
        else:
            owner = _qualify(tokens.pop(0), current_origin)
        last_owner = owner
        ttl = None
        rclass = "IN"
        while tokens:
            upper = tokens[0].upper()
            if upper in _CLASSES:
                rclass = upper
                tokens.pop(0)
            elif ttl is None and _parse_ttl(tokens[0]) is not None:
                ttl = _parse_ttl(tokens.pop(0))
            else:
                break
        if rclass != "IN":
            raise UsageError(f"{where}: class {rclass} is not supported (IN only)")
        if not tokens:
            raise UsageError(f"{where}: no record type")
        type_name = tokens.pop(0).upper()
        try:
            rtype = getattr(QTYPE, type_name)
        except Exception:
            match = re.fullmatch(r"TYPE(\d+)", type_name)
            if not match:
                raise UsageError(f"{where}: unknown record type {type_name!r}") from None
            rtype = int(match.group(1))
        if not is_subdomain(owner, zone_origin):
            raise UsageError(f"{where}: {owner} is outside zone {zone_origin}")
        try:
            if rtype == QTYPE.SRV:
                if len(tokens) != 4:
                    raise ValueError("SRV needs priority, weight, port and target")
                rdata: RD = SRV(
                    int(tokens[0]), int(tokens[1]), int(tokens[2]), DNSLabel(_qualify(tokens[3], current_origin))
                )
            else:
                rdata = RDMAP.get(QTYPE.get(rtype), RD).fromZone([_unquote(t) for t in tokens], current_origin)
        except Exception as exc:
            raise UsageError(f"{where}: bad {type_name} data {' '.join(tokens)!r}: {exc}") from exc
        if ttl is None:
            if default_ttl is None and rtype == TYPE_SOA and isinstance(rdata, SOA):
                default_ttl = int(rdata.times[4])
            ttl = default_ttl if default_ttl is not None else DEFAULT_TTL
        node = names.setdefault(canonical_name(owner), {})
        existing = node.get(rtype)
        key = rdata_key(rtype, rdata)
        kept = tuple(r for r in (existing.rdatas if existing else ()) if rdata_key(rtype, r) != key)
        node[rtype] = RRset(existing.ttl if existing else ttl, kept + (rdata,))
    try:
        return Zone(zone_origin, names)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from exc


def _character_string(data: bytes) -> str:
    """One TXT <character-string> in master-file form: quoted, with ``"`` and ``\\`` escaped and
    other non-printable bytes as ``\\DDD`` (RFC 1035 5.1; dnslib's own formatter does not escape)."""
    out = []
    for byte in data:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def dump_master_file(zone: Zone) -> str:
    """The zone as a master file that :func:`load_master_file` (and BIND) read back."""
    lines = [f"$ORIGIN {zone.origin}", f"; serial {zone.serial}"]
    for rr in zone.records():
        if rr.rtype == QTYPE.TXT:
            text = " ".join(_character_string(part) for part in rr.rdata.data)
            lines.append(f"{rr.rname!s:<23} {rr.ttl!s:<7} {CLASS.get(rr.rclass)!s:<7} {'TXT':<7} {text}")
        else:
            lines.append(rr.toZone())
    return "\n".join(lines) + "\n"
