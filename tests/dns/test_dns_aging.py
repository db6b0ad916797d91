"""Aging of published KMS records (kms-behaviour.md 5): an SRV RR at _vlmcs._tcp that its host stops
refreshing goes after --srv-max-age; refreshes keep it; nothing else ages. Virtual time throughout."""

from __future__ import annotations

import asyncio

import pytest
from dns_testing import PEER, ZONE_TEXT, make_update
from dnslib import QTYPE

from emu.clock import VirtualClock
from emu.dns.aging import SrvAging
from emu.dns.publish import Publication, build_publish, build_withdraw
from emu.dns.resolver import Resolver
from emu.dns.tsig import sign_request
from emu.dns.zone import ZoneChange, load_master_file
from emu.errors import UsageError
from emu.wire.dns import Rcode

T0 = 1_800_000_000  # virtual UTC seconds
MAX_AGE = 3600
SRV_OWNER = "_vlmcs._tcp.kms.test."


class Journal:
    def __init__(self) -> None:
        self.entries: list[tuple[ZoneChange, ...]] = []

    def __call__(self, changes) -> None:
        self.entries.append(tuple(changes))


def aging_resolver(key, journal=None, max_age=MAX_AGE, now=T0):
    zone = load_master_file(ZONE_TEXT, "kms.test")
    return Resolver([zone], [key], journal=journal, aging=SrvAging(max_age, [zone], [zone], now))


def send(resolver, key, wire, now):
    signed, _ = sign_request(wire, key, now)
    out = resolver.handle(signed, PEER, now)
    assert out[3] & 0xF == Rcode.NOERROR
    return out


def publish(resolver, key, host, now, message_id=1):
    return send(
        resolver, key, build_publish("kms.test", Publication("kms.test", f"{host}.kms.test"), (), message_id), now
    )


def targets(resolver):
    rrset = resolver.zone("kms.test").rrset(SRV_OWNER, QTYPE.SRV)
    return sorted(str(r.target) for r in rrset.rdatas) if rrset else []


def test_a_host_that_stops_refreshing_is_removed_at_max_age_journaled_serial_bumped_once(key):
    journal = Journal()
    resolver = aging_resolver(key, journal)
    assert resolver.next_deadline() is None  # only the zone file's SRV RR so far: static
    publish(resolver, key, "kms2", T0)
    publish(resolver, key, "kms3", T0, message_id=2)
    serial = resolver.zone("kms.test").serial
    assert resolver.next_deadline() == T0 + MAX_AGE
    assert resolver.on_timer(T0 + MAX_AGE - 1) == 0
    assert targets(resolver) == ["kms1.kms.test.", "kms2.kms.test.", "kms3.kms.test."]
    before = len(journal.entries)
    assert resolver.on_timer(T0 + MAX_AGE) == 2
    assert targets(resolver) == ["kms1.kms.test."]  # the zone file's record never ages
    assert resolver.zone("kms.test").serial == serial + 1  # two RRs, one change, one bump
    assert len(journal.entries) == before + 1
    assert {(c.name, c.rtype) for c in journal.entries[-1]} == {(SRV_OWNER, QTYPE.SRV), ("kms.test.", QTYPE.SOA)}
    assert resolver.next_deadline() is None and resolver.on_timer(T0 + 10 * MAX_AGE) == 0


