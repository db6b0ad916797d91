"""DCE/RPC v5 connection-oriented PDUs as KMS uses them: bind, bind_ack, bind_nak, alter_context,
alter_context_resp, request, response, fault.

Spec: docs/kms-wire-protocol.md section 2 (tables 2.1-2.8), quirks Q1, Q2, Q15; DCE 1.1 RPC (C706)
chapter 12.6 and [MS-RPCE] 2.2.2 for names and the status codes.

The Construct structs below are the documented source of truth, one per spec table.
:func:`decode_pdu` / :func:`encode_pdu` are a hand-written equivalent over :mod:`struct` for the
server's hot path (Construct costs tens of microseconds per PDU); :func:`decode_pdu_reference`
and :func:`encode_pdu_reference` run the Construct tables, and the tests check that both agree.

Decoding is lossless for everything a real peer sends: the bytes vlmcsd leaves uninitialised
(bind_ack padding, Q2; fault cancel_count/reserved, Q1) and any bytes after a body are kept in the
dataclasses. The reserved bytes after ``n_context_elem``/``n_results`` and inside a context element
are not kept (always zero in practice; they are written as zero).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import partial
from typing import Any, TypedDict

import construct as cs
from construct import this

from emu.errors import DecodeError, UsageError
from emu.wire.common import Guid, decode_guard

__all__ = [
    "BTFN_PREFIX",
    "BTFN_VERSION",
    "DREP_LE",
    "FAULT_STATUS_NAMES",
    "HEADER_LENGTH",
    "KMS_INTERFACE",
    "NCA_S_FAULT_NDR",
    "NCA_S_OP_RNG_ERROR",
    "NCA_S_PROTO_ERROR",
    "NCA_S_UNK_IF",
    "NCA_S_UNSPEC_REJECT",
    "NDR32_SYNTAX",
    "NDR64_SYNTAX",
    "AlterContext",
    "AlterContextResp",
    "Bind",
    "BindAck",
    "BindNak",
    "BindNakReason",
    "ContextElement",
    "ContextResult",
    "Fault",
    "PType",
    "Pdu",
    "PfcFlag",
    "RejectReason",
    "Request",
    "Response",
    "ResultEntry",
    "RpcBindAckBody",
    "RpcBindBody",
    "RpcBindNakBody",
    "RpcContextElement",
    "RpcFaultBody",
    "RpcHeader",
    "RpcPdu",
    "RpcRequestBody",
    "RpcResponseBody",
    "RpcResultEntry",
    "RpcSyntaxId",
    "SyntaxId",
    "btfn_bitmask",
    "btfn_syntax",
    "decode_pdu",
    "decode_pdu_reference",
    "encode_pdu",
    "encode_pdu_reference",
    "frag_length_of",
    "secondary_address_bytes",
    "split_pdus",
]


class PType(IntEnum):
    """PTYPE of the common header (docs/kms-wire-protocol.md 2.1; C706 12.6.4)."""

    REQUEST = 0
    RESPONSE = 2
    FAULT = 3
    BIND = 11
    BIND_ACK = 12
    BIND_NAK = 13
    ALTER_CONTEXT = 14
    ALTER_CONTEXT_RESP = 15


class PfcFlag(IntFlag):
    """pfc_flags bits (docs/kms-wire-protocol.md 2.1; C706 12.6.3.1)."""

    FIRST_FRAG = 0x01
    LAST_FRAG = 0x02
    PENDING_CANCEL = 0x04  # SUPPORT_HEADER_SIGN in bind PDUs
    RESERVED_1 = 0x08
    CONC_MPX = 0x10
    DID_NOT_EXECUTE = 0x20
    MAYBE = 0x40
    OBJECT_UUID = 0x80


class ContextResult(IntEnum):
    """p_cont_def_result_t of a bind_ack result entry (docs/kms-wire-protocol.md 2.4; [MS-RPCE] 2.2.2.4)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    PROVIDER_REJECTION = 2
    NEGOTIATE_ACK = 3


class RejectReason(IntEnum):
    """p_provider_reason_t of a rejected result entry (docs/kms-wire-protocol.md 2.4; C706 12.6.3.1)."""

    REASON_NOT_SPECIFIED = 0
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
    PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2
    LOCAL_LIMIT_EXCEEDED = 3


class BindNakReason(IntEnum):
    """p_reject_reason_t of a bind_nak (C706 12.6.3.1; docs/kms-wire-protocol.md: never sent by the emulators)."""

    REASON_NOT_SPECIFIED = 0
    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2
    CALLED_PADDR_UNKNOWN = 3
    PROTOCOL_VERSION_NOT_SUPPORTED = 4
    DEFAULT_CONTEXT_NOT_SUPPORTED = 5
    USER_DATA_NOT_READABLE = 6
    NO_PSAP_AVAILABLE = 7


