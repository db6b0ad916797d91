"""Sans-IO server side of a DCE/RPC association carrying the KMS interface.

Bytes go in (:meth:`ServerAssociation.receive_data`), actions come out: :class:`Send` bytes to
the peer, :class:`Call` an activation the host must answer with :meth:`ServerAssociation.respond`
(or, when the host's answer is a DCE/RPC fault, :meth:`ServerAssociation.fault`),
:class:`BadCall` a request whose NDR stub cannot be decoded (answer it with
``respond(bad_call, None, HRESULT_INVALID_DATA)``, as vlmcsd answers an undersized request, docs/kms-wire-protocol.md), and :class:`Close` when the peer broke the framing rules. No sockets, no clock.

Spec: docs/kms-wire-protocol.md (framing, bind answers, faults, server
validation, checklist and quirks). Where we differ from vlmcsd, on purpose:

* faults carry the request's call_id (vlmcsd: its own counter, Q1), as the checklist (12.3) advises;
* opnum != 0 gets fault nca_s_op_rng_error (vlmcsd ignores opnum, Q17);
* fragmented requests are reassembled up to :data:`MAX_STUB_LENGTH` (vlmcsd cannot);
* the largest PDU accepted is ``max_pdu`` (vlmcsd: 300 bytes, Q16), a bind with more than
  ``max_contexts`` elements closes the connection like vlmcsd's size limit does;
* bind_ack/alter_context_resp padding is zero (vlmcsd leaves junk, Q2).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from enum import Enum

from emu.errors import DecodeError, UsageError
from emu.hresults import E_INVALID_DATA
from emu.wire.ndr import TransferSyntax, decode_request_stub, encode_response_stub
from emu.wire.rpc import (
    KMS_INTERFACE,
    NCA_S_OP_RNG_ERROR,
    NCA_S_UNK_IF,
    NDR32_SYNTAX,
    NDR64_SYNTAX,
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    ContextElement,
    ContextResult,
    Fault,
    PfcFlag,
    PType,
    RejectReason,
    Request,
    ResultEntry,
    SyntaxId,
    btfn_bitmask,
    decode_pdu,
    encode_pdu,
    encode_response_to,
    frag_length_of,
    read_header,
    secondary_address_bytes,
)

__all__ = [
    "BTFN_SUPPORTED",
    "HRESULT_INVALID_DATA",
    "KMS_OPNUM",
    "MAX_CONTEXTS",
    "MAX_FRAG_LENGTH",
    "MAX_STUB_LENGTH",
    "MIN_FRAG_LENGTH",
    "Action",
    "AssociationState",
    "BadCall",
    "Call",
    "Close",
    "Send",
    "ServerAssociation",
    "ServerRpcConfig",
]

#: Largest PDU we accept and the max_xmit/recv we would advertise: the 5840 both clients propose
#: (docs/kms-wire-protocol.md). vlmcsd's own limit is 300 bytes (docs/kms-wire-protocol.md); any legal KMS PDU fits either.
MAX_FRAG_LENGTH = 5840
#: A PDU is at least its common header (docs/kms-wire-protocol.md).
MIN_FRAG_LENGTH = 16
#: Most context elements per bind we answer; vlmcsd answers 6 and drops 7 (docs/kms-wire-protocol.md, Q16).
MAX_CONTEXTS = 6
#: Cap on a reassembled fragmented request stub (a v6 request stub is 276 bytes, docs/kms-wire-protocol.md).
MAX_STUB_LENGTH = 16384
#: BTFN features we grant: security context multiplexing | keep connection on orphan (docs/kms-wire-protocol.md).
BTFN_SUPPORTED = 0x0003
#: HRESULT for an undecodable request, ERROR_INVALID_DATA as vlmcsd sends (from emu's one error table).
HRESULT_INVALID_DATA = E_INVALID_DATA
#: RequestActivation is the only operation of the interface (docs/kms-wire-protocol.md).
KMS_OPNUM = 0

_FAULT_FLAGS = PfcFlag.FIRST_FRAG | PfcFlag.LAST_FRAG | PfcFlag.DID_NOT_EXECUTE  # 0x23 (docs/kms-wire-protocol.md)
_FIRST_LAST = PfcFlag.FIRST_FRAG | PfcFlag.LAST_FRAG
_CLIENT_PTYPES = frozenset((int(PType.REQUEST), int(PType.BIND), int(PType.ALTER_CONTEXT)))
_ZERO_SYNTAX = SyntaxId(uuid.UUID(int=0), 0)
_BIND_PTYPES = frozenset((int(PType.BIND), int(PType.ALTER_CONTEXT)))
#: Where a bind_ack/alter_context_resp carries assoc_group_id: after the 16-byte header, max_xmit and max_recv.
_ASSOC_GROUP_AT = slice(20, 24)
#: Most distinct binds remembered (see :data:`_bind_memo`); a full memo is emptied and starts again.
BIND_MEMO_SIZE = 64

#: The answers to binds already negotiated, by (negotiation settings, bind bytes): the answer with its
#: assoc_group_id zeroed and the contexts it accepted. A client sends the same bind on every connection,
#: and decoding, negotiating and encoding it costs more than the rest of a KMS exchange; the answer
#: depends only on those bytes and settings, so it is computed once and patched with each association's
#: group id. Filled only from binds that decoded and were answered.
_bind_memo: dict[tuple[bool, bool, bytes, int, bytes], tuple[bytes, tuple[tuple[int, TransferSyntax], ...]]] = {}


@dataclass(frozen=True, slots=True)
class ServerRpcConfig:
    """How a server association negotiates (docs/kms-wire-protocol.md).

    Attributes:
        ndr64: accept NDR64 (and then reject NDR32 offered next to it, like vlmcsd ``-N1``).
        btfn: answer Bind Time Feature Negotiation (vlmcsd ``-B1``).
        secondary_address: the port text put in bind_acks ("1688").
        assoc_group_id: the association group id put in bind_acks.
        max_pdu: largest frag_length accepted; above it the connection is closed.
        max_contexts: most context elements in a bind/alter_context; above it, close.
        check_opnum: fault requests for an operation other than RequestActivation (False: treat every
            opnum as RequestActivation, as vlmcsd and py-kms do; the host's ``--profile`` uses it).
    """

    ndr64: bool = True
    btfn: bool = True
    secondary_address: str = "1688"
    assoc_group_id: int = 0
    max_pdu: int = MAX_FRAG_LENGTH
    max_contexts: int = MAX_CONTEXTS
    check_opnum: bool = True


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to write to the peer (bind_ack, alter_context_resp, fault)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Call:
    """An activation request the host must answer via :meth:`ServerAssociation.respond`."""

    call_id: int
    context_id: int
    syntax: TransferSyntax
    opnum: int
    kms_request: bytes
    request: Request


@dataclass(frozen=True, slots=True)
class BadCall:
    """A request on a valid context whose stub could not be decoded; answer it with
    ``respond(bad_call, None, HRESULT_INVALID_DATA)`` (vlmcsd's answer, docs/kms-wire-protocol.md)."""

    call_id: int
    context_id: int
    syntax: TransferSyntax
    reason: str
    request: Request


@dataclass(frozen=True, slots=True)
class Close:
    """The peer broke the framing rules: close the connection, send nothing."""

    reason: str


Action = Send | Call | BadCall | Close


class AssociationState(Enum):
    """Where the association is: before any accepted context, bound, or closed after a violation."""

    IDLE = "idle"
    BOUND = "bound"
    ERROR = "error"


@dataclass(slots=True)
class _Reassembly:
    first: Request
    parts: list[bytes] = field(default_factory=list)
    length: int = 0


class ServerAssociation:
    """One TCP connection's DCE/RPC state on the server side (see the module docstring)."""

    def __init__(self, config: ServerRpcConfig | None = None) -> None:
        self.config = config or ServerRpcConfig()
        self.state = AssociationState.IDLE
        #: Accepted presentation contexts: p_cont_id -> NDR syntax.
        self.contexts: dict[int, TransferSyntax] = {}
        self._buffer = bytearray()
        self._pending: _Reassembly | None = None
        self._address = secondary_address_bytes(self.config.secondary_address)

    def receive_data(self, data: bytes) -> list[Action]:
        """Feed bytes from the peer; return the actions they call for, in order.

        Partial PDUs are buffered; several PDUs in one chunk give several actions. After a
        :class:`Close`, further input is ignored.
        """
        if self.state is AssociationState.ERROR:
            return []
        buf = self._buffer
        buf += data
        actions: list[Action] = []
        while len(buf) >= MIN_FRAG_LENGTH:
            problem = self._check_header(buf)
            if problem is not None:
                return actions + [self._close(problem)]
            frag = frag_length_of(buf)
            if len(buf) < frag:
                break
            pdu = bytes(buf[:frag])
            del buf[:frag]
            action = self._handle(pdu)
            if action is not None:
                actions.append(action)
                if isinstance(action, Close):
                    return actions
        return actions

    def respond(self, call: Call | BadCall, kms_response: bytes | None, hresult: int = 0) -> bytes:
        """The response PDU answering ``call``: the success stub with ``kms_response``, or the
        error stub carrying ``hresult`` when it is ``None`` (docs/kms-wire-protocol.md).

        The header echoes the request's version, flags, drep and call_id (Q15); alloc_hint is the
        stub length; the context id is copied; cancel_count is 0.

        Raises:
            UsageError: ``hresult`` does not fit in 32 bits.
        """
        stub = encode_response_stub(kms_response, hresult, call.syntax)
        return encode_response_to(call.request, stub)

    def fault(self, call: Call | BadCall, status: int) -> bytes:
        """The fault PDU answering ``call`` with NCA ``status`` instead of a response (docs/kms-wire-protocol.md).

        The same 32-byte fault the association sends on its own for an unknown context or
        operation: flags 0x23, alloc_hint 32, p_cont_id 0, the request's call_id (as DCE/RPC requires,
        not vlmcsd's counter, Q1). A recorded host that faulted a request uses it
        (:class:`emu.pcap.replay_server.CapturedHost`). The association stays as it was: a fault
        answers one call, it does not end the connection.

        Raises:
            UsageError: ``status`` does not fit in 32 bits.
        """
        if not 0 <= status <= 0xFFFFFFFF:
            raise UsageError(f"fault status {status} does not fit in 32 bits")
        return self._fault(call.request, status).data

    # -- internals -------------------------------------------------------------------------------

    def _close(self, reason: str) -> Close:
        self.state = AssociationState.ERROR
        self._buffer.clear()
        self._pending = None
        return Close(reason)

    def _check_header(self, buf: bytearray) -> str | None:
        vers, minor, ptype, _, drep, frag, auth, _ = read_header(buf)
        if vers != 5 or minor > 1:
            return f"unsupported RPC version {vers}.{minor} (expected 5.0)"
        if ptype not in _CLIENT_PTYPES:
            return f"unsupported PTYPE {ptype} from a client (docs/kms-wire-protocol.md: only 0, 11, 14)"
        if drep[0] & 0xF0 != 0x10:
            return f"unsupported data representation {drep.hex()} (only little-endian integers)"
        if frag < MIN_FRAG_LENGTH or frag > self.config.max_pdu:
            return f"frag_length {frag} outside {MIN_FRAG_LENGTH}..{self.config.max_pdu}"
        if auth:
            return "authenticated PDUs are not supported (auth_length must be 0)"
        return None

    def _handle(self, data: bytes) -> Action | None:
        memo_key = None
        if data[2] in _BIND_PTYPES:
            config = self.config
            memo_key = (config.ndr64, config.btfn, self._address, config.max_contexts, data)
            known = _bind_memo.get(memo_key)
            if known is not None:
                answer, accepted = known
                self.contexts.update(accepted)
                if self.contexts:
                    self.state = AssociationState.BOUND
                out = bytearray(answer)
                out[_ASSOC_GROUP_AT] = config.assoc_group_id.to_bytes(4, "little")
                return Send(bytes(out))
        try:
            pdu = decode_pdu(data)
        except DecodeError as exc:
            return self._close(f"malformed PDU: {exc}")
        if isinstance(pdu, (Bind, AlterContext)):
            before = dict(self.contexts)
            action = self._bind(pdu)
            if memo_key is not None and isinstance(action, Send):
                accepted = tuple((k, v) for k, v in self.contexts.items() if before.get(k) is not v)
                template = bytearray(action.data)
                template[_ASSOC_GROUP_AT] = bytes(4)
                if len(_bind_memo) >= BIND_MEMO_SIZE:
                    _bind_memo.clear()
                _bind_memo[memo_key] = (bytes(template), accepted)
            return action
        assert isinstance(pdu, Request)  # _check_header let only 0, 11, 14 through
        return self._request(pdu)

    def _bind(self, pdu: Bind | AlterContext) -> Action:
        elements = pdu.context_elements
        if len(elements) > self.config.max_contexts:
            return self._close(f"{len(elements)} context elements exceed the limit of {self.config.max_contexts}")
        results = self._negotiate(elements)
        is_bind = isinstance(pdu, Bind)
        common = dict(
            rpc_vers=pdu.rpc_vers,
            rpc_vers_minor=pdu.rpc_vers_minor,
            drep=pdu.drep,
            call_id=pdu.call_id,
            max_xmit_frag=pdu.max_xmit_frag,
            max_recv_frag=pdu.max_recv_frag,
            assoc_group_id=self.config.assoc_group_id,
            results=results,
        )
        if is_bind:
            # bind_ack copies the bind's flags (Q15); alter_context_resp has FIRST|LAST (docs/kms-wire-protocol.md).
            ack_args = dict(common, pfc_flags=pdu.pfc_flags, secondary_address=self._address)
            answer: BindAck | AlterContextResp = BindAck(**ack_args)  # type: ignore[arg-type]
        else:
            answer = AlterContextResp(pfc_flags=_FIRST_LAST, **common)  # type: ignore[arg-type]
        if self.contexts:
            self.state = AssociationState.BOUND
        return Send(encode_pdu(answer))

    def _negotiate(self, elements: tuple[ContextElement, ...]) -> tuple[ResultEntry, ...]:
        """docs/kms-wire-protocol.md 3.4: NDR64 preferred when offered (for the KMS interface) and enabled."""
        ndr64_possible = self.config.ndr64 and any(
            _is_kms(e.abstract_syntax) and NDR64_SYNTAX in e.transfer_syntaxes for e in elements
        )
        results = []
        for elem in elements:
            results.append(self._answer(elem, ndr64_possible))
        return tuple(results)

    def _answer(self, elem: ContextElement, ndr64_possible: bool) -> ResultEntry:
        kms = _is_kms(elem.abstract_syntax)
        reason = (
            RejectReason.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED if kms else RejectReason.ABSTRACT_SYNTAX_NOT_SUPPORTED
        )
        offered = elem.transfer_syntaxes
        if kms and ndr64_possible and NDR64_SYNTAX in offered:
            self.contexts[elem.p_cont_id] = TransferSyntax.NDR64
            return ResultEntry(ContextResult.ACCEPTANCE, 0, NDR64_SYNTAX)
        if kms and not ndr64_possible and NDR32_SYNTAX in offered:
            self.contexts[elem.p_cont_id] = TransferSyntax.NDR32
            return ResultEntry(ContextResult.ACCEPTANCE, 0, NDR32_SYNTAX)
        for syntax in offered:
            bitmask = btfn_bitmask(syntax)
            if bitmask is not None:
                if self.config.btfn:
                    return ResultEntry(ContextResult.NEGOTIATE_ACK, bitmask & BTFN_SUPPORTED, _ZERO_SYNTAX)
                reason = RejectReason.PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED
        return ResultEntry(ContextResult.PROVIDER_REJECTION, int(reason), _ZERO_SYNTAX)

    def _fault(self, request: Request, status: int) -> Send:
        # 32-byte fault as vlmcsd sends it (docs/kms-wire-protocol.md): flags 0x23, alloc_hint 32, p_cont_id 0.
        fault = Fault(
            call_id=request.call_id,
            pfc_flags=_FAULT_FLAGS,
            alloc_hint=32,
            status=status,
            rpc_vers=request.rpc_vers,
            rpc_vers_minor=request.rpc_vers_minor,
            drep=request.drep,
        )
        return Send(encode_pdu(fault))

    def _request(self, req: Request) -> Action | None:
        flags = req.pfc_flags
        if self._pending is not None:
            pending = self._pending
            if flags & PfcFlag.FIRST_FRAG or req.call_id != pending.first.call_id:
                return self._close(f"call {req.call_id} interrupts the fragmented call {pending.first.call_id}")
            pending.parts.append(req.stub_data)
            pending.length += len(req.stub_data)
            if pending.length > MAX_STUB_LENGTH:
                return self._close(f"fragmented request exceeds {MAX_STUB_LENGTH} bytes")
            if not flags & PfcFlag.LAST_FRAG:
                return None
            self._pending = None
            first = pending.first
            req = replace(first, pfc_flags=first.pfc_flags | PfcFlag.LAST_FRAG, stub_data=b"".join(pending.parts))
        elif not flags & PfcFlag.FIRST_FRAG:
            return self._close(f"request fragment of call {req.call_id} without FIRST_FRAG")
        elif not flags & PfcFlag.LAST_FRAG:
            self._pending = _Reassembly(req, [req.stub_data], len(req.stub_data))
            return None
        syntax = self.contexts.get(req.p_cont_id)
        if syntax is None:
            return self._fault(req, NCA_S_UNK_IF)
        if req.opnum != KMS_OPNUM and self.config.check_opnum:
            return self._fault(req, NCA_S_OP_RNG_ERROR)
        try:
            stub = decode_request_stub(req.stub_data, syntax)
        except DecodeError as exc:
            return BadCall(req.call_id, req.p_cont_id, syntax, str(exc), req)
        return Call(req.call_id, req.p_cont_id, syntax, req.opnum, stub.kms_data, req)


def _is_kms(abstract: SyntaxId) -> bool:
    """The KMS interface at major version 1 (minor versions are compatible, C706 12.6.3.1)."""
    return abstract.uuid == KMS_INTERFACE.uuid and abstract.major == KMS_INTERFACE.major
