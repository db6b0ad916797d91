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

from emu.errors import DecodeError, UsageError
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


def _word(syntax: TransferSyntax) -> tuple[int, str]:
    return (4, "<I") if syntax is TransferSyntax.NDR32 else (8, "<Q")


def decode_request_stub(stub: bytes, syntax: TransferSyntax) -> RequestStub:
    """Decode a RequestActivation request stub.

    Raises:
        DecodeError: the stub is shorter than its two size fields, or max_count runs past its end.
    """
    stub = bytes(stub)
    w, fmt = _word(syntax)
    if len(stub) < 2 * w:
        raise DecodeError(
            f"{syntax.name} request stub of {len(stub)} bytes lacks its size fields",
            offset=len(stub),
            path="request stub -> max_count",
        )
    (size,) = struct.unpack_from(fmt, stub, 0)
    (count,) = struct.unpack_from(fmt, stub, w)
    end = 2 * w + count
    if end > len(stub):
        raise DecodeError(
            f"max_count {count} runs past the {len(stub)}-byte {syntax.name} request stub",
            offset=w,
            path="request stub -> max_count",
        )
    return RequestStub(syntax, stub[2 * w : end], size, count, stub[end:])


def encode_request_stub(kms_data: bytes, syntax: TransferSyntax, *, trailer: bytes = b"") -> bytes:
    """Encode a request stub carrying ``kms_data`` (both size fields = its length)."""
    _, fmt = _word(syntax)
    size = struct.pack(fmt, len(kms_data))
    return size + size + kms_data + trailer


def decode_response_stub(stub: bytes, syntax: TransferSyntax) -> ResponseStub:
    """Decode a RequestActivation response stub, success or error form.

    The error form is recognised, as vlmcs does, by a NULL referent id.

    Raises:
        DecodeError: the stub is too short for its form, or max_count runs past its end.
    """
    stub = bytes(stub)
    w, fmt = _word(syntax)
    if len(stub) < 2 * w + 4:
        raise DecodeError(
            f"{syntax.name} response stub of {len(stub)} bytes is too short", offset=len(stub), path="response stub"
        )
    (size,) = struct.unpack_from(fmt, stub, 0)
    (referent,) = struct.unpack_from(fmt, stub, w)
    if referent == 0:
        (hresult,) = struct.unpack_from("<I", stub, 2 * w)
        return ResponseStub(syntax, None, hresult, size, 0, trailer=stub[2 * w + 4 :])
    head = 3 * w
    if len(stub) < head:
        raise DecodeError(
            f"{syntax.name} response stub of {len(stub)} bytes lacks max_count",
            offset=len(stub),
            path="response stub -> max_count",
        )
    (count,) = struct.unpack_from(fmt, stub, 2 * w)
    data_end = head + count
    pad_len = (-data_end) % 4
    end = data_end + pad_len + 4
    if end > len(stub):
        raise DecodeError(
            f"max_count {count} runs past the {len(stub)}-byte {syntax.name} response stub",
            offset=2 * w,
            path="response stub -> max_count",
        )
    data = stub[head:data_end]
    ndr_pad, ndr_hr = stub[data_end : data_end + pad_len], stub[data_end + pad_len : end]
    srv_hr, srv_pad = stub[data_end : data_end + 4], stub[data_end + 4 : end]
    if any(ndr_pad) and not any(srv_pad):
        placement, pad, hr = Placement.SERVER, srv_pad, srv_hr
    else:
        placement, pad, hr = Placement.NDR, ndr_pad, ndr_hr
    return ResponseStub(syntax, data, int.from_bytes(hr, "little"), size, referent, count, pad, placement, stub[end:])


def encode_response_stub(kms_data: bytes | None, hresult: int, syntax: TransferSyntax) -> bytes:
    """Encode a response stub: the success form with ``kms_data``, or the error form for ``None``.

    Raises:
        UsageError: ``hresult`` does not fit in 32 bits.
    """
    if not 0 <= hresult <= 0xFFFFFFFF:
        raise UsageError(f"HRESULT {hresult:#x} does not fit in 32 bits")
    _, fmt = _word(syntax)
    if kms_data is None:
        zero = struct.pack(fmt, 0)
        return zero + zero + struct.pack("<I", hresult)
    size = struct.pack(fmt, len(kms_data))
    pad = b"\0" * ((-len(kms_data)) % 4)
    return size + struct.pack(fmt, REFERENT_ID) + size + kms_data + pad + struct.pack("<I", hresult)


def reencode_stub(stub: RequestStub | ResponseStub) -> bytes:
    """Re-encode a decoded stub byte-identically (raw size fields, pads and trailer kept).

    Raises:
        UsageError: a field does not fit its wire size, or ``pad`` has the wrong length.
    """
    _, fmt = _word(stub.syntax)
    try:
        if isinstance(stub, RequestStub):
            return struct.pack(fmt, stub.request_size) + struct.pack(fmt, stub.max_count) + stub.kms_data + stub.trailer
        head = struct.pack(fmt, stub.response_size) + struct.pack(fmt, stub.referent_id)
        hr = struct.pack("<I", stub.hresult)
        if stub.kms_data is None:
            return head + hr + stub.trailer
        count = len(stub.kms_data) if stub.max_count is None else stub.max_count
        pad_len = (-len(stub.kms_data)) % 4
        pad = stub.pad or b"\0" * pad_len
        if len(pad) != pad_len:
            raise UsageError(f"response stub pad must be {pad_len} bytes")
        tail = pad + hr if stub.placement is Placement.NDR else hr + pad
        return head + struct.pack(fmt, count) + stub.kms_data + tail + stub.trailer
    except struct.error as exc:
        raise UsageError(f"cannot encode stub: {exc}") from exc
