"""pcaps/: every sample capture decodes to its sidecar, has a README line, and make-pcaps reproduces it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from emu_testing import ROOT, TSHARK_ENV, require_tool

from emu.pcap.dns_decode import dns_records
from emu.pcap.kms_decode import decode_capture

PCAP_DIR = ROOT / "pcaps"
PCAPS = sorted(PCAP_DIR.glob("*.pcap"))
DNS_PCAPS = sorted(PCAP_DIR.glob("emu-dns-*.pcap"))


def test_sample_captures_exist():
    assert len(PCAPS) >= 10 and len(DNS_PCAPS) == 3, "run scripts/make-pcaps"


@pytest.mark.parametrize("path", PCAPS, ids=lambda p: p.name)
def test_sample_capture_decodes_to_its_sidecar(path: Path):
    sidecar = json.loads(path.with_suffix(".json").read_text())
    decoded = decode_capture(path)
    assert decoded.conversations == sidecar["conversations"]
    assert list(decoded.kms_conversations) == sidecar["kms_conversations"]
    records = [p.to_json() for p in decoded.pdus] + [n.to_json() for n in decoded.notes]
    assert json.loads(json.dumps(records)) == sidecar["records"]
    assert decoded.ok
    assert dns_records(path) == sidecar.get("dns", [])


def test_dns_publication_capture_is_a_signed_update_answered_noerror():
    update, answer = json.loads((PCAP_DIR / "emu-dns-publish.json").read_text())["dns"]
    assert (update["kind"], answer["kind"], answer["rcode"]) == ("update", "update-response", "NOERROR")
    assert update["tsig"]["key"] == answer["tsig"]["key"] == "emu-test-key."
    assert [u.split()[3] for u in update["updates"]] == ["SRV", "A"]


def test_dns_discovery_capture_answers_the_srv_with_the_a_in_additional():
    query, answer = json.loads((PCAP_DIR / "emu-dns-discovery.json").read_text())["dns"]
    assert query["question"] == ["_vlmcs._tcp.kms.test. SRV"] and answer["rcode"] == "NOERROR"
    assert answer["answers"] == ["_vlmcs._tcp.kms.test. 3600 IN SRV 0 100 1688 kms1.kms.test."]
    assert answer["additional"] == ["kms1.kms.test. 3600 IN A 10.0.0.1"]


def test_dns_tcp_capture_carries_the_signed_update_and_the_srv_query_over_tcp():
    update, answer, query, reply = json.loads((PCAP_DIR / "emu-dns-tcp.json").read_text())["dns"]
    assert {m["transport"] for m in (update, answer, query, reply)} == {"tcp"}
    assert [m["kind"] for m in (update, answer, query, reply)] == ["update", "update-response", "query", "response"]
    assert (update["src"], answer["dst"], query["src"], reply["dst"]) == (
        "10.0.0.1:53011",
        "10.0.0.1:53011",
        "10.0.0.10:53012",
        "10.0.0.10:53012",
    )
    assert update["tsig"]["key"] == answer["tsig"]["key"] == "emu-test-key." and answer["tsig"]["error"] == "NOERROR"
    assert [u.split()[3] for u in update["updates"]] == ["SRV", "A"] and answer["rcode"] == "NOERROR"
    assert query["question"] == ["_vlmcs._tcp.kms.test. SRV"] and reply["rcode"] == "NOERROR"
    assert reply["answers"] == ["_vlmcs._tcp.kms.test. 3600 IN SRV 0 100 1688 kms1.kms.test."]
    assert reply["additional"] == ["kms1.kms.test. 3600 IN A 10.0.0.1"]


@pytest.mark.interop
@pytest.mark.parametrize("path", DNS_PCAPS, ids=lambda p: p.name)
def test_tshark_dissects_the_dns_captures_without_malformed_packets(path: Path):
    tshark = require_tool("tshark")
    done = subprocess.run(
        [tshark, "-n", "-r", str(path), "-V"], capture_output=True, text=True, timeout=60, env=TSHARK_ENV
    )
    assert done.returncode == 0, done.stderr
    messages = len(json.loads(path.with_suffix(".json").read_text())["dns"])
    assert messages in (2, 4)
    assert "Malformed" not in done.stdout and done.stdout.count("Domain Name System") == messages
    bad = subprocess.run(
        [tshark, "-n", "-r", str(path), "-Y", "_ws.malformed || _ws.expert.severity >= error"],
        capture_output=True,
        env=TSHARK_ENV,
        text=True,
        timeout=60,
    )
    assert bad.stdout.strip() == ""


def _make_pcaps():
    """scripts/make-pcaps as a module (it has no .py suffix)."""
    import importlib.machinery
    import importlib.util

    if "make_pcaps" in sys.modules:
        return sys.modules["make_pcaps"]
    loader = importlib.machinery.SourceFileLoader("make_pcaps", str(ROOT / "scripts" / "make-pcaps"))
    spec = importlib.util.spec_from_loader("make_pcaps", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_pcaps"] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


def test_failover_capture_is_the_order_the_client_life_cycle_asked_for(tmp_path: Path):
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    from emu.kms.client import Activated, ExchangeAttempted, Failover, HostAddress
    from emu.pcap.writer import write_pcap

    run = _make_pcaps().failover_scenario()
    dead, live = HostAddress("10.0.0.2"), HostAddress("10.0.0.1")
    assert run.discovered == [dead, live] and run.attempts == [dead, live]
    assert [type(e) for e in run.events] == [ExchangeAttempted, Failover, ExchangeAttempted, Activated]
    attempted, failover, _, activated = run.events
    assert (attempted.host, failover.failed, failover.next_host, activated.host) == (dead, dead, live, live)
    assert failover.reason == "unreachable (cannot connect to 10.0.0.2:1688: Connection refused)"
    # The committed capture is exactly those frames: regenerated here, byte for byte.
    path = PCAP_DIR / "emu-v6-failover.pcap"
    assert write_pcap(tmp_path / "failover.pcap", run.frames).read_bytes() == path.read_bytes()
    frames = rdpcap(str(path))
    syns = [HostAddress(f[IP].dst, f[TCP].dport) for f in frames if f[TCP].flags == "S"]
    assert syns == [e.host for e in run.events if isinstance(e, ExchangeAttempted)]
    flags = [str(f[TCP].flags) for f in frames]
    assert flags[:2] == ["S", "RA"] and frames[1][IP].src == "10.0.0.2"  # the dead host: refused
    assert flags[2:5] == ["S", "SA", "A"] and flags[-3:] == ["FA", "FA", "A"]  # the live one: the whole conversation
    assert decode_capture(path).kms_conversations == (1,)


@pytest.mark.parametrize("path", PCAPS, ids=lambda p: p.name)
def test_sample_capture_has_a_readme_line(path: Path):
    assert f"| `{path.name}` |" in (PCAP_DIR / "README.md").read_text()


@pytest.mark.slow
def test_make_pcaps_reproduces_the_committed_files_byte_for_byte(tmp_path: Path):
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make-pcaps"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for path in PCAPS:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
        assert (tmp_path / path.with_suffix(".json").name).read_bytes() == path.with_suffix(".json").read_bytes()
