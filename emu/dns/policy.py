"""Who may change what: the update policy (docs/dns.md).

A policy is a list of :class:`Grant`. An update RR is allowed when one grant matches the
requester (a verified TSIG key, or for unsigned "nonsecure" zones a source address), the owner
name, the type, and, for SRV records, the target. BIND's ``update-policy`` can only grant per name
and type; the SRV-target check lets several hosts share ``_vlmcs._tcp`` while each key changes only
the SRV RRs that point at its own host (docs/dns.md).

Default: every update needs a known key, and any known key may change any data in the zone
(never SOA/NS at the apex, which the update rules protect anyway).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from dnslib import QTYPE, RR, SRV

from emu.dns.zone import Zone, is_subdomain
from emu.errors import UsageError
from emu.wire.dns import canonical_name

__all__ = ["Grant", "Requester", "UpdatePolicy", "parse_grant", "parse_type_list"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Requester:
    """Who sent an update: the verified key name (canonical) or None, and the source address."""

    key: str | None
    address: str


@dataclass(frozen=True, slots=True)
class Grant:
    """One permission.

    Attributes:
        key: canonical key name, ``"*"`` for any verified key, or None for unsigned requests.
        networks: for unsigned grants, the source networks allowed (empty: none).
        name: owner-name pattern: ``"*"`` any name in the zone; a name, absolute (trailing dot)
            or relative to the zone origin; a leading ``*.`` label matches any name below.
        types: allowed types (empty: any).
        srv_targets: for SRV records, the only allowed targets (empty: any).
    """

    key: str | None
    name: str = "*"
    types: frozenset[int] = frozenset()
    networks: tuple[Network, ...] = ()
    srv_targets: frozenset[str] = frozenset()

    def matches(self, requester: Requester, zone: Zone, rr: RR) -> bool:
        if self.key is None:
            if requester.key is not None:
                return False
            try:
                address = ipaddress.ip_address(requester.address.split("%")[0])
            except ValueError:
                return False
            if not any(address in network for network in self.networks):
                return False
        elif requester.key is None or (self.key != "*" and self.key != requester.key):
            return False
        if self.types and rr.rtype not in self.types:
            return False
        if not _name_matches(self.name, canonical_name(rr.rname), zone.origin):
            return False
        return not (
            self.srv_targets
            and rr.rtype == QTYPE.SRV
            and isinstance(rr.rdata, SRV)
            and canonical_name(rr.rdata.target) not in self.srv_targets
        )


def _name_matches(pattern: str, name: str, origin: str) -> bool:
    if pattern == "*":
        return True
    wildcard = pattern.startswith("*.")
    base = pattern[2:] if wildcard else pattern
    if not base.endswith("."):
        base = f"{base}.{origin}" if base not in ("", "@") else origin
    base = base.lower()
    if wildcard:
        return name != base and is_subdomain(name, base)
    return name == base


@dataclass(frozen=True, slots=True)
class UpdatePolicy:
    """An ordered set of grants; see the module docstring for the default."""

    grants: tuple[Grant, ...] = field(default_factory=lambda: (Grant(key="*"),))

    def allows(self, requester: Requester, zone: Zone, rr: RR) -> bool:
        return any(grant.matches(requester, zone, rr) for grant in self.grants)

    @classmethod
    def with_nonsecure(cls, networks: Iterable[str], grants: Iterable[Grant] | None = None) -> UpdatePolicy:
        """Add unsigned updates from ``networks``, limited to what a KMS host publishes: the
        ``_vlmcs._tcp`` SRV RRset and A/AAAA records (docs/dns.md).

        Raises:
            UsageError: a network that does not parse.
        """
        nets = tuple(_network(text) for text in networks)
        base = tuple(grants) if grants is not None else (Grant(key="*"),)
        extra = (
            Grant(key=None, name="_vlmcs._tcp", types=frozenset({QTYPE.SRV}), networks=nets),
            Grant(key=None, name="*", types=frozenset({QTYPE.A, QTYPE.AAAA}), networks=nets),
        )
        return cls(base + extra)


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise UsageError(f"not an address or network: {text!r}") from exc


def parse_type_list(text: str) -> frozenset[int]:
    """``"SRV,A,AAAA"`` to type numbers; ``"ANY"`` or empty means any.

    Raises:
        UsageError: an unknown type name.
    """
    out = set()
    for item in filter(None, (part.strip().upper() for part in text.split(","))):
        if item == "ANY":
            return frozenset()
        try:
            out.add(getattr(QTYPE, item))
        except Exception:
            raise UsageError(f"unknown record type {item!r}") from None
    return frozenset(out)


def parse_grant(text: str) -> Grant:
    """Parse a command-line grant ``KEY=NAME:TYPES[@TARGET,...]``.

    Examples: ``kms1=_vlmcs._tcp:SRV@kms1.kms.test.``, ``kms1=kms1:A,AAAA``, ``*=*:ANY``.

    Raises:
        UsageError: the text does not have that shape.
    """
    key, sep, rest = text.partition("=")
    if not sep or not key:
        raise UsageError(f"grant {text!r}: expected KEY=NAME:TYPES[@TARGET,...]")
    name, sep, types_part = rest.partition(":")
    if not sep or not name:
        raise UsageError(f"grant {text!r}: expected KEY=NAME:TYPES[@TARGET,...]")
    types_text, _, targets = types_part.partition("@")
    return Grant(
        key="*" if key == "*" else canonical_name(key),
        name=name,
        types=parse_type_list(types_text),
        srv_targets=frozenset(canonical_name(t) for t in targets.split(",") if t),
    )