# NCA fault status codes (docs/kms-wire-protocol.md 2.8; C706 appendix E / [MS-RPCE] 3.1.1.5.5 names).
NCA_S_OP_RNG_ERROR = 0x1C010002  #: nca_s_op_rng_error: opnum out of range for the interface
NCA_S_UNK_IF = 0x1C010003  #: nca_s_unk_if: no such interface / context id on this association
NCA_S_PROTO_ERROR = 0x1C01000B  #: nca_s_proto_error: the PDU broke the protocol
NCA_S_UNSPEC_REJECT = 0x1C000009  #: nca_s_unspec_reject: rejected for an unspecified reason
NCA_S_FAULT_NDR = 0x000006F7  #: nca_s_fault_ndr (RPC_X_BAD_STUB_DATA): stub data cannot be unmarshalled

#: NCA status codes of fault PDUs (C706 appendix E, [MS-RPCE] 3.1.1.5.5).
FAULT_STATUS_NAMES: dict[int, str] = {
    NCA_S_OP_RNG_ERROR: "nca_s_op_rng_error",
    NCA_S_UNK_IF: "nca_s_unk_if",
    NCA_S_PROTO_ERROR: "nca_s_proto_error",
    NCA_S_UNSPEC_REJECT: "nca_s_unspec_reject",
    NCA_S_FAULT_NDR: "nca_s_fault_ndr",
    0x1C010001: "nca_s_comm_failure",
    0x1C010013: "nca_s_server_too_busy",
    0x1C000001: "nca_s_fault_int_div_by_zero",
    0x00000005: "nca_s_fault_access_denied",
    0x000006D8: "nca_s_fault_cant_perform",
}

#: packed_drep: little-endian integers, ASCII, IEEE floats (docs/kms-wire-protocol.md, 2.1).
DREP_LE = b"\x10\x00\x00\x00"
#: Length of the common header (docs/kms-wire-protocol.md 2.1).
HEADER_LENGTH = 16


@dataclass(frozen=True, slots=True)
class SyntaxId:
    """An abstract or transfer syntax: UUID plus the 32-bit version word on the wire.

    For abstract syntaxes the word is ``major | minor << 16`` (docs/kms-wire-protocol.md 2.3: u16 major, u16 minor);
    transfer syntaxes carry a single u32 version.
    """

    uuid: uuid.UUID
    version: int

    @property
    def major(self) -> int:
        """Major version of an abstract syntax (low 16 bits)."""
        return self.version & 0xFFFF

    @property
    def minor(self) -> int:
        """Minor version of an abstract syntax (high 16 bits)."""
        return self.version >> 16


