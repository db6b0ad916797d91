"""The KMS client on real sockets: one exchange, a kept connection, and many life cycles.

Three levels, each built on the one before:

* :class:`KmsClientSession` keeps one TCP connection and one sans-IO
  :class:`emu.rpc.client.ClientAssociation` for several activation requests (vlmcs without
  ``-T``); it reconnects and binds again when the host closed the connection in between.
* :func:`exchange` is one connection, one bind, one request (what a Windows client does).
* :func:`run_lifecycles` drives :class:`emu.kms.client.ClientLifecycle` state machines against
  real hosts with a :class:`emu.clock.VirtualClock`: it jumps the clock from deadline to deadline
  and performs each due discovery or exchange over the network, waiting for it to finish before
  time moves again (so no packet is ever in flight while the clock jumps).

Every way an exchange can go wrong ends in an :class:`ExchangeResult` whose
:attr:`ExchangeResult.status` says which (host error, fault, failed verification, RPC protocol
violation, nothing reachable) and whose :attr:`ExchangeResult.detail` says what exactly; nothing
the host sends can raise out of here. Network timeouts are real seconds (they bound waiting for
real sockets); protocol timers are the injected clock's.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

from emu.errors import RpcError, UsageError
from emu.hresults import describe, symbol_of
from emu.kms.client import (
    Answered,
    HostAddress,
    HostError,
    Outcome,
    Unreachable,
    VerificationFailed,
)
from emu.kms.messages import VerifiedResponse, build_request, verify_response
from emu.rng import Rng
from emu.rpc.client import (
    DEFAULT_MAX_FRAG,
    BindAccepted,
    ClientAssociation,
    FaultReceived,
    Reply,
    RpcCheckFailed,
    RpcWarning,
    SendAlterContext,
)
from emu.wire.kms import RequestBase
from emu.wire.ndr import TransferSyntax
from emu.wire.rpc import FAULT_STATUS_NAMES, HEADER_LENGTH, frag_length_of, split_pdus

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_REPLY_TIMEOUT",
    "ExchangeResult",
    "ExchangeStatus",
    "KmsClientSession",
    "RpcOptions",
    "describe_fault",
    "exchange",
]

log = logging.getLogger(__name__)

#: Seconds to wait for a TCP connection (real time).
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds to wait for each reply PDU (real time).
DEFAULT_REPLY_TIMEOUT = 10.0
#: Bytes read from the socket at a time.
_READ_SIZE = 65536


@dataclass(frozen=True, slots=True)
class RpcOptions:
    """How the client speaks DCE/RPC and how long it waits (vlmcs ``-N``, ``-B``, ``-p``, ``-i``).

    Attributes:
        offer_ndr64: offer NDR64 in the bind (vlmcs ``-N1``).
        offer_btfn: offer bind-time feature negotiation (vlmcs ``-B1``).
        multiplex: set CONC_MPX in the bind (vlmcs without ``-p``).
        connect_timeout: seconds for the TCP handshake.
        reply_timeout: seconds for each reply (bind_ack, response).
        family: ``socket.AF_INET``/``AF_INET6`` to force one, 0 for either.
        max_frag: max_xmit_frag/max_recv_frag proposed; a longer reply fragment is a protocol error.
        first_call_id: call_id of the bind and first request on each connection (vlmcs: 2; a vlmcs
            run that reconnects keeps counting, which replaying such a capture needs).
    """

    offer_ndr64: bool = True
    offer_btfn: bool = True
    multiplex: bool = True
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    reply_timeout: float = DEFAULT_REPLY_TIMEOUT
    family: int = 0
    max_frag: int = DEFAULT_MAX_FRAG
    first_call_id: int = 2

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.reply_timeout <= 0:
            raise UsageError("timeouts must be positive seconds")


class ExchangeStatus(enum.Enum):
    """How one activation request ended, from the client's point of view."""

    ACTIVATED = "activated"  #: verified response, count >= the required count
    BELOW_THRESHOLD = "below-threshold"  #: verified response, count below the required count
    HOST_ERROR = "host-error"  #: the response stub carried an HRESULT instead of a KMS response
    FAULT = "fault"  #: the host answered with a DCE/RPC fault PDU
    VERIFICATION_FAILED = "verification-failed"  #: a KMS response that fails a check of docs/kms-wire-protocol.md 5.6
    PROTOCOL_ERROR = "protocol-error"  #: garbage, truncated or oversized PDUs, a failed RPC check
    UNREACHABLE = "unreachable"  #: refused, timed out, or closed without an answer


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    """Everything about one activation request: what was sent, what came back, what it means.

    Attributes:
        host: the host asked.
        status: the verdict (see :class:`ExchangeStatus`).
        detail: one line saying exactly what happened, for a person.
        request: the request base sent.
        kms_request: the KMS request message (the NDR payload).
        kms_response: the KMS response message, when one came back.
        verified: the outcome of every response check, when a response came back.
        hresult: the HRESULT of the response stub (0 on success).
        fault_status: the status of a fault PDU, if one came back.
        rpc_check: the name of the failed RPC check (``emu.rpc.client.CHECK_*``) of a protocol error.
        syntax: the NDR transfer syntax the request used.
        warnings: the RPC checks that only warn (docs/kms-wire-protocol.md 2.11), in the order seen.
        sent: every byte written on the connection for this request (bind included when one was made).
        received: every byte read for it.
        local: our socket address, ``(host, port)``, when a connection was made.
        new_connection: whether this request opened (and bound) a connection.
    """

    host: HostAddress
    status: ExchangeStatus
    detail: str
    request: RequestBase
    kms_request: bytes
    kms_response: bytes | None = None
    verified: VerifiedResponse | None = None
    hresult: int = 0
    fault_status: int | None = None
    rpc_check: str | None = None
    syntax: TransferSyntax | None = None
    warnings: tuple[RpcWarning, ...] = ()
    sent: bytes = b""
    received: bytes = b""
    local: tuple[str, int] | None = None
    new_connection: bool = False

    @property
    def activated(self) -> bool:
        return self.status is ExchangeStatus.ACTIVATED

    @property
    def count(self) -> int | None:
        return None if self.verified is None else self.verified.count

    @property
    def outcome(self) -> Outcome:
        """The result as :meth:`emu.kms.client.ClientLifecycle.exchange_done` wants it."""
        verified = self.verified
        if self.status in (ExchangeStatus.ACTIVATED, ExchangeStatus.BELOW_THRESHOLD) and verified is not None:
            return Answered(
                count=verified.count or 0,
                activation_interval=verified.activation_interval or 0,
                renewal_interval=verified.renewal_interval or 0,
                epid=verified.epid or "",
            )
        if self.status is ExchangeStatus.HOST_ERROR:
            return HostError(self.hresult, symbol_of(self.hresult) or "")
        if self.status is ExchangeStatus.FAULT:
            return HostError(self.fault_status or 0, "DCE/RPC fault")
        if self.status is ExchangeStatus.VERIFICATION_FAILED and verified is not None:
            return VerificationFailed(tuple(c.name for c in verified.checks if not c.passed and c.severity == "error"))
        return Unreachable(self.detail)


