"""RFC 2136 UPDATE evaluation: zone section, prerequisites, permission, prescan, apply, serial.

Pure: takes the zones and a decoded message, returns an :class:`UpdateOutcome` with the rcode and,
when something changed, the new zone snapshot and the net changes to journal. Nothing is applied
unless every check passes (RFC 2136 3.7). The order of checks is in docs/dns.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dnslib import QTYPE, RD, RR, SOA

from emu.dns.zone import RRset, Zone, ZoneChange, ZoneEditor, rdata_key, serial_gt, serial_next
from emu.wire.dns import (
    CLASS_ANY,
    CLASS_IN,
    CLASS_NONE,
    TYPE_ANY,
    TYPE_AXFR,
    TYPE_IXFR,
    TYPE_MAILA,
    TYPE_MAILB,
    TYPE_OPT,
    TYPE_SOA,
    TYPE_TKEY,
    TYPE_TSIG,
    DnsMessage,
    Rcode,
    canonical_name,
    is_empty_rdata,
)

__all__ = ["Authorizer", "UpdateOutcome", "evaluate_update", "find_zone", "remove_rrs"]

#: Decides whether the requester may make one update RR in a zone (the policy's answer).
Authorizer = Callable[[Zone, RR], bool]

_TYPE_NS = QTYPE.NS
_TYPE_CNAME = QTYPE.CNAME
#: Meta types that never name data in a zone (RFC 2136 3.4.1.3 lists ANY/AXFR/MAILA/MAILB; OPT/TSIG/TKEY/IXFR are meta too).
_META = frozenset({TYPE_ANY, TYPE_AXFR, TYPE_IXFR, TYPE_MAILA, TYPE_MAILB, TYPE_OPT, TYPE_TSIG, TYPE_TKEY})
_NOT_WITH_ANY = frozenset({TYPE_AXFR, TYPE_IXFR, TYPE_MAILA, TYPE_MAILB})


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    """What an UPDATE did. ``zone`` is the new snapshot when ``changes`` is not empty."""

    rcode: int
    reason: str
    zone_name: str | None = None
    zone: Zone | None = None
    changes: tuple[ZoneChange, ...] = ()


def find_zone(zones: Mapping[str, Zone], name: str) -> Zone | None:
    """The zone whose origin is the closest enclosing name of canonical ``name``."""
    labels = name.rstrip(".").split(".") if name != "." else []
    for i in range(len(labels) + 1):
        candidate = ".".join(labels[i:]) + "." if i < len(labels) else "."
        zone = zones.get(candidate)
        if zone is not None:
            return zone
    return None


def _fail(rcode: int, reason: str, zone_name: str | None = None) -> UpdateOutcome:
    return UpdateOutcome(rcode, reason, zone_name)


def evaluate_update(zones: Mapping[str, Zone], message: DnsMessage, authorize: Authorizer) -> UpdateOutcome:
    """Evaluate one UPDATE (opcode 5) message against the zones this server is primary for."""
    # 1. Zone section (RFC 2136 3.1).
    if len(message.questions) != 1 or message.questions[0].qtype != TYPE_SOA:
        return _fail(Rcode.FORMERR, "the zone section must hold exactly one SOA question")
    zname = canonical_name(message.questions[0].qname)
    zone = zones.get(zname)
    if zone is None or message.questions[0].qclass != CLASS_IN:
        return _fail(Rcode.NOTAUTH, f"not authoritative for zone {zname}")
    # 2. Prerequisites (RFC 2136 3.2).
    outcome = _check_prerequisites(zone, message.answers)
    if outcome is not None:
        return outcome
    # 3. Permission (RFC 2136 3.3).
    for rr in message.authority:
        if not authorize(zone, rr):
            return _fail(
                Rcode.REFUSED, f"policy does not allow {QTYPE.get(rr.rtype)} at {canonical_name(rr.rname)}", zname
            )
    # 4. Prescan (RFC 2136 3.4.1).
    for rr in message.authority:
        rcode = _prescan(zone, rr)
        if rcode is not None:
            return _fail(rcode[0], rcode[1], zname)
    # 5. Apply in message order (RFC 2136 3.4.2).
    editor = zone.edit()
    for rr in message.authority:
        _apply(editor, zone, rr)
    changes = editor.changes
    if not changes:
        return UpdateOutcome(Rcode.NOERROR, "no change", zname)
    # 6. Serial (RFC 2136 3.6): bump once unless the update installed a newer SOA itself.
    if not any(change.rtype == TYPE_SOA for change in changes):
        _bump_serial(editor, zone)
        changes = editor.changes
    return UpdateOutcome(Rcode.NOERROR, f"{len(changes)} RRset(s) changed", zname, editor.commit(), tuple(changes))


def _bump_serial(editor: ZoneEditor, zone: Zone) -> None:
    soa_set = editor.rrset(zone.origin, TYPE_SOA)
    assert soa_set is not None
    soa = soa_set.rdatas[0]
    assert isinstance(soa, SOA)
    times = (serial_next(int(soa.times[0])),) + tuple(soa.times[1:])
    editor.set_rrset(zone.origin, TYPE_SOA, RRset(soa_set.ttl, (SOA(soa.mname, soa.rname, times),)))


def remove_rrs(zone: Zone, rtype: int, rrs: list[tuple[str, RD]], reason: str) -> UpdateOutcome:
    """Delete single RRs as a class-NONE update would (RFC 2136 3.4.2.4), the serial bumped once.

    The server's own changes (aging) go through here, so they are journaled and numbered like
    any update. Nothing to delete gives an outcome without a zone.
    """
    editor = zone.edit()
    for name, rdata in rrs:
        _apply(editor, zone, RR(name, rtype, CLASS_NONE, 0, rdata))
    if not editor.changes:
        return UpdateOutcome(Rcode.NOERROR, "no change", zone.origin)
    _bump_serial(editor, zone)
    changes = editor.changes
    return UpdateOutcome(
        Rcode.NOERROR, f"{reason}: {len(changes)} RRset(s) changed", zone.origin, editor.commit(), tuple(changes)
    )


def _check_prerequisites(zone: Zone, prerequisites: tuple[RR, ...]) -> UpdateOutcome | None:
    """RFC 2136 3.2.5 table; value-dependent RRsets compared as whole sets (3.2.3)."""
    zname = zone.origin
    temp: dict[tuple[str, int], set[bytes]] = {}
    for rr in prerequisites:
        name = canonical_name(rr.rname)
        if rr.ttl != 0:
            return _fail(Rcode.FORMERR, f"prerequisite {name} has TTL {rr.ttl}, not 0", zname)
        if not zone.contains(name):
            return _fail(Rcode.NOTZONE, f"prerequisite {name} is outside zone {zname}", zname)
        empty = is_empty_rdata(rr.rdata)
        if rr.rclass == CLASS_ANY:
            if not empty:
                return _fail(Rcode.FORMERR, "a class ANY prerequisite must have empty RDATA", zname)
            if rr.rtype == TYPE_ANY:
                if not zone.node(name):
                    return _fail(Rcode.NXDOMAIN, f"prerequisite: name {name} is not in use", zname)
            elif zone.rrset(name, rr.rtype) is None:
                return _fail(Rcode.NXRRSET, f"prerequisite: no {QTYPE.get(rr.rtype)} RRset at {name}", zname)
        elif rr.rclass == CLASS_NONE:
            if not empty:
                return _fail(Rcode.FORMERR, "a class NONE prerequisite must have empty RDATA", zname)
            if rr.rtype == TYPE_ANY:
                if zone.node(name):
                    return _fail(Rcode.YXDOMAIN, f"prerequisite: name {name} is in use", zname)
            elif zone.rrset(name, rr.rtype) is not None:
                return _fail(Rcode.YXRRSET, f"prerequisite: a {QTYPE.get(rr.rtype)} RRset exists at {name}", zname)
        elif rr.rclass == CLASS_IN:
            if empty or rr.rtype in _META:
                return _fail(Rcode.FORMERR, "a value-dependent prerequisite needs RDATA and a data type", zname)
            temp.setdefault((name, rr.rtype), set()).add(rdata_key(rr.rtype, rr.rdata))
        else:
            return _fail(Rcode.FORMERR, f"prerequisite class {rr.rclass} is not IN, ANY or NONE", zname)
    for (name, rtype), wanted in temp.items():
        rrset = zone.rrset(name, rtype)
        have = {rdata_key(rtype, r) for r in rrset.rdatas} if rrset else set()
        if have != wanted:
            return _fail(Rcode.NXRRSET, f"prerequisite: the {QTYPE.get(rtype)} RRset at {name} differs", zname)
    return None


def _prescan(zone: Zone, rr: RR) -> tuple[int, str] | None:
    name = canonical_name(rr.rname)
    if not zone.contains(name):
        return Rcode.NOTZONE, f"update {name} is outside zone {zone.origin}"
    empty = is_empty_rdata(rr.rdata)
    if rr.rclass == CLASS_IN:
        if rr.rtype in _META or empty:
            return Rcode.FORMERR, f"cannot add type {rr.rtype} with {'empty ' if empty else ''}RDATA"
    elif rr.rclass == CLASS_ANY:
        if rr.ttl != 0 or not empty or rr.rtype in _NOT_WITH_ANY:
            return Rcode.FORMERR, "a class ANY update needs TTL 0, empty RDATA and a data type or ANY"
    elif rr.rclass == CLASS_NONE:
        if rr.ttl != 0 or rr.rtype in _META or empty:
            return Rcode.FORMERR, "a class NONE update needs TTL 0, RDATA and a data type"
    else:
        return Rcode.FORMERR, f"update class {rr.rclass} is not IN, ANY or NONE"
    return None


def _apply(editor: ZoneEditor, zone: Zone, rr: RR) -> None:
    """One update RR (RFC 2136 3.4.2); ignored cases are silently skipped, as the RFC says."""
    name = canonical_name(rr.rname)
    apex = name == zone.origin
    rtype = rr.rtype
    if rr.rclass == CLASS_IN:
        if rtype == TYPE_SOA:
            current = editor.rrset(name, TYPE_SOA)
            if not apex or current is None or not isinstance(rr.rdata, SOA):
                return
            old = current.rdatas[0]
            assert isinstance(old, SOA)
            if serial_gt(int(rr.rdata.times[0]), int(old.times[0])):
                editor.set_rrset(name, TYPE_SOA, RRset(rr.ttl, (rr.rdata,)))
            return
        node = editor.node(name)
        if rtype == _TYPE_CNAME and any(t != _TYPE_CNAME for t in node):
            return
        if rtype != _TYPE_CNAME and _TYPE_CNAME in node:
            return
        existing = editor.rrset(name, rtype)
        if rtype == _TYPE_CNAME:
            editor.set_rrset(name, rtype, RRset(rr.ttl, (rr.rdata,)))
            return
        key = rdata_key(rtype, rr.rdata)
        rdatas = existing.rdatas if existing else ()
        if any(rdata_key(rtype, r) == key for r in rdatas):  # a refresh: same place, so no change unless the TTL is new
            editor.set_rrset(
                name, rtype, RRset(rr.ttl, tuple(rr.rdata if rdata_key(rtype, r) == key else r for r in rdatas))
            )
        else:
            editor.set_rrset(name, rtype, RRset(rr.ttl, rdatas + (rr.rdata,)))
    elif rr.rclass == CLASS_ANY:
        if rtype == TYPE_ANY:
            for t in list(editor.node(name)):
                if apex and t in (TYPE_SOA, _TYPE_NS):
                    continue
                editor.set_rrset(name, t, None)
        elif apex and rtype in (TYPE_SOA, _TYPE_NS):
            return
        else:
            editor.set_rrset(name, rtype, None)
    elif rr.rclass == CLASS_NONE:
        if rtype == TYPE_SOA:
            return
        existing = editor.rrset(name, rtype)
        if existing is None:
            return
        key = rdata_key(rtype, rr.rdata)
        kept = tuple(r for r in existing.rdatas if rdata_key(rtype, r) != key)
        if apex and rtype == _TYPE_NS and not kept:
            return  # never remove the last apex NS (RFC 2136 3.4.2.4)
        editor.set_rrset(name, rtype, RRset(existing.ttl, kept) if kept else None)
