"""Client life cycles driven by run_lifecycles over real loopback sockets, with a virtual clock.

The hosts share the clients' VirtualClock, so months pass in milliseconds while every exchange is a
real DCE/RPC conversation over TCP.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import uuid

import pytest

from emu.clock import VirtualClock
from emu.dns.zone import load_master_file
from emu.kms.client import (
    DAY,
    HOUR,
    Activated,
    AttemptFailed,
    BelowThreshold,
    ClientLifecycle,
    ClientState,
    Expired,
    Failover,
    HostAddress,
    Rediscovery,
    RequestTemplate,
)
from emu.kms.host import HostConfig, KmsHost
from emu.kms.products import lookup
from emu.net.dns_server import DnsServer
from emu.net.kms_client import ExchangeStatus, RpcOptions
from emu.net.kms_lifecycle import LiveClient, dns_resolver, run_lifecycles, static_resolver
from emu.net.kms_server import KmsServer, ServerConfig
from emu.rng import seeded
from emu.wire.kms import Version

SERVER = lookup("srv2019dc")  # threshold 5
OPTIONS = RpcOptions(connect_timeout=2, reply_timeout=2)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def _host(clock: VirtualClock, seed: int) -> KmsServer:
    return KmsServer(
        KmsHost(HostConfig(), seeded(seed), clock.wall()),
        ServerConfig(listen=(("127.0.0.1", 0),)),
        clock=clock,
        rng=seeded(seed + 100),
    )


def _client(
    n: int,
    clock: VirtualClock,
    *,
    host: HostAddress | None = None,
    domain: str | None = None,
    threshold: int = SERVER.threshold,
) -> LiveClient:
    template = RequestTemplate(Version(SERVER.protocol), SERVER.app_id, SERVER.id, SERVER.kms_id, threshold, f"srv{n}")
    lifecycle = ClientLifecycle(
        threshold=threshold, now=clock.now(), cmid=uuid.UUID(int=n + 1), static_host=host, domain=domain
    )
    return LiveClient(lifecycle, template, seeded(n), name=f"srv{n}")


def _events(client: LiveClient, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in client.lifecycle.events if isinstance(e, kind)]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_clients_wait_below_threshold_retry_after_two_hours_then_renew_every_seven_days() -> None:
    clock = VirtualClock()

    async def go() -> list[LiveClient]:
        async with _host(clock, 1) as server:
            address = HostAddress(*server.addresses[0])
            clients = [_client(n, clock, host=address) for n in range(5)]
            await run_lifecycles(clients, clock, until=15 * DAY, options=OPTIONS)
            return clients

    clients = run(go())
    # t=0: counts 1..4 are below the threshold of 5; the fifth client activates at once
    for n, client in enumerate(clients[:4]):
        below = _events(client, BelowThreshold)
        assert [(e.at, e.count, e.retry_at) for e in below] == [(0.0, n + 1, 2 * HOUR)]
    activations = {n: [(e.at, e.count, e.renewal) for e in _events(c, Activated)] for n, c in enumerate(clients)}
    assert activations[4] == [(0.0, 5, False), (7 * DAY, 5, True), (14 * DAY, 5, True)]
    for n in range(4):  # the retry 2 hours later finds the count at 5; renewals follow every 7 days
        assert activations[n] == [(2 * HOUR, 5, False), (2 * HOUR + 7 * DAY, 5, True), (2 * HOUR + 14 * DAY, 5, True)]
    assert all(c.lifecycle.state is ClientState.ACTIVATED for c in clients)
    assert all(
        r.status in (ExchangeStatus.ACTIVATED, ExchangeStatus.BELOW_THRESHOLD) for c in clients for r in c.results
    )
    assert clock.now() == 15 * DAY


@pytest.mark.slow
def test_an_activation_expires_after_180_days_without_a_host() -> None:
    clock = VirtualClock()

    async def go() -> LiveClient:
        server = _host(clock, 2)
        await server.start()
        client = _client(0, clock, host=HostAddress(*server.addresses[0]), threshold=1)
        try:
            await run_lifecycles([client], clock, until=1 * DAY, options=OPTIONS)
        finally:
            await server.stop()  # the host disappears for good
        await run_lifecycles([client], clock, until=181 * DAY, options=OPTIONS)
        return client

    client = run(go())
    assert [e.at for e in _events(client, Activated)] == [0.0]
    assert _events(client, Expired) == [Expired(180 * DAY)]
    assert client.lifecycle.state is ClientState.EXPIRED
    failures = _events(client, AttemptFailed)
    assert failures[0].at == 7 * DAY  # the first renewal finds no host...
    assert all(b.at - a.at == 2 * HOUR for a, b in itertools.pairwise(failures))  # ...then every 2 hours
    assert all(r.status is ExchangeStatus.UNREACHABLE for r in client.results[1:])
    assert "cannot connect to" in failures[0].reason


def test_failover_skips_a_dead_host_and_caches_the_one_that_answered() -> None:
    clock = VirtualClock()

    async def go() -> tuple[LiveClient, list[HostAddress]]:
        async with _host(clock, 3) as b, _host(clock, 4) as c:
            hosts = [
                HostAddress("127.0.0.1", _closed_port()),
                HostAddress(*b.addresses[0]),
                HostAddress(*c.addresses[0]),
            ]
            client = _client(0, clock, domain="kms.test", threshold=1)
            await run_lifecycles(
                [client], clock, until=1 * HOUR, resolver=static_resolver({"kms.test": hosts}), options=OPTIONS
            )
            return client, hosts

    client, hosts = run(go())
    failover = _events(client, Failover)
    assert [(f.failed, f.next_host) for f in failover] == [(hosts[0], hosts[1])]
    assert "cannot connect to" in failover[0].reason
    assert [e.host for e in _events(client, Activated)] == [hosts[1]]
    assert client.lifecycle.cached_host == hosts[1]
    assert [r.host for r in client.results] == hosts[:2]


ZONE = """\
$TTL 60
@        IN SOA ns1 hostmaster 1 3600 600 86400 60
@        IN NS  ns1
ns1      IN A   127.0.0.1
kms-a    IN A   127.0.0.1
kms-b    IN A   127.0.0.1
kms-c    IN A   127.0.0.1
_vlmcs._tcp IN SRV 0 0 {a} kms-a
_vlmcs._tcp IN SRV 10 0 {b} kms-b
_vlmcs._tcp IN SRV 20 0 {c} kms-c
"""


def test_rediscovery_through_emus_dns_when_the_cached_host_dies() -> None:
    clock = VirtualClock()

    async def go() -> tuple[LiveClient, list[HostAddress]]:
        b, c = _host(clock, 5), _host(clock, 6)
        await b.start()
        await c.start()
        try:
            hosts = [
                HostAddress("127.0.0.1", _closed_port()),
                HostAddress(*b.addresses[0]),
                HostAddress(*c.addresses[0]),
            ]
            zone = load_master_file(ZONE.format(a=hosts[0].port, b=hosts[1].port, c=hosts[2].port), "kms.test")
            async with DnsServer([zone], listen=(("127.0.0.1", 0),)) as dns:
                resolver = dns_resolver(dns.addresses[0], seeded(9))
                client = _client(0, clock, domain="kms.test", threshold=1)
                await run_lifecycles([client], clock, until=1 * DAY, resolver=resolver, options=OPTIONS)
                assert client.lifecycle.cached_host == hosts[1]
                await b.stop()  # the cached host dies before the 7-day renewal
                await run_lifecycles([client], clock, until=8 * DAY, resolver=resolver, options=OPTIONS)
                return client, hosts
        finally:
            await b.stop()
            await c.stop()

    client, hosts = run(go())
    activated = _events(client, Activated)
    assert [(e.at, e.host, e.renewal) for e in activated] == [(0.0, hosts[1], False), (7 * DAY, hosts[2], True)]
    rediscovery = _events(client, Rediscovery)
    assert [e.at for e in rediscovery] == [7 * DAY]
    assert str(hosts[1]) in rediscovery[0].reason
    # priority order from the SRV records: a (dead), b; at renewal: cached b (dead), then DNS: a, b, c
    assert [r.host for r in client.results] == [hosts[0], hosts[1], hosts[1], hosts[0], hosts[1], hosts[2]]
    assert client.lifecycle.cached_host == hosts[2]