#: KMS interface "KMSServer", version 1.0 (docs/kms-wire-protocol.md 2.2; KMSServer.idl).
KMS_INTERFACE = SyntaxId(uuid.UUID("51c82175-844e-4750-b0d8-ec255555bc06"), 1)
#: NDR32 transfer syntax, version 2 (docs/kms-wire-protocol.md 2.2).
NDR32_SYNTAX = SyntaxId(uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860"), 2)
#: NDR64 transfer syntax, version 1 (docs/kms-wire-protocol.md 2.2).
NDR64_SYNTAX = SyntaxId(uuid.UUID("71710533-beba-4937-8319-b5dbef9ccc36"), 1)
#: The first 8 wire bytes that identify Bind Time Feature Negotiation; bytes 8-15 are the bitmask (docs/kms-wire-protocol.md 2.2).
BTFN_PREFIX = bytes.fromhex("2c1cb76c12984045")
#: Version word of the BTFN pseudo transfer syntax (docs/kms-wire-protocol.md 2.2).
BTFN_VERSION = 1


def btfn_syntax(bitmask: int) -> SyntaxId:
    """The BTFN pseudo transfer syntax requesting ``bitmask`` (docs/kms-wire-protocol.md 2.2: clients send 0x03)."""
    return SyntaxId(uuid.UUID(bytes_le=BTFN_PREFIX + bitmask.to_bytes(8, "little")), BTFN_VERSION)


def btfn_bitmask(syntax: SyntaxId) -> int | None:
    """The requested feature bitmask if ``syntax`` is BTFN, else ``None`` (vlmcsd compares 8 bytes)."""
    raw = syntax.uuid.bytes_le
    if raw[:8] != BTFN_PREFIX:
        return None
    return int.from_bytes(raw[8:], "little")


def secondary_address_bytes(port: str) -> bytes:
    """The secondary address as sent in a bind_ack: ASCII text plus NUL, or nothing for ``""`` (docs/kms-wire-protocol.md 2.4)."""
    return port.encode("ascii") + b"\0" if port else b""


# --------------------------------------------------------------------------------------------
# Construct definitions: the spec tables.
# --------------------------------------------------------------------------------------------

# Spec 2.1: common header, 16 bytes.
RpcHeader = cs.Struct(
    "rpc_vers" / cs.Int8ul * "5",  # +0x00
    "rpc_vers_minor" / cs.Int8ul * "0",  # +0x01
    "ptype" / cs.Int8ul * "PType",  # +0x02
    "pfc_flags" / cs.Int8ul * "PfcFlag bits",  # +0x03
    "drep" / cs.Bytes(4) * "packed data representation, 10 00 00 00",  # +0x04
    "frag_length" / cs.Int16ul * "whole PDU length, header included",  # +0x08
    "auth_length" / cs.Int16ul * "0: KMS uses no authentication",  # +0x0a
    "call_id" / cs.Int32ul * "call identifier, echoed by the server",  # +0x0c
)

# Spec 2.3: a syntax id, 20 bytes (UUID + u32 version; abstract syntaxes split it as u16 major, u16 minor).
RpcSyntaxId = cs.Struct(
    "uuid" / Guid * "syntax UUID, mixed-endian",  # +0x00
    "version" / cs.Int32ul * "version word",  # +0x10
)

# Spec 2.3: presentation context element, 24 + 20*n bytes (44 with one transfer syntax).
RpcContextElement = cs.Struct(
    "p_cont_id" / cs.Int16ul * "presentation context id",  # +0x00
    "n_transfer_syn" / cs.Rebuild(cs.Int8ul, cs.len_(this.transfer_syntaxes)) * "number of transfer syntaxes",  # +0x02
    cs.Padding(1),  # +0x03 reserved
    "abstract_syntax" / RpcSyntaxId * "interface UUID and version",  # +0x04
    "transfer_syntaxes" / cs.Array(this.n_transfer_syn, RpcSyntaxId) * "offered transfer syntaxes",  # +0x18
)

# Spec 2.3: bind (PTYPE 11) and alter_context (PTYPE 14) body, from PDU offset 16.
RpcBindBody = cs.Struct(
    "max_xmit_frag" / cs.Int16ul * "largest fragment the client sends",  # +0x10
    "max_recv_frag" / cs.Int16ul * "largest fragment the client receives",  # +0x12
    "assoc_group_id" / cs.Int32ul * "0 for a new association group",  # +0x14
    "n_context_elem" / cs.Rebuild(cs.Int8ul, cs.len_(this.context_elements)) * "number of elements",  # +0x18
    cs.Padding(3),  # +0x19 reserved, reserved2
    "context_elements" / cs.Array(this.n_context_elem, RpcContextElement) * "the offers",  # +0x1c
    "trailer" / cs.GreedyBytes * "bytes after the last element, kept for lossless decoding",
)

# Spec 2.4: result entry, 24 bytes.
RpcResultEntry = cs.Struct(
    "result" / cs.Int16ul * "ContextResult",  # +0x00
    "reason" / cs.Int16ul * "RejectReason, or the granted BTFN bitmask for negotiate_ack",  # +0x02
    "transfer_syntax" / RpcSyntaxId * "accepted syntax; zero when rejected or BTFN",  # +0x04
)

# Spec 2.4: bind_ack (PTYPE 12) and alter_context_resp (PTYPE 15) body, from PDU offset 16.
RpcBindAckBody = cs.Struct(
    "max_xmit_frag" / cs.Int16ul * "copied from the bind",  # +0x10
    "max_recv_frag" / cs.Int16ul * "copied from the bind",  # +0x12
    "assoc_group_id" / cs.Int32ul * "association group of the server",  # +0x14
    "sec_addr_length" / cs.Rebuild(cs.Int16ul, cs.len_(this.secondary_address)) * "L, NUL included",  # +0x18
    "secondary_address" / cs.Bytes(this.sec_addr_length) * "port as ASCII + NUL; empty in alter_context_resp",  # +0x1a
    "pad" / cs.Bytes(lambda ctx: (-(26 + ctx.sec_addr_length)) % 4) * "to a multiple of 4 from PDU start (Q2)",
    "n_results" / cs.Rebuild(cs.Int8ul, cs.len_(this.results)) * "= n_context_elem of the bind",
    cs.Padding(3),  # reserved, reserved2
    "results" / cs.Array(this.n_results, RpcResultEntry) * "one per offered element, same order",
    "trailer" / cs.GreedyBytes * "bytes after the results, kept",
)

# C706 12.6.4.4 (docs/kms-wire-protocol.md): bind_nak body.
RpcBindNakBody = cs.Struct(
    "provider_reject_reason" / cs.Int16ul * "BindNakReason",  # +0x10
    "n_protocols" / cs.Rebuild(cs.Int8ul, cs.len_(this.versions)) * "supported protocol versions",  # +0x12
    "versions" / cs.Array(this.n_protocols, cs.Struct("major" / cs.Int8ul, "minor" / cs.Int8ul)),  # +0x13
    "trailer" / cs.GreedyBytes * "signature or padding, kept",
)

# Spec 2.6: request (PTYPE 0) body.
RpcRequestBody = cs.Struct(
    "alloc_hint" / cs.Int32ul * "stub length",  # +0x10
    "p_cont_id" / cs.Int16ul * "negotiated context id",  # +0x14
    "opnum" / cs.Int16ul * "0: RequestActivation",  # +0x16
    "object" / cs.If(this._.header.pfc_flags & PfcFlag.OBJECT_UUID, Guid) * "object UUID if PFC_OBJECT_UUID",  # +0x18
    "stub_data" / cs.GreedyBytes * "NDR stub (docs/kms-wire-protocol.md 3)",
)

# Spec 2.7: response (PTYPE 2) body.
RpcResponseBody = cs.Struct(
    "alloc_hint" / cs.Int32ul * "stub length",  # +0x10
    "p_cont_id" / cs.Int16ul * "copied from the request",  # +0x14
    "cancel_count" / cs.Int8ul * "0",  # +0x16
    "reserved" / cs.Int8ul * "0",  # +0x17
    "stub_data" / cs.GreedyBytes * "NDR stub (docs/kms-wire-protocol.md 3)",  # +0x18
)

# Spec 2.8: fault (PTYPE 3) body.
RpcFaultBody = cs.Struct(
    "alloc_hint" / cs.Int32ul * "vlmcsd writes 32 (Q1)",  # +0x10
    "p_cont_id" / cs.Int16ul * "vlmcsd writes 0",  # +0x14
    "cancel_count" / cs.Int8ul * "uninitialised in vlmcsd (Q1)",  # +0x16
    "reserved" / cs.Int8ul * "uninitialised in vlmcsd (Q1)",  # +0x17
    "status" / cs.Int32ul * "NCA status code",  # +0x18
    "reserved2" / cs.Int32ul * "0",  # +0x1c
    "trailer" / cs.GreedyBytes * "bytes after the body, kept",
)

#: A whole PDU: header, then the body of its PTYPE, exactly frag_length bytes.
RpcPdu = cs.Struct(
    "header" / RpcHeader,
    "body"
    / cs.FixedSized(
        lambda ctx: ctx.header.frag_length - HEADER_LENGTH,
        cs.Switch(
            this.header.ptype,
            {
                PType.REQUEST: RpcRequestBody,
                PType.RESPONSE: RpcResponseBody,
                PType.FAULT: RpcFaultBody,
                PType.BIND: RpcBindBody,
                PType.BIND_ACK: RpcBindAckBody,
                PType.BIND_NAK: RpcBindNakBody,
                PType.ALTER_CONTEXT: RpcBindBody,
                PType.ALTER_CONTEXT_RESP: RpcBindAckBody,
            },
            cs.StopIf(True),
        ),
    ),
    cs.Terminated,
)


# --------------------------------------------------------------------------------------------
# Typed boundary.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Header:
    """Common-header fields every PDU carries (docs/kms-wire-protocol.md 2.1); ptype and frag_length are implied."""

    call_id: int
    pfc_flags: int = PfcFlag.FIRST_FRAG | PfcFlag.LAST_FRAG
    rpc_vers: int = 5
    rpc_vers_minor: int = 0
    drep: bytes = DREP_LE
    auth_length: int = 0


@dataclass(frozen=True, slots=True)
class ContextElement:
    """One presentation context offered in a bind or alter_context (docs/kms-wire-protocol.md 2.3)."""

    p_cont_id: int
    abstract_syntax: SyntaxId
    transfer_syntaxes: tuple[SyntaxId, ...]


@dataclass(frozen=True, slots=True)
class ResultEntry:
    """One result of a bind_ack or alter_context_resp (docs/kms-wire-protocol.md 2.4)."""

    result: ContextResult
    reason: int
    transfer_syntax: SyntaxId


@dataclass(frozen=True, slots=True, kw_only=True)
class _BindBody(_Header):
    """The body bind and alter_context share (docs/kms-wire-protocol.md 2.3)."""

    max_xmit_frag: int = 5840
    max_recv_frag: int = 5840
    assoc_group_id: int = 0
    context_elements: tuple[ContextElement, ...] = ()
    trailer: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bind(_BindBody):
    """bind, PTYPE 11 (docs/kms-wire-protocol.md 2.3)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterContext(_BindBody):
    """alter_context, PTYPE 14: same body as bind (docs/kms-wire-protocol.md 2.3)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _BindAckBody(_Header):
    """The body bind_ack and alter_context_resp share (docs/kms-wire-protocol.md 2.4).

    ``secondary_address`` is the raw text with its NUL (see :func:`secondary_address_bytes`);
    ``pad`` the bytes between it and n_results, empty meaning zeros (vlmcsd sends junk, Q2).
    """

    max_xmit_frag: int = 5840
    max_recv_frag: int = 5840
    assoc_group_id: int = 0
    secondary_address: bytes = b""
    pad: bytes = b""
    results: tuple[ResultEntry, ...] = ()
    trailer: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindAck(_BindAckBody):
    """bind_ack, PTYPE 12 (docs/kms-wire-protocol.md 2.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterContextResp(_BindAckBody):
    """alter_context_resp, PTYPE 15: same body as bind_ack, usually without secondary address (docs/kms-wire-protocol.md 2.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindNak(_Header):
    """bind_nak, PTYPE 13 (C706 12.6.4.4); no KMS emulator sends it."""

    provider_reject_reason: int = BindNakReason.REASON_NOT_SPECIFIED
    versions: tuple[tuple[int, int], ...] = ((5, 0),)
    trailer: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Request(_Header):
    """request, PTYPE 0 (docs/kms-wire-protocol.md 2.6). ``object`` is present iff pfc_flags has OBJECT_UUID."""

    alloc_hint: int = 0
    p_cont_id: int = 0
    opnum: int = 0
    object: uuid.UUID | None = None
    stub_data: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Response(_Header):
    """response, PTYPE 2 (docs/kms-wire-protocol.md 2.7)."""

    alloc_hint: int = 0
    p_cont_id: int = 0
    cancel_count: int = 0
    reserved: int = 0
    stub_data: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault(_Header):
    """fault, PTYPE 3 (docs/kms-wire-protocol.md 2.8)."""

    alloc_hint: int = 0
    p_cont_id: int = 0
    cancel_count: int = 0
    reserved: int = 0
    status: int = 0
    reserved2: int = 0
    trailer: bytes = b""


Pdu = Bind | AlterContext | BindAck | AlterContextResp | BindNak | Request | Response | Fault

_PTYPE_OF: dict[type, PType] = {
    Request: PType.REQUEST,
    Response: PType.RESPONSE,
    Fault: PType.FAULT,
    Bind: PType.BIND,
    BindAck: PType.BIND_ACK,
    BindNak: PType.BIND_NAK,
    AlterContext: PType.ALTER_CONTEXT,
    AlterContextResp: PType.ALTER_CONTEXT_RESP,
}
_CLASS_OF: dict[int, type] = {int(v): k for k, v in _PTYPE_OF.items()}
_MAX_FRAG = 0xFFFF

_HDR = struct.Struct("<BBBB4sHHI")
_SYN = struct.Struct("<16sI")
_BIND_FIXED = struct.Struct("<HHIB3x")
_ELEM_HEAD = struct.Struct("<HBx16sI")
_RESULT = struct.Struct("<HH16sI")
_REQ_FIXED = struct.Struct("<IHH")
_RESP_FIXED = struct.Struct("<IHBB")
_FAULT_FIXED = struct.Struct("<IHBBII")


def split_pdus(stream: bytes) -> tuple[list[bytes], bytes]:
    """Cut a byte stream into whole PDUs by their frag_length (docs/kms-wire-protocol.md 1.4); also return the rest
    (a partial PDU, or bytes whose frag_length is below the 16-byte header)."""
    pdus, offset = [], 0
    while offset + 10 <= len(stream):
        length = int.from_bytes(stream[offset + 8 : offset + 10], "little")
        if length < HEADER_LENGTH or offset + length > len(stream):
            break
        pdus.append(stream[offset : offset + length])
        offset += length
    return pdus, stream[offset:]


def frag_length_of(header: bytes) -> int:
    """frag_length of a PDU from (at least) its first 10 bytes (docs/kms-wire-protocol.md 2.1, 1.4).

    Raises:
        DecodeError: fewer than 10 bytes given.
    """
    if len(header) < 10:
        raise DecodeError("need 10 bytes to read frag_length", offset=len(header), path="header -> frag_length")
    return header[8] | header[9] << 8


class _HeaderFields(TypedDict):
    """The :class:`_Header` keyword arguments read from a common header (``**`` into any PDU class)."""

    rpc_vers: int
    rpc_vers_minor: int
    pfc_flags: int
    drep: bytes
    auth_length: int
    call_id: int


def _header_kwargs(data: bytes) -> tuple[int, _HeaderFields]:
    n = len(data)
    if n < HEADER_LENGTH:
        raise DecodeError(f"PDU of {n} bytes is shorter than the 16-byte common header", offset=n, path="header")
    vers, minor, ptype, flags, drep, frag, auth, call_id = _HDR.unpack_from(data)
    if ptype not in _CLASS_OF:
        raise DecodeError(f"unsupported PTYPE {ptype}", offset=2, path="header -> ptype")
    if frag != n:
        raise DecodeError(
            f"frag_length {frag} disagrees with the {n} bytes of the PDU", offset=8, path="header -> frag_length"
        )
    return ptype, _HeaderFields(
        rpc_vers=vers, rpc_vers_minor=minor, pfc_flags=flags, drep=drep, auth_length=auth, call_id=call_id
    )


def _need(data: bytes, end: int, path: str) -> None:
    if len(data) < end:
        raise DecodeError(f"PDU ends after {len(data)} bytes, {path} needs {end}", offset=len(data), path=path)


def _decode_bind(cls: type[Bind] | type[AlterContext], data: bytes, hdr: _HeaderFields) -> Pdu:
    _need(data, 28, "body -> n_context_elem")
    xmit, recv, group, count = _BIND_FIXED.unpack_from(data, 16)
    pos = 28
    elements = []
    for i in range(count):
        path = f"body -> context_elements -> {i}"
        _need(data, pos + 24, path)
        ctx_id, n_syn, abstract_raw, abstract_ver = _ELEM_HEAD.unpack_from(data, pos)
        pos += 24
        _need(data, pos + 20 * n_syn, path + " -> transfer_syntaxes")
        syntaxes = []
        for _ in range(n_syn):
            raw, ver = _SYN.unpack_from(data, pos)
            syntaxes.append(SyntaxId(uuid.UUID(bytes_le=raw), ver))
            pos += 20
        elements.append(
            ContextElement(ctx_id, SyntaxId(uuid.UUID(bytes_le=abstract_raw), abstract_ver), tuple(syntaxes))
        )
    return cls(
        max_xmit_frag=xmit,
        max_recv_frag=recv,
        assoc_group_id=group,
        context_elements=tuple(elements),
        trailer=data[pos:],
        **hdr,
    )


def _result_of(value: int, path: str, offset: int) -> ContextResult:
    try:
        return ContextResult(value)
    except ValueError:
        raise DecodeError(f"unknown context result {value}", offset=offset, path=path) from None


def _decode_bind_ack(cls: type[BindAck] | type[AlterContextResp], data: bytes, hdr: _HeaderFields) -> Pdu:
    _need(data, 26, "body -> sec_addr_length")
    xmit, recv, group, length = struct.unpack_from("<HHIH", data, 16)
    pos = 26 + length
    pad_end = pos + (-pos) % 4
    _need(data, pad_end + 4, "body -> n_results")
    secondary, pad = data[26:pos], data[pos:pad_end]
    count = data[pad_end]
    pos = pad_end + 4
    _need(data, pos + 24 * count, "body -> results")
    results = []
    for i in range(count):
        result, reason, raw, ver = _RESULT.unpack_from(data, pos)
        results.append(
            ResultEntry(
                _result_of(result, f"body -> results -> {i} -> result", pos),
                reason,
                SyntaxId(uuid.UUID(bytes_le=raw), ver),
            )
        )
        pos += 24
    return cls(
        max_xmit_frag=xmit,
        max_recv_frag=recv,
        assoc_group_id=group,
        secondary_address=secondary,
        pad=pad,
        results=tuple(results),
        trailer=data[pos:],
        **hdr,
    )


def _decode_bind_nak(data: bytes, hdr: _HeaderFields) -> Pdu:
    _need(data, 19, "body -> n_protocols")
    reason = data[16] | data[17] << 8
    count = data[18]
    end = 19 + 2 * count
    _need(data, end, "body -> versions")
    versions = tuple((data[i], data[i + 1]) for i in range(19, end, 2))
    return BindNak(provider_reject_reason=reason, versions=versions, trailer=data[end:], **hdr)


def _decode_request(data: bytes, hdr: _HeaderFields) -> Pdu:
    _need(data, 24, "body -> opnum")
    alloc_hint, ctx_id, opnum = _REQ_FIXED.unpack_from(data, 16)
    obj = None
    pos = 24
    if hdr["pfc_flags"] & PfcFlag.OBJECT_UUID:
        _need(data, 40, "body -> object")
        obj = uuid.UUID(bytes_le=data[24:40])
        pos = 40
    return Request(alloc_hint=alloc_hint, p_cont_id=ctx_id, opnum=opnum, object=obj, stub_data=data[pos:], **hdr)


def _decode_response(data: bytes, hdr: _HeaderFields) -> Pdu:
    _need(data, 24, "body -> reserved")
    alloc_hint, ctx_id, cancel, reserved = _RESP_FIXED.unpack_from(data, 16)
    return Response(
        alloc_hint=alloc_hint, p_cont_id=ctx_id, cancel_count=cancel, reserved=reserved, stub_data=data[24:], **hdr
    )


def _decode_fault(data: bytes, hdr: _HeaderFields) -> Pdu:
    _need(data, 32, "body -> reserved2")
    alloc_hint, ctx_id, cancel, reserved, status, reserved2 = _FAULT_FIXED.unpack_from(data, 16)
    return Fault(
        alloc_hint=alloc_hint,
        p_cont_id=ctx_id,
        cancel_count=cancel,
        reserved=reserved,
        status=status,
        reserved2=reserved2,
        trailer=data[32:],
        **hdr,
    )


#: PTYPE (a plain int, as read from the header) -> decoder of the body.
_DECODERS: dict[int, Callable[[bytes, _HeaderFields], Pdu]] = {
    PType.REQUEST: _decode_request,
    PType.RESPONSE: _decode_response,
    PType.FAULT: _decode_fault,
    PType.BIND: partial(_decode_bind, Bind),
    PType.BIND_ACK: partial(_decode_bind_ack, BindAck),
    PType.BIND_NAK: _decode_bind_nak,
    PType.ALTER_CONTEXT: partial(_decode_bind, AlterContext),
    PType.ALTER_CONTEXT_RESP: partial(_decode_bind_ack, AlterContextResp),
}


def decode_pdu(data: bytes) -> Pdu:
    """Decode one whole PDU (exactly frag_length bytes) into its dataclass.

    Raises:
        DecodeError: whatever is wrong with ``data`` (too short, unsupported PTYPE, frag_length that
            disagrees with ``len(data)``, a count running past the end, an unknown context result).
    """
    data = bytes(data)
    ptype, hdr = _header_kwargs(data)
    return _DECODERS[ptype](data, hdr)


def _syntax_bytes(syntax: SyntaxId) -> bytes:
    return _SYN.pack(syntax.uuid.bytes_le, syntax.version)


def _bind_ack_pad(pdu: BindAck | AlterContextResp) -> bytes:
    size = (-(26 + len(pdu.secondary_address))) % 4
    if not pdu.pad:
        return b"\0" * size
    if len(pdu.pad) != size:
        raise UsageError(f"bind_ack pad must be {size} bytes for a {len(pdu.secondary_address)}-byte secondary address")
    return pdu.pad


def _encode_body(pdu: Pdu) -> bytes:
    if isinstance(pdu, Request):
        if bool(pdu.pfc_flags & PfcFlag.OBJECT_UUID) != (pdu.object is not None):
            raise UsageError("a request has an object UUID exactly when pfc_flags has OBJECT_UUID (0x80)")
        obj = pdu.object.bytes_le if pdu.object is not None else b""
        return _REQ_FIXED.pack(pdu.alloc_hint, pdu.p_cont_id, pdu.opnum) + obj + pdu.stub_data
    if isinstance(pdu, Response):
        return _RESP_FIXED.pack(pdu.alloc_hint, pdu.p_cont_id, pdu.cancel_count, pdu.reserved) + pdu.stub_data
    if isinstance(pdu, Fault):
        return (
            _FAULT_FIXED.pack(pdu.alloc_hint, pdu.p_cont_id, pdu.cancel_count, pdu.reserved, pdu.status, pdu.reserved2)
            + pdu.trailer
        )
    if isinstance(pdu, (Bind, AlterContext)):
        parts = [_BIND_FIXED.pack(pdu.max_xmit_frag, pdu.max_recv_frag, pdu.assoc_group_id, len(pdu.context_elements))]
        for elem in pdu.context_elements:
            parts.append(
                _ELEM_HEAD.pack(
                    elem.p_cont_id,
                    len(elem.transfer_syntaxes),
                    elem.abstract_syntax.uuid.bytes_le,
                    elem.abstract_syntax.version,
                )
            )
            parts.extend(_syntax_bytes(s) for s in elem.transfer_syntaxes)
        parts.append(pdu.trailer)
        return b"".join(parts)
    if isinstance(pdu, (BindAck, AlterContextResp)):
        parts = [
            struct.pack("<HHIH", pdu.max_xmit_frag, pdu.max_recv_frag, pdu.assoc_group_id, len(pdu.secondary_address)),
            pdu.secondary_address,
            _bind_ack_pad(pdu),
            struct.pack("<B3x", len(pdu.results)),
        ]
        parts.extend(
            _RESULT.pack(r.result, r.reason, r.transfer_syntax.uuid.bytes_le, r.transfer_syntax.version)
            for r in pdu.results
        )
        parts.append(pdu.trailer)
        return b"".join(parts)
    if isinstance(pdu, BindNak):
        head = struct.pack("<HB", pdu.provider_reject_reason, len(pdu.versions))
        return head + b"".join(bytes(v) for v in pdu.versions) + pdu.trailer
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
        if frag > _MAX_FRAG:
            raise UsageError(f"PDU of {frag} bytes exceeds the 65535-byte frag_length")
        header = _HDR.pack(
            pdu.rpc_vers,
            pdu.rpc_vers_minor,
            _PTYPE_OF[type(pdu)],
            pdu.pfc_flags,
            pdu.drep,
            frag,
            pdu.auth_length,
            pdu.call_id,
        )
    except struct.error as exc:
        raise UsageError(f"cannot encode {type(pdu).__name__}: {exc}") from exc
    return header + body


# --------------------------------------------------------------------------------------------
# The same through the Construct tables (reference path, used by tests and tools).
# --------------------------------------------------------------------------------------------


def _syntax_from(c: Any) -> SyntaxId:
    return SyntaxId(c.uuid, c.version)


def _syntax_to(s: SyntaxId) -> dict[str, Any]:
    return {"uuid": s.uuid, "version": s.version}


def decode_pdu_reference(data: bytes) -> Pdu:
    """:func:`decode_pdu` through the Construct tables (slow; the documented source of truth).

    Raises:
        DecodeError: as :func:`decode_pdu`.
    """
    data = bytes(data)
    if len(data) >= HEADER_LENGTH and data[2] not in _CLASS_OF:
        raise DecodeError(f"unsupported PTYPE {data[2]}", offset=2, path="header -> ptype")
    if len(data) >= HEADER_LENGTH and frag_length_of(data) != len(data):
        raise DecodeError(
            f"frag_length {frag_length_of(data)} disagrees with the {len(data)} bytes of the PDU",
            offset=8,
            path="header -> frag_length",
        )
    with decode_guard("DCE/RPC PDU"):
        parsed = RpcPdu.parse(data)
    h, b = parsed.header, parsed.body
    hdr = _HeaderFields(
        rpc_vers=h.rpc_vers,
        rpc_vers_minor=h.rpc_vers_minor,
        pfc_flags=h.pfc_flags,
        drep=h.drep,
        auth_length=h.auth_length,
        call_id=h.call_id,
    )
    ptype = h.ptype
    if ptype in (PType.BIND, PType.ALTER_CONTEXT):
        bind_cls: type[Bind] | type[AlterContext] = Bind if ptype == PType.BIND else AlterContext
        elems = tuple(
            ContextElement(
                e.p_cont_id, _syntax_from(e.abstract_syntax), tuple(_syntax_from(t) for t in e.transfer_syntaxes)
            )
            for e in b.context_elements
        )
        return bind_cls(
            max_xmit_frag=b.max_xmit_frag,
            max_recv_frag=b.max_recv_frag,
            assoc_group_id=b.assoc_group_id,
            context_elements=elems,
            trailer=b.trailer,
            **hdr,
        )
    if ptype in (PType.BIND_ACK, PType.ALTER_CONTEXT_RESP):
        ack_cls: type[BindAck] | type[AlterContextResp] = BindAck if ptype == PType.BIND_ACK else AlterContextResp
        results = tuple(
            ResultEntry(
                _result_of(r.result, f"body -> results -> {i} -> result", 0), r.reason, _syntax_from(r.transfer_syntax)
            )
            for i, r in enumerate(b.results)
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
    if ptype == PType.BIND_NAK:
        return BindNak(
            provider_reject_reason=b.provider_reject_reason,
            versions=tuple((v.major, v.minor) for v in b.versions),
            trailer=b.trailer,
            **hdr,
        )
    if ptype == PType.REQUEST:
        return Request(
            alloc_hint=b.alloc_hint, p_cont_id=b.p_cont_id, opnum=b.opnum, object=b.object, stub_data=b.stub_data, **hdr
        )
    if ptype == PType.RESPONSE:
        return Response(
            alloc_hint=b.alloc_hint,
            p_cont_id=b.p_cont_id,
            cancel_count=b.cancel_count,
            reserved=b.reserved,
            stub_data=b.stub_data,
            **hdr,
        )
    return Fault(
        alloc_hint=b.alloc_hint,
        p_cont_id=b.p_cont_id,
        cancel_count=b.cancel_count,
        reserved=b.reserved,
        status=b.status,
        reserved2=b.reserved2,
        trailer=b.trailer,
        **hdr,
    )


def encode_pdu_reference(pdu: Pdu) -> bytes:
    """:func:`encode_pdu` through the Construct tables (slow; the documented source of truth).

    Raises:
        UsageError: the PDU cannot be built.
    """
    body: dict[str, Any]
    if isinstance(pdu, (Bind, AlterContext)):
        body = dict(
            max_xmit_frag=pdu.max_xmit_frag,
            max_recv_frag=pdu.max_recv_frag,
            assoc_group_id=pdu.assoc_group_id,
            trailer=pdu.trailer,
            context_elements=[
                dict(
                    p_cont_id=e.p_cont_id,
                    abstract_syntax=_syntax_to(e.abstract_syntax),
                    transfer_syntaxes=[_syntax_to(t) for t in e.transfer_syntaxes],
                )
                for e in pdu.context_elements
            ],
        )
    elif isinstance(pdu, (BindAck, AlterContextResp)):
        body = dict(
            max_xmit_frag=pdu.max_xmit_frag,
            max_recv_frag=pdu.max_recv_frag,
            assoc_group_id=pdu.assoc_group_id,
            secondary_address=pdu.secondary_address,
            pad=_bind_ack_pad(pdu),
            trailer=pdu.trailer,
            results=[
                dict(result=int(r.result), reason=r.reason, transfer_syntax=_syntax_to(r.transfer_syntax))
                for r in pdu.results
            ],
        )
    elif isinstance(pdu, BindNak):
        body = dict(
            provider_reject_reason=pdu.provider_reject_reason,
            trailer=pdu.trailer,
            versions=[dict(major=a, minor=b) for a, b in pdu.versions],
        )
    elif isinstance(pdu, Request):
        body = dict(
            alloc_hint=pdu.alloc_hint,
            p_cont_id=pdu.p_cont_id,
            opnum=pdu.opnum,
            object=pdu.object,
            stub_data=pdu.stub_data,
        )
    elif isinstance(pdu, Response):
        body = dict(
            alloc_hint=pdu.alloc_hint,
            p_cont_id=pdu.p_cont_id,
            cancel_count=pdu.cancel_count,
            reserved=pdu.reserved,
            stub_data=pdu.stub_data,
        )
    elif isinstance(pdu, Fault):
        body = dict(
            alloc_hint=pdu.alloc_hint,
            p_cont_id=pdu.p_cont_id,
            cancel_count=pdu.cancel_count,
            reserved=pdu.reserved,
            status=pdu.status,
            reserved2=pdu.reserved2,
            trailer=pdu.trailer,
        )
    else:
        raise UsageError(f"not a PDU: {type(pdu).__name__}")
    ptype = _PTYPE_OF[type(pdu)]
    # Build the body alone first: frag_length depends on its size.
    header = dict(
        rpc_vers=pdu.rpc_vers,
        rpc_vers_minor=pdu.rpc_vers_minor,
        ptype=int(ptype),
        pfc_flags=pdu.pfc_flags,
        drep=pdu.drep,
        auth_length=pdu.auth_length,
        call_id=pdu.call_id,
    )
    sub = {
        PType.REQUEST: RpcRequestBody,
        PType.RESPONSE: RpcResponseBody,
        PType.FAULT: RpcFaultBody,
        PType.BIND: RpcBindBody,
        PType.ALTER_CONTEXT: RpcBindBody,
        PType.BIND_ACK: RpcBindAckBody,
        PType.ALTER_CONTEXT_RESP: RpcBindAckBody,
        PType.BIND_NAK: RpcBindNakBody,
    }[ptype]
    try:
        raw_body = sub.build(body, header=header)
        header["frag_length"] = HEADER_LENGTH + len(raw_body)
        return bytes(RpcPdu.build(dict(header=header, body=body)))
    except (cs.ConstructError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot encode {type(pdu).__name__}: {exc}") from exc
