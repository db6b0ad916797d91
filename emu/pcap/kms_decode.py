"""Decode the KMS traffic of a TCP conversation: every DCE/RPC PDU and the KMS message inside it.

This is the KMS decoder behind ``emu decode`` (no printing here). :func:`decode_conversation` cuts each
direction's reassembled byte stream (:mod:`emu.pcap.reader`) into PDUs by ``frag_length`` and decodes
them with :mod:`emu.wire.rpc`, :mod:`emu.wire.ndr` and :mod:`emu.kms.messages`; responses are paired
with their request (same call_id) and verified with every named check. :func:`decode_capture` and
:func:`iter_decode` run it over a whole file through :mod:`emu.pcap.decode` (streaming, summary).
The records are in :mod:`emu.pcap.kms_records`, the KMS field extraction in :mod:`emu.pcap.kms_fields`.

Bad traffic never raises: whatever does not decode becomes a record with ``error`` set (the
:class:`~emu.errors.DecodeError` message with its offset), and stream problems (gaps, a damaged last
record, bytes skipped to find a header) become :class:`StreamNote` records. Only an unreadable file
raises (:class:`~emu.errors.UsageError`).

How a conversation is recognised as KMS (any port; docs/howto-decode.md):

* a stream starts with a plausible DCE/RPC v5.0 header (rpc_vers 5, minor 0, known PTYPE, drep
  ``10 00 00 00``, frag_length 16..65535), or one is found by scanning (a capture that starts
  mid-PDU), and
* a bind/alter_context offers the KMS interface 51c82175-844e-4750-b0d8-ec255555bc06, or (no bind
  seen: the capture started mid-conversation, or only one side was captured) a request or response
  stub holds a KMS message that decodes;
* ``port`` forces every conversation with that port (either end) to be decoded as KMS.
"""

from __future__ import annotations

import bisect
import functools
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.errors import DecodeError
from emu.kms.messages import OpenedRequest
from emu.pcap.kms_fields import (
    abstract_name,
    endpoint,
    guess_request_syntax,
    guess_response_syntax,
    request_info,
    response_info,
    syntax_name,
)
from emu.pcap.kms_records import (
    CLIENT_TO_SERVER,
    SERVER_TO_CLIENT,
    CaptureDecode,
    ContextAnswer,
    ContextOffer,
    DecodedPdu,
    KmsRequestInfo,
    KmsResponseInfo,
    StreamNote,
)
from emu.pcap.reader import Conversation, TcpStream
from emu.wire.ndr import TransferSyntax, decode_request_stub, decode_response_stub
from emu.wire.rpc import (
    FAULT_STATUS_NAMES,
    HEADER_LENGTH,
    KMS_INTERFACE,
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    ContextResult,
    Fault,
    Pdu,
    PfcFlag,
    PType,
    Request,
    Response,
    SyntaxId,
    decode_pdu,
)

__all__ = [
    "CLIENT_TO_SERVER",
    "SERVER_TO_CLIENT",
    "CaptureDecode",
    "ContextAnswer",
    "ContextOffer",
    "DecodedPdu",
    "KmsDecoder",
    "KmsRequestInfo",
    "KmsResponseInfo",
    "StreamNote",
    "decode_capture",
    "decode_conversation",
    "iter_decode",
    "looks_like_rpc_header",
]

log = logging.getLogger(__name__)

#: Smallest and largest frag_length taken as plausible (the 16-byte header; u16 field).
_MIN_FRAG = HEADER_LENGTH
_MAX_FRAG = 0xFFFF
#: How far into a stream we look for a first DCE/RPC header before giving up (bytes).
_RESYNC_LIMIT = 64 * 1024
_KNOWN_PTYPES = frozenset(int(p) for p in PType)
_PTYPE_NAMES = {int(p): p.name.lower() for p in PType}

