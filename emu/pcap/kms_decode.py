"""Decode the KMS traffic of a capture: every DCE/RPC PDU and the KMS message inside it.

This is the logic behind ``emu decode`` (no printing here). :func:`decode_capture` reads a pcap or
pcapng with :func:`emu.pcap.reader.read_conversations`, finds the KMS conversations on any port, cuts
each direction's reassembled byte stream into PDUs by ``frag_length`` and decodes them with
:mod:`emu.wire.rpc`, :mod:`emu.wire.ndr` and :mod:`emu.kms.messages`. Responses are paired with
their request (same call_id) and verified with every named check of spec 5.6.

Bad traffic never raises: whatever does not decode becomes a record with ``error`` set (the
:class:`~emu.errors.DecodeError` message with its offset), and stream problems (gaps, a damaged last
record, bytes skipped to find a header) become :class:`StreamNote` records. Only an unreadable file
raises (:class:`~emu.errors.UsageError`).

How a conversation is recognised as KMS (any port; spec 2.1-2.3):

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
import datetime as _dt
import logging
import struct
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emu.clock import filetime_to_unix
from emu.errors import DecodeError, KmsError
from emu.hresults import symbol_of
from emu.kms.crypto import BLOCK_SIZE, cbc_decrypt
from emu.kms.epid import format_hwid, parse_epid
from emu.kms.messages import Check, OpenedRequest, VerifiedResponse, open_request, verify_response
from emu.kms.products import describe_kms_id, product_data
from emu.pcap.reader import Conversation, TcpStream, read_conversations
from emu.wire.kms import (
    ResponseBase,
    ResponseV4,
    ResponseV5Plain,
    ResponseV6Plain,
    decode_encrypted_message,
    decode_response_v4,
    decode_response_v5_plain,
    decode_response_v6_plain,
    decode_version,
)
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
    PfcFlag,
    PType,
    Request,
    Response,
    SyntaxId,
    btfn_bitmask,
    decode_pdu,
)

__all__ = [
    "CLIENT_TO_SERVER",
    "SERVER_TO_CLIENT",
    "CaptureDecode",
    "ContextAnswer",
    "ContextOffer",
    "DecodedPdu",
    "KmsRequestInfo",
    "KmsResponseInfo",
    "StreamNote",
    "decode_capture",
    "decode_conversation",
    "looks_like_rpc_header",
]

log = logging.getLogger(__name__)

#: Direction labels of :attr:`DecodedPdu.direction`.
CLIENT_TO_SERVER = "C->S"
SERVER_TO_CLIENT = "S->C"

#: Smallest and largest frag_length taken as plausible (spec 2.1: the 16-byte header; u16 field).
_MIN_FRAG = HEADER_LENGTH
_MAX_FRAG = 0xFFFF
#: How far into a stream we look for a first DCE/RPC header before giving up (bytes).
_RESYNC_LIMIT = 64 * 1024
_KNOWN_PTYPES = frozenset(int(p) for p in PType)
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_PTYPE_NAMES = {int(p): p.name.lower() for p in PType}


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextOffer:
    """A presentation context offered in a bind or alter_context (spec 2.3)."""

    p_cont_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContextAnswer:
    """One result of a bind_ack or alter_context_resp (spec 2.4).

    ``p_cont_id`` is the context it answers, known when the offer was captured (results come in
    the order of the offered elements).
    """

    result: str
    reason: int
    transfer_syntax: str
    p_cont_id: int | None = None


@dataclass(frozen=True, slots=True)
class KmsRequestInfo:
    """The fields of a KMS request (spec 4.2), with product names from the packaged data (spec 7).

    For a version with no message layout (anything but 4.0, 5.0, 6.0) only ``version`` and
    ``refused`` are set: what a host does with it is answer 0x8007000D (spec 8.4).
    """

    version: str
    size: int
    refused: str = ""
    application: str | None = None
    product: str | None = None
    sku_name: str | None = None
    app_id: str | None = None
    sku_id: str | None = None
    kms_id: str | None = None
    cmid: str | None = None
    previous_cmid: str | None = None
    workstation: str | None = None
    required_client_count: int | None = None
    client_time: str | None = None
    vm: bool | None = None
    license_status: str | None = None
    binding_expiration: int | None = None
    #: v4 only: whether the V4-MAC of the request is right (hosts do not reject on it, spec 5.2)
    mac_ok: bool | None = None


@dataclass(frozen=True, slots=True)
class KmsResponseInfo:
    """A KMS response stub: the HRESULT and, when present, the decoded message and its verification.

    ``checks`` is empty when there was no request to verify against (half conversation) or the
    stub carried no message; ``verified`` is then ``None``.
    """

    hresult: int
    hresult_name: str
    version: str | None = None
    size: int | None = None
    epid: str | None = None
    epid_problems: tuple[str, ...] = ()
    hwid: str | None = None
    count: int | None = None
    threshold: int | None = None
    activation_interval: int | None = None
    renewal_interval: int | None = None
    cmid: str | None = None
    client_time: str | None = None
    checks: tuple[Check, ...] = ()
    verified: bool | None = None
    #: why the message could not be shown (undecryptable without its request, undecodable ...)
    note: str = ""

    @property
    def failed_checks(self) -> tuple[str, ...]:
        """Names of the checks that did not pass (warnings included)."""
        return tuple(c.name for c in self.checks if not c.passed)


@dataclass(frozen=True, slots=True)
class DecodedPdu:
    """One DCE/RPC PDU of a capture, decoded as far as it goes.

    Attributes:
        capture: the capture file's name.
        time: capture timestamp (Unix seconds) of the segment that carried the PDU's first byte.
        conversation: index of the TCP conversation in the capture (order of appearance).
        src, dst: ``"address:port"`` of sender and receiver.
        direction: :data:`CLIENT_TO_SERVER` or :data:`SERVER_TO_CLIENT`.
        offset: where the PDU starts in its direction's reassembled byte stream.
        size: bytes of the PDU (its frag_length, or what was captured of it).
        ptype: PTYPE name (``bind``, ``request`` ...), ``None`` when not even a header was readable.
        error: why (part of) the PDU did not decode, ``None`` when everything did.
    """

    capture: str
    time: float | None
    conversation: int
    src: str
    dst: str
    direction: str
    offset: int
    size: int
    ptype: str | None
    call_id: int | None = None
    pfc_flags: int | None = None
    p_cont_id: int | None = None
    opnum: int | None = None
    syntax: str | None = None
    syntax_guessed: bool = False
    contexts: tuple[ContextOffer, ...] = ()
    results: tuple[ContextAnswer, ...] = ()
    fault_status: int | None = None
    fault_name: str | None = None
    request: KmsRequestInfo | None = None
    response: KmsResponseInfo | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        """A decode error, a failed error-severity check of a response, or a bad v4 request MAC."""
        if self.error is not None:
            return True
        if self.response is not None and self.response.verified is False:
            return True
        return self.request is not None and self.request.mac_ok is False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with stable keys (the ``--json`` line of ``emu decode``)."""
        return _json_pdu(self)


