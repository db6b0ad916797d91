"""Read captures (pcap or pcapng) into reassembled TCP byte streams.

Scapy reads the file; reassembly is ours so that retransmissions, overlapping and out-of-order
segments, and captures that start or end mid-conversation are handled the same way everywhere
(``emu decode``, replay, the tests). Nothing here raises on odd traffic: what cannot be placed
is reported in :attr:`TcpStream.problems`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from emu.errors import UsageError

__all__ = ["Conversation", "Segment", "SegmentLog", "TcpStream", "read_conversations", "reassemble"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of one direction's byte stream: where it starts in the stream and when it was seen."""

    offset: int
    data: bytes
    time: float


@dataclass(slots=True)
class TcpStream:
    """One direction of a TCP connection, reassembled.

    Attributes:
        data: the contiguous bytes from the first seen sequence number.
        chunks: the segments that contributed new bytes, in stream order (for timestamps).
        problems: gaps and other oddities found while reassembling.
    """

    src: tuple[str, int]
    dst: tuple[str, int]
    data: bytes = b""
    chunks: list[Segment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def time_at(self, offset: int) -> float | None:
        """Capture time of the segment that carried the byte at ``offset``."""
        for chunk in self.chunks:
            if chunk.offset <= offset < chunk.offset + len(chunk.data):
                return chunk.time
        return None


@dataclass(slots=True)
class Conversation:
    """A TCP connection: the client's stream (the side that sent SYN, or spoke first) and the server's."""

    index: int
    client: TcpStream
    server: TcpStream
    start: float

    @property
    def client_addr(self) -> tuple[str, int]:
        return self.client.src

    @property
    def server_addr(self) -> tuple[str, int]:
        return self.client.dst


@dataclass(slots=True)
class SegmentLog:
    """What one direction of a TCP connection carried, segment by segment, before reassembly.

    Fed by :func:`read_conversations` from a file and by ``emu capture`` from a live sniffer.
    """

    src: tuple[str, int]
    dst: tuple[str, int]
    isn: int | None = None
    syn_seen: bool = False
    segments: list[tuple[int, bytes, float]] = field(default_factory=list)
    first_time: float = 0.0

    def observe(self, flags: int, seq: int, payload: bytes, when: float) -> None:
        """Record one TCP segment of this direction (flags as the TCP header's bits)."""
        if flags & 0x02:  # SYN: the stream starts at ISN + 1
            self.isn = seq
            self.syn_seen = True
        if payload:
            self.segments.append((seq, payload, when))


def reassemble(direction: SegmentLog) -> TcpStream:
    """The contiguous byte stream of a direction: retransmissions and overlaps resolved, gaps reported."""
    stream = TcpStream(direction.src, direction.dst)
    if not direction.segments:
        return stream
    base = (
        direction.isn + 1
        if direction.isn is not None and direction.syn_seen
        else min(s for s, _, _ in direction.segments)
    )
    pieces: dict[int, tuple[bytes, float]] = {}
    for seq, payload, when in direction.segments:
        rel = (seq - base) % (1 << 32)
        if rel >= 1 << 31:  # before the base: keep only what lies after it
            cut = (1 << 32) - rel
            if cut >= len(payload):
                continue
            payload, rel = payload[cut:], 0
        old = pieces.get(rel)
        if old is None or len(payload) > len(old[0]):
            pieces[rel] = (payload, when)
    buf = bytearray()
    for rel in sorted(pieces):
        payload, when = pieces[rel]
        end = rel + len(payload)
        if rel > len(buf):
            stream.problems.append(
                f"gap of {rel - len(buf)} bytes at stream offset {len(buf)} (segment missing from the capture)"
            )
            break
        if end <= len(buf):
            continue  # retransmission of bytes already placed
        new = payload[len(buf) - rel :]
        stream.chunks.append(Segment(len(buf), bytes(new), when))
        buf += new
    stream.data = bytes(buf)
    return stream


def read_conversations(path: str | Path) -> list[Conversation]:
    """All TCP conversations of a capture, in the order they started.

    Raises:
        UsageError: the file does not exist or is not a capture Scapy can read.
    """
    from scapy.error import Scapy_Exception
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such capture file")
    directions: dict[tuple[tuple[str, int], tuple[str, int]], SegmentLog] = {}
    order: list[tuple[tuple[str, int], tuple[str, int]]] = []
    truncated = False
    try:
        reader = PcapReader(str(path))
    except (Scapy_Exception, OSError, EOFError, ValueError) as exc:
        raise UsageError(f"{path}: not a pcap or pcapng file Scapy can read ({exc})") from exc
    with reader:
        while True:
            try:
                pkt = reader.read_packet()
            except EOFError:
                break
            except Exception as exc:  # a truncated record at the end of the file
                log.warning("%s: stopped reading at a damaged record: %s", path, exc)
                truncated = True
                break
            if pkt is None:
                break
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            tcp = pkt.getlayer(TCP)
            if ip is None or tcp is None:
                continue
            src, dst = (str(ip.src), int(tcp.sport)), (str(ip.dst), int(tcp.dport))
            key = (src, dst)
            direction = directions.get(key)
            if direction is None:
                direction = directions[key] = SegmentLog(src, dst, first_time=float(pkt.time))
                order.append(key)
            direction.observe(int(tcp.flags), int(tcp.seq), bytes(tcp.payload), float(pkt.time))
    conversations: list[Conversation] = []
    seen: set[frozenset[tuple[str, int]]] = set()
    for key in order:
        pair = frozenset(key)
        if pair in seen:
            continue
        seen.add(pair)
        fwd = directions[key]
        rev = directions.get((key[1], key[0]), SegmentLog(key[1], key[0]))
        # The client is the side whose SYN had no ACK, else the side seen first.
        client, server = fwd, rev
        if rev.syn_seen and not fwd.syn_seen:
            client, server = rev, fwd
        conv = Conversation(len(conversations), reassemble(client), reassemble(server), fwd.first_time)
        if truncated:
            conv.client.problems.append("capture file ends with a damaged record")
        conversations.append(conv)
    return conversations