#: The fields of a :class:`DecodedPdu` being filled in (built once at the end: cheaper than replace()).
_Fields = dict[str, Any]
_BASE_KEYS = ("capture", "time", "conversation", "src", "dst", "direction", "offset", "size", "ptype")


#: Context negotiation PDUs repeat byte for byte across the connections of one client build and one
#: host: each distinct one is decoded once (the decoded PDUs are frozen, so sharing them is safe).
_NEGOTIATION = frozenset(int(p) for p in (PType.BIND, PType.BIND_ACK, PType.ALTER_CONTEXT, PType.ALTER_CONTEXT_RESP))


@functools.lru_cache(maxsize=512)
def _decode_negotiation(data: bytes) -> Pdu:
    return decode_pdu(data)


def _set(fields: _Fields, **changes: Any) -> _Fields:
    fields.update(changes)
    return fields


# --- stream splitting -------------------------------------------------------------------------


def looks_like_rpc_header(data: bytes, offset: int = 0) -> bool:
    """Whether ``data[offset:]`` starts with a plausible DCE/RPC v5.0 CO header (docs/kms-wire-protocol.md).

    rpc_vers 5, rpc_vers_minor 0, a PTYPE this package knows, drep ``10 00 00 00`` and a
    frag_length of at least 16.
    """
    if len(data) - offset < 10:
        return False
    if data[offset] != 5 or data[offset + 1] != 0 or data[offset + 2] not in _KNOWN_PTYPES:
        return False
    if data[offset + 4 : offset + 8] != b"\x10\x00\x00\x00":
        return False
    frag = data[offset + 8] | data[offset + 9] << 8
    return _MIN_FRAG <= frag <= _MAX_FRAG


@dataclass(frozen=True, slots=True)
class _Piece:
    """A slice of one direction's stream: a whole PDU, a truncated one, or undecodable bytes."""

    offset: int
    data: bytes
    time: float | None
    whole: bool
    problem: str = ""


def _resync(data: bytes, start: int) -> int | None:
    """The next offset after ``start`` where a plausible header begins, within the scan limit."""
    pos = start
    limit = min(len(data), start + _RESYNC_LIMIT)
    while True:
        pos = data.find(b"\x05\x00", pos, limit)
        if pos < 0:
            return None
        if looks_like_rpc_header(data, pos):
            return pos
        pos += 1


def _split(stream: TcpStream) -> list[_Piece]:
    """Cut a stream into PDUs by frag_length; report what is not a PDU."""
    data = stream.data
    pieces: list[_Piece] = []
    times = [c.offset for c in stream.chunks]

    def time_at(offset: int) -> float | None:
        i = bisect.bisect_right(times, offset) - 1
        if i < 0:
            return None
        chunk = stream.chunks[i]
        return chunk.time if offset < chunk.offset + len(chunk.data) else None

    pos = 0
    n = len(data)
    while pos < n:
        if not looks_like_rpc_header(data, pos):
            nxt = _resync(data, pos + 1)
            end = n if nxt is None else nxt
            if n - pos < 10 and data[pos : pos + 2] == b"\x05\x00"[: n - pos]:
                problem = f"stream ends with {n - pos} bytes of an incomplete DCE/RPC header"
            else:
                problem = f"{end - pos} bytes that are not a DCE/RPC v5.0 PDU (no valid common header)"
            pieces.append(_Piece(pos, data[pos:end], time_at(pos), False, problem))
            if nxt is None:
                break
            pos = nxt
            continue
        frag = data[pos + 8] | data[pos + 9] << 8
        if pos + frag > n:
            pieces.append(
                _Piece(
                    pos,
                    data[pos:],
                    time_at(pos),
                    False,
                    f"PDU truncated: frag_length {frag}, only {n - pos} bytes captured",
                )
            )
            break
        pieces.append(_Piece(pos, data[pos : pos + frag], time_at(pos), True))
        pos += frag
    return pieces


# --- per-conversation decoding ------------------------------------------------------------------


