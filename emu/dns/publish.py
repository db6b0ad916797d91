"""The UPDATE messages a KMS host sends to publish itself (docs/kms-host.md, docs/dns.md end).

Several hosts share the RRset ``_vlmcs._tcp.<domain> SRV``, so a host only ever touches its own
RRs: it adds its SRV RR and its A/AAAA (re-adding refreshes the TTL), changes priority or weight
with a class-NONE delete of its old SRV RDATA plus an add of the new one in one message, and
withdraws with class-NONE deletes of exactly what it added. Never "delete RRset" (that is
nsupdate's replace idiom, and it would wipe the other hosts).

The messages are unsigned bytes; :mod:`emu.net.dns_client` signs and sends them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from dnslib import AAAA, QTYPE, RD, RR, SRV, A, DNSHeader, DNSQuestion, DNSRecord

from emu.errors import UsageError
from emu.wire.dns import CLASS_IN, CLASS_NONE, TYPE_SOA, Opcode, canonical_name

__all__ = [
    "KMS_PORT",
    "SERVICE_LABEL",
    "Publication",
    "build_addresses",
    "build_change",
    "build_publish",
    "build_withdraw",
    "srv_owner",
]

#: The KMS service label (docs/kms-host.md; shown upper-case by Windows, names compare case-insensitively).
SERVICE_LABEL = "_vlmcs._tcp"
#: The KMS host's default TCP port (docs/dns.md).
KMS_PORT = 1688


@dataclass(frozen=True, slots=True)
class Publication:
    """What one host publishes into one domain (one DnsDomainPublishList entry)."""

    domain: str
    host_name: str
    port: int = KMS_PORT
    priority: int = 0
    weight: int = 0
    ttl: int = 3600
    #: the SRV service labels: ``_vlmcs._tcp`` for a KMS host, ``_ldap._tcp.dc._msdcs`` for a domain controller
    service: str = SERVICE_LABEL

    @property
    def owner(self) -> str:
        """The SRV owner name, ``<service>.<domain>.``."""
        return srv_owner(self.domain, self.service)

    def __post_init__(self) -> None:
        for field_name, value, high in (
            ("port", self.port, 65535),
            ("priority", self.priority, 65535),
            ("weight", self.weight, 65535),
            ("ttl", self.ttl, 2**31 - 1),
        ):
            if not 0 <= value <= high:
                raise UsageError(f"{field_name} {value} is outside 0..{high}")

    @property
    def srv(self) -> SRV:
        return SRV(self.priority, self.weight, self.port, canonical_name(self.host_name))


def srv_owner(domain: str, service: str = SERVICE_LABEL) -> str:
    """``_vlmcs._tcp.<domain>.`` (or another service's labels)."""
    return f"{service}.{canonical_name(domain)}"


def _address_rdata(address: str) -> tuple[int, RD]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise UsageError(f"not an IP address: {address!r}") from exc
    return (QTYPE.A, A(str(ip))) if ip.version == 4 else (QTYPE.AAAA, AAAA(str(ip)))


def _message(zone: str, message_id: int) -> DNSRecord:
    header = DNSHeader(id=message_id, bitmap=Opcode.UPDATE << 11)
    return DNSRecord(header, questions=[DNSQuestion(canonical_name(zone), TYPE_SOA, CLASS_IN)])


def _pack(record: DNSRecord) -> bytes:
    return bytes(record.pack())


def build_publish(zone: str, publication: Publication, addresses: tuple[str, ...], message_id: int) -> bytes:
    """Add (or refresh) our SRV RR and, when given, our A/AAAA in ``zone``."""
    record = _message(zone, message_id)
    record.add_auth(RR(publication.owner, QTYPE.SRV, CLASS_IN, publication.ttl, publication.srv))
    for address in addresses:
        rtype, rdata = _address_rdata(address)
        record.add_auth(RR(canonical_name(publication.host_name), rtype, CLASS_IN, publication.ttl, rdata))
    return _pack(record)


def build_addresses(zone: str, host_name: str, addresses: tuple[str, ...], ttl: int, message_id: int) -> bytes:
    """Add (or refresh) our A/AAAA when our host name lives in another zone than the SRV RR."""
    record = _message(zone, message_id)
    for address in addresses:
        rtype, rdata = _address_rdata(address)
        record.add_auth(RR(canonical_name(host_name), rtype, CLASS_IN, ttl, rdata))
    return _pack(record)


def build_change(zone: str, old: Publication, new: Publication, message_id: int) -> bytes:
    """Replace our SRV RDATA in one message: class-NONE delete of the old, add of the new."""
    if old.owner != new.owner:
        raise UsageError("a priority/weight change stays in one domain")
    record = _message(zone, message_id)
    record.add_auth(RR(old.owner, QTYPE.SRV, CLASS_NONE, 0, old.srv))
    record.add_auth(RR(new.owner, QTYPE.SRV, CLASS_IN, new.ttl, new.srv))
    return _pack(record)


def build_withdraw(
    zone: str, publication: Publication | None, addresses: tuple[str, ...], host_name: str, message_id: int
) -> bytes:
    """Delete exactly our SRV RR (if ``publication``) and our own A/AAAA RRs, class NONE."""
    record = _message(zone, message_id)
    if publication is not None:
        record.add_auth(RR(publication.owner, QTYPE.SRV, CLASS_NONE, 0, publication.srv))
    for address in addresses:
        rtype, rdata = _address_rdata(address)
        record.add_auth(RR(canonical_name(host_name), rtype, CLASS_NONE, 0, rdata))
    return _pack(record)
