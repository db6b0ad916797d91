"""The RequestActivation (opnum 0) NDR stubs, in NDR32 and NDR64.

Spec: docs/kms-wire-protocol.md (interface, NDR32, NDR64 and their quirks).

Request stub:  requestSize, max_count, KMS request bytes (u32 each in NDR32; u64 in NDR64, where
the int is followed by 4 pad bytes, which reads the same as a u64 for sizes < 2**32).
Response stub: responseSize, referent id of the unique pointer, max_count, KMS response bytes,
alignment pad, HRESULT; or, for an error, responseSize 0, NULL referent, HRESULT.

Both servers write the HRESULT right after the data and pad after it ("server" placement, Q10);
NDR pads first ("ndr" placement). With HRESULT 0 and zero pads the bytes are the same; the decoder
accepts both and records which one it saw so that re-encoding is byte-identical.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import construct as cs
from construct import this

from emu.errors import DecodeError, UsageError
from emu.wire.common import ExactBytes
from emu.wire.layout import Compiled, FixedLayout
from emu.wire.rpc import NDR32_SYNTAX, NDR64_SYNTAX, SyntaxId

__all__ = [
    "REFERENT_ID",
    "Placement",
    "RequestStub",
    "ResponseStub",
    "TransferSyntax",
    "decode_request_stub",
    "decode_response_stub",
    "encode_request_stub",
    "encode_response_stub",
    "reencode_stub",
    "request_stub_syntax",
    "response_stub_syntax",
]

#: Referent id both servers give the unique response pointer (docs/kms-wire-protocol.md: bytes 00 00 02 00).
REFERENT_ID = 0x00020000


class TransferSyntax(enum.Enum):
    """The two NDR transfer syntaxes of the KMS interface (docs/kms-wire-protocol.md)."""

    NDR32 = 32
    NDR64 = 64

    @property
    def syntax_id(self) -> SyntaxId:
        """The transfer syntax id offered in a bind."""
        return NDR32_SYNTAX if self is TransferSyntax.NDR32 else NDR64_SYNTAX

    @property
    def word(self) -> int:
        """Size in bytes of a conformance count or pointer (4 or 8)."""
        return 4 if self is TransferSyntax.NDR32 else 8

    @classmethod
    def of(cls, syntax: SyntaxId) -> TransferSyntax | None:
        """The NDR syntax a transfer syntax id names, or ``None``."""
        if syntax == NDR32_SYNTAX:
            return cls.NDR32
        if syntax == NDR64_SYNTAX:
            return cls.NDR64
        return None


class Placement(enum.Enum):
    """Where the HRESULT sits relative to the alignment pad in a success response stub (Q10)."""

    NDR = "ndr"  #: pad, then HRESULT (what NDR and vlmcs expect)
    SERVER = "server"  #: HRESULT, then pad (what vlmcsd and py-kms write)


@dataclass(frozen=True, slots=True)
class RequestStub:
    """A decoded request stub (docs/kms-wire-protocol.md request tables).

    Attributes:
        kms_data: the KMS request message, ``max_count`` bytes.
        request_size: the raw requestSize field (u32, or u64 in NDR64).
        max_count: the raw conformance count; the message length.
        trailer: bytes after the message (the py-kms client's 4 + pad zero bytes on v4, Q11).
    """

    syntax: TransferSyntax
    kms_data: bytes
    request_size: int
    max_count: int
    trailer: bytes = b""


@dataclass(frozen=True, slots=True)
class ResponseStub:
    """A decoded response stub (docs/kms-wire-protocol.md response tables).

    Attributes:
        kms_data: the KMS response message, or ``None`` in the error form (NULL referent).
        response_size: the raw responseSize field.
        referent_id: the unique pointer's referent id (0 = NULL: error form).
        max_count: the conformance count, ``None`` in the error form.
        pad: the alignment bytes after the data (success form only).
        hresult: the return value (0 = success).
        placement: where the HRESULT was found relative to ``pad``.
        trailer: bytes after the stub proper.
    """

    syntax: TransferSyntax
    kms_data: bytes | None
    hresult: int
    response_size: int
    referent_id: int
    max_count: int | None = None
    pad: bytes = b""
    placement: Placement = Placement.NDR
    trailer: bytes = b""

    @property
    def is_error(self) -> bool:
        """True for the error form (no KMS data, only the HRESULT)."""
        return self.kms_data is None


# --- Construct declarations (docs/kms-wire-protocol.md), one per stub and word size -----------


def _request_stub(word: Any) -> Any:
    return cs.Struct(
        "request_size" / word * "bytes of the KMS request",
        "max_count" / word * "conformance count of the byte array",
        "kms_data" / ExactBytes(this.max_count) * "the KMS request message",
        "trailer" / cs.GreedyBytes * "bytes after the message (py-kms v4 client, Q11), kept",
    )


def _response_data(word: Any) -> Any:
    return cs.Struct(
        "max_count" / word * "conformance count",
        "kms_data" / ExactBytes(this.max_count) * "the KMS response message",
        # 3 * word is a multiple of 4, so the data ends max_count bytes past an aligned offset
        "tail" / ExactBytes((-this.max_count) % 4 + 4) * "alignment pad and HRESULT, in either order (Q10)",
    )


def _response_stub(data: Any, word: Any) -> Any:
    return cs.Struct(
        "response_size" / word * "bytes of the KMS response; 0 in the error form",
        "referent_id" / word * "unique pointer, 0x00020000; NULL (0) in the error form",
        "body" / cs.IfThenElse(this.referent_id == 0, cs.Struct("hresult" / cs.Int32ul * "the error"), data),
        "trailer" / cs.GreedyBytes * "bytes after the stub proper, kept",
    )


NdrRequestStub32 = _request_stub(cs.Int32ul)
NdrRequestStub64 = _request_stub(cs.Int64ul)
NdrResponseData32 = _response_data(cs.Int32ul)
NdrResponseData64 = _response_data(cs.Int64ul)
NdrResponseStub32 = _response_stub(NdrResponseData32, cs.Int32ul)
NdrResponseStub64 = _response_stub(NdrResponseData64, cs.Int64ul)

_REQUEST = {
    TransferSyntax.NDR32: Compiled(NdrRequestStub32, "NDR32 request stub"),
    TransferSyntax.NDR64: Compiled(NdrRequestStub64, "NDR64 request stub"),
}
_RESPONSE = {
    TransferSyntax.NDR32: Compiled(NdrResponseStub32, "NDR32 response stub"),
    TransferSyntax.NDR64: Compiled(NdrResponseStub64, "NDR64 response stub"),
}
_HRESULT = FixedLayout(cs.Struct("hresult" / cs.Int32ul))
# Hot path (a host decodes a request stub and encodes a response stub per exchange): the size
# fields through layouts generated from the declarations above, the byte arrays sliced by them.
_REQUEST_HEAD = {
    TransferSyntax.NDR32: FixedLayout(NdrRequestStub32),
    TransferSyntax.NDR64: FixedLayout(NdrRequestStub64),
}
_RESPONSE_HEAD = {
    TransferSyntax.NDR32: FixedLayout(NdrResponseStub32),
    TransferSyntax.NDR64: FixedLayout(NdrResponseStub64),
}
_COUNT = {TransferSyntax.NDR32: FixedLayout(NdrResponseData32), TransferSyntax.NDR64: FixedLayout(NdrResponseData64)}


def decode_request_stub(stub: bytes, syntax: TransferSyntax) -> RequestStub:
    """Decode a RequestActivation request stub.

    Raises:
        DecodeError: the stub is shorter than its two size fields, or max_count runs past its end.
    """
    stub = bytes(stub)
    w = syntax.word
    if len(stub) < 2 * w:
        raise DecodeError(
            f"{syntax.name} request stub of {len(stub)} bytes lacks its size fields",
            offset=len(stub),
            path="request stub -> max_count",
        )
    head = _REQUEST_HEAD[syntax]
    size, count = head.unpack_from(stub)
    end = head.size + count
    if end > len(stub):
        raise DecodeError(
            f"max_count {count} runs past the {len(stub)}-byte {syntax.name} request stub",
            offset=w,
            path="request stub -> max_count",
        )
    return RequestStub(syntax, stub[head.size : end], size, count, stub[end:])


def encode_request_stub(kms_data: bytes, syntax: TransferSyntax, *, trailer: bytes = b"") -> bytes:
    """Encode a request stub carrying ``kms_data`` (both size fields = its length)."""
    try:
        size = _REQUEST_HEAD[syntax].pack(len(kms_data), len(kms_data))
    except struct.error as exc:
        raise UsageError(f"cannot encode stub: {exc}") from exc
    return size + kms_data + trailer


def decode_response_stub(stub: bytes, syntax: TransferSyntax) -> ResponseStub:
    """Decode a RequestActivation response stub, success or error form.

    The error form is recognised, as vlmcs does, by a NULL referent id.

    Raises:
        DecodeError: the stub is too short for its form, or max_count runs past its end.
    """
    stub = bytes(stub)
    w = syntax.word
    if len(stub) < 2 * w + 4:
        raise DecodeError(
            f"{syntax.name} response stub of {len(stub)} bytes is too short", offset=len(stub), path="response stub"
        )
    try:
        c = _RESPONSE[syntax].parse(stub)
    except DecodeError:
        if len(stub) < 3 * w:
            raise DecodeError(
                f"{syntax.name} response stub of {len(stub)} bytes lacks max_count",
                offset=len(stub),
                path="response stub -> max_count",
            ) from None
        count = int.from_bytes(stub[2 * w : 3 * w], "little")
        raise DecodeError(
            f"max_count {count} runs past the {len(stub)}-byte {syntax.name} response stub",
            offset=2 * w,
            path="response stub -> max_count",
        ) from None
    body = c.body
    if c.referent_id == 0:
        return ResponseStub(syntax, None, body.hresult, c.response_size, 0, trailer=c.trailer)
    # Q10 (Construct cannot choose between two layouts by which bytes are zero): the tail is pad
    # then HRESULT (NDR) or HRESULT then pad (both servers); non-zero pad bytes tell them apart.
    tail = body.tail
    pad_len = len(tail) - 4
    ndr_pad, ndr_hr = tail[:pad_len], tail[pad_len:]
    srv_hr, srv_pad = tail[:4], tail[4:]
    if any(ndr_pad) and not any(srv_pad):
        placement, pad, hr = Placement.SERVER, srv_pad, srv_hr
    else:
        placement, pad, hr = Placement.NDR, ndr_pad, ndr_hr
    (hresult,) = _HRESULT.unpack_from(hr)
    return ResponseStub(
        syntax, body.kms_data, hresult, c.response_size, c.referent_id, body.max_count, pad, placement, c.trailer
    )


def _build_stub(builder: Compiled, value: dict[str, object]) -> bytes:
    try:
        return builder.build(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _tail(pad: bytes, hresult: int, placement: Placement) -> bytes:
    hr = _HRESULT.pack(hresult)
    return pad + hr if placement is Placement.NDR else hr + pad


def encode_response_stub(kms_data: bytes | None, hresult: int, syntax: TransferSyntax) -> bytes:
    """Encode a response stub: the success form with ``kms_data``, or the error form for ``None``.

    Raises:
        UsageError: ``hresult`` does not fit in 32 bits.
    """
    if not 0 <= hresult <= 0xFFFFFFFF:
        raise UsageError(f"HRESULT {hresult:#x} does not fit in 32 bits")
    head = _RESPONSE_HEAD[syntax]
    try:
        if kms_data is None:
            return head.pack(0, 0) + _HRESULT.pack(hresult)
        size = len(kms_data)
        pad = b"\0" * ((-size) % 4)
        return head.pack(size, REFERENT_ID) + _COUNT[syntax].pack(size) + kms_data + pad + _HRESULT.pack(hresult)
    except struct.error as exc:
        raise UsageError(f"cannot encode stub: {exc}") from exc


def reencode_stub(stub: RequestStub | ResponseStub) -> bytes:
    """Re-encode a decoded stub byte-identically (raw size fields, pads and trailer kept).

    Raises:
        UsageError: a field does not fit its wire size, or ``pad`` has the wrong length.
    """
    if isinstance(stub, RequestStub):
        value: dict[str, object] = {
            "request_size": stub.request_size,
            "max_count": stub.max_count,
            "kms_data": stub.kms_data,
            "trailer": stub.trailer,
        }
        return _build_stub(_REQUEST[stub.syntax], value)
    if stub.kms_data is None:
        body: dict[str, object] = {"hresult": stub.hresult}
        if not 0 <= stub.hresult <= 0xFFFFFFFF:
            raise UsageError(f"HRESULT {stub.hresult:#x} does not fit in 32 bits")
    else:
        count = len(stub.kms_data) if stub.max_count is None else stub.max_count
        pad_len = (-len(stub.kms_data)) % 4
        pad = stub.pad or b"\0" * pad_len
        if len(pad) != pad_len:
            raise UsageError(f"response stub pad must be {pad_len} bytes")
        try:
            tail = _tail(pad, stub.hresult, stub.placement)
        except struct.error as exc:
            raise UsageError(f"cannot encode stub: {exc}") from exc
        body = {"max_count": count, "kms_data": stub.kms_data, "tail": tail}
    value = {
        "response_size": stub.response_size,
        "referent_id": stub.referent_id,
        "body": body,
        "trailer": stub.trailer,
    }
    return _build_stub(_RESPONSE[stub.syntax], value)


def request_stub_syntax(stub: bytes) -> TransferSyntax | None:
    """Which NDR a request stub is in, judged from its two equal size fields (at most 8 trailer
    bytes after the data), or ``None`` when it does not look like a KMS request stub."""
    for syntax in (TransferSyntax.NDR32, TransferSyntax.NDR64):
        head = _REQUEST_HEAD[syntax]
        if len(stub) >= head.size + 4:
            size, count = head.unpack_from(stub)
            if size == count and head.size + count <= len(stub) <= head.size + count + 8:
                return syntax
    return None


def response_stub_syntax(stub: bytes) -> TransferSyntax | None:
    """Which NDR a response stub is in (success form with max_count = size and at most 12 bytes
    after the data, or the exact error form), or ``None`` when it does not look like one."""
    for syntax in (TransferSyntax.NDR32, TransferSyntax.NDR64):
        head = _RESPONSE_HEAD[syntax]
        if len(stub) < head.size + 4:
            continue
        size, referent = head.unpack_from(stub)
        if referent == 0:
            if size == 0 and len(stub) == head.size + 4:
                return syntax
            continue
        count_field = _COUNT[syntax]
        if len(stub) >= head.size + count_field.size + 4:
            (count,) = count_field.unpack_from(stub, head.size)
            data_start = head.size + count_field.size
            if count == size and data_start + count + 4 <= len(stub) <= data_start + count + 16:
                return syntax
    return None