@dataclass
class _Offer:
    elements: tuple[tuple[int, tuple[SyntaxId, ...]], ...]


@dataclass
class _State:
    """What one conversation has negotiated so far (docs/kms-wire-protocol.md)."""

    offers: deque[_Offer] = field(default_factory=deque)
    contexts: dict[int, TransferSyntax] = field(default_factory=dict)
    requests: dict[int, deque[tuple[OpenedRequest | None, KmsRequestInfo | None, TransferSyntax | None]]] = field(
        default_factory=dict
    )
    fragments: dict[tuple[str, int], bytearray] = field(default_factory=dict)
    kms_evidence: bool = False


def _decode_piece(piece: _Piece, direction: str, base: _Fields, state: _State) -> _Fields:
    """``base`` (where the piece is: capture, time, endpoints, offset, size) with what it decodes to."""
    if not piece.whole:
        ptype = _PTYPE_NAMES.get(piece.data[2]) if looks_like_rpc_header(piece.data) else None
        return _set(base, ptype=ptype, error=piece.problem)
    try:
        pdu = _decode_negotiation(piece.data) if piece.data[2] in _NEGOTIATION else decode_pdu(piece.data)
    except DecodeError as exc:
        return _set(base, ptype=_PTYPE_NAMES.get(piece.data[2]), error=str(exc))
    common = _set(base, ptype=_PTYPE_NAMES[piece.data[2]], call_id=pdu.call_id, pfc_flags=pdu.pfc_flags)
    if isinstance(pdu, (Bind, AlterContext)):
        offers = tuple(
            ContextOffer(
                e.p_cont_id, abstract_name(e.abstract_syntax), tuple(syntax_name(s) for s in e.transfer_syntaxes)
            )
            for e in pdu.context_elements
        )
        if any(e.abstract_syntax == KMS_INTERFACE for e in pdu.context_elements):
            state.kms_evidence = True
        state.offers.append(_Offer(tuple((e.p_cont_id, e.transfer_syntaxes) for e in pdu.context_elements)))
        return _set(common, contexts=offers)
    if isinstance(pdu, (BindAck, AlterContextResp)):
        offer = state.offers.popleft() if state.offers else None
        answers = []
        for i, r in enumerate(pdu.results):
            ctx_id = None
            if offer is not None and i < len(offer.elements):
                ctx_id, offered = offer.elements[i]
                if r.result is ContextResult.ACCEPTANCE:
                    ndr = TransferSyntax.of(r.transfer_syntax)
                    if ndr is None and len(offered) == 1:
                        ndr = TransferSyntax.of(offered[0])
                    if ndr is not None:
                        state.contexts[ctx_id] = ndr
            answers.append(ContextAnswer(r.result.name.lower(), r.reason, syntax_name(r.transfer_syntax), ctx_id))
        return _set(common, results=tuple(answers))
    if isinstance(pdu, BindNak):
        if state.offers:
            state.offers.popleft()
        return _set(
            common,
            error=None,
            fault_status=pdu.provider_reject_reason,
            fault_name=f"bind_nak reason {pdu.provider_reject_reason}",
        )
    if isinstance(pdu, Fault):
        return _set(
            common,
            p_cont_id=pdu.p_cont_id,
            fault_status=pdu.status,
            fault_name=FAULT_STATUS_NAMES.get(pdu.status, "unknown status"),
        )
    if isinstance(pdu, Request):
        return _decode_request(pdu, common, direction, state)
    assert isinstance(pdu, Response)
    return _decode_response(pdu, common, direction, state)


def _reassembled(pdu: Request | Response, direction: str, state: _State) -> bytes | None:
    """The whole stub once the last fragment is in (docs/kms-wire-protocol.md: never fragmented in practice)."""
    key = (direction, pdu.call_id)
    first, last = bool(pdu.pfc_flags & PfcFlag.FIRST_FRAG), bool(pdu.pfc_flags & PfcFlag.LAST_FRAG)
    if first and last:
        state.fragments.pop(key, None)
        return pdu.stub_data
    if first or key not in state.fragments:
        state.fragments[key] = bytearray()
    state.fragments[key] += pdu.stub_data
    if not last:
        return None
    return bytes(state.fragments.pop(key))


