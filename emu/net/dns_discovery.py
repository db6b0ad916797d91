"""KMS host discovery for clients: SRV query, RFC 2782 order, A/AAAA of each target.

Addresses come from the additional section when the server put them there, otherwise from
follow-up A and AAAA queries (docs/dns.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from dnslib import SRV

from emu.dns.publish import SERVICE_LABEL, srv_owner
from emu.dns.srv_select import SrvRecord, order_srv
from emu.errors import EmuError
from emu.net.dns_client import DEFAULT_TIMEOUT, query
from emu.rng import Rng
from emu.wire.dns import canonical_name

__all__ = ["KmsTarget", "discover_kms_hosts", "discover_kms_targets"]

_A, _AAAA, _SRV = 1, 28, 33


@dataclass(frozen=True, slots=True)
class KmsTarget:
    """One SRV target in try order, with its addresses (IPv4 first)."""

    host: str
    port: int
    priority: int
    weight: int
    addresses: tuple[str, ...]


async def discover_kms_targets(
    domain: str,
    dns_server: tuple[str, int],
    rng: Rng,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    service: str = SERVICE_LABEL,
) -> list[KmsTarget]:
    """The ``_vlmcs._tcp.<domain>`` targets in RFC 2782 order, with addresses resolved.

    Targets whose addresses cannot be found are kept with an empty ``addresses``. ``service`` selects
    other SRV labels (``_ldap._tcp.dc._msdcs`` finds domain controllers the same way).

    Raises:
        ScenarioError: the DNS server does not answer. DecodeError: an undecodable answer.
    """
    answer = await query(srv_owner(domain, service), _SRV, dns_server, rng=rng, timeout=timeout)
    records = [
        SrvRecord(rr.rdata.priority, rr.rdata.weight, rr.rdata.port, canonical_name(rr.rdata.target))
        for rr in answer.answers
        if rr.rtype == _SRV and isinstance(rr.rdata, SRV)
    ]
    glue: dict[str, list[str]] = {}
    for rr in answer.additional:
        if rr.rtype in (_A, _AAAA):
            glue.setdefault(canonical_name(rr.rname), []).append(str(rr.rdata))
    targets = []
    for record in order_srv(records, rng):
        addresses = glue.get(record.target)
        if addresses is None:
            addresses = []
            for rtype in (_A, _AAAA):
                try:
                    reply = await query(record.target, rtype, dns_server, rng=rng, timeout=timeout)
                except EmuError:
                    continue
                addresses.extend(str(rr.rdata) for rr in reply.answers if rr.rtype == rtype)
        ordered = sorted(addresses, key=lambda a: ":" in a)
        targets.append(KmsTarget(record.target, record.port, record.priority, record.weight, tuple(ordered)))
    return targets


async def discover_kms_hosts(
    domain: str,
    dns_server: tuple[str, int],
    rng: Rng,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    service: str = SERVICE_LABEL,
) -> list[tuple[str, int]]:
    """(address, port) pairs to try, in RFC 2782 order; each target's addresses in turn.

    Raises:
        ScenarioError / DecodeError as :func:`discover_kms_targets`.
    """
    return [
        (address, target.port)
        for target in await discover_kms_targets(domain, dns_server, rng, timeout=timeout, service=service)
        for address in target.addresses
    ]
