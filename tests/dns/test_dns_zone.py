"""Zones: master files, serial arithmetic, snapshots."""

from __future__ import annotations

import pytest
from dns_testing import ZONE_TEXT
from dnslib import QTYPE

from emu.dns.zone import dump_master_file, load_master_file, serial_gt, serial_next
from emu.errors import UsageError


def test_master_file_relative_names_origin_and_ttls(zone):
    assert zone.origin == "kms.test." and zone.serial == 1
    srv = zone.rrset("_vlmcs._tcp.kms.test.", QTYPE.SRV)
    assert srv.ttl == 600 and str(srv.rdatas[0].target) == "kms1.kms.test."
    assert zone.rrset("kms1.kms.test.", QTYPE.A).ttl == 3600


def test_dump_reads_back_identically(zone):
    text = dump_master_file(zone)
    assert dump_master_file(load_master_file(text, "kms.test")) == text


def test_owner_inherited_from_previous_line():
    zone = load_master_file(ZONE_TEXT + "multi A 10.1.1.1\n      A 10.1.1.2\n", "kms.test")
    assert len(zone.rrset("multi.kms.test.", QTYPE.A).rdatas) == 2


@pytest.mark.parametrize(
    "text, words",
    [
        ("$TTL 60\nx A 10.0.0.1\n", "SOA"),
        (ZONE_TEXT + "x.other.test. A 10.0.0.1\n", "outside"),
        (ZONE_TEXT + "x BOGUS 1\n", "unknown record type"),
        (ZONE_TEXT + "x A not-an-address\n", "line"),
        (ZONE_TEXT + "x CH A 10.0.0.1\n", "class"),
        ("@ SOA ns1 hm ( 1 2 3\n", "unclosed"),
    ],
    ids=["no-soa", "outside-zone", "unknown-type", "bad-rdata", "class-ch", "unclosed-paren"],
)
def test_bad_master_files_name_the_problem(text, words):
    with pytest.raises(UsageError, match=words):
        load_master_file(text, "kms.test")


def test_serial_arithmetic_wraps_per_rfc1982():
    assert serial_gt(2, 1) and not serial_gt(1, 2)
    assert serial_gt(0, 2**32 - 1) and serial_next(2**32 - 1) == 0
    assert not serial_gt(5, 5)


def test_empty_non_terminals_exist(zone):
    assert zone.name_exists("_tcp.kms.test.") and not zone.name_exists("nope.kms.test.")


def test_dump_escapes_txt_so_quotes_and_backslashes_read_back():
    text = (
        "$ORIGIN t.test.\n$TTL 60\n@ IN SOA ns1 host ( 1 3600 600 86400 300 )\n@ NS ns1\nns1 A 127.0.0.1\n"
        'q TXT "say \\"hi\\" there" "back\\\\slash"\n'
    )
    zone = load_master_file(text, "t.test")
    dumped = dump_master_file(zone)
    assert '"say \\"hi\\" there" "back\\\\slash"' in dumped
    again = load_master_file(dumped, "t.test")
    assert dump_master_file(again) == dumped
    rr = next(r for r in again.records() if r.rtype == QTYPE.TXT)
    assert rr.rdata.data == [b'say "hi" there', b"back\\slash"]


def test_dump_writes_binary_txt_bytes_as_decimal_escapes_bind_reads():
    import dns.zone
    from dnslib import TXT

    from emu.dns.zone import RRset, Zone

    base = load_master_file(ZONE_TEXT, "kms.test")
    names: dict = {}
    for rr in base.records():
        node = names.setdefault(str(rr.rname), {})
        old = node.get(rr.rtype)
        node[rr.rtype] = RRset(rr.ttl, (old.rdatas if old else ()) + (rr.rdata,))
    names["bin.kms.test."] = {
        int(QTYPE.TXT): RRset(
            60,
            (
                TXT(
                    [b"a\x07\xff", b'q"\\'],
                ),
            ),
        )
    }
    dumped = dump_master_file(Zone("kms.test", names))
    assert '"a\\007\\255" "q\\"\\\\"' in dumped
    parsed = dns.zone.from_text(dumped, origin="kms.test.", check_origin=False)  # an independent reader
    assert parsed.find_rdataset("bin", "TXT")[0].strings == (b"a\x07\xff", b'q"\\')
