"""The KMS host's publisher and the clients' discovery, against emu's server over loopback."""

from __future__ import annotations

import asyncio

import dns.message
import dns.rdataclass
import pytest
from dns_testing import ZONE_TEXT
from dnslib import QTYPE

from emu.dns.publish import Publication, build_change, build_publish, build_withdraw
from emu.dns.zone import load_master_file
from emu.errors import DnsUpdateError, UsageError
from emu.net.dns_discovery import discover_kms_hosts, discover_kms_targets
from emu.net.dns_publisher import PublishDomain, Publisher, parse_publish_entry
from emu.net.dns_server import DnsServer
from emu.rng import seeded

SECOND_ZONE = ZONE_TEXT.replace("kms.test.", "corp.test.")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def zones():
    return [load_master_file(ZONE_TEXT, "kms.test"), load_master_file(SECOND_ZONE, "corp.test")]


def srv_targets(server, domain="kms.test"):
    rrset = server.resolver.zone(domain).rrset(f"_vlmcs._tcp.{domain}.", QTYPE.SRV)
    return sorted((str(r.target), r.priority, r.weight) for r in rrset.rdatas) if rrset else []


def test_change_message_deletes_old_rdata_and_adds_new_without_rrset_delete():
    old = Publication("kms.test", "kms2.kms.test", priority=0, weight=0)
    new = Publication("kms.test", "kms2.kms.test", priority=10, weight=5)
    message = dns.message.from_wire(build_change("kms.test", old, new, 1))
    # dnspython shows the class of an update RR as the zone class plus a "deleting" class
    assert [rrset.deleting for rrset in message.update] == [dns.rdataclass.NONE, None]


def test_withdraw_message_only_names_our_own_rrs():
    publication = Publication("kms.test", "kms2.kms.test")
    message = dns.message.from_wire(build_withdraw("kms.test", publication, ("10.0.0.2",), "kms2.kms.test", 1))
    assert {rrset.deleting for rrset in message.update} == {dns.rdataclass.NONE}
    assert len(message.update) == 2


def test_publish_message_adds_srv_and_addresses():
    message = dns.message.from_wire(
        build_publish("kms.test", Publication("kms.test", "kms2.kms.test"), ("10.0.0.2", "fd00::2"), 1)
    )
    assert sorted(dns.rdatatype.to_text(r.rdtype) for r in message.update) == ["A", "AAAA", "SRV"]


def test_publication_checks_ranges():
    with pytest.raises(UsageError):
        Publication("kms.test", "h", priority=70000)


def test_publish_entry_parsing_like_dnsdomainpublishlist():
    assert parse_publish_entry("kms.test, 10, 5") == PublishDomain("kms.test", 10, 5)
    assert parse_publish_entry("kms.test") == PublishDomain("kms.test")
    with pytest.raises(UsageError):
        parse_publish_entry("kms.test, ten")


def test_publish_change_refresh_and_withdraw_leave_other_hosts_alone(key):
    refresh_now = asyncio.Event()
    refreshed = asyncio.Event()

    async def fake_sleep(seconds):
        refreshed.set()
        await refresh_now.wait()
        refresh_now.clear()

    async def main():
        async with DnsServer(zones(), keys=[key]) as server:
            publisher = Publisher(
                "kms2.kms.test",
                [PublishDomain("kms.test"), PublishDomain("corp.test", 5, 1)],
                dns_server=server.addresses[0],
                key=key,
                addresses=("10.0.0.2", "fd00::2"),
                rng=seeded(1),
                sleep=fake_sleep,
            )
            await publisher.start()
            published = (srv_targets(server), srv_targets(server, "corp.test"))
            await publisher.change(priority=10, weight=3, domain="kms.test")
            changed = srv_targets(server)
            serial = server.resolver.zone("kms.test").serial
            await refreshed.wait()
            refreshed.clear()
            refresh_now.set()
            await refreshed.wait()  # the loop came back to sleep: one refresh happened
            refreshes = publisher.refreshes
            await publisher.stop()
            withdrawn = (
                srv_targets(server),
                srv_targets(server, "corp.test"),
                server.resolver.zone("kms.test").node("kms2.kms.test."),
            )
            return published, changed, serial, refreshes, withdrawn

    published, changed, _serial, refreshes, withdrawn = run(main())
    assert published[0] == [("kms1.kms.test.", 0, 0), ("kms2.kms.test.", 0, 0)]
    assert ("kms2.kms.test.", 5, 1) in published[1]
    assert changed == [("kms1.kms.test.", 0, 0), ("kms2.kms.test.", 10, 3)]
    assert refreshes == 1
    assert withdrawn[0] == [("kms1.kms.test.", 0, 0)] and withdrawn[2] is None
    assert ("kms2.kms.test.", 5, 1) not in withdrawn[1]


def test_publisher_without_key_is_refused(key):
    async def main():
        async with DnsServer(zones(), keys=[key]) as server:
            publisher = Publisher(
                "kms2.kms.test", [PublishDomain("kms.test")], dns_server=server.addresses[0], rng=seeded(1)
            )
            with pytest.raises(DnsUpdateError) as info:
                await publisher.start()
            return info.value.wire_code

    assert run(main()) == 5  # REFUSED


def test_discovery_orders_targets_and_resolves_addresses(key):
    async def main():
        async with DnsServer(zones(), keys=[key]) as server:
            publisher = Publisher(
                "kms2.kms.test",
                [PublishDomain("kms.test", 10, 0)],
                dns_server=server.addresses[0],
                key=key,
                addresses=("10.0.0.2",),
                rng=seeded(2),
            )
            await publisher.start()
            hosts = await discover_kms_hosts("kms.test", server.addresses[0], seeded(3))
            targets = await discover_kms_targets("kms.test", server.addresses[0], seeded(3))
            await publisher.stop()
            return hosts, targets

    hosts, targets = run(main())
    assert hosts == [("10.0.0.1", 1688), ("fd00::1", 1688), ("10.0.0.2", 1688)]
    assert [t.host for t in targets] == ["kms1.kms.test.", "kms2.kms.test."]


def test_discovery_resolves_targets_missing_from_additional(key):
    text = ZONE_TEXT.replace("_vlmcs._tcp  600 IN SRV 0 0 1688 kms1", "_vlmcs._tcp  600 IN SRV 0 0 1700 www")

    async def main():
        async with DnsServer([load_master_file(text, "kms.test")], keys=[key]) as server:
            return await discover_kms_hosts("kms.test", server.addresses[0], seeded(1))

    assert run(main()) == [("10.0.0.1", 1700), ("fd00::1", 1700)]  # www is a CNAME: no glue, follow-up query
