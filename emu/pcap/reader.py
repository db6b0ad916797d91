"""TCP conversations of a capture, tracked the way the TCP specification and tshark do, and reassembled.

This is the one implementation of TCP conversation tracking in emu: ``emu decode`` (and its
``--summary``), replay, ``--as-server``, the live lines of ``emu capture`` and every later reader of
captures (the conformance suite, probe, watch) go through :class:`ConversationTracker`, fed by
:func:`emu.pcap.frames.read_tcp_packets` from a file or by a live sniffer.

Conversation rules (docs/howto-decode.md, "Conversation tracking"):

* a conversation is keyed by its 4-tuple (both addresses and ports, either direction);
* a SYN (without ACK) on a 4-tuple whose conversation ended (an RST, or a FIN from each side) starts a
  new conversation, and so does a SYN whose sequence number differs from the first one seen in that
  direction (a new initial sequence number: the port was reused before the old connection was seen to
  close). A SYN with the same sequence number is a retransmission and stays in its conversation;
* a conversation ends at the RST or at the second side's FIN (simultaneous close included); segments
  that arrive after that (the last ACK, a retransmitted FIN) still belong to it: their bytes, if any,
  are counted as late, never attributed to a new conversation;
* a capture that starts mid-connection, or a connection whose handshake is not in the capture, is a
  conversation from its first segment; its client is the side that sent the SYN without ACK, else the
  side of the SYN/ACK's peer, else the side seen first.

Conversations are handed out as they end (streaming: memory is bounded by the open conversations,
not by the size of the file), the rest at the end of the capture. Reassembly is ours, so that
retransmissions, overlapping and out-of-order segments are handled the same way everywhere. Nothing
here raises on odd traffic: what cannot be placed is reported in :attr:`TcpStream.problems`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.pcap.frames import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, ReadStats, TcpPacket, read_tcp_packets

__all__ = [
    "LINGER_SECONDS",
    "CaptureStats",
    "Conversation",
    "ConversationTracker",
    "Segment",
    "SegmentLog",
    "TcpStream",
    "iter_conversations",
    "read_conversations",
    "reassemble",
]

log = logging.getLogger(__name__)

#: How long (capture seconds) an ended conversation still claims its 4-tuple's late segments.
LINGER_SECONDS = 240.0


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
    #: how it ended: ``fin`` (both sides), ``rst``, ``reused`` (a new SYN took its 4-tuple) or ``open``
    #: (still open at the end of the capture)
    end: str = "open"
    packets: int = 0

    @property
    def client_addr(self) -> tuple[str, int]:
        return self.client.src

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled as plain tuples (``emu decode --jobs`` sends every conversation to a worker): pickle
        # handles tuples, bytes and floats in C, where slotted dataclasses cost a Python call per object
        # each way (about 50 µs a conversation of a busy host's capture against 9 µs).
        state = (self.index, _stream_state(self.client), _stream_state(self.server), self.start, self.end, self.packets)
        return _conversation_from, (state,)

    @property
    def server_addr(self) -> tuple[str, int]:
        return self.client.dst


def _stream_state(stream: TcpStream) -> tuple[Any, ...]:
    chunks = [(c.offset, c.data, c.time) for c in stream.chunks]
    return stream.src, stream.dst, stream.data, chunks, stream.problems


def _conversation_from(state: tuple[Any, ...]) -> Conversation:
    """A :class:`Conversation` from what its ``__reduce__`` gave pickle."""
    index, client, server, start, end, packets = state
    streams = [
        TcpStream(src, dst, data, [Segment(*chunk) for chunk in chunks], problems)
        for src, dst, data, chunks, problems in (client, server)
    ]
    return Conversation(index, streams[0], streams[1], start, end, packets)


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
    #: sequence number of the first segment seen in this direction (tshark's base_seq)
    first_seq: int | None = None
    #: this direction sent a SYN with ACK (it is the answering side)
    syn_ack: bool = False

    def observe(self, flags: int, seq: int, payload: bytes, when: float) -> None:
        """Record one TCP segment of this direction (flags as the TCP header's bits)."""
        if self.first_seq is None:
            self.first_seq = seq
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


@dataclass(slots=True)
class _Open:
    """A conversation being tracked: its two directions, in the order they were first seen."""

    index: int
    first: SegmentLog
    second: SegmentLog
    start: float
    fins: int = 0  # bit 1: first direction sent FIN, bit 2: second did
    rst: bool = False
    packets: int = 0

    def side(self, src: tuple[str, int]) -> tuple[SegmentLog, int]:
        return (self.first, 1) if src == self.first.src else (self.second, 2)

    def conversation(self, end: str) -> Conversation:
        """Reassemble both directions; the client is the side that opened (see the module rules)."""
        client, server = self.first, self.second
        opened_first = client.syn_seen and not client.syn_ack
        opened_second = server.syn_seen and not server.syn_ack
        if (opened_second and not opened_first) or (not opened_first and client.syn_ack and not server.syn_ack):
            client, server = server, client
        return Conversation(self.index, reassemble(client), reassemble(server), self.start, end, self.packets)


class ConversationTracker:
    """Sort TCP segments into conversations (module rules); hand each out when it ends.

    Feed it :class:`~emu.pcap.frames.TcpPacket` in capture order with :meth:`feed` (which returns the
    conversations that segment ended), then call :meth:`finish` for those still open. Indexes are
    given in order of first appearance, as tshark numbers ``tcp.stream``.
    """

    def __init__(self) -> None:
        self._open: dict[tuple[tuple[str, int], tuple[str, int]], _Open] = {}
        self._ended: dict[tuple[tuple[str, int], tuple[str, int]], float] = {}
        self.conversations = 0
        #: segments with payload seen after their conversation ended, and their bytes
        self.late_segments = 0
        self.late_bytes = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def feed(self, pkt: TcpPacket) -> list[Conversation]:
        """Track one segment; returns the conversations it ended (usually none)."""
        src, dst = pkt.src, pkt.dst
        key = (src, dst) if src <= dst else (dst, src)
        flags = pkt.flags
        conv = self._open.get(key)
        out: list[Conversation] = []
        if flags & (TCP_SYN | TCP_ACK) == TCP_SYN and conv is not None:
            log_, _ = conv.side(src)
            if log_.first_seq is not None and log_.first_seq != pkt.seq:
                del self._open[key]
                out.append(conv.conversation("reused"))
                conv = None
        if conv is None:
            ended = self._ended.get(key)
            if ended is not None:
                if flags & (TCP_SYN | TCP_ACK) != TCP_SYN:
                    if pkt.payload:
                        self.late_segments += 1
                        self.late_bytes += len(pkt.payload)
                    return out
                del self._ended[key]
            conv = self._open[key] = _Open(
                self.conversations, SegmentLog(src, dst, first_time=pkt.time), SegmentLog(dst, src), pkt.time
            )
            self.conversations += 1
        direction, bit = conv.side(src)
        if not direction.first_time:
            direction.first_time = pkt.time
        direction.observe(flags, pkt.seq, pkt.payload, pkt.time)
        if flags & TCP_SYN and flags & TCP_ACK:
            direction.syn_ack = True
        conv.packets += 1
        if flags & TCP_RST:
            conv.rst = True
        if flags & TCP_FIN:
            conv.fins |= bit
        if conv.rst or conv.fins == 3:
            del self._open[key]
            self._ended[key] = pkt.time
            out.append(conv.conversation("rst" if conv.rst else "fin"))
            self._forget_before(pkt.time - LINGER_SECONDS)
        return out

    def _forget_before(self, when: float) -> None:
        """Ended conversations stop claiming their 4-tuple after :data:`LINGER_SECONDS`."""
        ended = self._ended
        while ended:
            key, t = next(iter(ended.items()))
            if t >= when:
                return
            del ended[key]

    def peek(self, src: tuple[str, int], dst: tuple[str, int]) -> Conversation | None:
        """The open conversation of this 4-tuple as reassembled so far (live summaries)."""
        key = (src, dst) if src <= dst else (dst, src)
        conv = self._open.get(key)
        return None if conv is None else conv.conversation("open")

    def finish(self) -> list[Conversation]:
        """The conversations still open at the end of the capture, in order of appearance."""
        out = [conv.conversation("open") for conv in self._open.values()]
        self._open.clear()
        return out


@dataclass(slots=True)
class CaptureStats:
    """Counts of a whole capture read: the reader's and the tracker's."""

    read: ReadStats = field(default_factory=ReadStats)
    conversations: int = 0
    late_segments: int = 0
    late_bytes: int = 0


def iter_conversations(path: str | Path, stats: CaptureStats | None = None) -> Iterator[Conversation]:
    """The TCP conversations of a capture, each as soon as it ends (streaming; see the module rules).

    ``stats`` (when given) is complete once the iterator is exhausted. When the file ends with a
    damaged record, the conversations still open then say so in their client stream's problems.

    Raises:
        UsageError: the file does not exist or is not a pcap/pcapng file.
    """
    stats = stats if stats is not None else CaptureStats()
    tracker = ConversationTracker()
    feed = tracker.feed
    for pkt in read_tcp_packets(path, stats.read):
        ended = feed(pkt)
        if ended:
            yield from ended
    rest = tracker.finish()
    if stats.read.damaged:
        for conv in rest:
            conv.client.problems.append(stats.read.damaged)
    stats.conversations = tracker.conversations
    stats.late_segments, stats.late_bytes = tracker.late_segments, tracker.late_bytes
    yield from rest


def read_conversations(path: str | Path) -> list[Conversation]:
    """All TCP conversations of a capture, in the order they started (see :func:`iter_conversations`).

    Raises:
        UsageError: the file does not exist or is not a pcap/pcapng file.
    """
    return sorted(iter_conversations(path), key=lambda c: c.index)
