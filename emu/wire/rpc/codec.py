"""Decode and encode DCE/RPC PDUs through their Construct declarations (:mod:`emu.wire.rpc.tables`).

The fixed-width leading fields of each table (the common header, the request/response/fault
bodies up to their stub) go through a :class:`~emu.wire.layout.FixedLayout` generated from the
declaration at import; the variable parts (context elements, results, the request's object UUID)
through Construct's compiled parser/builder. When a compiled parse fails, the interpreted table
parses the same bytes once more so that the error names the field path.

Decoding is lossless for everything a real peer sends: the bytes vlmcsd leaves uninitialised
(bind_ack padding, Q2; fault cancel_count/reserved, Q1) and any bytes after a body are kept.
The reserved bytes after ``n_context_elem``/``n_results`` and inside a context element are not
kept (always zero in practice; they are written as zero).
"""

from __future__ import annotations

import struct
from typing import Any

import construct as cs

from emu.errors import DecodeError, UsageError
from emu.wire.layout import Compiled, FixedLayout
from emu.wire.rpc.names import HEADER_LENGTH, ContextResult, PfcFlag, PType, SyntaxId
from emu.wire.rpc.pdus import (
    CLASS_OF,
    MAX_FRAG,
    PTYPE_OF,
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    ContextElement,
    Fault,
    Pdu,
    Request,
    Response,
    ResultEntry,
)
from emu.wire.rpc.tables import (
    RpcBindAckBody,
    RpcBindBody,
    RpcBindNakBody,
    RpcFaultBody,
    RpcHeader,
    RpcRequestBody,
    RpcResponseBody,
)

__all__ = ["RawHeader", "decode_pdu", "encode_pdu", "encode_response_to", "read_header"]

_HEADER = FixedLayout(RpcHeader)
_REQUEST = FixedLayout(RpcRequestBody)  # up to the optional object UUID
_RESPONSE = FixedLayout(RpcResponseBody)  # up to stub_data
_FAULT = FixedLayout(RpcFaultBody)  # up to trailer
_REQUEST_BODY = Compiled(RpcRequestBody, "DCE/RPC PDU")
_BIND_BODY = Compiled(RpcBindBody, "DCE/RPC PDU")
_BIND_ACK_BODY = Compiled(RpcBindAckBody, "DCE/RPC PDU")
_BIND_NAK_BODY = Compiled(RpcBindNakBody, "DCE/RPC PDU")
_OBJECT = int(PfcFlag.OBJECT_UUID)
_FIRST_LAST = int(PfcFlag.FIRST_FRAG | PfcFlag.LAST_FRAG)
_PTYPE_RESPONSE = int(PType.RESPONSE)


class RawHeader(tuple[int, int, int, int, bytes, int, int, int]):
    """The 16-byte common header as read (docs/kms-wire-protocol.md), before any check; see :func:`read_header`."""

    __slots__ = ()

    @property
    def rpc_vers(self) -> int:
        """Major version (5)."""
        return self[0]

    @property
    def rpc_vers_minor(self) -> int:
        """Minor version (0 or 1)."""
        return self[1]

    @property
    def ptype(self) -> int:
        """PTYPE as a plain int."""
        return self[2]

    @property
    def pfc_flags(self) -> int:
        """pfc_flags bits."""
        return self[3]

    @property
    def drep(self) -> bytes:
        """packed_drep."""
        return self[4]

    @property
    def frag_length(self) -> int:
        """Whole PDU length."""
        return self[5]

    @property
    def auth_length(self) -> int:
        """Authentication trailer length."""
        return self[6]

    @property
    def call_id(self) -> int:
        """Call identifier."""
        return self[7]


def read_header(data: bytes | bytearray, offset: int = 0) -> RawHeader:
    """The common header at ``offset`` (no checks on the values), for framing decisions.

    Raises:
        DecodeError: fewer than 16 bytes from ``offset``.
    """
    if len(data) - offset < HEADER_LENGTH:
        n = len(data) - offset
        raise DecodeError(f"PDU of {n} bytes is shorter than the 16-byte common header", offset=n, path="header")
    return RawHeader(_HEADER.unpack_from(data, offset))


def _syntax(c: Any) -> SyntaxId:
    return SyntaxId(c.uuid, c.version)


def _result_of(value: int, index: int) -> ContextResult:
    try:
        return ContextResult(value)
    except ValueError:
        raise DecodeError(f"unknown context result {value}", path=f"body -> results -> {index} -> result") from None


def _header_fields(h: RawHeader) -> dict[str, Any]:
    return {
        "rpc_vers": h[0],
        "rpc_vers_minor": h[1],
        "pfc_flags": h[3],
        "drep": h[4],
        "auth_length": h[6],
        "call_id": h[7],
    }


