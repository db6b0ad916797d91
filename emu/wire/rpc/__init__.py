"""DCE/RPC v5 connection-oriented PDUs as KMS uses them: bind, bind_ack, bind_nak, alter_context,
alter_context_resp, request, response, fault.

Spec: docs/kms-wire-protocol.md (PDU tables and quirks); DCE 1.1 RPC (C706)
chapter 12.6 and [MS-RPCE] 2.2.2 for names and the status codes.

The package is split by concern: :mod:`~emu.wire.rpc.names` (codes, syntax ids, framing helpers),
:mod:`~emu.wire.rpc.tables` (the Construct declarations, one per spec table, the only place a
layout is written), :mod:`~emu.wire.rpc.pdus` (the typed dataclasses) and
:mod:`~emu.wire.rpc.codec` (:func:`decode_pdu` / :func:`encode_pdu`, through the compiled tables).
Everything is re-exported here.
"""

from __future__ import annotations

from emu.wire.rpc.codec import (
    RawHeader,
    decode_pdu,
    encode_pdu,
    read_header,
)
from emu.wire.rpc.names import (
    BTFN_PREFIX,
    BTFN_VERSION,
    DREP_LE,
    FAULT_STATUS_NAMES,
    HEADER_LENGTH,
    KMS_INTERFACE,
    NCA_S_FAULT_NDR,
    NCA_S_OP_RNG_ERROR,
    NCA_S_PROTO_ERROR,
    NCA_S_UNK_IF,
    NCA_S_UNSPEC_REJECT,
    NDR32_SYNTAX,
    NDR64_SYNTAX,
    BindNakReason,
    ContextResult,
    PfcFlag,
    PType,
    RejectReason,
    SyntaxId,
    btfn_bitmask,
    btfn_syntax,
    frag_length_of,
    secondary_address_bytes,
    split_pdus,
)
from emu.wire.rpc.pdus import (
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
    RpcContextElement,
    RpcFaultBody,
    RpcHeader,
    RpcRequestBody,
    RpcResponseBody,
    RpcResultEntry,
    RpcSyntaxId,
)

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
    "RawHeader",
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
    "RpcRequestBody",
    "RpcResponseBody",
    "RpcResultEntry",
    "RpcSyntaxId",
    "SyntaxId",
    "btfn_bitmask",
    "btfn_syntax",
    "decode_pdu",
    "encode_pdu",
    "frag_length_of",
    "read_header",
    "secondary_address_bytes",
    "split_pdus",
]
