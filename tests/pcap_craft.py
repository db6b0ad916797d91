"""Write small captures with Scapy for the decoder tests: real KMS PDUs in chosen TCP segments.

Each helper takes PDUs cut from a reference capture (so the KMS messages are real and verify)
and lays them out the way a test needs: split across segments, several per segment,
retransmitted, reordered, mixed with UDP/ICMP, one side only, as pcap or pcapng.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emu_testing import whole_pdus

from emu.pcap.reader import read_conversations

CLIENT = ("10.1.0.2", 50123)
SERVER = ("10.1.0.1", 1688)
T0 = 1_800_000_000.0


def exchange(capture: Path, conversation: int = 0) -> list[tuple[str, bytes]]:
    """The PDUs of a reference conversation in order, as ("C"/"S", bytes); assumes strict turn-taking."""
    conv = read_conversations(capture)[conversation]
    client, server = whole_pdus(conv.client.data), whole_pdus(conv.server.data)
    out: list[tuple[str, bytes]] = []
    for i in range(max(len(client), len(server))):
        if i < len(client):
            out.append(("C", client[i]))
        if i < len(server):
            out.append(("S", server[i]))
    return out


@dataclass
class Segment:
    """One TCP segment to write: who sends it, its sequence number, payload and capture time."""

    side: str
    seq: int
    payload: bytes
    time: float


def segments(
    pdus: list[tuple[str, bytes]], size: int | None = None, *, isn: dict[str, int] | None = None
) -> list[Segment]:
    """Lay PDUs out as segments of at most ``size`` bytes (one PDU per segment when ``None``)."""
    seq = dict(isn or {"C": 1000, "S": 5000})
    out = []
    t = T0
    for side, data in pdus:
        step = size or len(data)
        for pos in range(0, len(data), step):
            chunk = data[pos : pos + step]
            out.append(Segment(side, seq[side], chunk, t))
            seq[side] += len(chunk)
            t += 0.001
    return out


def packets(segs: list[Segment], *, client=CLIENT, server=SERVER, handshake: bool = True, ipv6: bool = False):
    """Scapy packets for ``segs`` (with a SYN/SYN-ACK first when ``handshake``)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    net = IPv6 if ipv6 else IP

    def pkt(side: str, seq: int, flags: str, payload: bytes, when: float):
        src, dst = (client, server) if side == "C" else (server, client)
        p = Ether() / net(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], seq=seq, flags=flags)
        if payload:
            p = p / Raw(payload)
        p.time = when
        return p

    out = []
    if handshake:
        out.append(pkt("C", 999, "S", b"", T0 - 0.01))
        out.append(pkt("S", 4999, "SA", b"", T0 - 0.005))
    for s in segs:
        out.append(pkt(s.side, s.seq, "PA", s.payload, s.time))
    return out


def write_pcap(path: Path, pkts) -> Path:
    from scapy.utils import wrpcap

    wrpcap(str(path), pkts)
    return path


def write_pcapng(path: Path, pkts) -> Path:
    from scapy.utils import PcapNgWriter

    with PcapNgWriter(str(path)) as writer:
        for p in pkts:
            writer.write(p)
    return path