def test_a_refresh_that_changes_nothing_keeps_the_record_without_a_serial_bump(key):
    resolver = aging_resolver(key)
    publish(resolver, key, "kms2", T0)
    publish(resolver, key, "kms3", T0, message_id=2)
    serial = resolver.zone("kms.test").serial
    publish(resolver, key, "kms2", T0 + MAX_AGE // 2, message_id=3)  # the publisher's re-publication
    assert resolver.zone("kms.test").serial == serial
    assert resolver.next_deadline() == T0 + MAX_AGE  # kms3 is still the oldest
    resolver.on_timer(T0 + MAX_AGE)
    assert targets(resolver) == ["kms1.kms.test.", "kms2.kms.test."]
    assert resolver.next_deadline() == T0 + MAX_AGE // 2 + MAX_AGE
    resolver.on_timer(T0 + MAX_AGE // 2 + MAX_AGE)
    assert targets(resolver) == ["kms1.kms.test."]


def test_other_records_never_age(key):
    resolver = aging_resolver(key)
    update = make_update()
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    update.add("_ldap._tcp.kms.test.", 60, "SRV", "0 0 389 kms2.kms.test.")
    update.add("x._vlmcs._tcp.kms.test.", 60, "TXT", '"not an SRV"')
    update.add(SRV_OWNER, 60, "TXT", '"same owner, other type"')
    send(resolver, key, update.to_wire(), T0)
    zone = resolver.zone("kms.test")
    assert resolver.next_deadline() is None
    assert resolver.on_timer(T0 + 100 * MAX_AGE) == 0
    assert resolver.zone("kms.test") is zone


def test_withdrawn_or_changed_records_stop_being_tracked(key):
    resolver = aging_resolver(key)
    publish(resolver, key, "kms2", T0)
    send(
        resolver,
        key,
        build_withdraw("kms.test", Publication("kms.test", "kms2.kms.test"), (), "kms2.kms.test", 2),
        T0 + 1,
    )
    assert resolver.next_deadline() is None


def test_a_static_record_deleted_and_added_again_is_dynamic(key):
    resolver = aging_resolver(key)
    kms1 = Publication("kms.test", "kms1.kms.test", ttl=600)
    send(resolver, key, build_withdraw("kms.test", kms1, (), "kms1.kms.test", 1), T0)
    send(resolver, key, build_publish("kms.test", kms1, (), 2), T0 + 10)
    assert resolver.next_deadline() == T0 + 10 + MAX_AGE
    resolver.on_timer(T0 + 10 + MAX_AGE)
    assert targets(resolver) == []


def test_max_age_must_be_positive():
    zone = load_master_file(ZONE_TEXT, "kms.test")
    with pytest.raises(UsageError):
        SrvAging(0, [zone], [zone], T0)


# --- the asyncio edge: DnsServer's timer, the Publisher's re-publication, a virtual clock -------------


def test_server_timer_removes_a_crashed_host_and_keeps_a_refreshing_one(key, tmp_path):
    from emu.net.dns_publisher import PublishDomain, Publisher
    from emu.net.dns_server import DnsServer
    from emu.rng import seeded

    clock = VirtualClock()
    sleeps: list[float] = []
    slept = asyncio.Event()
    wake = asyncio.Event()

    async def timer_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        slept.set()
        await wake.wait()
        wake.clear()

    async def timer_runs_at(when: float) -> None:
        clock.advance_to(when)
        slept.clear()
        wake.set()
        await slept.wait()

    async def never(seconds: float) -> None:
        await asyncio.Event().wait()  # refreshes are driven by hand below

    async def main():
        zones = [load_master_file(ZONE_TEXT, "kms.test")]
        async with DnsServer(
            zones, keys=[key], clock=clock, srv_max_age=MAX_AGE, sleep=timer_sleep, state=tmp_path / "dns.sqlite"
        ) as server:
            await slept.wait()
            assert sleeps == [MAX_AGE]  # nothing to age yet
            hosts = [
                Publisher(
                    f"{name}.kms.test",
                    [PublishDomain("kms.test")],
                    dns_server=server.addresses[0],
                    key=key,
                    clock=clock,
                    rng=seeded(i),
                    sleep=never,
                )
                for i, name in enumerate(("kms2", "kms3"))
            ]
            for publisher in hosts:
                await publisher.start()
            await hosts[1].stop(withdraw=False)  # kms3 crashes: it never withdraws
            serial = server.resolver.zone("kms.test").serial
            await timer_runs_at(MAX_AGE / 2)
            assert sleeps[-1] == MAX_AGE / 2  # the timer asks to come back exactly at the deadline
            await hosts[0].publish()  # kms2 refreshes; the zone does not change
            assert server.resolver.zone("kms.test").serial == serial
            await timer_runs_at(MAX_AGE)
            after = (targets(server.resolver), server.resolver.zone("kms.test").serial)
            await timer_runs_at(MAX_AGE * 1.5)
            last = targets(server.resolver)
            await hosts[0].stop(withdraw=False)
            return serial, after, last

    serial, after, last = asyncio.run(asyncio.wait_for(main(), 20))
    assert after == (["kms1.kms.test.", "kms2.kms.test."], serial + 1)
    assert last == ["kms1.kms.test."]


def test_records_restored_from_the_journal_age_from_the_restart(key, tmp_path):
    from emu.net.dns_server import DnsServer

    clock = VirtualClock()
    state = tmp_path / "dns.sqlite"

    async def never(seconds: float) -> None:
        await asyncio.Event().wait()

    async def main():
        zones = [load_master_file(ZONE_TEXT, "kms.test")]
        async with DnsServer(zones, keys=[key], clock=clock, state=state) as server:
            message = build_publish("kms.test", Publication("kms.test", "kms2.kms.test"), (), 1)
            from emu.net.dns_client import send_update

            await send_update(message, server.addresses[0], key=key, clock=clock)
        clock.advance(10 * MAX_AGE)
        async with DnsServer(zones, keys=[key], clock=clock, state=state, srv_max_age=MAX_AGE, sleep=never) as server:
            return server.resolver.next_deadline(), clock.wall()

    deadline, restart = asyncio.run(asyncio.wait_for(main(), 20))
    assert deadline == restart + MAX_AGE


def test_serve_takes_srv_max_age():
    import argparse

    from emu.cli.dns import register

    parser = argparse.ArgumentParser(prog="emu")
    register(parser.add_subparsers())
    assert parser.parse_args(["dns", "serve", "--srv-max-age", "7200"]).srv_max_age == 7200.0
    assert parser.parse_args(["dns", "serve"]).srv_max_age is None
    for bad in ("0", "-5", "nan", "inf", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["dns", "serve", "--srv-max-age", bad])
