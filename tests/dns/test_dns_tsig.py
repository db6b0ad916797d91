"""TSIG (RFC 8945, dns.md 2.3): verification over raw bytes, error answers, key files."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.tsig
import pytest
from dns_testing import NOW, PEER, SECRET, ask, key_file_text, make_update

from emu.dns.resolver import Peer
from emu.dns.tsig import TsigKey, parse_key_file, sign_request, verify_request
from emu.errors import UsageError
from emu.wire.dns import Rcode, decode_message


def _tsig_error(out: bytes):
    message = decode_message(out)
    return message.header.flags & 0xF, message.tsig


def signed_update(keyring, name="kms2.kms.test."):
    update = make_update(keyring)
    update.add(name, 60, "A", "10.0.0.2")
    return update


def test_dnspython_signature_verifies(key, keyring):
    check = verify_request(decode_message(signed_update(keyring).to_wire()), {key.name: key}, NOW)
    assert check.ok and check.key == key


def test_unknown_key_is_notauth_badkey_unsigned(resolver):
    other = {dns.name.from_text("stranger"): dns.tsig.Key("stranger", SECRET, dns.tsig.HMAC_SHA256)}
    rcode, tsig = _tsig_error(resolver.handle(signed_update(other).to_wire(), PEER, NOW))
    assert rcode == Rcode.NOTAUTH and tsig.error == Rcode.BADKEY and tsig.mac == b""


def test_flipped_bit_is_notauth_badsig_unsigned(resolver, keyring):
    wire = bytearray(signed_update(keyring).to_wire())
    wire[14] ^= 0x01  # inside the zone name
    rcode, tsig = _tsig_error(resolver.handle(bytes(wire), PEER, NOW))
    assert rcode == Rcode.NOTAUTH and tsig.error == Rcode.BADSIG and tsig.mac == b""
    assert resolver.zone("kms.test").node("kms2.kms.test.") is None


def test_stale_time_is_badtime_signed_with_server_time(resolver, keyring, key):
    update = signed_update(keyring)
    out = resolver.handle(update.to_wire(), PEER, NOW + 3600)
    rcode, tsig = _tsig_error(out)
    assert rcode == Rcode.NOTAUTH and tsig.error == Rcode.BADTIME
    assert len(tsig.mac) == 32 and int.from_bytes(tsig.other, "big") == NOW + 3600
    assert tsig.time_signed == decode_message(update.to_wire()).tsig.time_signed


def test_truncated_mac_below_half_is_formerr(key):
    wire, _ = sign_request(dns.message.make_query("kms.test.", "SOA").to_wire(), key, NOW)
    message = decode_message(wire)
    from dataclasses import replace

    short = replace(message, tsig=replace(message.tsig, mac=message.tsig.mac[:8]))
    assert verify_request(short, {key.name: key}, NOW).rcode == Rcode.FORMERR


def test_our_signed_request_is_accepted_by_dnspython(key, keyring):
    wire, _ = sign_request(dns.message.make_query("kms.test.", "SOA").to_wire(), key, NOW)
    message = dns.message.from_wire(wire, keyring=keyring)
    assert message.had_tsig


def test_signed_query_gets_a_signed_answer(resolver, keyring):
    query = dns.message.make_query("kms1.kms.test.", "A")
    query.use_tsig(keyring, algorithm=dns.tsig.HMAC_SHA256)
    answer = ask(resolver, query, keyring=keyring)
    assert answer.had_tsig and answer.rcode() == dns.rcode.NOERROR


def test_signed_answers_are_not_served_from_cache(resolver, keyring):
    for _ in range(2):
        query = dns.message.make_query("kms1.kms.test.", "A")
        query.use_tsig(keyring, algorithm=dns.tsig.HMAC_SHA256)
        assert ask(resolver, query, keyring=keyring).had_tsig


def test_gss_tsig_is_refused(resolver):
    from emu.wire.dns import TsigRecord, encode_tsig_rr

    wire = make_update().to_wire()
    gss = encode_tsig_rr(
        TsigRecord("kms1-key.", "gss-tsig.", NOW, 300, b"k" * 28, int.from_bytes(wire[:2], "big"), 0, b"")
    )
    wire = wire[:10] + b"\x00\x01" + wire[12:] + gss
    out = resolver.handle(wire, PEER, NOW)
    assert out[3] & 0xF == Rcode.REFUSED


def test_tsig_not_last_is_formerr(resolver, keyring):
    wire = signed_update(keyring).to_wire()
    message = decode_message(wire)
    tsig_rr = wire[message.tsig_offset :]
    extra = b"\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x00\x00\x01"  # root A record
    arcount = int.from_bytes(wire[10:12], "big") + 1
    broken = wire[:10] + arcount.to_bytes(2, "big") + wire[12 : message.tsig_offset] + tsig_rr + extra
    out = resolver.handle(broken, PEER, NOW)
    assert out[3] & 0xF == Rcode.FORMERR


def test_key_file_from_tsig_keygen_format_parses():
    (key,) = parse_key_file(key_file_text())
    assert key == TsigKey.make("kms1-key", SECRET)


def test_key_file_with_several_keys_and_comments():
    text = "# made by hand\n" + key_file_text("a") + "// second\n" + key_file_text("b", b"\x01" * 32)
    assert [k.name for k in parse_key_file(text)] == ["a.", "b."]


def test_a_secret_holding_two_slashes_is_not_taken_for_a_comment():
    secret = bytes.fromhex("fffffc") * 10 + b"ab"  # base64 "///8" repeated: "//" inside the quoted secret
    text = key_file_text("slashes", secret) + "# a comment after it\n"
    assert "//" in text.split("secret")[1]
    (key,) = parse_key_file(text)
    assert key.secret == secret


@pytest.mark.parametrize(
    "text",
    [
        "",
        'key "k" { algorithm hmac-sha256; };',
        'key "k" { algorithm hmac-sha256; secret "!!"; };',
        'key "k" { algorithm rot13; secret "AAAA"; };',
    ],
    ids=["empty", "no-secret", "bad-base64", "unknown-algorithm"],
)
def test_bad_key_files_are_usage_errors(text):
    with pytest.raises(UsageError):
        parse_key_file(text)


# --- replay (RFC 8945 5.2.3: BADTIME for a Time Signed already seen) -------------------------------


def _unsigned_add(name="kms2.kms.test.", address="10.0.0.2"):
    update = make_update()
    update.add(name, 60, "A", address)
    return update.to_wire()


def _record(mac: bytes, time_signed: int = NOW, fudge: int = 300, key_name: str = "kms1-key."):
    from emu.wire.dns import TsigRecord

    return TsigRecord(key_name, "hmac-sha256.", time_signed, fudge, mac, 1, 0, b"")


def test_repeated_update_gets_its_first_answer_again_and_changes_nothing(resolver, key):
    add, _ = sign_request(_unsigned_add(), key, NOW)
    first = resolver.handle(add, PEER, NOW)
    assert first[3] & 0xF == Rcode.NOERROR
    remove = make_update()
    remove.delete("kms2.kms.test.")
    delete, _ = sign_request(remove.to_wire(), key, NOW + 1)
    assert resolver.handle(delete, PEER, NOW + 1)[3] & 0xF == Rcode.NOERROR
    serial = resolver.zone("kms.test").serial
    for transport in ("udp", "tcp"):  # a retransmission after a lost reply, or someone's replay
        assert resolver.handle(add, Peer("127.0.0.1", 40001, transport), NOW + 2) == first
    assert resolver.zone("kms.test").node("kms2.kms.test.") is None  # the add was not applied again
    assert resolver.zone("kms.test").serial == serial


def test_dnspython_reads_the_repeated_answer_as_the_signed_first_one(resolver, key, keyring):
    add, mac = sign_request(_unsigned_add(), key, NOW)
    resolver.handle(add, PEER, NOW)
    again = dns.message.from_wire(resolver.handle(add, PEER, NOW + 5), keyring=keyring, request_mac=mac)
    assert again.rcode() == Rcode.NOERROR and again.had_tsig


def test_replay_of_a_forgotten_update_is_notauth_badtime_signed_and_changes_nothing(zone, key, keyring):
    from emu.dns.resolver import Resolver

    resolver = Resolver([zone], [key], replay_cache_size=1)
    add, mac = sign_request(_unsigned_add(), key, NOW)
    assert resolver.handle(add, PEER, NOW)[3] & 0xF == Rcode.NOERROR
    other, _ = sign_request(_unsigned_add("kms3.kms.test.", "10.0.0.3"), key, NOW + 1)
    assert resolver.handle(other, PEER, NOW + 1)[3] & 0xF == Rcode.NOERROR  # evicts the first entry
    remove = make_update()
    remove.delete("kms2.kms.test.")
    delete, _ = sign_request(remove.to_wire(), key, NOW + 2)
    resolver.handle(delete, PEER, NOW + 2)  # refused too: behind the horizon, cache size 1
    serial = resolver.zone("kms.test").serial
    out = resolver.handle(add, PEER, NOW + 3)
    rcode, tsig = _tsig_error(out)
    assert rcode == Rcode.NOTAUTH and tsig.error == Rcode.BADTIME and len(tsig.mac) == 32
    assert int.from_bytes(tsig.other, "big") == NOW + 3
    with pytest.raises(dns.tsig.PeerBadTime):
        dns.message.from_wire(out, keyring=keyring, request_mac=mac)
    assert resolver.zone("kms.test").serial == serial


def test_the_same_update_signed_again_is_accepted(resolver, key):
    wire = _unsigned_add()
    first, _ = sign_request(wire, key, NOW)
    again, _ = sign_request(wire, key, NOW + 1)
    assert resolver.handle(first, PEER, NOW)[3] & 0xF == Rcode.NOERROR
    assert resolver.handle(again, PEER, NOW + 1)[3] & 0xF == Rcode.NOERROR


def test_signed_queries_may_be_repeated(resolver, key):
    wire, _ = sign_request(dns.message.make_query("kms1.kms.test.", "A").to_wire(), key, NOW)
    for transport in ("udp", "tcp"):  # a truncated UDP answer is asked again over TCP, same bytes
        assert resolver.handle(wire, Peer("127.0.0.1", 40001, transport), NOW)[3] & 0xF == Rcode.NOERROR


def test_replay_cache_entry_lives_exactly_its_fudge_window():
    from emu.dns.tsig import ReplayCache

    cache = ReplayCache()
    assert cache.admit(_record(b"a" * 32), NOW)
    assert not cache.admit(_record(b"a" * 32), NOW + 300)  # still inside time signed + fudge
    assert cache.admit(_record(b"b" * 32, NOW + 301), NOW + 301)
    assert len(cache) == 1  # the first entry expired: it would fail the time check anyway
    assert not cache.admit(_record(b"b" * 32, NOW + 301), NOW + 301)


def test_replay_cache_is_bounded_and_never_readmits_an_evicted_entry():
    from emu.dns.tsig import ReplayCache

    cache = ReplayCache(max_entries=3)
    records = [_record(bytes([i]) * 32, NOW + i) for i in range(10)]
    for i, record in enumerate(records):
        assert cache.admit(record, NOW + i)
        assert len(cache) <= 3
    assert not any(cache.admit(record, NOW + 9) for record in records)  # kept or behind the horizon
    assert cache.admit(_record(b"new" * 11, NOW + 10), NOW + 10)
    assert len(cache) == 3


def test_repeat_with_another_message_id_is_answered_with_that_id_and_a_valid_signature(resolver, key, keyring):
    add, mac = sign_request(_unsigned_add(), key, NOW)
    resolver.handle(add, PEER, NOW)
    other_id = bytes([add[0] ^ 0xFF, add[1]]) + add[2:]  # the MAC covers the original ID (RFC 8945)
    out = resolver.handle(other_id, PEER, NOW + 1)
    assert out[:2] == other_id[:2]
    again = dns.message.from_wire(out, keyring=keyring, request_mac=mac)
    assert again.rcode() == Rcode.NOERROR and again.had_tsig