def _decode_request(pdu: Request, common: _Fields, direction: str, state: _State) -> _Fields:
    common = _set(common, p_cont_id=pdu.p_cont_id, opnum=pdu.opnum)
    queue = state.requests.setdefault(pdu.call_id, deque())
    stub = _reassembled(pdu, direction, state)
    if stub is None:
        return _set(common, error=None)
    syntax = state.contexts.get(pdu.p_cont_id)
    guessed = syntax is None
    if syntax is None:
        syntax = guess_request_syntax(stub)
    if syntax is None:
        queue.append((None, None, None))
        return _set(
            common,
            error=f"request on context {pdu.p_cont_id} with no negotiated transfer syntax, "
            "and the stub is neither an NDR32 nor an NDR64 RequestActivation stub",
        )
    common = _set(common, syntax=syntax.name, syntax_guessed=guessed)
    try:
        decoded = decode_request_stub(stub, syntax)
        info, opened = request_info(decoded.kms_data)
    except DecodeError as exc:
        queue.append((None, None, syntax))
        return _set(common, error=str(exc))
    if opened is not None:
        state.kms_evidence = True
    queue.append((opened, info, syntax))
    return _set(common, request=info)


def _decode_response(pdu: Response, common: _Fields, direction: str, state: _State) -> _Fields:
    common = _set(common, p_cont_id=pdu.p_cont_id)
    stub = _reassembled(pdu, direction, state)
    if stub is None:
        return common
    queue = state.requests.get(pdu.call_id)
    opened, req_info, req_syntax = queue.popleft() if queue else (None, None, None)
    syntax = state.contexts.get(pdu.p_cont_id) or req_syntax
    guessed = syntax is None
    if syntax is None:
        syntax = guess_response_syntax(stub)
    if syntax is None:
        return _set(common, error="response stub is neither an NDR32 nor an NDR64 RequestActivation stub")
    common = _set(common, syntax=syntax.name, syntax_guessed=guessed)
    try:
        decoded = decode_response_stub(stub, syntax)
    except DecodeError as exc:
        return _set(common, error=str(exc))
    info = response_info(decoded.hresult, decoded.kms_data, opened, req_info)
    if info.epid is not None or (decoded.kms_data is None and opened is not None):
        state.kms_evidence = True
    error = None
    if decoded.kms_data is not None and info.epid is None and opened is None:
        error = info.note
    return _set(common, response=info, error=error)


def _merge(client: list[_Piece], server: list[_Piece]) -> list[tuple[str, _Piece]]:
    """Both directions in capture-time order, each direction keeping its stream order."""
    out: list[tuple[str, _Piece]] = []
    i = j = 0
    while i < len(client) or j < len(server):
        if j >= len(server):
            out.append((CLIENT_TO_SERVER, client[i]))
            i += 1
        elif i >= len(client):
            out.append((SERVER_TO_CLIENT, server[j]))
            j += 1
        else:
            tc, ts = client[i].time, server[j].time
            if ts is not None and (tc is None or ts < tc):
                out.append((SERVER_TO_CLIENT, server[j]))
                j += 1
            else:
                out.append((CLIENT_TO_SERVER, client[i]))
                i += 1
    return out


