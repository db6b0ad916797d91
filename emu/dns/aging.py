"""Aging of published KMS records: an SRV RR at ``_vlmcs._tcp.<domain>`` that its host stopped
refreshing is removed after a maximum age (docs/kms-host.md, docs/dns.md "RFC 2136 has no lease").

A KMS host re-publishes periodically (:mod:`emu.net.dns_publisher`); a host that crashes never
withdraws, and clients would keep trying it. Like Windows scavenging, only dynamic records age:

* an SRV RR present in the zone files as loaded is *static* and never ages (hand-entered
  records, docs/kms-host.md), unless an update deletes it; re-created later, it is dynamic;
* a dynamic SRV RR is *seen* whenever an accepted UPDATE adds it, even if the add changed nothing
  (a refresh: no serial bump, but the RR is young again); records restored from the journal at
  start are seen at that start;
* every other record (A/AAAA, other owners, other types) never ages.

Sans-IO: every call takes ``now`` (UTC Unix seconds, the resolver's time) and
:meth:`SrvAging.next_deadline` says when to come back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from dnslib import QTYPE, RD

from emu.dns.zone import Zone, ZoneChange, rdata_key
from emu.errors import UsageError

__all__ = ["SrvAging", "aged_owner"]

_SRV = QTYPE.SRV
_PREFIX = "_vlmcs._tcp."

#: (zone origin, owner name, RDATA identity) of one SRV RR.
_Key = tuple[str, str, bytes]


def aged_owner(name: str) -> bool:
    """Is canonical ``name`` a KMS service owner, ``_vlmcs._tcp.<domain>.``?"""
    return name.startswith(_PREFIX)


def _aged_rrs(zone: Zone) -> Iterator[tuple[str, RD]]:
    for name in zone.names():
        if aged_owner(name):
            rrset = zone.rrset(name, _SRV)
            if rrset is not None:
                for rdata in rrset.rdatas:
                    yield name, rdata


class SrvAging:
    """When each dynamic ``_vlmcs._tcp`` SRV RR was last seen, and which ones are too old.

    Args:
        max_age: seconds after its last refresh when an RR is removed.
        zones: the zones served now (after any journal replay).
        static: the zones as their master files define them; their SRV RRs never age.
        now: the start; dynamic RRs already in ``zones`` count as seen now.
    """

    def __init__(self, max_age: float, zones: Iterable[Zone], static: Iterable[Zone], now: float) -> None:
        if max_age <= 0:
            raise UsageError(f"the SRV max age must be positive, not {max_age}")
        self.max_age = float(max_age)
        self._static: set[_Key] = {
            (z.origin, name, rdata_key(_SRV, rdata)) for z in static for name, rdata in _aged_rrs(z)
        }
        self._seen: dict[_Key, float] = {}
        for zone in zones:
            self._track(zone, now)

    def last_seen(self, origin: str, name: str, rdata: RD) -> float | None:
        return self._seen.get((origin, name, rdata_key(_SRV, rdata)))

    def refresh(self, zone: Zone, name: str, rdata: RD, now: float) -> None:
        """An accepted UPDATE added this SRV RR (whether or not it changed the zone)."""
        if not aged_owner(name):
            return
        key = (zone.origin, name, rdata_key(_SRV, rdata))
        if key in self._static:
            return
        rrset = zone.rrset(name, _SRV)
        if rrset is not None and any(rdata_key(_SRV, r) == key[2] for r in rrset.rdatas):
            self._seen[key] = now

    def _track(self, zone: Zone, now: float) -> None:
        for name, rdata in _aged_rrs(zone):
            key = (zone.origin, name, rdata_key(_SRV, rdata))
            if key not in self._static:
                self._seen.setdefault(key, now)

    def changed(self, changes: Iterable[ZoneChange], now: float) -> None:
        """Follow the net changes of an update (or of aging itself): forget RRs that are gone
        (static ones included), start the clock of new dynamic ones."""
        for change in changes:
            if change.rtype != _SRV or not aged_owner(change.name):
                continue
            present = {rdata_key(_SRV, r) for r in change.rrset.rdatas} if change.rrset is not None else set()
            gone = {
                k
                for k in (*self._static, *self._seen)
                if k[0] == change.zone and k[1] == change.name and k[2] not in present
            }
            self._static -= gone
            for key in gone:
                self._seen.pop(key, None)
            for identity in present:
                key = (change.zone, change.name, identity)
                if key not in self._static:
                    self._seen.setdefault(key, now)

    def next_deadline(self) -> float | None:
        """When the oldest dynamic RR reaches its max age (None: nothing ages)."""
        return min(self._seen.values()) + self.max_age if self._seen else None

    def expired(self, zone: Zone, now: float) -> list[tuple[str, RD]]:
        """The (owner, RDATA) of ``zone``'s SRV RRs not seen for ``max_age`` seconds at ``now``."""
        out = []
        for name, rdata in _aged_rrs(zone):
            seen = self._seen.get((zone.origin, name, rdata_key(_SRV, rdata)))
            if seen is not None and now >= seen + self.max_age:
                out.append((name, rdata))
        return out
