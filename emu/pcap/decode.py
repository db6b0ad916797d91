"""Decode a whole capture as a stream: conversations tracked, each handed to the protocol decoders, a summary.

:func:`iter_records` is the entry point every reader of captures uses (``emu decode``, the conformance
suite, probe, watch): it reads the file with :func:`emu.pcap.reader.iter_conversations` (one TCP
tracking for everyone), gives each conversation as soon as it ends to the decoders in
:data:`DECODERS` (the first that claims it wins), yields the records they return, and ends with
one :class:`DecodeSummary`. Memory is bounded by the conversations open at a time, and the first
records come out long before the end of a large file. With ``jobs > 1`` the conversations are
decoded by that many worker processes (they are independent); records keep the order of
conversations ending.

Adding a protocol (LDAP, ...): write a class with a ``name``, a
``decode(conversation, capture, force) -> list[record] | None`` method (``None``: not mine) and,
optionally, ``rpc_but_not_kms``-style recognition, and append an instance to :data:`DECODERS`.
Records need a ``to_json()`` (a dict with a ``"record"`` key); :meth:`DecodeSummary.count`
tallies KMS PDUs and notes and counts any other record under its ``"record"`` kind.

Nothing is dropped silently: a conversation no decoder claims is counted (``other_conversations``);
one that starts like DCE/RPC but never shows KMS gets a note saying it was not decoded; stream
problems become notes; segments arriving after their conversation ended are counted as late bytes.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from emu.pcap.kms_decode import KmsDecoder
from emu.pcap.kms_records import SERVER_TO_CLIENT, DecodedPdu, StreamNote
from emu.pcap.ldap_decode import LdapDecoder
from emu.pcap.reader import CaptureStats, Conversation, iter_conversations

__all__ = ["DECODERS", "ConversationDecoder", "DecodeSummary", "iter_records", "iter_text"]


class ConversationDecoder(Protocol):
    """A protocol decoder plugged into :func:`iter_records`."""

    name: str

    def decode(self, conv: Conversation, capture: str, force: bool) -> list[Any] | None:
        """The records of ``conv``, or ``None`` when it is not this protocol (and not forced)."""
        ...


#: The decoders tried on each conversation, in order.
DECODERS: list[ConversationDecoder] = [KmsDecoder(), LdapDecoder()]


@dataclass(slots=True)
class DecodeSummary:
    """The final record of a decode run: what was read and what became of it.

    Attributes:
        packets: frames in the file; tcp_packets those that were TCP over IP.
        other_packets: frames that were not TCP (UDP, ARP ...); unparsed_packets: IP fragments and
            frames cut short.
        tcp_conversations: TCP conversations tracked; kms_conversations: those decoded as KMS;
            other_conversations: the rest (``not_decoded_rpc`` of them looked like DCE/RPC).
        pdus: PDUs by PTYPE name (``"?"`` for bytes that were not a PDU).
        exchanges: responses and faults answering a request.
        errors: records with an error (PDUs that did not decode or failed a check, stream notes).
        bytes_not_decoded: bytes of PDUs with an error plus late bytes.
        late_bytes: payload that arrived after its conversation ended.
        damaged: the capture file's damage, if any.
    """

    capture: str
    packets: int = 0
    tcp_packets: int = 0
    other_packets: int = 0
    unparsed_packets: int = 0
    tcp_conversations: int = 0
    kms_conversations: int = 0
    other_conversations: int = 0
    not_decoded_rpc: int = 0
    pdus: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    exchanges: int = 0
    errors: int = 0
    bytes_not_decoded: int = 0
    late_bytes: int = 0
    damaged: str = ""
    kms_conversation_ids: list[int] = field(default_factory=list)

    def count(self, record: Any) -> None:
        """Tally one record."""
        if isinstance(record, DecodedPdu):
            self.pdus[record.ptype or "?"] += 1
            if record.direction == SERVER_TO_CLIENT and record.ptype in ("response", "fault"):
                self.exchanges += 1
            if record.failed:
                self.errors += 1
            if record.error is not None:
                self.bytes_not_decoded += record.size
        elif isinstance(record, StreamNote):
            self.errors += 1
        else:
            kind = record.to_json().get("record", type(record).__name__)
            self.records[str(kind)] += 1

    def merge(self, other: DecodeSummary) -> None:
        """Add the record and conversation counts of ``other`` (a worker's part of the run)."""
        self.kms_conversations += other.kms_conversations
        self.other_conversations += other.other_conversations
        self.not_decoded_rpc += other.not_decoded_rpc
        self.pdus.update(other.pdus)
        self.records.update(other.records)
        self.exchanges += other.exchanges
        self.errors += other.errors
        self.bytes_not_decoded += other.bytes_not_decoded

    @property
    def ok(self) -> bool:
        return self.errors == 0 and not self.damaged

    def to_json(self) -> dict[str, Any]:
        """The ``"summary"`` record of ``emu decode --json`` (always the last line)."""
        return {
            "record": "summary",
            "capture": self.capture,
            "packets": self.packets,
            "tcp_packets": self.tcp_packets,
            "other_packets": self.other_packets,
            "unparsed_packets": self.unparsed_packets,
            "tcp_conversations": self.tcp_conversations,
            "kms_conversations": self.kms_conversations,
            "other_conversations": self.other_conversations,
            "not_decoded_rpc_conversations": self.not_decoded_rpc,
            "pdus": dict(sorted(self.pdus.items())),
            "other_records": dict(sorted(self.records.items())),
            "exchanges": self.exchanges,
            "errors": self.errors,
            "bytes_not_decoded": self.bytes_not_decoded,
            "late_bytes": self.late_bytes,
            "damaged": self.damaged or None,
        }

    def lines(self) -> list[str]:
        """The summary as text (the last lines of ``emu decode``)."""
        pdus = ", ".join(f"{n} {k}" for k, n in sorted(self.pdus.items())) or "none"
        out = [
            f"== {self.capture}: {self.packets} packets ({self.tcp_packets} TCP), "
            f"{self.tcp_conversations} TCP conversations, {self.kms_conversations} KMS",
            f"   PDUs: {pdus}; exchanges: {self.exchanges}; errors: {self.errors}; "
            f"bytes not decoded: {self.bytes_not_decoded}",
        ]
        skipped = self.other_conversations
        if skipped or self.other_packets or self.unparsed_packets:
            out.append(
                f"   not KMS: {skipped} conversation(s) ({self.not_decoded_rpc} of them DCE/RPC without KMS), "
                f"{self.other_packets} non-TCP packet(s), {self.unparsed_packets} IP fragment(s) or cut frame(s)"
            )
        if self.late_bytes:
            out.append(f"   {self.late_bytes} byte(s) arrived after their conversation ended (not decoded)")
        if self.damaged:
            out.append(f"   {self.damaged}")
        return out


def _decode_one(conv: Conversation, capture: str, port: int | None) -> tuple[str, list[Any]]:
    """(outcome, records) of one conversation: outcome is a decoder's name, ``"rpc"`` or ``"other"``."""
    force = port is not None and port in (conv.client.src[1], conv.client.dst[1])
    for decoder in DECODERS:
        records = decoder.decode(conv, capture, force)
        if records is not None:
            return decoder.name, records
    kms = DECODERS[0]
    if isinstance(kms, KmsDecoder) and kms.rpc_but_not_kms(conv):
        note = StreamNote(
            capture,
            conv.index,
            None,
            "DCE/RPC conversation that never showed the KMS interface or a KMS message: not decoded "
            "(use --port to decode it as KMS)",
            conv.start,
        )
        return "rpc", [note]
    return "other", []


def _count_outcome(summary: DecodeSummary, outcome: str) -> None:
    if outcome == "other":
        summary.other_conversations += 1
    elif outcome == "rpc":
        summary.other_conversations += 1
        summary.not_decoded_rpc += 1
    else:
        summary.kms_conversations += 1


def _worker(batch: list[Conversation], capture: str, port: int | None) -> list[tuple[str, int, list[Any]]]:
    """(outcome, conversation index, records) of each conversation of a batch."""
    out = []
    for conv in batch:
        outcome, records = _decode_one(conv, capture, port)
        out.append((outcome, conv.index, records))
    return out


#: What :func:`iter_text` gets back for a batch of conversations: their records rendered as one
#: string, the batch's counts (a partial summary) and the indexes of its KMS conversations.
_TextBatch = tuple[str, DecodeSummary, list[int]]


def _text_worker(batch: list[Conversation], capture: str, port: int | None, render: Callable[[Any], str]) -> _TextBatch:
    """Decode and render a batch where it is decoded: a worker sends back one string, not record objects."""
    tally = DecodeSummary(capture)
    kms: list[int] = []
    parts: list[str] = []
    for conv in batch:
        outcome, records = _decode_one(conv, capture, port)
        _count_outcome(tally, outcome)
        if outcome not in ("other", "rpc"):
            kms.append(conv.index)
        for record in records:
            tally.count(record)
            parts.append(render(record))
    return "".join(parts), tally, kms


#: Conversations per task sent to a worker, and tasks in flight per worker (bounds memory).
_BATCH = 64
_IN_FLIGHT = 3

_T = TypeVar("_T")


def _batches(
    conversations: Iterable[Conversation], jobs: int, work: Callable[[list[Conversation]], _T], size: int = _BATCH
) -> Iterator[_T]:
    """``work`` of each batch of ``size`` conversations, in order: here (``jobs`` 1) or in ``jobs`` workers.

    Workers are fed at most ``jobs * _IN_FLIGHT`` batches ahead of the results being consumed, so
    memory stays bounded by the open conversations and the batches in flight. ``work`` must pickle
    (a module-level function or a :func:`functools.partial` of one).
    """
    if jobs <= 1:
        batch: list[Conversation] = []
        for conv in conversations:
            batch.append(conv)
            if len(batch) >= size:
                yield work(batch)
                batch = []
        if batch:
            yield work(batch)
        return
    import multiprocessing
    from collections import deque
    from multiprocessing.pool import AsyncResult

    ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with ctx.Pool(jobs) as pool:
        pending: deque[AsyncResult[_T]] = deque()
        batch = []
        for conv in conversations:
            batch.append(conv)
            if len(batch) < size:
                continue
            pending.append(pool.apply_async(work, (batch,)))
            batch = []
            while len(pending) >= jobs * _IN_FLIGHT:  # never read far ahead of the decoding
                yield pending.popleft().get()
        if batch:
            pending.append(pool.apply_async(work, (batch,)))
        while pending:
            yield pending.popleft().get()


def _start(path: Path, stats: CaptureStats) -> Iterator[Conversation]:
    """The conversations of ``path``; raises UsageError now, not at the consumer's first record."""
    conversations = iter_conversations(path, stats)
    first = next(conversations, None)

    def all_conversations() -> Iterator[Conversation]:
        if first is not None:
            yield first
            yield from conversations

    return all_conversations()


def _finish(summary: DecodeSummary, stats: CaptureStats) -> None:
    """Fill in the reader's and the tracker's counts once the capture is read."""
    read = stats.read
    summary.packets, summary.tcp_packets = read.packets, read.tcp_packets
    summary.other_packets, summary.unparsed_packets = read.other_packets, read.unparsed_packets
    summary.tcp_conversations = stats.conversations
    summary.late_bytes = stats.late_bytes
    summary.bytes_not_decoded += stats.late_bytes
    summary.damaged = read.damaged


def iter_records(path: str | Path, *, port: int | None = None, jobs: int = 1, keep_ids: bool = True) -> Iterator[Any]:
    """The decoded records of a capture, conversation by conversation as they end, then a :class:`DecodeSummary`.

    Args:
        path: a pcap or pcapng file.
        port: decode every conversation with this TCP port as KMS whatever it holds.
        jobs: worker processes decoding conversations (1: in this process).
        keep_ids: list the KMS conversations' indexes in the summary (memory grows with them).

    Raises:
        UsageError: the file does not exist or is not a capture (before the first record).
    """
    path = Path(path)
    stats = CaptureStats()
    summary = DecodeSummary(path.name)
    conversations = _start(path, stats)
    index_of: list[int] = []
    work = functools.partial(_worker, capture=path.name, port=port)
    for results in _batches(conversations, jobs, work, 1 if jobs <= 1 else _BATCH):
        for outcome, index, records in results:
            _count_outcome(summary, outcome)
            if keep_ids and outcome not in ("other", "rpc"):
                index_of.append(index)
            for record in records:
                summary.count(record)
                yield record
    _finish(summary, stats)
    summary.kms_conversation_ids = sorted(index_of)
    yield summary


def iter_text(
    path: str | Path, render: Callable[[Any], str], *, port: int | None = None, jobs: int = 1
) -> Iterator[str | DecodeSummary]:
    """:func:`iter_records` rendered: pieces of text (each the ``render`` of the records of a batch of
    conversations, in the same order as :func:`iter_records`), then the :class:`DecodeSummary`.

    Rendering happens where the decoding does, so with ``jobs > 1`` the workers send back strings
    instead of record objects (cheaper to pass between processes) and this process only reads the
    capture, tracks conversations and writes. ``render`` must pickle (a module-level function or
    class instance) and include its own line ends. The output does not depend on ``jobs``.

    Raises:
        UsageError: the file does not exist or is not a capture (before the first piece).
    """
    path = Path(path)
    stats = CaptureStats()
    summary = DecodeSummary(path.name)
    conversations = _start(path, stats)
    index_of: list[int] = []
    work = functools.partial(_text_worker, capture=path.name, port=port, render=render)
    for text, tally, kms in _batches(conversations, jobs, work):
        summary.merge(tally)
        index_of += kms
        if text:
            yield text
    _finish(summary, stats)
    summary.kms_conversation_ids = sorted(index_of)
    yield summary
