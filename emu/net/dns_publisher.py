"""A KMS host's DNS publisher: publish, refresh periodically, change priority/weight, withdraw.

The messages come from :mod:`emu.dns.publish`; this module only finds the zones, signs, sends,
and keeps the refresh timer. Usage from a host::

    publisher = Publisher("kms1.kms.test", [PublishDomain("kms.test")], dns_server=("127.0.0.1", 5300),
                          key=key, addresses=("10.0.0.1",))
    await publisher.start()          # raises DnsUpdateError if the first publication is refused
    await publisher.change(priority=10, weight=5)
    await publisher.stop()           # withdraws only this host's RRs
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from emu.clock import Clock, WallClock
from emu.dns.publish import (
    KMS_PORT,
    SERVICE_LABEL,
    Publication,
    build_addresses,
    build_change,
    build_publish,
    build_withdraw,
)
from emu.dns.tsig import TsigKey
from emu.errors import EmuError, UsageError
from emu.net.dns_client import DEFAULT_TIMEOUT, find_zone, send_update
from emu.rng import Rng, system_rng
from emu.wire.dns import canonical_name

__all__ = ["DEFAULT_REFRESH_INTERVAL", "PublishDomain", "Publisher", "parse_publish_entry"]

log = logging.getLogger(__name__)

#: Seconds between re-publications. Not documented by Microsoft for KMS (docs/dns.md); a day keeps
#: the records fresh against server-side aging without being chatty. Configurable.
DEFAULT_REFRESH_INTERVAL = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class PublishDomain:
    """One DnsDomainPublishList entry: ``domain[, priority[, weight]]`` (docs/dns.md)."""

    domain: str
    priority: int = 0
    weight: int = 0


def parse_publish_entry(text: str) -> PublishDomain:
    """``"kms.test"`` or ``"kms.test, 10, 5"`` (the registry's ``domain, priority, weight``).

    Raises:
        UsageError: not that shape, or numbers out of range.
    """
    parts = [p.strip() for p in text.split(",")]
    if not parts[0] or len(parts) > 3:
        raise UsageError(f"publish entry {text!r}: expected DOMAIN[,PRIORITY[,WEIGHT]]")
    try:
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise UsageError(f"publish entry {text!r}: priority and weight are numbers") from None
    if any(not 0 <= n <= 65535 for n in numbers):
        raise UsageError(f"publish entry {text!r}: priority and weight are 0..65535")
    return PublishDomain(parts[0], *numbers)


class Publisher:
    """Keeps one host's SRV and A/AAAA records published in one or more domains.

    Args:
        host_name: the host's FQDN (the SRV target).
        domains: where to publish, with priority and weight per domain.
        dns_server: (host, port) of the primary that accepts updates.
        key: TSIG key, or None for unsigned updates ("nonsecure" zones).
        addresses: the host's IPv4/IPv6 addresses for its A/AAAA records (empty: publish none).
        port: the KMS port in the SRV RR.
        ttl: TTL of every record published.
        refresh_interval: seconds between re-publications.
        clock: TSIG time source. rng: message IDs.
        sleep: how to wait for the next refresh (inject a fake to drive refreshes in tests).
        zone: the zone to update; None discovers it by SOA query per name.
        service: SRV service labels (``_ldap._tcp.dc._msdcs`` for a domain controller).
    """

    def __init__(
        self,
        host_name: str,
        domains: Sequence[PublishDomain],
        *,
        dns_server: tuple[str, int],
        key: TsigKey | None = None,
        addresses: Sequence[str] = (),
        port: int = KMS_PORT,
        ttl: int = 3600,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        clock: Clock | None = None,
        rng: Rng | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        zone: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        tcp: bool = False,
        service: str = SERVICE_LABEL,
    ) -> None:
        if not domains:
            raise UsageError("give at least one domain to publish in")
        self.host_name = canonical_name(host_name)
        self.publications = [
            Publication(d.domain, self.host_name, port, d.priority, d.weight, ttl, service) for d in domains
        ]
        self.addresses = tuple(addresses)
        self.dns_server = dns_server
        self.key = key
        self.ttl = ttl
        self.refresh_interval = refresh_interval
        self.clock = clock or WallClock()
        self.rng = rng or system_rng()
        self._sleep = sleep
        self._zone = canonical_name(zone) if zone else None
        self._zones: dict[str, str] = {}
        self.timeout = timeout
        self.tcp = tcp
        self._task: asyncio.Task[None] | None = None
        self.refreshes = 0

    async def _zone_of(self, name: str) -> str:
        if self._zone is not None:
            return self._zone
        if name not in self._zones:
            self._zones[name] = await find_zone(name, self.dns_server, rng=self.rng, timeout=self.timeout)
        return self._zones[name]

    async def _send(self, wire: bytes) -> None:
        await send_update(wire, self.dns_server, key=self.key, clock=self.clock, timeout=self.timeout, tcp=self.tcp)

    def _id(self) -> int:
        return self.rng.randint(0, 0xFFFF)

    async def publish(self) -> None:
        """Add (or refresh) our SRV RR in every domain and our A/AAAA once.

        Raises:
            DnsUpdateError: the server refused; ScenarioError: no answer.
        """
        host_zone = await self._zone_of(self.host_name) if self.addresses else None
        addresses_sent = False
        for publication in self.publications:
            zone = await self._zone_of(publication.owner)
            with_addresses = self.addresses if (zone == host_zone and not addresses_sent) else ()
            await self._send(build_publish(zone, publication, with_addresses, self._id()))
            addresses_sent = addresses_sent or bool(with_addresses)
        if host_zone is not None and not addresses_sent:
            await self._send(build_addresses(host_zone, self.host_name, self.addresses, self.ttl, self._id()))

    async def start(self) -> None:
        """Publish now, then keep refreshing every ``refresh_interval`` in the background."""
        await self.publish()
        self._task = asyncio.create_task(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while True:
            await self._sleep(self.refresh_interval)
            try:
                await self.publish()
                self.refreshes += 1
            except EmuError as exc:  # a failed refresh is retried at the next interval
                log.warning("DNS refresh of %s failed: %s", self.host_name, exc)

    async def change(self, priority: int, weight: int, domain: str | None = None) -> None:
        """New priority/weight (in one domain, or all): delete our old SRV RR and add the new one
        in one message.

        Raises:
            DnsUpdateError / ScenarioError as :meth:`publish`; UsageError for an unknown domain.
        """
        matched = False
        for index, old in enumerate(self.publications):
            if domain is not None and canonical_name(old.domain) != canonical_name(domain):
                continue
            matched = True
            new = replace(old, priority=priority, weight=weight)
            if new == old:
                continue
            zone = await self._zone_of(old.owner)
            await self._send(build_change(zone, old, new, self._id()))
            self.publications[index] = new
        if not matched:
            raise UsageError(f"this host does not publish in {domain}")

    async def stop(self, withdraw: bool = True) -> None:
        """Stop refreshing and (by default) withdraw our SRV RRs and A/AAAA. Errors are logged."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if not withdraw:
            return
        try:
            host_zone = await self._zone_of(self.host_name) if self.addresses else None
            addresses_sent = False
            for publication in self.publications:
                zone = await self._zone_of(publication.owner)
                with_addresses = self.addresses if (zone == host_zone and not addresses_sent) else ()
                await self._send(build_withdraw(zone, publication, with_addresses, self.host_name, self._id()))
                addresses_sent = addresses_sent or bool(with_addresses)
            if host_zone is not None and not addresses_sent:
                await self._send(build_withdraw(host_zone, None, self.addresses, self.host_name, self._id()))
        except EmuError as exc:
            log.warning("withdrawing %s from DNS failed: %s", self.host_name, exc)
