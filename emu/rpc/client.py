"""Sans-IO client side of a DCE/RPC association carrying the KMS interface, vlmcs style.

:meth:`ClientAssociation.bind` gives the bind to send; :meth:`ClientAssociation.receive_data`
turns the server's bytes into events (:class:`BindAccepted`, :class:`SendAlterContext`,
:class:`Reply`, :class:`FaultReceived`, :class:`RpcWarning`); :meth:`ClientAssociation.request`
wraps a KMS request message in a request PDU. No sockets, no clock.

Every reply goes through the checks vlmcs makes (docs/kms-wire-protocol.md), each known by a name (the
``CHECK_*`` constants). Checks vlmcs only warns about become :class:`RpcWarning` events; the
others raise :class:`RpcCheckFailed` (an :class:`~emu.errors.RpcError`) and put the
association in the ERROR state, after which any input raises again.

Spec: docs/kms-wire-protocol.md.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum

from emu.errors import DecodeError, RpcError, UsageError
from emu.wire.ndr import Placement, TransferSyntax, decode_response_stub, encode_request_stub
from emu.wire.rpc import (
    DREP_LE,
    KMS_INTERFACE,
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    ContextElement,
    ContextResult,
    Fault,
    PfcFlag,
    Request,
    Response,
    SyntaxId,
    btfn_syntax,
    decode_pdu,
    encode_pdu,
    frag_length_of,
)

__all__ = [
    "CHECK_ACCEPTED_SYNTAX",
    "CHECK_ALLOC_HINT",
    "CHECK_AUTH_LENGTH",
    "CHECK_BTFN_ENTRY",
    "CHECK_CALL_ID",
    "CHECK_CANCEL_COUNT",
    "CHECK_CONC_MPX",
    "CHECK_DECODE",
    "CHECK_DREP",
    "CHECK_FRAGMENT_FLAGS",
    "CHECK_FRAG_LENGTH",
    "CHECK_NDR_DATA_LENGTH",
    "CHECK_NO_PROTSEQS",
    "CHECK_N_RESULTS",
    "CHECK_PAD",
    "CHECK_PTYPE",
    "CHECK_P_CONT_ID",
    "CHECK_REJECTED_ENTRY",
    "CHECK_VERSION",
    "DEFAULT_MAX_FRAG",
    "RPC_S_CANNOT_SUPPORT",
    "RPC_S_NO_PROTSEQS",
    "RPC_S_PROTOCOL_ERROR",
    "BindAccepted",
    "ClientAssociation",
    "ClientEvent",
    "ClientState",
    "FaultReceived",
    "Reply",
    "RpcCheckFailed",
    "RpcWarning",
    "SendAlterContext",
]

# Names of the vlmcs checks (docs/kms-wire-protocol.md).
CHECK_DECODE = "decode"  #: the reply is not a well-formed PDU (fatal)
CHECK_FRAG_LENGTH = "frag_length"  #: frag_length below 16 or above our max_recv_frag (fatal)
CHECK_PTYPE = "ptype"  #: PTYPE is the one expected now (fatal)
CHECK_DREP = "drep"  #: packed_drep is 10 00 00 00 (fatal)
CHECK_AUTH_LENGTH = "auth_length"  #: auth_length is 0 (fatal)
CHECK_FRAGMENT_FLAGS = "fragment_flags"  #: FIRST_FRAG and LAST_FRAG both set (fatal, RPC_S_CANNOT_SUPPORT)
CHECK_VERSION = "version"  #: rpc_vers 5.0 (fatal)
CHECK_CALL_ID = "call_id"  #: equal to ours; 1 is a warning (Wine), anything else fatal
CHECK_CONC_MPX = "conc_mpx"  #: bind_ack CONC_MPX equals the bind's (warning)
CHECK_N_RESULTS = "n_results"  #: one result per offered element (fatal)
CHECK_REJECTED_ENTRY = "rejected_entry"  #: rejections carry reason 2 and zero syntax (warning)
CHECK_BTFN_ENTRY = "btfn_entry"  #: BTFN answered negotiate_ack with the requested bits (warning)
CHECK_ACCEPTED_SYNTAX = "accepted_syntax"  #: acceptances echo the offered syntax, reason 0 (fatal)
CHECK_NO_PROTSEQS = "no_protseqs"  #: neither NDR32 nor NDR64 accepted (fatal, RPC_S_NO_PROTSEQS)
CHECK_CANCEL_COUNT = "cancel_count"  #: response cancel_count 0 (fatal)
CHECK_P_CONT_ID = "p_cont_id"  #: response context id equals the request's (fatal)
CHECK_NDR_DATA_LENGTH = "ndr_data_length"  #: response size field = max_count, stub decodes (fatal)
CHECK_ALLOC_HINT = "alloc_hint"  #: alloc_hint equals the stub length (warning)
CHECK_PAD = "pad"  #: NDR alignment bytes are zero (warning)

#: Win32 errors vlmcs reports for the failed checks (docs/kms-wire-protocol.md).
RPC_S_PROTOCOL_ERROR = 1728
RPC_S_CANNOT_SUPPORT = 1764
RPC_S_NO_PROTSEQS = 1719
#: max_xmit_frag/max_recv_frag both clients propose (docs/kms-wire-protocol.md).
DEFAULT_MAX_FRAG = 5840

_FIRST_LAST = PfcFlag.FIRST_FRAG | PfcFlag.LAST_FRAG
_ZERO_SYNTAX = SyntaxId(uuid.UUID(int=0), 0)


class RpcCheckFailed(RpcError):
    """A reply failed one of the fatal vlmcs checks; ``check`` is its ``CHECK_*`` name."""

    def __init__(self, check: str, message: str, wire_code: int = RPC_S_PROTOCOL_ERROR) -> None:
        super().__init__(f"[{check}] {message}", wire_code)
        self.check = check


@dataclass(frozen=True, slots=True)
class BindAccepted:
    """The association is usable with these NDR syntaxes (after the alter_context, if one was needed)."""

    syntaxes: tuple[TransferSyntax, ...]


@dataclass(frozen=True, slots=True)
class SendAlterContext:
    """NDR32 was rejected in the bind but is wanted: send ``data`` (an alter_context) next."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """A response to one of our requests: the KMS message, or ``None`` and the error HRESULT."""

    call_id: int
    kms_response: bytes | None
    hresult: int
    syntax: TransferSyntax


@dataclass(frozen=True, slots=True)
class FaultReceived:
    """The server answered a call with a fault PDU."""

    call_id: int
    status: int


@dataclass(frozen=True, slots=True)
class RpcWarning:
    """A check vlmcs only warns about did not pass."""

    check: str
    text: str


ClientEvent = BindAccepted | SendAlterContext | Reply | FaultReceived | RpcWarning


class ClientState(Enum):
    """Client association states."""

    IDLE = "idle"
    BINDING = "binding"
    ALTERING = "altering"
    BOUND = "bound"
    ERROR = "error"


class ClientAssociation:
    """The client side of one connection (see the module docstring).

    Args:
        offer_ndr64: offer NDR64 as context 1 (vlmcs ``-N1``).
        offer_btfn: offer BTFN (bitmask 0x03) as the last context (vlmcs ``-B1``).
        multiplex: set CONC_MPX in bind/alter_context (vlmcs without ``-p``).
        first_call_id: call id of the bind and the first request (vlmcs: 2).
        max_frag: max_xmit_frag/max_recv_frag proposed; larger replies are refused.
    """

    def __init__(
        self,
        offer_ndr64: bool = True,
        offer_btfn: bool = True,
        multiplex: bool = True,
        first_call_id: int = 2,
        max_frag: int = DEFAULT_MAX_FRAG,
    ) -> None:
        self.offer_ndr64 = offer_ndr64
        self.offer_btfn = offer_btfn
        self.max_frag = max_frag
        self.state = ClientState.IDLE
        #: Negotiated contexts: NDR syntax -> p_cont_id.
        self.contexts: dict[TransferSyntax, int] = {}
        self._call_id = first_call_id
        self._flags = _FIRST_LAST | (PfcFlag.CONC_MPX if multiplex else 0)
        self._offers: tuple[ContextElement, ...] = ()
        self._outstanding: dict[int, tuple[int, TransferSyntax]] = {}
        self._requests_sent = 0
        self._buffer = bytearray()

    # -- what to send ----------------------------------------------------------------------------

    def bind(self) -> bytes:
        """The bind PDU: ctx 0 NDR32, ctx 1 NDR64, then BTFN(0x03) (docs/kms-wire-protocol.md), call_id = current.

        Raises:
            UsageError: the association is not fresh.
        """
        if self.state is not ClientState.IDLE:
            raise UsageError(f"bind() on an association in state {self.state.value}")
        syntaxes = [TransferSyntax.NDR32.syntax_id]
        if self.offer_ndr64:
            syntaxes.append(TransferSyntax.NDR64.syntax_id)
        if self.offer_btfn:
            syntaxes.append(btfn_syntax(0x03))
        self._offers = tuple(ContextElement(i, KMS_INTERFACE, (s,)) for i, s in enumerate(syntaxes))
        self.state = ClientState.BINDING
        return encode_pdu(
            Bind(
                call_id=self._call_id,
                pfc_flags=self._flags,
                max_xmit_frag=self.max_frag,
                max_recv_frag=self.max_frag,
                context_elements=self._offers,
            )
        )

    def request(self, kms_request: bytes, syntax: TransferSyntax | None = None) -> bytes:
        """A request PDU carrying ``kms_request`` (opnum 0).

        Like vlmcs, the first request uses NDR32 and later ones NDR64 when both were negotiated;
        ``syntax`` forces one. The call id is used, then incremented.

        Raises:
            UsageError: not bound yet, or ``syntax`` was not negotiated.
        """
        if self.state is not ClientState.BOUND:
            raise UsageError(f"request() before the bind completed (state {self.state.value})")
        if syntax is None:
            order = (TransferSyntax.NDR32, TransferSyntax.NDR64)
            if self._requests_sent:
                order = order[::-1]
            syntax = next(s for s in order if s in self.contexts)
        elif syntax not in self.contexts:
            raise UsageError(f"{syntax.name} was not negotiated on this association")
        ctx = self.contexts[syntax]
        stub = encode_request_stub(kms_request, syntax)
        call_id = self._call_id
        data = encode_pdu(
            Request(
                call_id=call_id, pfc_flags=_FIRST_LAST, alloc_hint=len(stub), p_cont_id=ctx, opnum=0, stub_data=stub
            )
        )
        self._outstanding[call_id] = (ctx, syntax)
        self._call_id += 1
        self._requests_sent += 1
        return data

    # -- what came back --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        """Feed bytes from the server; return the events of every complete PDU.

        Raises:
            RpcCheckFailed: a fatal check failed (the association is then in the ERROR state).
            RpcError: input after a failure.
        """
        if self.state is ClientState.ERROR:
            raise RpcError("the association already failed; open a new connection")
        self._buffer += data
        events: list[ClientEvent] = []
        try:
            while len(self._buffer) >= 16:
                frag = frag_length_of(self._buffer)
                if frag < 16 or frag > self.max_frag:
                    raise RpcCheckFailed(CHECK_FRAG_LENGTH, f"frag_length {frag} outside 16..{self.max_frag}")
                if len(self._buffer) < frag:
                    break
                raw = bytes(self._buffer[:frag])
                del self._buffer[:frag]
                self._handle(raw, events)
        except RpcError:
            self.state = ClientState.ERROR
            raise
        return events

    def _handle(self, raw: bytes, events: list[ClientEvent]) -> None:
        try:
            pdu = decode_pdu(raw)
        except DecodeError as exc:
            raise RpcCheckFailed(CHECK_DECODE, str(exc)) from exc
        if self.state is ClientState.BINDING:
            expected: tuple[type[BindAck | AlterContextResp | Response | Fault], ...] = (BindAck,)
        elif self.state is ClientState.ALTERING:
            expected = (AlterContextResp,)
        elif self.state is ClientState.BOUND and self._outstanding:
            expected = (Response, Fault)
        else:
            expected = ()
        if not isinstance(pdu, expected):
            wanted = " or ".join(t.__name__ for t in expected) or "nothing"
            raise RpcCheckFailed(CHECK_PTYPE, f"got {type(pdu).__name__}, expected {wanted}")
        self._check_header(pdu, events)
        if isinstance(pdu, (BindAck, AlterContextResp)):
            self._on_bind_answer(pdu, events)
        elif isinstance(pdu, Fault):
            call_id = self._match_call(pdu.call_id, events)
            del self._outstanding[call_id]
            events.append(FaultReceived(call_id, pdu.status))
        else:
            assert isinstance(pdu, Response)
            self._on_response(pdu, events)

    def _check_header(self, pdu: BindAck | AlterContextResp | Response | Fault, events: list[ClientEvent]) -> None:
        if pdu.drep != DREP_LE:
            raise RpcCheckFailed(CHECK_DREP, f"packed_drep {pdu.drep.hex()} is not 10000000")
        if pdu.auth_length:
            raise RpcCheckFailed(CHECK_AUTH_LENGTH, f"auth_length {pdu.auth_length} is not 0")
        if pdu.pfc_flags & _FIRST_LAST != _FIRST_LAST:
            raise RpcCheckFailed(
                CHECK_FRAGMENT_FLAGS, f"pfc_flags {pdu.pfc_flags:#04x} lack FIRST_FRAG|LAST_FRAG", RPC_S_CANNOT_SUPPORT
            )
        if (pdu.rpc_vers, pdu.rpc_vers_minor) != (5, 0):
            raise RpcCheckFailed(CHECK_VERSION, f"RPC version {pdu.rpc_vers}.{pdu.rpc_vers_minor} is not 5.0")

    def _match_call(self, call_id: int, events: list[ClientEvent]) -> int:
        if call_id in self._outstanding:
            return call_id
        if call_id == 1:
            oldest = next(iter(self._outstanding))
            events.append(RpcWarning(CHECK_CALL_ID, f"reply has call_id 1 instead of {oldest} (Wine does this)"))
            return oldest
        raise RpcCheckFailed(CHECK_CALL_ID, f"reply has call_id {call_id}, none of ours {sorted(self._outstanding)}")

    def _on_bind_answer(self, pdu: BindAck | AlterContextResp, events: list[ClientEvent]) -> None:
        if pdu.call_id != self._call_id:
            if pdu.call_id != 1:
                raise RpcCheckFailed(CHECK_CALL_ID, f"call_id {pdu.call_id}, expected {self._call_id}")
            events.append(RpcWarning(CHECK_CALL_ID, f"call_id 1 instead of {self._call_id} (Wine does this)"))
        if isinstance(pdu, BindAck) and pdu.pfc_flags & PfcFlag.CONC_MPX != self._flags & PfcFlag.CONC_MPX:
            events.append(RpcWarning(CHECK_CONC_MPX, "bind_ack CONC_MPX flag differs from the bind's"))
        if len(pdu.results) != len(self._offers):
            raise RpcCheckFailed(
                CHECK_N_RESULTS, f"{len(pdu.results)} results for {len(self._offers)} offered contexts"
            )
        for offer, result in zip(self._offers, pdu.results):
            offered = offer.transfer_syntaxes[0]
            ndr = TransferSyntax.of(offered)
            if ndr is None:  # the BTFN element
                if (result.result, result.reason) != (ContextResult.NEGOTIATE_ACK, 3):
                    events.append(
                        RpcWarning(
                            CHECK_BTFN_ENTRY, f"BTFN answered {int(result.result)}/{result.reason}, expected 3/3"
                        )
                    )
                continue
            if result.result == ContextResult.ACCEPTANCE:
                if result.transfer_syntax != offered or result.reason != 0:
                    raise RpcCheckFailed(
                        CHECK_ACCEPTED_SYNTAX,
                        f"context {offer.p_cont_id} accepted with "
                        f"{result.transfer_syntax} reason {result.reason}, offered {offered}",
                    )
                self.contexts[ndr] = offer.p_cont_id
            elif result.transfer_syntax != _ZERO_SYNTAX or result.reason != 2:
                events.append(
                    RpcWarning(
                        CHECK_REJECTED_ENTRY,
                        f"context {offer.p_cont_id} rejected with reason "
                        f"{result.reason} and syntax {result.transfer_syntax}",
                    )
                )
        if not self.contexts:
            raise RpcCheckFailed(CHECK_NO_PROTSEQS, "the server accepted neither NDR32 nor NDR64", RPC_S_NO_PROTSEQS)
        if isinstance(pdu, BindAck) and TransferSyntax.NDR32 not in self.contexts:
            # vlmcs wants NDR32 for its first request: re-offer it alone (docs/kms-wire-protocol.md).
            self._offers = (ContextElement(0, KMS_INTERFACE, (TransferSyntax.NDR32.syntax_id,)),)
            self.state = ClientState.ALTERING
            events.append(
                SendAlterContext(
                    encode_pdu(
                        AlterContext(
                            call_id=self._call_id,
                            pfc_flags=self._flags,
                            max_xmit_frag=self.max_frag,
                            max_recv_frag=self.max_frag,
                            context_elements=self._offers,
                        )
                    )
                )
            )
            return
        self.state = ClientState.BOUND
        events.append(BindAccepted(tuple(s for s in TransferSyntax if s in self.contexts)))

    def _on_response(self, pdu: Response, events: list[ClientEvent]) -> None:
        call_id = self._match_call(pdu.call_id, events)
        ctx, syntax = self._outstanding.pop(call_id)
        if pdu.cancel_count:
            raise RpcCheckFailed(CHECK_CANCEL_COUNT, f"cancel_count {pdu.cancel_count} is not 0")
        if pdu.p_cont_id != ctx:
            raise RpcCheckFailed(CHECK_P_CONT_ID, f"response on context {pdu.p_cont_id}, request was on {ctx}")
        try:
            stub = decode_response_stub(pdu.stub_data, syntax)
        except DecodeError as exc:
            raise RpcCheckFailed(CHECK_NDR_DATA_LENGTH, str(exc)) from exc
        if stub.kms_data is not None and stub.response_size != stub.max_count:
            raise RpcCheckFailed(
                CHECK_NDR_DATA_LENGTH, f"response size {stub.response_size} differs from max_count {stub.max_count}"
            )
        if pdu.alloc_hint != len(pdu.stub_data):
            events.append(
                RpcWarning(
                    CHECK_ALLOC_HINT, f"alloc_hint {pdu.alloc_hint} differs from the {len(pdu.stub_data)}-byte stub"
                )
            )
        if any(stub.pad) or stub.placement is Placement.SERVER:
            events.append(RpcWarning(CHECK_PAD, f"NDR pad bytes {stub.pad.hex()} are not zero before the HRESULT"))
        events.append(Reply(call_id, stub.kms_data, stub.hresult, syntax))
