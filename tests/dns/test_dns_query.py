"""Authoritative answers (dns.md 6 point 1): flags, negative answers, additional data, EDNS, truncation."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from dns_testing import NOW, PEER, ask

from emu.dns.resolver import Peer


def q(name, rtype="A", **kwargs):
    return dns.message.make_query(name, rtype, **kwargs)


def test_answer_sets_aa_clears_ra_and_ad_and_copies_rd(resolver):
    query = q("kms1.kms.test.", "A")
    query.flags |= dns.flags.AD
    answer = ask(resolver, query)
    assert answer.flags & dns.flags.AA and answer.flags & dns.flags.RD
    assert not answer.flags & (dns.flags.RA | dns.flags.AD)
    assert [str(r) for r in answer.answer[0]] == ["10.0.0.1"]


def test_nxdomain_carries_soa_with_negative_ttl(resolver):
    answer = ask(resolver, q("missing.kms.test."))
    assert answer.rcode() == dns.rcode.NXDOMAIN
    assert answer.authority[0].rdtype == dns.rdatatype.SOA and answer.authority[0].ttl == 300


def test_nodata_is_noerror_with_soa(resolver):
    answer = ask(resolver, q("kms1.kms.test.", "TXT"))
    assert answer.rcode() == dns.rcode.NOERROR and not answer.answer
    assert answer.authority[0].rdtype == dns.rdatatype.SOA


def test_empty_non_terminal_is_nodata_not_nxdomain(resolver):
    answer = ask(resolver, q("_tcp.kms.test.", "SRV"))
    assert answer.rcode() == dns.rcode.NOERROR and answer.authority[0].rdtype == dns.rdatatype.SOA


def test_srv_answer_has_target_addresses_in_additional(resolver):
    answer = ask(resolver, q("_vlmcs._tcp.kms.test.", "SRV"))
    extra = {(str(r.name), r.rdtype) for r in answer.additional}
    assert extra == {("kms1.kms.test.", dns.rdatatype.A), ("kms1.kms.test.", dns.rdatatype.AAAA)}


def test_name_outside_zones_is_refused_without_aa(resolver):
    answer = ask(resolver, q("example.com."))
    assert answer.rcode() == dns.rcode.REFUSED and not answer.flags & dns.flags.AA


def test_label_wise_zone_match_refuses_lookalike_zone(resolver):
    assert ask(resolver, q("notkms.test.")).rcode() == dns.rcode.REFUSED


def test_soa_query_for_a_missing_name_finds_the_zone(resolver):
    answer = ask(resolver, q("new-host.kms.test.", "SOA"))
    assert answer.rcode() == dns.rcode.NXDOMAIN and str(answer.authority[0].name) == "kms.test."


def test_cname_is_followed_inside_the_zone(resolver):
    answer = ask(resolver, q("www.kms.test.", "A"))
    assert [rrset.rdtype for rrset in answer.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]


def test_wildcard_synthesizes_under_closest_encloser(resolver):
    answer = ask(resolver, q("anything.wild.kms.test.", "TXT"))
    assert str(answer.answer[0].name) == "anything.wild.kms.test."


def test_delegation_gives_referral_with_glue(resolver):
    answer = ask(resolver, q("host.sub.kms.test.", "A"))
    assert not answer.flags & dns.flags.AA
    assert answer.authority[0].rdtype == dns.rdatatype.NS and answer.additional[0].rdtype == dns.rdatatype.A


def test_edns_opt_is_echoed_with_our_payload_size(resolver):
    answer = ask(resolver, q("kms1.kms.test.", use_edns=0, payload=4096))
    assert answer.edns == 0 and answer.payload == 1232


def test_no_opt_without_edns_in_request(resolver):
    assert ask(resolver, q("kms1.kms.test.")).edns == -1


def test_edns_version_1_gets_badvers(resolver):
    answer = ask(resolver, q("kms1.kms.test.", use_edns=1))
    assert answer.rcode() == dns.rcode.BADVERS


def _big_zone_resolver(zone, key):
    from dnslib import TXT

    from emu.dns.resolver import Resolver
    from emu.dns.zone import RRset

    editor = zone.edit()
    editor.set_rrset(
        "big.kms.test.", dns.rdatatype.TXT, RRset(60, tuple(TXT(("x" * 200 + str(i)).encode()) for i in range(10)))
    )
    return Resolver([editor.commit()], [key])


def test_udp_truncation_keeps_question_and_sets_tc(zone, key):
    resolver = _big_zone_resolver(zone, key)
    out = resolver.handle(q("big.kms.test.", "TXT").to_wire(), PEER, NOW)
    answer = dns.message.from_wire(out)
    assert answer.flags & dns.flags.TC and len(out) <= 512
    assert str(answer.question[0].name) == "big.kms.test." and not answer.answer


def test_tcp_is_not_truncated(zone, key):
    resolver = _big_zone_resolver(zone, key)
    out = resolver.handle(q("big.kms.test.", "TXT").to_wire(), Peer("127.0.0.1", 1, "tcp"), NOW)
    answer = dns.message.from_wire(out)
    assert not answer.flags & dns.flags.TC and len(answer.answer[0]) == 10


def test_edns_payload_raises_the_udp_limit(zone, key):
    resolver = _big_zone_resolver(zone, key)
    out = resolver.handle(q("big.kms.test.", "TXT", use_edns=0, payload=1232).to_wire(), PEER, NOW)
    assert len(out) <= 1232 and dns.message.from_wire(out).flags & dns.flags.TC  # 2 KB does not fit
    small = resolver.handle(q("_vlmcs._tcp.kms.test.", "SRV", use_edns=0, payload=1232).to_wire(), PEER, NOW)
    assert not dns.message.from_wire(small).flags & dns.flags.TC


def test_axfr_and_tkey_queries_are_refused(resolver):
    assert ask(resolver, q("kms.test.", "AXFR")).rcode() == dns.rcode.REFUSED
    assert ask(resolver, q("kms.test.", "TKEY")).rcode() == dns.rcode.REFUSED


def test_other_opcodes_are_notimp(resolver):
    message = q("kms.test.", "SOA")
    message.set_opcode(dns.opcode.NOTIFY)
    assert ask(resolver, message).rcode() == dns.rcode.NOTIMP


def test_responses_are_never_answered(resolver):
    wire = bytearray(q("kms1.kms.test.").to_wire())
    wire[2] |= 0x80
    assert resolver.handle(bytes(wire), PEER, NOW) is None


def test_short_datagram_is_dropped_and_garbage_after_header_is_formerr(resolver):
    assert resolver.handle(b"\x01\x02\x03", PEER, NOW) is None
    out = resolver.handle(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07garbage", PEER, NOW)
    assert out[:2] == b"\xab\xcd" and out[3] & 0xF == dns.rcode.FORMERR


def test_cached_answer_carries_the_new_id_and_follows_updates(resolver, keyring):
    from dns_testing import make_update

    first = q("kms2.kms.test.")
    assert ask(resolver, first).rcode() == dns.rcode.NXDOMAIN
    update = make_update(keyring)
    update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
    ask(resolver, update, keyring=keyring)
    second = q("kms2.kms.test.")
    answer = ask(resolver, second)
    assert answer.id == second.id and answer.rcode() == dns.rcode.NOERROR


def test_internal_error_gives_servfail(resolver, monkeypatch):
    import emu.dns.resolver as module

    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(module, "answer_query", broken)
    out = resolver.handle(q("kms1.kms.test.").to_wire(), PEER, NOW)
    assert out[3] & 0xF == dns.rcode.SERVFAIL
