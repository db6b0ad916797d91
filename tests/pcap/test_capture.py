"""emu capture: live summaries decoded through emu.wire, options, and a live loopback capture (root)."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from pathlib import Path

import pytest
from emu_testing import ROOT

from emu.errors import UsageError
from emu.pcap.live import CaptureOptions, ExchangeSummaries, bpf_filter, capture

PCAPS = ROOT / "pcaps"


def _base(rng):
    """A v6 Windows 10 Enterprise request stamped now."""
    import uuid

    from emu.clock import unix_to_filetime
    from emu.kms import products
    from emu.kms.client import RequestTemplate
    from emu.wire.kms import Version

    template = RequestTemplate.of(products.lookup("Windows 10 Enterprise"), "capture-test", version=Version(6))
    return template.base(uuid.UUID(bytes=rng.bytes(16), version=4), unix_to_filetime(time.time()))


def _lines(path: Path, dns_port: int | None = None) -> list[str]:
    import scapy.layers.inet
    import scapy.layers.l2  # noqa: F401
    from scapy.utils import rdpcap

    summaries = ExchangeSummaries(1688, dns_port)
    return [line for frame in rdpcap(str(path)) for line in summaries.feed(frame)]


def test_summary_has_one_line_per_exchange_with_count_and_activation():
    lines = _lines(PCAPS / "emu-v6-ndr64-windows10.pcap")
    assert len(lines) == 2
    assert all("10.0.0.10:49155 -> 10.0.0.1:1688 KMS v6.0 Windows 10/11 Enterprise" in l for l in lines), lines
    assert all("(N=25) activated" in l and "checks ok" in l for l in lines)


def test_summary_names_the_hresult_of_a_refusal():
    [line] = _lines(PCAPS / "emu-v6-hresult-C004F042.pcap")
    assert "HRESULT 0xC004F042" in line and "MISMATCH" in line


def test_summary_of_a_below_threshold_answer_says_not_activated():
    [line] = _lines(PCAPS / "emu-v6-below-threshold.pcap")
    assert "count 1 (N=25) not activated" in line


def test_summary_of_a_v4_exchange():
    [line] = _lines(PCAPS / "emu-v4-ndr32-windows7.pcap")
    assert "KMS v4.0 Windows 7" in line and "activated" in line


def test_filter_adds_dns_only_when_asked():
    assert bpf_filter(CaptureOptions("lo", Path("x.pcap"))) == "(tcp port 1688)"
    assert (
        bpf_filter(CaptureOptions("lo", Path("x.pcap"), port=1700, dns=True, dns_port=5353))
        == "(tcp port 1700) or (port 5353)"
    )


@pytest.mark.parametrize("kw", [dict(interface=""), dict(count=0), dict(duration=-1.0), dict(port=70000)])
def test_bad_options_are_usage_errors(kw):
    args = dict(interface="lo", output=Path("x.pcap")) | kw
    with pytest.raises(UsageError):
        CaptureOptions(**args)


@pytest.mark.skipif(os.geteuid() != 0, reason="sniffing needs root")
def test_loopback_capture_has_no_duplicates_valid_checksums_and_a_line_per_exchange(tmp_path: Path):
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    from emu.kms.client import HostAddress
    from emu.kms.host import HostConfig, KmsHost
    from emu.net.kms_client import exchange
    from emu.net.kms_server import KmsServer, ServerConfig
    from emu.rng import seeded

    out = tmp_path / "lo.pcap"
    stop, started = threading.Event(), threading.Event()
    lines: list[str] = []
    box: dict[str, object] = {}

    async def serve_and_ask() -> None:
        async with KmsServer(
            KmsHost(HostConfig(), seeded(2), time.time()), ServerConfig(listen=(("127.0.0.1", 0),))
        ) as srv:
            port = srv.addresses[0][1]
            box["options"] = CaptureOptions("lo", out, port=port)
            thread = threading.Thread(
                target=lambda: box.setdefault("result", capture(box["options"], lines.append, stop, started))
            )
            thread.start()
            assert started.wait(10)
            rng = seeded(3)
            for _ in range(2):
                await exchange(HostAddress("127.0.0.1", port), _base(rng), rng=rng)
            await asyncio.sleep(0.3)
            stop.set()
            thread.join(10)

    asyncio.run(serve_and_ask())
    frames = rdpcap(str(out))
    raws = [bytes(f) for f in frames]
    assert all(a != b for a, b in itertools.pairwise(raws)), "duplicate loopback frames"
    for frame in frames:
        fresh = frame[IP].copy()
        del fresh.chksum
        del fresh[TCP].chksum
        assert IP(bytes(fresh))[TCP].chksum == frame[TCP].chksum
    assert len(lines) == 2 and all("count 1" in l or "count 2" in l for l in lines), lines
    assert box["result"].frames == len(frames) >= 2 * 12


def test_dns_over_tcp_gets_the_same_line_per_message_as_udp():
    from emu.pcap.dns_decode import read_dns_messages, summary_line
    from emu.pcap.live import _clock

    path = PCAPS / "emu-dns-tcp.pcap"
    messages = read_dns_messages(path)
    assert [m.transport for m in messages] == ["tcp"] * 4
    assert _lines(path, 53) == [
        f"{_clock(m.time)} {m.src[0]}:{m.src[1]} -> {m.dst[0]}:{m.dst[1]} {summary_line(m.message)}" for m in messages
    ]
    assert _lines(path, None) == []  # DNS only when asked, as for UDP
    # The same update over UDP and over TCP reads the same after the message ID.
    udp, tcp = _lines(PCAPS / "emu-dns-publish.pcap", 53), _lines(path, 53)[:2]
    assert [l.split(" id=")[1].split(" ", 1)[1] for l in udp] == [l.split(" id=")[1].split(" ", 1)[1] for l in tcp]


def test_dns_over_tcp_messages_split_and_joined_across_segments_each_get_a_line_when_complete():
    from dnslib import QTYPE, DNSHeader, DNSQuestion, DNSRecord

    from emu.pcap.writer import TcpFlow

    def query(msg_id: int) -> bytes:
        wire = bytes(
            DNSRecord(DNSHeader(id=msg_id, bitmap=0), q=DNSQuestion("_vlmcs._tcp.kms.test.", QTYPE.SRV)).pack()
        )
        return len(wire).to_bytes(2, "big") + wire

    third = query(3)
    flow = TcpFlow(("10.0.0.10", 40000), ("10.0.0.53", 53)).handshake()
    flow.send(True, query(1) + query(2))  # two messages in one segment: frames 3 (data) and 4 (ACK)
    flow.send(True, third[:1])  # half of the length prefix: 5, 6
    flow.send(True, third[1:20])  # the rest of the prefix and part of the message: 7, 8
    flow.send(True, third[20:])  # the end of the message: 9, 10
    flow.send(True, b"\x00\x05abc").close()  # a truncated last message never gets a line
    summaries = ExchangeSummaries(1688, 53)
    per_frame = [summaries.feed(frame) for frame in flow.frames]
    assert [i for i, lines in enumerate(per_frame) if lines] == [3, 9]
    assert [len(per_frame[3]), len(per_frame[9])] == [2, 1]
    ids = [line.split(" id=")[1].split()[0] for lines in per_frame for line in lines]
    assert ids == ["1", "2", "3"]
    assert all(
        "10.0.0.10:40000 -> 10.0.0.53:53 DNS query" in l and "_vlmcs._tcp.kms.test. SRV" in l
        for lines in per_frame
        for l in lines
    )
    assert summaries.exchanges == 0  # KMS exchanges only