@dataclass(frozen=True, slots=True)
class StreamNote:
    """Something about a conversation's byte stream that is not one PDU: a gap, a damaged capture."""

    capture: str
    conversation: int
    direction: str | None
    message: str
    time: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "record": "note",
            "capture": self.capture,
            "time": _json_time(self.time),
            "conversation": self.conversation,
            "direction": self.direction,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class CaptureDecode:
    """The result of decoding one capture.

    Attributes:
        pdus: every PDU of the KMS conversations, ordered by capture time.
        notes: stream problems of those conversations.
        conversations: number of TCP conversations in the capture.
        kms_conversations: indexes of the conversations decoded as KMS.
    """

    capture: str
    pdus: tuple[DecodedPdu, ...]
    notes: tuple[StreamNote, ...]
    conversations: int
    kms_conversations: tuple[int, ...]

    @property
    def ok(self) -> bool:
        """Every PDU decoded, every verification passed, no stream problem."""
        return not self.notes and not any(p.failed for p in self.pdus)


# --- stream splitting -------------------------------------------------------------------------


def looks_like_rpc_header(data: bytes, offset: int = 0) -> bool:
    """Whether ``data[offset:]`` starts with a plausible DCE/RPC v5.0 CO header (spec 2.1).

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


# --- small converters -------------------------------------------------------------------------


def _endpoint(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _iso_filetime(filetime: int) -> str:
    try:
        when = _dt.datetime.fromtimestamp(filetime_to_unix(filetime), tz=_dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"FILETIME {filetime} (out of range)"
    return when.isoformat().replace("+00:00", "Z")


def _syntax_name(syntax: SyntaxId) -> str:
    ndr = TransferSyntax.of(syntax)
    if ndr is not None:
        return ndr.name
    bits = btfn_bitmask(syntax)
    if bits is not None:
        return f"BTFN(0x{bits:02x})"
    if syntax.uuid.int == 0 and syntax.version == 0:
        return "none"
    return f"{syntax.uuid} v{syntax.version}"


def _abstract_name(syntax: SyntaxId) -> str:
    if syntax == KMS_INTERFACE:
        return "KMS v1.0"
    return f"{syntax.uuid} v{syntax.major}.{syntax.minor}"


def _hresult_name(hresult: int) -> str:
    return symbol_of(hresult) or "unknown HRESULT"


def _guess_request_syntax(stub: bytes) -> TransferSyntax | None:
    """NDR32 stubs start with two equal u32 sizes, NDR64 with two equal u64 sizes (spec 3.2, 3.3)."""
    if len(stub) >= 16:
        a, b = _U64.unpack_from(stub, 0)[0], _U64.unpack_from(stub, 8)[0]
        if a == b and 0 < a <= len(stub) - 16:
            return TransferSyntax.NDR64
    if len(stub) >= 8:
        a, b = _U32.unpack_from(stub, 0)[0], _U32.unpack_from(stub, 4)[0]
        if a == b and 0 < a <= len(stub) - 8:
            return TransferSyntax.NDR32
    return None


def _guess_response_syntax(stub: bytes) -> TransferSyntax | None:
    """By the referent id (0x20000, or 0 in the error form) at the NDR32 or NDR64 position."""
    if len(stub) >= 16 and _U64.unpack_from(stub, 8)[0] == 0x20000:
        return TransferSyntax.NDR64
    if len(stub) >= 8 and _U32.unpack_from(stub, 4)[0] == 0x20000:
        return TransferSyntax.NDR32
    if len(stub) in (12, 16):
        return TransferSyntax.NDR32
    if len(stub) in (20, 24):
        return TransferSyntax.NDR64
    return None


def _threshold(kms_id: uuid.UUID | None, sku_id: uuid.UUID | None) -> int | None:
    data = product_data()
    if sku_id is not None:
        sku = data.find_sku(sku_id)
        if sku is not None and (kms_id is None or sku.kms_id == kms_id):
            return sku.threshold
    if kms_id is not None:
        item = data.find_kms_item(kms_id)
        if item is not None:
            return item.threshold
    return None


def _request_info(data: bytes) -> tuple[KmsRequestInfo, OpenedRequest | None]:
    """Decode a KMS request; a version without layout is reported, not raised (spec 8.4).

    Raises:
        DecodeError: not even a version header, or a known version whose body does not decode.
    """
    version = decode_version(data)
    try:
        opened = open_request(data)
    except KmsError as exc:
        if version.minor != 0 or version.major not in (4, 5, 6):
            return KmsRequestInfo(version=str(version), size=len(data), refused=str(exc)), None
        raise DecodeError(str(exc), offset=0, path="KMS request") from exc
    base = opened.base
    products = product_data()
    sku = products.find_sku(base.sku_id)
    app = next((a for a in products.applications() if a.id == base.app_id), None)
    info = KmsRequestInfo(
        version=str(opened.version),
        size=len(data),
        application=app.name if app is not None else None,
        product=describe_kms_id(base.kms_id, base.sku_id),
        sku_name=sku.name if sku is not None else None,
        app_id=str(base.app_id),
        sku_id=str(base.sku_id),
        kms_id=str(base.kms_id),
        cmid=str(base.cmid),
        previous_cmid=str(base.previous_cmid),
        workstation=base.workstation_name,
        required_client_count=base.required_client_count,
        client_time=_iso_filetime(base.client_time),
        vm=bool(base.vm_info),
        license_status=base.license_status.name if hasattr(base.license_status, "name") else str(base.license_status),
        binding_expiration=base.binding_expiration,
        mac_ok=opened.mac_ok,
    )
    return info, opened


def _open_unpaired(data: bytes) -> ResponseV4 | ResponseV5Plain | ResponseV6Plain:
    """Decode a response without its request: v4 is clear, v5/v6 decrypt with the response IV.

    Raises:
        DecodeError: unknown version or undecodable message.
    """
    version = decode_version(data)
    if version.major == 4:
        return decode_response_v4(data)
    if version.major not in (5, 6):
        raise DecodeError(f"KMS response version {version} has no message layout", offset=0, path="KMS response")
    env = decode_encrypted_message(data)
    if not env.ciphertext or len(env.ciphertext) % BLOCK_SIZE:
        raise DecodeError(
            f"ciphertext of {len(env.ciphertext)} bytes is not whole AES blocks",
            offset=20,
            path="KMS response -> ciphertext",
        )
    plain = cbc_decrypt(version.major, env.iv, env.ciphertext)
    return decode_response_v5_plain(plain) if version.major == 5 else decode_response_v6_plain(plain)


def _response_info(
    hresult: int, data: bytes | None, request: OpenedRequest | None, request_info: KmsRequestInfo | None
) -> KmsResponseInfo:
    """Decode (and with its request, verify) a response's KMS message. Never raises."""
    name = _hresult_name(hresult)
    if data is None:
        return KmsResponseInfo(hresult=hresult, hresult_name=name)
    message: ResponseV4 | ResponseV5Plain | ResponseV6Plain | None = None
    checks: tuple[Check, ...] = ()
    verified: bool | None = None
    note = ""
    version: str | None = None
    if len(data) >= 4:
        version = str(decode_version(data))
    if request is not None:
        result: VerifiedResponse = verify_response(request, data)
        message = result.message
        checks = tuple(result.checks)
        verified = result.ok
        if message is None:
            note = "response could not be decoded: " + "; ".join(c.detail for c in result.checks if not c.passed)
    else:
        try:
            message = _open_unpaired(data)
            note = "not verified: its request is not in the capture"
        except (DecodeError, ValueError) as exc:
            note = f"response could not be decoded without its request: {exc}"
    if message is None:
        return KmsResponseInfo(
            hresult=hresult,
            hresult_name=name,
            version=version,
            size=len(data),
            checks=checks,
            verified=verified,
            note=note,
        )
    base: ResponseBase = message.base
    epid = parse_epid(base.epid)
    hwid = format_hwid(message.hwid) if isinstance(message, ResponseV6Plain) else None
    threshold = None
    if request is not None:
        threshold = _threshold(request.base.kms_id, request.base.sku_id)
    return KmsResponseInfo(
        hresult=hresult,
        hresult_name=name,
        version=version,
        size=len(data),
        epid=base.epid,
        epid_problems=epid.problems,
        hwid=hwid,
        count=base.count,
        threshold=threshold,
        activation_interval=base.activation_interval,
        renewal_interval=base.renewal_interval,
        cmid=str(base.cmid),
        client_time=_iso_filetime(base.client_time),
        checks=checks,
        verified=verified,
        note=note,
    )


