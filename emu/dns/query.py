"""Authoritative answers to standard queries (RFC 1034 4.3.2, RFC 2308, RFC 4592).

* a name outside every zone: REFUSED, no AA (we are not a resolver);
* NXDOMAIN and NODATA both carry the zone's SOA in authority, TTL min(SOA TTL, MINIMUM)
  (RFC 2308 3), which is also what zone discovery by SOA query needs (docs/dns.md);
* SRV, MX and NS answers get the targets' A/AAAA from any zone served, as additional data
  (RFC 2782 "Usage rules", RFC 1034 3.6.2);
* CNAME chains are followed inside the zones served; NS below an apex gives a referral; wildcards
  synthesize answers from the closest encloser (RFC 4592 3.3).

Sections hold whole RRsets (:class:`AnswerRRset`), not dnslib RRs: the resolver's fast path packs
them from wire forms prepared once per zone snapshot, the general path makes RRs of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dnslib import CNAME, MX, NS, QTYPE, RD, RR, SRV

from emu.dns.update import find_zone
from emu.dns.zone import Zone
from emu.wire.dns import CLASS_ANY, CLASS_IN, TYPE_ANY, TYPE_SOA, Rcode, canonical_name

__all__ = ["MAX_CNAME_CHAIN", "AnswerRRset", "QueryAnswer", "answer_query"]

#: Longest CNAME chain followed inside our zones (a loop guard; BIND uses 16).
MAX_CNAME_CHAIN = 8
_ADDRESS_TYPES = (QTYPE.A, QTYPE.AAAA)
#: Types whose RDATA may name a host whose addresses go into additional.
_TARGET_TYPES = frozenset({QTYPE.SRV, QTYPE.MX, QTYPE.NS})


@dataclass(frozen=True, slots=True)
class AnswerRRset:
    """One RRset of ``zone`` as it goes into a section: stored at ``name``, answered as ``owner``
    (the query name for a wildcard answer), with ``ttl`` (the SOA's negative TTL in authority)."""

    zone: Zone
    name: str
    rtype: int
    owner: str
    ttl: int
    rdatas: tuple[RD, ...]

    def rrs(self) -> list[RR]:
        return [RR(self.owner, self.rtype, CLASS_IN, self.ttl, rdata) for rdata in self.rdatas]


@dataclass(slots=True)
class QueryAnswer:
    """The sections of an answer. ``authoritative`` is the AA bit."""

    rcode: int
    authoritative: bool
    answers: list[AnswerRRset] = field(default_factory=list)
    authority: list[AnswerRRset] = field(default_factory=list)
    additional: list[AnswerRRset] = field(default_factory=list)


def _rrs(name: str, rtype: int, zone: Zone, owner: str | None = None) -> list[AnswerRRset]:
    rrset = zone.rrset(name, rtype)
    if rrset is None:
        return []
    return [AnswerRRset(zone, name, rtype, owner or name, rrset.ttl, rrset.rdatas)]


def _soa(zone: Zone) -> AnswerRRset:
    return AnswerRRset(zone, zone.origin, TYPE_SOA, zone.origin, zone.negative_ttl, zone.soa_rrset.rdatas)


def _delegation(zone: Zone, name: str) -> str | None:
    """The highest zone cut (NS below the apex) at or above ``name``, if any."""
    labels = name.split(".")
    origin_labels = len(zone.origin.split(".")) if zone.origin != "." else 1
    for i in range(len(labels) - origin_labels, -1, -1):
        candidate = ".".join(labels[i:])
        if candidate != zone.origin and zone.rrset(candidate, QTYPE.NS) is not None:
            return candidate
    return None


def _wildcard_owner(zone: Zone, name: str) -> str | None:
    """``*.<closest encloser>`` if it exists (RFC 4592 3.3.1)."""
    labels = name.split(".")
    for i in range(1, len(labels)):
        encloser = ".".join(labels[i:])
        if not zone.contains(encloser):
            return None
        if zone.name_exists(encloser):
            wildcard = "*." + encloser if encloser != "." else "*."
            return wildcard if zone.node(wildcard) else None
    return None


def _targets(entry: AnswerRRset) -> tuple[str, ...]:
    """Canonical names the RRset's RDATA points to (SRV target, MX exchange, NS host)."""
    out = []
    for rdata in entry.rdatas:
        if isinstance(rdata, SRV):
            target = rdata.target
        elif isinstance(rdata, MX) or (isinstance(rdata, NS) and entry.rtype == QTYPE.NS):
            target = rdata.label
        else:
            continue
        out.append(canonical_name(target))
    return tuple(out)


def _additional(zones: Mapping[str, Zone], answers: list[AnswerRRset]) -> list[AnswerRRset]:
    targets: list[str] = []
    for entry in answers:
        if entry.rtype not in _TARGET_TYPES:
            continue
        for name in entry.zone.derived(("targets", entry.name, entry.rtype), lambda: _targets(entry)):  # noqa: B023 (called at once)
            if name != "." and name not in targets:
                targets.append(name)
    out: list[AnswerRRset] = []
    for name in targets:
        zone = find_zone(zones, name)
        if zone is None:
            continue
        for rtype in _ADDRESS_TYPES:
            out.extend(_rrs(name, rtype, zone))
    return out


def answer_query(zones: Mapping[str, Zone], qname: str, qtype: int, qclass: int) -> QueryAnswer:
    """Answer one question from the zones (keyed by canonical origin)."""
    name = canonical_name(qname)
    zone = find_zone(zones, name)
    if zone is None or qclass not in (CLASS_IN, CLASS_ANY):
        return QueryAnswer(Rcode.REFUSED, False)
    answer = QueryAnswer(Rcode.NOERROR, True)
    for _ in range(MAX_CNAME_CHAIN):
        cut = _delegation(zone, name)
        if cut is not None and not (qtype == QTYPE.DS and cut == name):
            answer.authoritative = bool(answer.answers)  # a referral is not authoritative
            answer.authority.extend(_rrs(cut, QTYPE.NS, zone))
            answer.additional.extend(_additional(zones, answer.authority))
            return answer
        owner = name
        node = zone.node(name)
        if node is None and not zone.name_exists(name):
            wildcard = _wildcard_owner(zone, name)
            if wildcard is None:
                answer.rcode = Rcode.NXDOMAIN
                answer.authority.append(_soa(zone))
                return answer
            node = zone.node(wildcard)
            owner = wildcard
        node = node or {}
        if qtype == TYPE_ANY:
            for rtype in node:
                answer.answers.extend(_rrs(owner, rtype, zone, name))
        elif qtype in node:
            answer.answers.extend(_rrs(owner, qtype, zone, name))
        elif QTYPE.CNAME in node:
            cname = _rrs(owner, QTYPE.CNAME, zone, name)
            answer.answers.extend(cname)
            rdata = cname[0].rdatas[0]
            assert isinstance(rdata, CNAME)
            target = canonical_name(rdata.label)
            next_zone = find_zone(zones, target)
            if next_zone is None:
                break
            zone, name = next_zone, target
            continue
        if (qtype == TYPE_ANY and not node) or (qtype != TYPE_ANY and qtype not in node):  # NODATA
            answer.authority.append(_soa(zone))
        break
    answer.additional.extend(_additional(zones, answer.answers))
    return answer
