"""``emu replay --as-server``: answer live KMS clients with the responses of a recorded host.

The capture's KMS exchanges are read once (:func:`load_captured_answers`); each new request is
then answered with the captured answer that fits it best, so a client implementation can be tested
against the behaviour of a host that was recorded (vlmcsd, py-kms, Windows).

A captured response cannot be sent back byte for byte: it echoes the captured request's CMID and
time, and v5/v6 bind it to the captured request's IV (v5: the response IV is the request IV; v6:
the HMAC and the XoredIVs depend on the request). So the response is rebuilt for the new request
with :func:`emu.kms.messages.build_response` from the captured response's fields (ePID, count,
activation and renewal intervals, and the v6 HwId); v4 gets its MAC recomputed over the new
echo. Captured error stubs (HRESULTs such as 0xC004F042) are echoed as they are, and so are captured
DCE/RPC faults (a request on a context the host did not accept gets nca_s_unk_if, docs/kms-wire-protocol.md): the
equivalent new request gets a fault with the same status, built by the connection's association.
A fault is paired with its request by call_id, else with the oldest unanswered request of its
connection (vlmcsd's faults carry its own call counter, not the request's: quirk Q1).

Which captured answer: one with the request's major version and KMS ID, else one with its major
version, else any; several candidates are used in turn (a capture of six products answers six
different requests differently; a capture of five requests walks through its five answers). A
request emu cannot read is answered with the HRESULT the captured host gave an unreadable request,
or 0x8007000D. NDR64 and Bind Time Feature Negotiation are answered as the captured host answered
them.

Serving reuses :class:`emu.net.kms_server.KmsServer`: :class:`CapturedHost` stands in for
:class:`emu.kms.host.KmsHost` (the same ``handle_request(kms_request, now)`` contract).
"""

from __future__ import annotations

import itertools
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from emu.errors import DecodeError, EmuError, KmsError, UsageError
from emu.kms.host import HostAnswer
from emu.kms.messages import E_INVALIDDATA, build_response, open_request, verify_response
from emu.net.kms_server import KmsServer, ServerConfig
from emu.pcap.kms_decode import decode_capture
from emu.pcap.reader import read_conversations
from emu.rng import Rng, system_rng
from emu.wire import ndr
from emu.wire.kms import HWID_SIZE
from emu.wire.rpc import AlterContext, Bind, Fault, Request, Response, decode_pdu

__all__ = [
    "CapturedAnswer",
    "CapturedHost",
    "captured_rpc_settings",
    "load_captured_answers",
    "replay_server",
]

log = logging.getLogger("emu.replay")

#: HwId sent in a v6 answer rebuilt from a captured v4/v5 answer (those carry none).
_NO_HWID = bytes(HWID_SIZE)


@dataclass(frozen=True, slots=True)
class CapturedAnswer:
    """What a recorded host answered one request.

    Attributes:
        conversation: index of the TCP conversation in the capture.
        major: the captured request's major version (0: the request was unreadable).
        kms_id: the captured request's KMS ID (None when unreadable).
        hresult: the HRESULT of the response stub (0: a response message, or a fault, was sent).
        epid, count, activation_interval, renewal_interval: the response's fields (hresult 0).
        hwid: the v6 response's HwId (None for v4/v5).
        fault: the NCA status of the fault PDU the host answered with (None: a response PDU).
    """

    conversation: int
    major: int
    kms_id: uuid.UUID | None
    hresult: int
    epid: str = ""
    count: int = 0
    activation_interval: int = 0
    renewal_interval: int = 0
    hwid: bytes | None = None
    fault: int | None = None


def _fault_answer_of(conv: int, kms_request: bytes, status: int) -> CapturedAnswer:
    try:
        opened = open_request(kms_request)
    except KmsError:
        return CapturedAnswer(conv, 0, None, 0, fault=status)
    return CapturedAnswer(conv, opened.version.major, opened.base.kms_id, 0, fault=status)


