"""The resolver's fast path (emu.dns.packing) answers plain queries with exactly the bytes of the
general path (dnslib RRs packed by DNSRecord), over the zone of tests/dns."""

from __future__ import annotations

import dns.message
import dns.rdatatype
import pytest
from dns_testing import NOW, ZONE_TEXT
from dnslib import TXT

from emu.dns.packing import parse_simple_query
from emu.dns.resolver import Peer, Resolver
from emu.dns.zone import RRset, load_master_file

NAMES = [
    "kms.test.",
    "ns1.kms.test.",
    "_vlmcs._tcp.kms.test.",
    "kms1.kms.test.",
    "www.kms.test.",
    "x.wild.kms.test.",
    "a.b.wild.kms.test.",
    "wild.kms.test.",
    "sub.kms.test.",
    "host.sub.kms.test.",
    "ns.sub.kms.test.",
    "_tcp.kms.test.",
    "missing.kms.test.",
    "example.com.",
    "notkms.test.",
    "big.kms.test.",
    "*.wild.kms.test.",
]
TYPES = ["A", "AAAA", "SRV", "TXT", "NS", "SOA", "CNAME", "MX", "ANY", "DS", "PTR", "AXFR", "TKEY"]


def _zone():
    zone = load_master_file(ZONE_TEXT + "kms1 MX 10 kms1\nkms1 PTR www\n", "kms.test")
    editor = zone.edit()
    editor.set_rrset(
        "big.kms.test.", dns.rdatatype.TXT, RRset(60, tuple(TXT(("x" * 200 + str(i)).encode()) for i in range(10)))
    )
    return editor.commit()


def _queries():
    for name in NAMES:
        for rtype in TYPES:
            for spelled in (name, name.upper(), name.title()):
                query = dns.message.make_query(spelled, rtype)
                query.flags = 0x0110 if rtype == "A" else 0x0100  # RD; CD copied too
                yield f"{spelled} {rtype}", query.to_wire()
        wire = bytearray(dns.message.make_query(name, "A").to_wire())
        wire[-1] = 3  # class CH: REFUSED
        yield f"{name} A CH", bytes(wire)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_fast_and_general_paths_give_identical_bytes(key, transport):
    zone = _zone()
    fast = Resolver([zone], [key], cache_size=0)
    general = Resolver([zone], [key], cache_size=0, fast_path=False)
    peer = Peer("127.0.0.1", 5300, transport)
    count = 0
    for label, wire in _queries():
        assert parse_simple_query(wire) is not None, label
        assert fast.handle(wire, peer, NOW) == general.handle(wire, peer, NOW), label
        count += 1
    assert count == len(NAMES) * (len(TYPES) * 3 + 1)


def test_plain_queries_do_not_need_the_general_decoder(key, monkeypatch):
    import emu.dns.resolver as module

    resolver = Resolver([_zone()], [key], cache_size=0)
    wire = dns.message.make_query("_vlmcs._tcp.kms.test.", "SRV").to_wire()
    expected = Resolver([_zone()], [key], cache_size=0, fast_path=False).handle(wire, Peer("127.0.0.1", 1), NOW)

    def broken(data):
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(module, "decode_message", broken)
    assert resolver.handle(wire, Peer("127.0.0.1", 1), NOW) == expected


@pytest.mark.parametrize(
    "wire",
    [
        dns.message.make_query("kms1.kms.test.", "A", use_edns=0).to_wire(),  # EDNS
        b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00" + b"\x04kms1\x03kms\x04test\x00\x00\x01\x00\x01" * 2,
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # a pointer
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03a.b\x00\x00\x01\x00\x01",  # a dot inside a label
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04kms1\x00\x00\x01\x00\x01\x00",  # a trailing byte
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04kms1\x00\x00\x01",  # cut short
        b"\x12\x34\x29\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04kms1\x00\x00\x01\x00\x01",  # UPDATE opcode
    ],
    ids=["edns", "two-questions", "pointer", "dot-in-label", "trailing", "short", "opcode"],
)
def test_anything_else_goes_to_the_general_path(key, wire):
    assert parse_simple_query(wire) is None
    zone = _zone()
    peer = Peer("127.0.0.1", 1)
    assert Resolver([zone], [key], cache_size=0).handle(wire, peer, NOW) == Resolver(
        [zone], [key], cache_size=0, fast_path=False
    ).handle(wire, peer, NOW)