def _need(data: bytes, end: int, path: str) -> None:
    if len(data) < end:
        raise DecodeError(f"PDU ends after {len(data)} bytes, {path} needs {end}", offset=len(data), path=path)


def decode_pdu(data: bytes) -> Pdu:
    """Decode one whole PDU (exactly frag_length bytes) into its dataclass.

    Raises:
        DecodeError: whatever is wrong with ``data`` (too short, unsupported PTYPE, frag_length that
            disagrees with ``len(data)``, a count running past the end, an unknown context result).
    """
    data = bytes(data)
    h = read_header(data)
    ptype = h[2]
    if ptype not in CLASS_OF:
        raise DecodeError(f"unsupported PTYPE {ptype}", offset=2, path="header -> ptype")
    if h[5] != len(data):
        raise DecodeError(
            f"frag_length {h[5]} disagrees with the {len(data)} bytes of the PDU",
            offset=8,
            path="header -> frag_length",
        )
    hdr = _header_fields(h)
    if ptype == PType.REQUEST:
        _need(data, HEADER_LENGTH + _REQUEST.size, "body -> opnum")
        alloc_hint, ctx_id, opnum = _REQUEST.unpack_from(data, HEADER_LENGTH)
        if not h[3] & _OBJECT:  # the usual case: the stub follows the fixed fields
            stub = data[HEADER_LENGTH + _REQUEST.size :]
            return Request(alloc_hint=alloc_hint, p_cont_id=ctx_id, opnum=opnum, stub_data=stub, **hdr)
        b = _REQUEST_BODY.parse(data[HEADER_LENGTH:], header={"pfc_flags": h[3]})
        return Request(
            alloc_hint=alloc_hint, p_cont_id=ctx_id, opnum=opnum, object=b.object, stub_data=b.stub_data, **hdr
        )
    if ptype == PType.RESPONSE:
        _need(data, HEADER_LENGTH + _RESPONSE.size, "body -> reserved")
        alloc_hint, ctx_id, cancel, reserved = _RESPONSE.unpack_from(data, HEADER_LENGTH)
        stub = data[HEADER_LENGTH + _RESPONSE.size :]
        return Response(
            alloc_hint=alloc_hint, p_cont_id=ctx_id, cancel_count=cancel, reserved=reserved, stub_data=stub, **hdr
        )
    if ptype == PType.FAULT:
        _need(data, HEADER_LENGTH + _FAULT.size, "body -> reserved2")
        alloc_hint, ctx_id, cancel, reserved, status, reserved2 = _FAULT.unpack_from(data, HEADER_LENGTH)
        return Fault(
            alloc_hint=alloc_hint,
            p_cont_id=ctx_id,
            cancel_count=cancel,
            reserved=reserved,
            status=status,
            reserved2=reserved2,
            trailer=data[HEADER_LENGTH + _FAULT.size :],
            **hdr,
        )
    body = data[HEADER_LENGTH:]
    if ptype in (PType.BIND, PType.ALTER_CONTEXT):
        b = _BIND_BODY.parse(body)
        bind_cls: type[Bind] | type[AlterContext] = Bind if ptype == PType.BIND else AlterContext
        elements = tuple(
            ContextElement(e.p_cont_id, _syntax(e.abstract_syntax), tuple(_syntax(t) for t in e.transfer_syntaxes))
            for e in b.context_elements
        )
        return bind_cls(
            max_xmit_frag=b.max_xmit_frag,
            max_recv_frag=b.max_recv_frag,
            assoc_group_id=b.assoc_group_id,
            context_elements=elements,
            trailer=b.trailer,
            **hdr,
        )
    if ptype in (PType.BIND_ACK, PType.ALTER_CONTEXT_RESP):
        b = _BIND_ACK_BODY.parse(body)
        ack_cls: type[BindAck] | type[AlterContextResp] = BindAck if ptype == PType.BIND_ACK else AlterContextResp
        results = tuple(
            ResultEntry(_result_of(r.result, i), r.reason, _syntax(r.transfer_syntax)) for i, r in enumerate(b.results)
        )
        return ack_cls(
            max_xmit_frag=b.max_xmit_frag,
            max_recv_frag=b.max_recv_frag,
            assoc_group_id=b.assoc_group_id,
            secondary_address=b.secondary_address,
            pad=b.pad,
            results=results,
            trailer=b.trailer,
            **hdr,
        )
    b = _BIND_NAK_BODY.parse(body)
    return BindNak(
        provider_reject_reason=b.provider_reject_reason,
        versions=tuple((v.major, v.minor) for v in b.versions),
        trailer=b.trailer,
        **hdr,
    )


def _syntax_dict(s: SyntaxId) -> dict[str, Any]:
    return {"uuid": s.uuid, "version": s.version}