# --- per-conversation decoding ------------------------------------------------------------------


@dataclass
class _Offer:
    elements: tuple[tuple[int, tuple[SyntaxId, ...]], ...]


@dataclass
class _State:
    """What one conversation has negotiated so far (spec 2.5, 2.9)."""

    offers: deque[_Offer] = field(default_factory=deque)
    contexts: dict[int, TransferSyntax] = field(default_factory=dict)
    requests: dict[int, deque[tuple[OpenedRequest | None, KmsRequestInfo | None, TransferSyntax | None]]] = field(
        default_factory=dict
    )
    fragments: dict[tuple[str, int], bytearray] = field(default_factory=dict)
    kms_evidence: bool = False


def _decode_piece(piece: _Piece, direction: str, base: DecodedPdu, state: _State) -> DecodedPdu:
    """``base`` (where the piece is: capture, time, endpoints, offset, size) with what it decodes to."""
    if not piece.whole:
        ptype = _PTYPE_NAMES.get(piece.data[2]) if looks_like_rpc_header(piece.data) else None
        return replace(base, ptype=ptype, error=piece.problem)
    try:
        pdu = decode_pdu(piece.data)
    except DecodeError as exc:
        return replace(base, ptype=_PTYPE_NAMES.get(piece.data[2]), error=str(exc))
    common = replace(base, ptype=_PTYPE_NAMES[piece.data[2]], call_id=pdu.call_id, pfc_flags=pdu.pfc_flags)
    if isinstance(pdu, (Bind, AlterContext)):
        offers = tuple(
            ContextOffer(
                e.p_cont_id, _abstract_name(e.abstract_syntax), tuple(_syntax_name(s) for s in e.transfer_syntaxes)
            )
            for e in pdu.context_elements
        )
        if any(e.abstract_syntax == KMS_INTERFACE for e in pdu.context_elements):
            state.kms_evidence = True
        state.offers.append(_Offer(tuple((e.p_cont_id, e.transfer_syntaxes) for e in pdu.context_elements)))
        return replace(common, contexts=offers)
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
            answers.append(ContextAnswer(r.result.name.lower(), r.reason, _syntax_name(r.transfer_syntax), ctx_id))
        return replace(common, results=tuple(answers))
    if isinstance(pdu, BindNak):
        if state.offers:
            state.offers.popleft()
        return replace(
            common,
            error=None,
            fault_status=pdu.provider_reject_reason,
            fault_name=f"bind_nak reason {pdu.provider_reject_reason}",
        )
    if isinstance(pdu, Fault):
        return replace(
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
    """The whole stub once the last fragment is in (spec 2.9: never fragmented in practice)."""
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


def _decode_request(pdu: Request, common: DecodedPdu, direction: str, state: _State) -> DecodedPdu:
    common = replace(common, p_cont_id=pdu.p_cont_id, opnum=pdu.opnum)
    queue = state.requests.setdefault(pdu.call_id, deque())
    stub = _reassembled(pdu, direction, state)
    if stub is None:
        return replace(common, error=None)
    syntax = state.contexts.get(pdu.p_cont_id)
    guessed = syntax is None
    if syntax is None:
        syntax = _guess_request_syntax(stub)
    if syntax is None:
        queue.append((None, None, None))
        return replace(
            common,
            error=f"request on context {pdu.p_cont_id} with no negotiated transfer syntax, "
            "and the stub is neither an NDR32 nor an NDR64 RequestActivation stub",
        )
    common = replace(common, syntax=syntax.name, syntax_guessed=guessed)
    try:
        decoded = decode_request_stub(stub, syntax)
        info, opened = _request_info(decoded.kms_data)
    except DecodeError as exc:
        queue.append((None, None, syntax))
        return replace(common, error=str(exc))
    if opened is not None:
        state.kms_evidence = True
    queue.append((opened, info, syntax))
    return replace(common, request=info)


def _decode_response(pdu: Response, common: DecodedPdu, direction: str, state: _State) -> DecodedPdu:
    common = replace(common, p_cont_id=pdu.p_cont_id)
    stub = _reassembled(pdu, direction, state)
    if stub is None:
        return common
    queue = state.requests.get(pdu.call_id)
    opened, req_info, req_syntax = queue.popleft() if queue else (None, None, None)
    syntax = state.contexts.get(pdu.p_cont_id) or req_syntax
    guessed = syntax is None
    if syntax is None:
        syntax = _guess_response_syntax(stub)
    if syntax is None:
        return replace(common, error="response stub is neither an NDR32 nor an NDR64 RequestActivation stub")
    common = replace(common, syntax=syntax.name, syntax_guessed=guessed)
    try:
        decoded = decode_response_stub(stub, syntax)
    except DecodeError as exc:
        return replace(common, error=str(exc))
    info = _response_info(decoded.hresult, decoded.kms_data, opened, req_info)
    if info.epid is not None or (decoded.kms_data is None and opened is not None):
        state.kms_evidence = True
    error = None
    if decoded.kms_data is not None and info.epid is None and opened is None:
        error = info.note
    return replace(common, response=info, error=error)


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
    for direction, piece in _merge(client, server):
        stream = conv.client if direction == CLIENT_TO_SERVER else conv.server
        base = DecodedPdu(
            capture=capture,
            time=piece.time,
            conversation=conv.index,
            src=_endpoint(stream.src),
            dst=_endpoint(stream.dst),
            direction=direction,
            offset=piece.offset,
            size=len(piece.data),
            ptype=None,
        )
        try:
            records.append(_decode_piece(piece, direction, base, state))
        except Exception as exc:  # a bug of ours must not cost the rest of the capture
            log.exception("decoding %s conversation %d at offset %d", capture, conv.index, piece.offset)
            records.append(replace(base, error=f"internal error while decoding: {exc!r}"))
    if not force and not state.kms_evidence:
        return None
    return records


def decode_capture(path: str | Path, *, port: int | None = None) -> CaptureDecode:
    """Decode every KMS conversation of a pcap or pcapng file.

    Args:
        path: the capture.
        port: decode every conversation with this TCP port (either end) as KMS, whatever it holds;
            the others are still recognised by their content.

    Raises:
        UsageError: the file does not exist or is not a capture (from :func:`read_conversations`).
    """
    path = Path(path)
    conversations = read_conversations(path)
    name = path.name
    pdus: list[DecodedPdu] = []
    notes: list[StreamNote] = []
    kms: list[int] = []
    for conv in conversations:
        force = port is not None and port in (conv.client.src[1], conv.client.dst[1])
        records = decode_conversation(conv, name, force=force)
        if records is None:
            continue
        kms.append(conv.index)
        pdus.extend(records)
        for direction, stream in ((CLIENT_TO_SERVER, conv.client), (SERVER_TO_CLIENT, conv.server)):
            for problem in stream.problems:
                notes.append(StreamNote(name, conv.index, direction, problem, conv.start))
    pdus.sort(key=lambda p: (p.time is None, p.time or 0.0))
    return CaptureDecode(name, tuple(pdus), tuple(notes), len(conversations), tuple(kms))


# --- JSON -------------------------------------------------------------------------------------


def _json_time(t: float | None) -> str | None:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, tz=_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_pdu(p: DecodedPdu) -> dict[str, Any]:
    out: dict[str, Any] = {
        "record": "pdu",
        "capture": p.capture,
        "time": _json_time(p.time),
        "conversation": p.conversation,
        "src": p.src,
        "dst": p.dst,
        "direction": p.direction,
        "offset": p.offset,
        "size": p.size,
        "ptype": p.ptype,
        "call_id": p.call_id,
        "pfc_flags": p.pfc_flags,
        "p_cont_id": p.p_cont_id,
        "opnum": p.opnum,
        "syntax": p.syntax,
        "syntax_guessed": p.syntax_guessed,
        "contexts": [
            {
                "p_cont_id": c.p_cont_id,
                "abstract_syntax": c.abstract_syntax,
                "transfer_syntaxes": list(c.transfer_syntaxes),
            }
            for c in p.contexts
        ],
        "results": [
            {"p_cont_id": r.p_cont_id, "result": r.result, "reason": r.reason, "transfer_syntax": r.transfer_syntax}
            for r in p.results
        ],
        "fault_status": None if p.fault_status is None else f"0x{p.fault_status:08X}",
        "fault_name": p.fault_name,
        "request": None,
        "response": None,
        "error": p.error,
    }
    if p.request is not None:
        r = p.request
        out["request"] = {
            "version": r.version,
            "size": r.size,
            "refused": r.refused or None,
            "application": r.application,
            "product": r.product,
            "sku_name": r.sku_name,
            "app_id": r.app_id,
            "sku_id": r.sku_id,
            "kms_id": r.kms_id,
            "cmid": r.cmid,
            "previous_cmid": r.previous_cmid,
            "workstation": r.workstation,
            "required_client_count": r.required_client_count,
            "client_time": r.client_time,
            "vm": r.vm,
            "license_status": r.license_status,
            "binding_expiration": r.binding_expiration,
            "mac_ok": r.mac_ok,
        }
    if p.response is not None:
        s = p.response
        out["response"] = {
            "hresult": f"0x{s.hresult:08X}",
            "hresult_name": s.hresult_name,
            "version": s.version,
            "size": s.size,
            "epid": s.epid,
            "epid_problems": list(s.epid_problems),
            "hwid": s.hwid,
            "count": s.count,
            "threshold": s.threshold,
            "activation_interval": s.activation_interval,
            "renewal_interval": s.renewal_interval,
            "cmid": s.cmid,
            "client_time": s.client_time,
            "verified": s.verified,
            "checks": [
                {"name": c.name, "passed": c.passed, "severity": c.severity, "detail": c.detail} for c in s.checks
            ],
            "note": s.note or None,
        }
    return out