def _request_stub(stub_data: bytes, syntax: ndr.TransferSyntax | None) -> tuple[bytes, ndr.TransferSyntax]:
    """The KMS message of a request stub; on a context the capture never showed accepted (such a
    request is what a host faults), whichever NDR syntax reads it."""
    if syntax is not None:
        return ndr.decode_request_stub(stub_data, syntax).kms_data, syntax
    try:
        return ndr.decode_request_stub(stub_data, ndr.TransferSyntax.NDR32).kms_data, ndr.TransferSyntax.NDR32
    except DecodeError:
        return ndr.decode_request_stub(stub_data, ndr.TransferSyntax.NDR64).kms_data, ndr.TransferSyntax.NDR64


def _answer_of(conv: int, kms_request: bytes, stub: ndr.ResponseStub) -> CapturedAnswer | None:
    try:
        opened = open_request(kms_request)
    except KmsError:
        return CapturedAnswer(conv, 0, None, stub.hresult or E_INVALIDDATA)
    major, kms_id = opened.version.major, opened.base.kms_id
    if stub.kms_data is None or stub.hresult:
        return CapturedAnswer(conv, major, kms_id, stub.hresult or E_INVALIDDATA)
    verified = verify_response(opened, stub.kms_data)
    if verified.base is None:
        log.warning(
            "conversation %d: captured response cannot be decoded (%s); not used", conv, ", ".join(verified.failed)
        )
        return None
    base = verified.base
    return CapturedAnswer(
        conv, major, kms_id, 0, base.epid, base.count, base.activation_interval, base.renewal_interval, verified.hwid
    )


def load_captured_answers(path: str | Path) -> list[CapturedAnswer]:
    """Every answered KMS request of a capture, in capture order.

    Requests are paired with responses by call_id within their connection, and with faults by
    call_id or else in order (quirk Q1); a request whose answer is missing from the capture, and
    PDUs that do not decode, are skipped (with a log line).

    Raises:
        UsageError: the file is not a readable capture.
    """
    from emu.wire.rpc import split_pdus

    answers: list[CapturedAnswer] = []
    kms_conversations = set(decode_capture(path).kms_conversations)
    for conv in read_conversations(path):
        if conv.index not in kms_conversations:
            continue
        syntaxes: dict[int, ndr.TransferSyntax] = {}
        requests: dict[int, tuple[bytes, ndr.TransferSyntax]] = {}
        for pdu in split_pdus(conv.client.data)[0]:
            try:
                parsed = decode_pdu(pdu)
                if isinstance(parsed, (Bind, AlterContext)):
                    for elem in parsed.context_elements:
                        offered = ndr.TransferSyntax.of(elem.transfer_syntaxes[0]) if elem.transfer_syntaxes else None
                        if offered is not None:
                            syntaxes[elem.p_cont_id] = offered
                elif isinstance(parsed, Request):
                    requests[parsed.call_id] = _request_stub(parsed.stub_data, syntaxes.get(parsed.p_cont_id))
            except (EmuError, ValueError) as exc:
                log.warning("conversation %d: client PDU skipped: %s", conv.index, exc)
        for pdu in split_pdus(conv.server.data)[0]:
            try:
                parsed = decode_pdu(pdu)
                if isinstance(parsed, Fault) and requests:
                    call_id = parsed.call_id if parsed.call_id in requests else next(iter(requests))
                    answer: CapturedAnswer | None = _fault_answer_of(
                        conv.index, requests.pop(call_id)[0], parsed.status
                    )
                elif isinstance(parsed, Response) and parsed.call_id in requests:
                    kms_request, syntax = requests.pop(parsed.call_id)
                    answer = _answer_of(conv.index, kms_request, ndr.decode_response_stub(parsed.stub_data, syntax))
                else:
                    continue
            except (EmuError, ValueError) as exc:
                log.warning("conversation %d: server PDU skipped: %s", conv.index, exc)
                continue
            if answer is not None:
                answers.append(answer)
    return answers