def _bind_ack_pad(pdu: BindAck | AlterContextResp) -> bytes:
    size = (-(26 + len(pdu.secondary_address))) % 4
    if not pdu.pad:
        return b"\0" * size
    if len(pdu.pad) != size:
        raise UsageError(f"bind_ack pad must be {size} bytes for a {len(pdu.secondary_address)}-byte secondary address")
    return pdu.pad


def _encode_body(pdu: Pdu) -> bytes:
    if isinstance(pdu, Request):
        if bool(pdu.pfc_flags & _OBJECT) != (pdu.object is not None):
            raise UsageError("a request has an object UUID exactly when pfc_flags has OBJECT_UUID (0x80)")
        obj = pdu.object.bytes_le if pdu.object is not None else b""
        return _REQUEST.pack(pdu.alloc_hint, pdu.p_cont_id, pdu.opnum) + obj + pdu.stub_data
    if isinstance(pdu, Response):
        return _RESPONSE.pack(pdu.alloc_hint, pdu.p_cont_id, pdu.cancel_count, pdu.reserved) + pdu.stub_data
    if isinstance(pdu, Fault):
        fixed = _FAULT.pack(pdu.alloc_hint, pdu.p_cont_id, pdu.cancel_count, pdu.reserved, pdu.status, pdu.reserved2)
        return fixed + pdu.trailer
    if isinstance(pdu, (Bind, AlterContext)):
        elements = [
            {
                "p_cont_id": e.p_cont_id,
                "abstract_syntax": _syntax_dict(e.abstract_syntax),
                "transfer_syntaxes": [_syntax_dict(t) for t in e.transfer_syntaxes],
            }
            for e in pdu.context_elements
        ]
        return _BIND_BODY.build(
            {
                "max_xmit_frag": pdu.max_xmit_frag,
                "max_recv_frag": pdu.max_recv_frag,
                "assoc_group_id": pdu.assoc_group_id,
                "context_elements": elements,
                "trailer": pdu.trailer,
            }
        )
    if isinstance(pdu, (BindAck, AlterContextResp)):
        results = [
            {"result": int(r.result), "reason": r.reason, "transfer_syntax": _syntax_dict(r.transfer_syntax)}
            for r in pdu.results
        ]
        return _BIND_ACK_BODY.build(
            {
                "max_xmit_frag": pdu.max_xmit_frag,
                "max_recv_frag": pdu.max_recv_frag,
                "assoc_group_id": pdu.assoc_group_id,
                "secondary_address": pdu.secondary_address,
                "pad": _bind_ack_pad(pdu),
                "results": results,
                "trailer": pdu.trailer,
            }
        )
    if isinstance(pdu, BindNak):
        versions = [{"major": a, "minor": b} for a, b in pdu.versions]
        return _BIND_NAK_BODY.build(
            {"provider_reject_reason": pdu.provider_reject_reason, "versions": versions, "trailer": pdu.trailer}
        )
    raise UsageError(f"not a PDU: {type(pdu).__name__}")


def encode_pdu(pdu: Pdu) -> bytes:
    """Encode a PDU; frag_length and every count are computed here.

    Raises:
        UsageError: the PDU does not fit in 65535 bytes, a field is out of range, or the object
            UUID does not match the OBJECT_UUID flag.
    """
    try:
        body = _encode_body(pdu)
        frag = HEADER_LENGTH + len(body)
        if frag > MAX_FRAG:
            raise UsageError(f"PDU of {frag} bytes exceeds the 65535-byte frag_length")
        header = _HEADER.pack(
            pdu.rpc_vers,
            pdu.rpc_vers_minor,
            PTYPE_OF[type(pdu)],
            pdu.pfc_flags,
            pdu.drep,
            frag,
            pdu.auth_length,
            pdu.call_id,
        )
    except UsageError:
        raise
    except (struct.error, cs.ConstructError, ValueError, TypeError, OverflowError) as exc:
        raise UsageError(f"cannot encode {type(pdu).__name__}: {exc}") from exc
    return header + body


def encode_response_to(request: Request, stub: bytes) -> bytes:
    """The response PDU answering ``request`` with ``stub`` (the host's hot path, docs/kms-wire-protocol.md): what
    ``encode_pdu(Response(...))`` gives, without building the dataclass. The header echoes the
    request's version, flags (plus FIRST|LAST), drep and call_id (Q15); alloc_hint is the stub
    length, the context id is copied, cancel_count 0.

    Raises:
        UsageError: the PDU would not fit in 65535 bytes.
    """
    frag = HEADER_LENGTH + _RESPONSE.size + len(stub)
    if frag > MAX_FRAG:
        raise UsageError(f"response of {frag} bytes does not fit in one PDU")
    flags = request.pfc_flags | _FIRST_LAST
    head = _HEADER.pack(
        request.rpc_vers, request.rpc_vers_minor, _PTYPE_RESPONSE, flags, request.drep, frag, 0, request.call_id
    )
    return head + _RESPONSE.pack(len(stub), request.p_cont_id, 0, 0) + stub
