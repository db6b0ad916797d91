"""RFC 2136 rules of dns.md 2.1, one test per rule, through the resolver with dnspython messages."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.rcode
import dns.rdatatype
import pytest
from dns_testing import NOW, PEER, ask, make_update

from emu.dns.policy import Grant, UpdatePolicy
from emu.dns.resolver import Peer, Resolver
from emu.wire.dns import TYPE_SOA


def srv_names(resolver, name="_vlmcs._tcp.kms.test."):
    rrset = resolver.zone("kms.test").rrset(name, dns.rdatatype.SRV)
    return sorted(str(r.target) for r in rrset.rdatas) if rrset else []


def signed(keyring):
    return make_update(keyring)


def test_zone_section_with_two_questions_is_formerr(resolver):
    from dnslib import DNSHeader, DNSQuestion, DNSRecord

    msg = DNSRecord(DNSHeader(id=1, bitmap=5 << 11), questions=[DNSQuestion("kms.test", 6), DNSQuestion("kms.test", 6)])
    out = resolver.handle(bytes(msg.pack()), PEER, NOW)
    assert out[3] & 0xF == dns.rcode.FORMERR


def test_zone_type_other_than_soa_is_formerr(resolver):
    from dnslib import DNSHeader, DNSQuestion, DNSRecord

    msg = DNSRecord(DNSHeader(id=1, bitmap=5 << 11), questions=[DNSQuestion("kms.test", 1)])
    out = resolver.handle(bytes(msg.pack()), PEER, NOW)
    assert out[3] & 0xF == dns.rcode.FORMERR


def test_zone_not_served_is_notauth(resolver, keyring):
    update = make_update(keyring, zone="other.test.")
    update.add("x.other.test.", 60, "A", "10.0.0.9")
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.NOTAUTH


def test_unsigned_update_is_refused_by_default(resolver):
    update = make_update()
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    assert ask(resolver, update).rcode() == dns.rcode.REFUSED
    assert resolver.zone("kms.test").node("kms2.kms.test.") is None


def test_signed_add_is_applied_and_answer_is_signed(resolver, keyring):
    update = signed(keyring)
    update.add("_vlmcs._tcp.kms.test.", 600, "SRV", "0 0 1688 kms2.kms.test.")
    answer = ask(resolver, update, keyring=keyring)
    assert answer.rcode() == dns.rcode.NOERROR
    assert answer.had_tsig
    assert srv_names(resolver) == ["kms1.kms.test.", "kms2.kms.test."]


def test_response_echoes_only_the_zone_section_without_rd_ra(resolver, keyring):
    update = signed(keyring)
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    answer = ask(resolver, update, keyring=keyring)
    assert len(answer.question) == 1 and not answer.answer and not answer.authority
    assert answer.flags & (dns.flags.RD | dns.flags.RA) == 0


@pytest.mark.parametrize(
    "prereq, rcode",
    [
        (lambda u: u.present("missing.kms.test."), dns.rcode.NXDOMAIN),
        (lambda u: u.present("kms1.kms.test.", "TXT"), dns.rcode.NXRRSET),
        (lambda u: u.absent("kms1.kms.test."), dns.rcode.YXDOMAIN),
        (lambda u: u.absent("kms1.kms.test.", "A"), dns.rcode.YXRRSET),
        (lambda u: u.present("kms1.kms.test.", "A", "10.0.0.99"), dns.rcode.NXRRSET),
    ],
    ids=["name-in-use", "rrset-exists", "name-not-in-use", "rrset-does-not-exist", "value-dependent"],
)
def test_each_failing_prerequisite_form_has_its_rcode(resolver, keyring, prereq, rcode):
    update = signed(keyring)
    prereq(update)
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    assert ask(resolver, update, keyring=keyring).rcode() == rcode
    assert resolver.zone("kms.test").node("kms2.kms.test.") is None
    assert resolver.zone("kms.test").serial == 1


@pytest.mark.parametrize(
    "prereq",
    [
        lambda u: u.present("kms1.kms.test."),
        lambda u: u.present("kms1.kms.test.", "A"),
        lambda u: u.absent("kms2.kms.test."),
        lambda u: u.absent("kms1.kms.test.", "TXT"),
        lambda u: u.present("kms1.kms.test.", "A", "10.0.0.1"),
    ],
    ids=["name-in-use", "rrset-exists", "name-not-in-use", "rrset-does-not-exist", "value-dependent"],
)
def test_each_holding_prerequisite_form_lets_the_update_through(resolver, keyring, prereq):
    update = signed(keyring)
    prereq(update)
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.NOERROR


def test_value_dependent_prerequisite_needs_the_whole_rrset(resolver, keyring):
    update = signed(keyring)
    update.add("kms1.kms.test.", 60, "A", "10.0.0.5")
    ask(resolver, update, keyring=keyring)
    partial = signed(keyring)
    partial.present("kms1.kms.test.", "A", "10.0.0.1")
    partial.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    assert ask(resolver, partial, keyring=keyring).rcode() == dns.rcode.NXRRSET


def test_prerequisite_with_nonzero_ttl_is_formerr(resolver, keyring):
    import dns.rrset

    update = signed(keyring)
    rrset = dns.rrset.from_text("kms1.kms.test.", 5, "IN", "A", "10.0.0.1")
    update.prerequisite.append(rrset)
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.FORMERR


def test_prerequisite_outside_zone_is_notzone(resolver, keyring):
    update = signed(keyring)
    update.present("kms1.other.test.")
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.NOTZONE


def test_update_outside_zone_is_notzone_and_nothing_is_applied(resolver, keyring):
    update = signed(keyring)
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    update.add("kms2.notkms.test.", 60, "A", "10.0.0.2")
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.NOTZONE
    assert resolver.zone("kms.test").node("kms2.kms.test.") is None


def _raw_update_rr(name: str, rtype: int, rclass: int, ttl: int, rdata: bytes):
    """A signed-by-nobody update message with one hand-made RR in the update section."""
    from dnslib import RD, RR, DNSHeader, DNSQuestion, DNSRecord

    record = DNSRecord(DNSHeader(id=7, bitmap=5 << 11), questions=[DNSQuestion("kms.test", 6)])
    record.add_auth(RR(name, rtype, rclass, ttl, RD(rdata)))
    return bytes(record.pack())


@pytest.mark.parametrize(
    "rtype, rclass, ttl, rdata",
    [
        (255, 1, 60, b""),  # zone class with type ANY
        (252, 1, 60, b"\x00"),  # zone class with AXFR
        (1, 255, 60, b""),  # class ANY with TTL != 0
        (1, 255, 0, b"\x0a\x00\x00\x01"),  # class ANY with RDATA
        (252, 255, 0, b""),  # class ANY with AXFR
        (1, 254, 60, b"\x0a\x00\x00\x01"),  # class NONE with TTL != 0
        (255, 254, 0, b""),  # class NONE with type ANY
        (1, 3, 0, b"\x0a\x00\x00\x01"),  # class CH
    ],
    ids=["in-any", "in-axfr", "any-ttl", "any-rdata", "any-axfr", "none-ttl", "none-any", "class-ch"],
)
def test_prescan_rejects_malformed_update_rrs_with_formerr(zone, rtype, rclass, ttl, rdata):
    everything_from_loopback = Grant(key=None, networks=(ipaddress.ip_network("127.0.0.0/8"),))
    resolver = Resolver([zone], policy=UpdatePolicy((everything_from_loopback,)))
    out = resolver.handle(_raw_update_rr("kms1.kms.test", rtype, rclass, ttl, rdata), PEER, NOW)
    assert out[3] & 0xF == dns.rcode.FORMERR
    assert resolver.zone("kms.test").serial == 1


def test_delete_rrset_then_add_in_one_message_replaces(resolver, keyring):
    update = signed(keyring)
    update.delete("_vlmcs._tcp.kms.test.", "SRV")
    update.add("_vlmcs._tcp.kms.test.", 600, "SRV", "0 0 1688 kms9.kms.test.")
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.NOERROR
    assert srv_names(resolver) == ["kms9.kms.test."]


def test_delete_one_rr_keeps_the_others(resolver, keyring):
    add = signed(keyring)
    add.add("_vlmcs._tcp.kms.test.", 600, "SRV", "0 0 1688 kms2.kms.test.")
    ask(resolver, add, keyring=keyring)
    delete = signed(keyring)
    delete.delete("_vlmcs._tcp.kms.test.", "SRV", "0 0 1688 KMS1.kms.test.")
    assert ask(resolver, delete, keyring=keyring).rcode() == dns.rcode.NOERROR
    assert srv_names(resolver) == ["kms2.kms.test."]


def test_delete_name_removes_all_its_rrsets(resolver, keyring):
    update = signed(keyring)
    update.delete("kms1.kms.test.")
    ask(resolver, update, keyring=keyring)
    assert resolver.zone("kms.test").node("kms1.kms.test.") is None


def test_delete_name_at_apex_keeps_soa_and_ns(resolver, keyring):
    add = signed(keyring)
    add.add("kms.test.", 60, "TXT", "apex")
    ask(resolver, add, keyring=keyring)
    update = signed(keyring)
    update.delete("kms.test.")
    ask(resolver, update, keyring=keyring)
    node = resolver.zone("kms.test").node("kms.test.")
    assert set(node) == {TYPE_SOA, dns.rdatatype.NS}


def test_apex_ns_rrset_delete_is_ignored_and_last_ns_is_kept(resolver, keyring):
    update = signed(keyring)
    update.delete("kms.test.", "NS")
    update.delete("kms.test.", "NS", "ns1.kms.test.")
    ask(resolver, update, keyring=keyring)
    assert resolver.zone("kms.test").rrset("kms.test.", dns.rdatatype.NS) is not None
    assert resolver.zone("kms.test").serial == 1  # nothing changed, no bump


def test_soa_delete_is_ignored(resolver, keyring):
    update = signed(keyring)
    update.delete("kms.test.", "SOA")
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.NOERROR
    assert resolver.zone("kms.test").serial == 1


def test_added_soa_with_newer_serial_replaces_and_is_not_bumped(resolver, keyring):
    update = signed(keyring)
    update.add("kms.test.", 3600, "SOA", "ns1.kms.test. hostmaster.kms.test. 50 3600 600 86400 300")
    ask(resolver, update, keyring=keyring)
    assert resolver.zone("kms.test").serial == 50


def test_added_soa_with_older_serial_is_ignored(resolver, keyring):
    update = signed(keyring)
    update.add("kms.test.", 3600, "SOA", "ns1.kms.test. hostmaster.kms.test. 0 3600 600 86400 300")
    ask(resolver, update, keyring=keyring)
    assert resolver.zone("kms.test").serial == 1


def test_serial_is_bumped_once_per_changing_update(resolver, keyring):
    update = signed(keyring)
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    update.add("kms3.kms.test.", 60, "A", "10.0.0.3")
    ask(resolver, update, keyring=keyring)
    assert resolver.zone("kms.test").serial == 2


def test_readding_same_rr_refreshes_ttl_without_duplicating(resolver, keyring):
    update = signed(keyring)
    update.add("kms1.kms.test.", 120, "A", "10.0.0.1")
    ask(resolver, update, keyring=keyring)
    rrset = resolver.zone("kms.test").rrset("kms1.kms.test.", dns.rdatatype.A)
    assert rrset.ttl == 120 and len(rrset.rdatas) == 1


def test_deleting_what_does_not_exist_is_noerror_without_bump(resolver, keyring):
    update = signed(keyring)
    update.delete("nothing.kms.test.", "A", "10.0.0.1")
    update.delete("nothing.kms.test.")
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.NOERROR
    assert resolver.zone("kms.test").serial == 1


def test_cname_is_not_added_to_a_name_with_data_and_data_not_to_a_cname(resolver, keyring):
    update = signed(keyring)
    update.add("kms1.kms.test.", 60, "CNAME", "other.kms.test.")
    update.add("www.kms.test.", 60, "A", "10.0.0.7")
    ask(resolver, update, keyring=keyring)
    zone = resolver.zone("kms.test")
    assert zone.rrset("kms1.kms.test.", dns.rdatatype.CNAME) is None
    assert zone.rrset("www.kms.test.", dns.rdatatype.A) is None


def test_policy_refusal_comes_after_prerequisites(zone, key, keyring):
    policy = UpdatePolicy((Grant(key=key.name, name="_vlmcs._tcp", types=frozenset({dns.rdatatype.SRV})),))
    resolver = Resolver([zone], [key], policy)
    update = signed(keyring)
    update.present("missing.kms.test.")
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.NXDOMAIN
    update = signed(keyring)
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    assert ask(resolver, update, keyring=keyring).rcode() == dns.rcode.REFUSED


def test_policy_srv_target_limits_a_key_to_its_own_records(zone, key, keyring):
    policy = UpdatePolicy(
        (
            Grant(
                key=key.name,
                name="_vlmcs._tcp",
                types=frozenset({dns.rdatatype.SRV}),
                srv_targets=frozenset({"kms2.kms.test."}),
            ),
        )
    )
    resolver = Resolver([zone], [key], policy)
    other = signed(keyring)
    other.delete("_vlmcs._tcp.kms.test.", "SRV", "0 0 1688 kms1.kms.test.")
    assert ask(resolver, other, keyring=keyring).rcode() == dns.rcode.REFUSED
    own = signed(keyring)
    own.add("_vlmcs._tcp.kms.test.", 600, "SRV", "0 0 1688 kms2.kms.test.")
    assert ask(resolver, own, keyring=keyring).rcode() == dns.rcode.NOERROR


def test_nonsecure_policy_accepts_unsigned_srv_from_listed_network_only(zone):
    resolver = Resolver([zone], policy=UpdatePolicy.with_nonsecure(["127.0.0.0/8"]))
    update = make_update()
    update.add("_vlmcs._tcp.kms.test.", 600, "SRV", "0 0 1688 kms2.kms.test.")
    assert ask(resolver, update).rcode() == dns.rcode.NOERROR
    txt = make_update()
    txt.add("kms2.kms.test.", 60, "TXT", "nope")
    assert ask(resolver, txt).rcode() == dns.rcode.REFUSED
    far = make_update()
    far.add("_vlmcs._tcp.kms.test.", 600, "SRV", "0 0 1688 kms3.kms.test.")
    assert ask(resolver, far, peer=Peer("192.0.2.1", 5, "udp")).rcode() == dns.rcode.REFUSED


def test_journal_receives_changes_before_they_are_visible(zone, key, keyring):
    seen = []

    def journal(changes):
        seen.append((list(changes), resolver.zone("kms.test").serial))

    resolver = Resolver([zone], [key], journal=journal)
    update = signed(keyring)
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    ask(resolver, update, keyring=keyring)
    changes, serial_seen = seen[0]
    assert serial_seen == 1  # the journal ran before the new snapshot was installed
    assert {(c.name, c.rtype) for c in changes} == {("kms2.kms.test.", dns.rdatatype.A), ("kms.test.", TYPE_SOA)}


def test_journal_failure_gives_servfail_and_no_change(zone, key, keyring):
    def journal(changes):
        raise OSError("disk full")

    resolver = Resolver([zone], [key], journal=journal)
    update = signed(keyring)
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    out = resolver.handle(update.to_wire(), PEER, NOW)
    assert out[3] & 0xF == dns.rcode.SERVFAIL
    assert resolver.zone("kms.test").node("kms2.kms.test.") is None