def captured_rpc_settings(path: str | Path) -> tuple[bool, bool]:
    """(ndr64, btfn): whether the captured host accepted NDR64 and acknowledged BTFN.

    What the capture does not show (the client never offered it) defaults to yes, as emu's host.
    """
    ndr64 = btfn = None
    for pdu in decode_capture(path).pdus:
        for answer in pdu.results:
            if answer.transfer_syntax == "NDR64":
                ndr64 = (ndr64 or False) or answer.result == "acceptance"
            elif answer.transfer_syntax.startswith("BTFN"):
                btfn = (btfn or False) or answer.result == "negotiate_ack"
    return ndr64 is not False, btfn is not False


@dataclass
class CapturedHost:
    """A stand-in for :class:`emu.kms.host.KmsHost` that answers from captured answers.

    Args:
        answers: what :func:`load_captured_answers` found (at least one).
        rng: the v5/v6 randomness of rebuilt responses (R, the v6 response IV).
    """

    answers: list[CapturedAnswer]
    rng: Rng = field(default_factory=system_rng)
    served: int = 0
    _turns: dict[tuple[object, ...], itertools.cycle[CapturedAnswer]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.answers:
            raise UsageError("the capture holds no answered KMS request to replay")

    def _pick(self, key: tuple[object, ...], candidates: list[CapturedAnswer]) -> CapturedAnswer:
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = itertools.cycle(candidates)
        return next(turn)

    def choose(self, major: int, kms_id: uuid.UUID | None) -> CapturedAnswer:
        """The captured answer for a request of this version and KMS ID (see the module doc)."""
        exact = [a for a in self.answers if a.major == major and a.kms_id == kms_id]
        if exact:
            return self._pick(("exact", major, kms_id), exact)
        if major == 0:  # unreadable: nothing of that kind captured
            return CapturedAnswer(-1, 0, None, E_INVALIDDATA)
        same = [a for a in self.answers if a.major == major]
        if same:
            return self._pick(("major", major), same)
        readable = [a for a in self.answers if a.major] or self.answers
        return self._pick(("any",), readable)

    def handle_request(self, kms_request: bytes, now: float) -> HostAnswer:
        """Answer one KMS request from the capture (``now`` is unused: the capture decided)."""
        self.served += 1
        try:
            request = open_request(kms_request)
        except KmsError as exc:
            chosen = self.choose(0, None)
            if chosen.fault is not None:
                return HostAnswer(
                    None, 0, None, None, reason=f"unreadable request ({exc}): {_faulted(chosen)}", fault=chosen.fault
                )
            return HostAnswer(None, chosen.hresult, None, None, reason=f"unreadable request ({exc})")
        chosen = self.choose(request.version.major, request.base.kms_id)
        if chosen.fault is not None:
            return HostAnswer(None, 0, None, request, reason=_faulted(chosen), fault=chosen.fault)
        if chosen.hresult:
            return HostAnswer(
                None,
                chosen.hresult,
                None,
                request,
                reason=f"captured HRESULT 0x{chosen.hresult:08X} (conversation {chosen.conversation})",
            )
        response = build_response(
            request,
            chosen.epid,
            chosen.count,
            chosen.activation_interval,
            chosen.renewal_interval,
            chosen.hwid or _NO_HWID,
            self.rng,
        )
        return HostAnswer(response, 0, None, request, count=chosen.count, epid=chosen.epid)


def _faulted(chosen: CapturedAnswer) -> str:
    return f"captured fault 0x{chosen.fault or 0:08X} (conversation {chosen.conversation})"


def replay_server(
    path: str | Path, listen: tuple[str, int], rng: Rng | None = None, *, idle_timeout: float = 30.0
) -> KmsServer:
    """A :class:`KmsServer` (not started) answering from the capture at ``path``.

    Raises:
        UsageError: the file is not a readable capture or holds no answered KMS request.
    """
    try:
        answers = load_captured_answers(path)
    except DecodeError as exc:  # pragma: no cover - decode errors are caught per PDU above
        raise UsageError(f"{path}: {exc}") from exc
    host = CapturedHost(answers, rng or system_rng())
    ndr64, btfn = captured_rpc_settings(path)
    config = ServerConfig(listen=(listen,), ndr64=ndr64, btfn=btfn, idle_timeout=idle_timeout)
    return KmsServer(host, config)
