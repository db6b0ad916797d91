"""The typed DCE/RPC PDUs (frozen dataclasses) that :mod:`emu.wire.rpc.codec` decodes to and
encodes from. Construct containers never leave the wire package.

Spec: docs/kms-wire-protocol.md
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from emu.wire.rpc.names import DREP_LE, BindNakReason, ContextResult, PfcFlag, PType, SyntaxId


@dataclass(frozen=True, slots=True, kw_only=True)
class _Header:
    """Common-header fields every PDU carries (docs/kms-wire-protocol.md); ptype and frag_length are implied."""

    call_id: int
    pfc_flags: int = PfcFlag.FIRST_FRAG | PfcFlag.LAST_FRAG
    rpc_vers: int = 5
    rpc_vers_minor: int = 0
    drep: bytes = DREP_LE
    auth_length: int = 0


@dataclass(frozen=True, slots=True)
class ContextElement:
    """One presentation context offered in a bind or alter_context (docs/kms-wire-protocol.md)."""

    p_cont_id: int
    abstract_syntax: SyntaxId
    transfer_syntaxes: tuple[SyntaxId, ...]


@dataclass(frozen=True, slots=True)
class ResultEntry:
    """One result of a bind_ack or alter_context_resp (docs/kms-wire-protocol.md)."""

    result: ContextResult
    reason: int
    transfer_syntax: SyntaxId


@dataclass(frozen=True, slots=True, kw_only=True)
class _BindBody(_Header):
    """The body bind and alter_context share (docs/kms-wire-protocol.md)."""

    max_xmit_frag: int = 5840
    max_recv_frag: int = 5840
    assoc_group_id: int = 0
    context_elements: tuple[ContextElement, ...] = ()
    trailer: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bind(_BindBody):
    """bind, PTYPE 11 (docs/kms-wire-protocol.md)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterContext(_BindBody):
    """alter_context, PTYPE 14: same body as bind (docs/kms-wire-protocol.md)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _BindAckBody(_Header):
    """The body bind_ack and alter_context_resp share (docs/kms-wire-protocol.md).

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
    """bind_ack, PTYPE 12 (docs/kms-wire-protocol.md)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlterContextResp(_BindAckBody):
    """alter_context_resp, PTYPE 15: same body as bind_ack, usually without secondary address (docs/kms-wire-protocol.md)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BindNak(_Header):
    """bind_nak, PTYPE 13 (C706 12.6.4.4); no KMS emulator sends it."""

    provider_reject_reason: int = BindNakReason.REASON_NOT_SPECIFIED
    versions: tuple[tuple[int, int], ...] = ((5, 0),)
    trailer: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Request(_Header):
    """request, PTYPE 0 (docs/kms-wire-protocol.md). ``object`` is present iff pfc_flags has OBJECT_UUID."""

    alloc_hint: int = 0
    p_cont_id: int = 0
    opnum: int = 0
    object: uuid.UUID | None = None
    stub_data: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Response(_Header):
    """response, PTYPE 2 (docs/kms-wire-protocol.md)."""

    alloc_hint: int = 0
    p_cont_id: int = 0
    cancel_count: int = 0
    reserved: int = 0
    stub_data: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault(_Header):
    """fault, PTYPE 3 (docs/kms-wire-protocol.md)."""

    alloc_hint: int = 0
    p_cont_id: int = 0
    cancel_count: int = 0
    reserved: int = 0
    status: int = 0
    reserved2: int = 0
    trailer: bytes = b""


Pdu = Bind | AlterContext | BindAck | AlterContextResp | BindNak | Request | Response | Fault

#: PDU class -> PTYPE, and back.
PTYPE_OF: dict[type, PType] = {
    Request: PType.REQUEST,
    Response: PType.RESPONSE,
    Fault: PType.FAULT,
    Bind: PType.BIND,
    BindAck: PType.BIND_ACK,
    BindNak: PType.BIND_NAK,
    AlterContext: PType.ALTER_CONTEXT,
    AlterContextResp: PType.ALTER_CONTEXT_RESP,
}
CLASS_OF: dict[int, type] = {int(v): k for k, v in PTYPE_OF.items()}
#: Largest frag_length a PDU can carry (u16).
MAX_FRAG = 0xFFFF