def describe_fault(status: int) -> str:
    """``0x1C010003 (nca_s_unk_if)``, or just the hex for unknown NCA status codes."""
    name = FAULT_STATUS_NAMES.get(status)
    return f"0x{status:08X}" + (f" ({name})" if name else "")


class _Failed(Exception):
    """Internal: the exchange ended early; carries the verdict (never leaves this module)."""

    def __init__(self, status: ExchangeStatus, detail: str, rpc_check: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.rpc_check = rpc_check


def _partial_pdu(stream: bytes) -> tuple[int, int] | None:
    """(bytes held, frag_length wanted) of an incomplete trailing PDU in ``stream``, if any."""
    _, rest = split_pdus(stream)
    if not rest:
        return None
    if len(rest) < HEADER_LENGTH:
        return len(rest), HEADER_LENGTH
    frag = frag_length_of(rest)
    return None if frag < HEADER_LENGTH else (len(rest), frag)


class KmsClientSession:
    """One kept connection to a KMS host for several activation requests (vlmcs without ``-T``).

    Use as ``async with KmsClientSession(host, options) as session: await session.request(...)``.
    The connection is opened (and bound) by the first request and reopened by the next request after
    the host closed it or after a failed exchange.

    Args:
        host: the host to talk to.
        options: RPC offers and timeouts.
    """

    def __init__(self, host: HostAddress, options: RpcOptions | None = None) -> None:
        self.host = host
        self.options = options or RpcOptions()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._assoc: ClientAssociation | None = None
        self._local: tuple[str, int] | None = None
        self._sent = bytearray()
        self._received = bytearray()
        self._warnings: list[RpcWarning] = []

    async def __aenter__(self) -> KmsClientSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    @property
    def peer_closed(self) -> bool:
        """The host has closed its side of the open connection (the next request reconnects)."""
        return self._reader is not None and self._reader.at_eof()

    async def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        writer, self._writer, self._reader, self._assoc = self._writer, None, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, asyncio.CancelledError):  # pragma: no cover - already gone
                pass

    async def request(self, base: RequestBase, rng: Rng, *, iv: bytes | None = None) -> ExchangeResult:
        """Send one activation request with ``base`` and judge the answer.

        ``iv`` fixes the v5/v6 request IV (replaying a capture); otherwise ``rng`` provides it.

        Raises:
            UsageError: ``base`` cannot be encoded (a bug of the caller, not of the host).
        """
        kms_request = build_request(base, rng, iv=iv)
        self._sent.clear()
        self._received.clear()
        self._warnings.clear()
        new_connection = False
        try:
            if self.connected and self.peer_closed:
                log.warning("%s closed the connection; reconnecting", self.host)
                await self.close()
            if not self.connected:
                new_connection = True
                await self._connect()
                await self._bind()
            assert self._assoc is not None
            await self._send(self._assoc.request(kms_request))
            event = await self._wait_for((Reply, FaultReceived), "the response")
        except _Failed as failure:
            await self.close()
            return self._result(
                base,
                kms_request,
                failure.status,
                failure.detail,
                rpc_check=failure.rpc_check,
                new_connection=new_connection,
            )
        if isinstance(event, FaultReceived):
            await self.close()  # vlmcs gives up on the connection after a fault
            return self._result(
                base,
                kms_request,
                ExchangeStatus.FAULT,
                f"the host answered with a DCE/RPC fault, status {describe_fault(event.status)}",
                fault_status=event.status,
                new_connection=new_connection,
            )
        assert isinstance(event, Reply)
        if event.kms_response is None or event.hresult:
            return self._result(
                base,
                kms_request,
                ExchangeStatus.HOST_ERROR,
                f"the host refused the request with HRESULT {describe(event.hresult)}",
                hresult=event.hresult,
                kms_response=event.kms_response,
                syntax=event.syntax,
                new_connection=new_connection,
            )
        verified = verify_response(kms_request, event.kms_response)
        if not verified.ok:
            failed = [c for c in verified.checks if not c.passed and c.severity == "error"]
            detail = "the response failed verification: " + "; ".join(
                f"{c.name}" + (f" ({c.detail})" if c.detail else "") for c in failed
            )
            status = ExchangeStatus.VERIFICATION_FAILED
        else:
            count = verified.count or 0
            needed = base.required_client_count
            if count >= needed:
                status, detail = ExchangeStatus.ACTIVATED, f"activated: count {count} >= {needed}"
            else:
                status, detail = ExchangeStatus.BELOW_THRESHOLD, f"count {count} is below the required {needed}"
        return self._result(
            base,
            kms_request,
            status,
            detail,
            kms_response=event.kms_response,
            verified=verified,
            syntax=event.syntax,
            new_connection=new_connection,
        )

    # -- internals -----------------------------------------------------------------------------

    def _result(
        self, base: RequestBase, kms_request: bytes, status: ExchangeStatus, detail: str, **fields: object
    ) -> ExchangeResult:
        return ExchangeResult(
            host=self.host,
            status=status,
            detail=detail,
            request=base,
            kms_request=kms_request,
            warnings=tuple(self._warnings),
            sent=bytes(self._sent),
            received=bytes(self._received),
            local=self._local,
            **fields,  # type: ignore[arg-type]
        )

    async def _connect(self) -> None:
        opts = self.options
        self._assoc = ClientAssociation(
            offer_ndr64=opts.offer_ndr64,
            offer_btfn=opts.offer_btfn,
            multiplex=opts.multiplex,
            max_frag=opts.max_frag,
            first_call_id=opts.first_call_id,
        )
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host.host, self.host.port, family=opts.family), opts.connect_timeout
            )
        except TimeoutError:
            raise _Failed(
                ExchangeStatus.UNREACHABLE, f"no TCP connection to {self.host} within {opts.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise _Failed(ExchangeStatus.UNREACHABLE, f"cannot connect to {self.host}: {exc.strerror or exc}") from None
        self._reader, self._writer = reader, writer
        name = writer.get_extra_info("sockname")
        self._local = (name[0], name[1]) if name else None

    async def _bind(self) -> None:
        assert self._assoc is not None
        await self._send(self._assoc.bind())
        event = await self._wait_for((BindAccepted, SendAlterContext), "the bind_ack")
        if isinstance(event, SendAlterContext):
            await self._send(event.data)
            await self._wait_for((BindAccepted,), "the alter_context_resp")

    async def _send(self, data: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise _Failed(
                ExchangeStatus.UNREACHABLE, f"{self.host} dropped the connection while we sent: {exc.strerror or exc}"
            ) from None
        self._sent += data

    async def _wait_for(self, wanted: tuple[type, ...], what: str) -> object:
        """Read until an event of a ``wanted`` type arrives; warnings are kept on the way."""
        assert self._reader is not None and self._assoc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.reply_timeout
        start = len(self._received)
        while True:  # bounded by the deadline: every pass waits for fresh bytes or ends
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(self._reader.read(_READ_SIZE), remaining)
            except TimeoutError:
                partial = _partial_pdu(bytes(self._received[start:]))
                if partial is not None:
                    raise _Failed(
                        ExchangeStatus.PROTOCOL_ERROR,
                        f"truncated PDU: {partial[0]} of {partial[1]} bytes of {what} arrived, then nothing "
                        f"for {self.options.reply_timeout:g} s",
                        "truncated",
                    ) from None
                raise _Failed(
                    ExchangeStatus.UNREACHABLE,
                    f"no answer from {self.host}: waited {self.options.reply_timeout:g} s for {what}",
                ) from None
            except OSError as exc:
                raise _Failed(
                    ExchangeStatus.UNREACHABLE,
                    f"{self.host} reset the connection while we waited for {what}: {exc.strerror or exc}",
                ) from None
            if not data:
                partial = _partial_pdu(bytes(self._received[start:]))
                if partial is not None:
                    raise _Failed(
                        ExchangeStatus.PROTOCOL_ERROR,
                        f"truncated PDU: {self.host} closed the connection after {partial[0]} of "
                        f"{partial[1]} bytes of {what}",
                        "truncated",
                    )
                raise _Failed(ExchangeStatus.UNREACHABLE, f"{self.host} closed the connection without sending {what}")
            self._received += data
            try:
                events = self._assoc.receive_data(data)
            except RpcCheckFailed as exc:
                raise _Failed(
                    ExchangeStatus.PROTOCOL_ERROR,
                    f"{self.host} broke the RPC protocol while we waited for {what}: {exc}",
                    exc.check,
                ) from None
            except RpcError as exc:  # pragma: no cover - receive_data after a failure; we close first
                raise _Failed(ExchangeStatus.PROTOCOL_ERROR, str(exc)) from None
            found = None
            for event in events:
                if isinstance(event, RpcWarning):
                    self._warnings.append(event)
                elif isinstance(event, wanted) and found is None:
                    found = event
            if found is not None:
                return found


async def exchange(
    host: HostAddress,
    base: RequestBase,
    *,
    rng: Rng,
    options: RpcOptions | None = None,
    iv: bytes | None = None,
) -> ExchangeResult:
    """One activation exchange on a new connection: connect, bind, one request, close.

    Never raises for anything the host does; see :attr:`ExchangeResult.status`.

    Raises:
        UsageError: ``base`` cannot be encoded.
    """
    async with KmsClientSession(host, options) as session:
        return await session.request(base, rng, iv=iv)