def decode_conversation(conv: Conversation, capture: str = "", *, force: bool = False) -> list[DecodedPdu] | None:
    """Decode one TCP conversation's PDUs, or ``None`` when it is not KMS traffic (and not forced).

    Never raises on bad traffic.
    """
    client = _split(conv.client)
    server = _split(conv.server)
    if not force and not any(p.whole for p in client) and not any(p.whole for p in server):
        return None
    state = _State()
    records: list[DecodedPdu] = []
    client_end, server_end = endpoint(conv.client.src), endpoint(conv.client.dst)
    endpoints = {CLIENT_TO_SERVER: (client_end, server_end), SERVER_TO_CLIENT: (server_end, client_end)}
    for direction, piece in _merge(client, server):
        base: _Fields = {
            "capture": capture,
            "time": piece.time,
            "conversation": conv.index,
            "src": endpoints[direction][0],
            "dst": endpoints[direction][1],
            "direction": direction,
            "offset": piece.offset,
            "size": len(piece.data),
            "ptype": None,
        }
        try:
            records.append(DecodedPdu(**_decode_piece(piece, direction, base, state)))
        except Exception as exc:  # a bug of ours must not cost the rest of the capture
            log.exception("decoding %s conversation %d at offset %d", capture, conv.index, piece.offset)
            base = {k: base[k] for k in _BASE_KEYS}
            records.append(DecodedPdu(**base, error=f"internal error while decoding: {exc!r}"))
    if not force and not state.kms_evidence:
        return None
    return records


def stream_notes(conv: Conversation, capture: str) -> list[StreamNote]:
    """The reassembly problems of a conversation's two streams, as note records."""
    return [
        StreamNote(capture, conv.index, direction, problem, conv.start)
        for direction, stream in ((CLIENT_TO_SERVER, conv.client), (SERVER_TO_CLIENT, conv.server))
        for problem in stream.problems
    ]


class KmsDecoder:
    """The KMS plug-in of :mod:`emu.pcap.decode`: DCE/RPC conversations carrying KMS, on any port."""

    name = "kms"

    def decode(self, conv: Conversation, capture: str, force: bool) -> list[DecodedPdu | StreamNote] | None:
        pdus = decode_conversation(conv, capture, force=force)
        if pdus is None:
            return None
        out: list[DecodedPdu | StreamNote] = list(pdus)
        out += stream_notes(conv, capture)
        return out

    def rpc_but_not_kms(self, conv: Conversation) -> bool:
        """Both or either stream starts with a DCE/RPC header but nothing said KMS (reported, not hidden)."""
        return looks_like_rpc_header(conv.client.data) or looks_like_rpc_header(conv.server.data)


def iter_decode(
    path: str | Path, *, port: int | None = None, jobs: int = 1
) -> Iterator[DecodedPdu | StreamNote | object]:
    """Stream the KMS records of a capture, conversation by conversation, then its summary record.

    See :func:`emu.pcap.decode.iter_records` (this is it with the KMS decoder).
    """
    from emu.pcap.decode import iter_records

    return iter_records(path, port=port, jobs=jobs)


def decode_capture(path: str | Path, *, port: int | None = None, jobs: int = 1) -> CaptureDecode:
    """Decode every KMS conversation of a pcap or pcapng file, all in memory, PDUs in time order.

    Args:
        path: the capture.
        port: decode every conversation with this TCP port (either end) as KMS, whatever it holds;
            the others are still recognised by their content.
        jobs: worker processes (conversations are independent).

    Raises:
        UsageError: the file does not exist or is not a capture.
    """
    from emu.pcap.decode import DecodeSummary, iter_records

    pdus: list[DecodedPdu] = []
    notes: list[StreamNote] = []
    summary: DecodeSummary | None = None
    for record in iter_records(path, port=port, jobs=jobs):
        if isinstance(record, DecodedPdu):
            pdus.append(record)
        elif isinstance(record, StreamNote):
            notes.append(record)
        elif isinstance(record, DecodeSummary):
            summary = record
    assert summary is not None
    pdus.sort(key=lambda p: (p.time is None, p.time or 0.0, p.conversation))
    notes.sort(key=lambda n: n.conversation)
    return CaptureDecode(
        summary.capture,
        tuple(pdus),
        tuple(notes),
        summary.tcp_conversations,
        tuple(summary.kms_conversation_ids),
        summary,
    )
