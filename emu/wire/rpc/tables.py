"""The Construct declarations of the DCE/RPC PDUs KMS uses, one per spec table: the only place
their layout is written. :mod:`emu.wire.rpc.codec` compiles them and decodes/encodes through them.

Spec: docs/kms-wire-protocol.md (PDU tables and quirks); C706 12.6.4.4 for bind_nak.
"""

from __future__ import annotations

import construct as cs
from construct import this

from emu.wire.common import ExactBytes, Guid, IndexedArray
from emu.wire.rpc.names import PfcFlag

# Common header, 16 bytes.
RpcHeader = cs.Struct(
    "rpc_vers" / cs.Int8ul * "5",  # +0x00
    "rpc_vers_minor" / cs.Int8ul * "0",  # +0x01
    "ptype" / cs.Int8ul * "PType",  # +0x02
    "pfc_flags" / cs.Int8ul * "PfcFlag bits",  # +0x03
    "drep" / ExactBytes(4) * "packed data representation, 10 00 00 00",  # +0x04
    "frag_length" / cs.Int16ul * "whole PDU length, header included",  # +0x08
    "auth_length" / cs.Int16ul * "0: KMS uses no authentication",  # +0x0a
    "call_id" / cs.Int32ul * "call identifier, echoed by the server",  # +0x0c
)

# A syntax id, 20 bytes (UUID + u32 version; abstract syntaxes split it as u16 major, u16 minor).
RpcSyntaxId = cs.Struct(
    "uuid" / Guid * "syntax UUID, mixed-endian",  # +0x00
    "version" / cs.Int32ul * "version word",  # +0x10
)

# Presentation context element, 24 + 20*n bytes (44 with one transfer syntax).
RpcContextElement = cs.Struct(
    "p_cont_id" / cs.Int16ul * "presentation context id",  # +0x00
    "n_transfer_syn" / cs.Rebuild(cs.Int8ul, cs.len_(this.transfer_syntaxes)) * "number of transfer syntaxes",  # +0x02
    cs.Padding(1),  # +0x03 reserved
    "abstract_syntax" / RpcSyntaxId * "interface UUID and version",  # +0x04
    "transfer_syntaxes" / IndexedArray(this.n_transfer_syn, RpcSyntaxId) * "offered transfer syntaxes",  # +0x18
)

# Bind (PTYPE 11) and alter_context (PTYPE 14) body, from PDU offset 16.
RpcBindBody = cs.Struct(
    "max_xmit_frag" / cs.Int16ul * "largest fragment the client sends",  # +0x10
    "max_recv_frag" / cs.Int16ul * "largest fragment the client receives",  # +0x12
    "assoc_group_id" / cs.Int32ul * "0 for a new association group",  # +0x14
    "n_context_elem" / cs.Rebuild(cs.Int8ul, cs.len_(this.context_elements)) * "number of elements",  # +0x18
    cs.Padding(3),  # +0x19 reserved, reserved2
    "context_elements" / IndexedArray(this.n_context_elem, RpcContextElement) * "the offers",  # +0x1c
    "trailer" / cs.GreedyBytes * "bytes after the last element, kept for lossless decoding",
)

# Result entry, 24 bytes.
RpcResultEntry = cs.Struct(
    "result" / cs.Int16ul * "ContextResult",  # +0x00
    "reason" / cs.Int16ul * "RejectReason, or the granted BTFN bitmask for negotiate_ack",  # +0x02
    "transfer_syntax" / RpcSyntaxId * "accepted syntax; zero when rejected or BTFN",  # +0x04
)

# Bind_ack (PTYPE 12) and alter_context_resp (PTYPE 15) body, from PDU offset 16.
RpcBindAckBody = cs.Struct(
    "max_xmit_frag" / cs.Int16ul * "copied from the bind",  # +0x10
    "max_recv_frag" / cs.Int16ul * "copied from the bind",  # +0x12
    "assoc_group_id" / cs.Int32ul * "association group of the server",  # +0x14
    "sec_addr_length" / cs.Rebuild(cs.Int16ul, cs.len_(this.secondary_address)) * "L, NUL included",  # +0x18
    "secondary_address"
    / ExactBytes(this.sec_addr_length)
    * "port as ASCII + NUL; empty in alter_context_resp",  # +0x1a
    "pad" / ExactBytes((-(26 + this.sec_addr_length)) % 4) * "to a multiple of 4 from PDU start (Q2)",
    "n_results" / cs.Rebuild(cs.Int8ul, cs.len_(this.results)) * "= n_context_elem of the bind",
    cs.Padding(3),  # reserved, reserved2
    "results" / IndexedArray(this.n_results, RpcResultEntry) * "one per offered element, same order",
    "trailer" / cs.GreedyBytes * "bytes after the results, kept",
)

# C706 12.6.4.4 (docs/kms-wire-protocol.md): bind_nak body.
RpcBindNakBody = cs.Struct(
    "provider_reject_reason" / cs.Int16ul * "BindNakReason",  # +0x10
    "n_protocols" / cs.Rebuild(cs.Int8ul, cs.len_(this.versions)) * "supported protocol versions",  # +0x12
    "versions" / IndexedArray(this.n_protocols, cs.Struct("major" / cs.Int8ul, "minor" / cs.Int8ul)),  # +0x13
    "trailer" / cs.GreedyBytes * "signature or padding, kept",
)

# Request (PTYPE 0) body.
RpcRequestBody = cs.Struct(
    "alloc_hint" / cs.Int32ul * "stub length",  # +0x10
    "p_cont_id" / cs.Int16ul * "negotiated context id",  # +0x14
    "opnum" / cs.Int16ul * "0: RequestActivation",  # +0x16
    "object"
    / cs.If(this._.header.pfc_flags & int(PfcFlag.OBJECT_UUID), Guid)
    * "object UUID if PFC_OBJECT_UUID",  # +0x18
    "stub_data" / cs.GreedyBytes * "NDR stub (docs/kms-wire-protocol.md)",
)

# Response (PTYPE 2) body.
RpcResponseBody = cs.Struct(
    "alloc_hint" / cs.Int32ul * "stub length",  # +0x10
    "p_cont_id" / cs.Int16ul * "copied from the request",  # +0x14
    "cancel_count" / cs.Int8ul * "0",  # +0x16
    "reserved" / cs.Int8ul * "0",  # +0x17
    "stub_data" / cs.GreedyBytes * "NDR stub (docs/kms-wire-protocol.md)",  # +0x18
)

# Fault (PTYPE 3) body.
RpcFaultBody = cs.Struct(
    "alloc_hint" / cs.Int32ul * "vlmcsd writes 32 (Q1)",  # +0x10
    "p_cont_id" / cs.Int16ul * "vlmcsd writes 0",  # +0x14
    "cancel_count" / cs.Int8ul * "uninitialised in vlmcsd (Q1)",  # +0x16
    "reserved" / cs.Int8ul * "uninitialised in vlmcsd (Q1)",  # +0x17
    "status" / cs.Int32ul * "NCA status code",  # +0x18
    "reserved2" / cs.Int32ul * "0",  # +0x1c
    "trailer" / cs.GreedyBytes * "bytes after the body, kept",
)
