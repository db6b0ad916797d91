"""The records of ``emu decode``: one decoded DCE/RPC PDU with its KMS fields, a stream note, and their
JSON form (the ``--json`` lines, keys documented in ``emu decode --help`` and docs/howto-decode.md).

Frozen dataclasses only, no decoding here: :mod:`emu.pcap.kms_decode` fills them in.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emu.kms.messages import Check

if TYPE_CHECKING:
    from emu.pcap.decode import DecodeSummary

__all__ = [
    "CLIENT_TO_SERVER",
    "SERVER_TO_CLIENT",
    "CaptureDecode",
    "ContextAnswer",
    "ContextOffer",
    "DecodedPdu",
    "KmsRequestInfo",
    "KmsResponseInfo",
    "StreamNote",
    "json_time",
]

#: Direction labels of :attr:`DecodedPdu.direction`.
CLIENT_TO_SERVER = "C->S"
SERVER_TO_CLIENT = "S->C"


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextOffer:
    """A presentation context offered in a bind or alter_context (docs/kms-wire-protocol.md)."""

    p_cont_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ContextAnswer:
    """One result of a bind_ack or alter_context_resp (docs/kms-wire-protocol.md).

    ``p_cont_id`` is the context it answers, known when the offer was captured (results come in
    the order of the offered elements).
    """

    result: str
    reason: int
    transfer_syntax: str
    p_cont_id: int | None = None


@dataclass(frozen=True, slots=True)
class KmsRequestInfo:
    """The fields of a KMS request (docs/kms-wire-protocol.md), with product names from the packaged data (docs/kms-wire-protocol.md).

    For a version with no message layout (anything but 4.0, 5.0, 6.0) only ``version`` and
    ``refused`` are set: what a host does with it is answer 0x8007000D (docs/kms-wire-protocol.md).
    """

    version: str
    size: int
    refused: str = ""
    application: str | None = None
    product: str | None = None
    sku_name: str | None = None
    app_id: str | None = None
    sku_id: str | None = None
    kms_id: str | None = None
    cmid: str | None = None
    previous_cmid: str | None = None
    workstation: str | None = None
    required_client_count: int | None = None
    client_time: str | None = None
    vm: bool | None = None
    license_status: str | None = None
    binding_expiration: int | None = None
    #: v4 only: whether the V4-MAC of the request is right (hosts do not reject on it, docs/kms-wire-protocol.md)
    mac_ok: bool | None = None


@dataclass(frozen=True, slots=True)
class KmsResponseInfo:
    """A KMS response stub: the HRESULT and, when present, the decoded message and its verification.

    ``checks`` is empty when there was no request to verify against (half conversation) or the
    stub carried no message; ``verified`` is then ``None``.
    """

    hresult: int
    hresult_name: str
    version: str | None = None
    size: int | None = None
    epid: str | None = None
    epid_problems: tuple[str, ...] = ()
    hwid: str | None = None
    count: int | None = None
    threshold: int | None = None
    activation_interval: int | None = None
    renewal_interval: int | None = None
    cmid: str | None = None
    client_time: str | None = None
    checks: tuple[Check, ...] = ()
    verified: bool | None = None
    #: why the message could not be shown (undecryptable without its request, undecodable ...)
    note: str = ""

    @property
    def failed_checks(self) -> tuple[str, ...]:
        """Names of the checks that did not pass (warnings included)."""
        return tuple(c.name for c in self.checks if not c.passed)


@dataclass(frozen=True, slots=True)
class DecodedPdu:
    """One DCE/RPC PDU of a capture, decoded as far as it goes.

    Attributes:
        capture: the capture file's name.
        time: capture timestamp (Unix seconds) of the segment that carried the PDU's first byte.
        conversation: index of the TCP conversation in the capture (order of appearance).
        src, dst: ``"address:port"`` of sender and receiver.
        direction: :data:`CLIENT_TO_SERVER` or :data:`SERVER_TO_CLIENT`.
        offset: where the PDU starts in its direction's reassembled byte stream.
        size: bytes of the PDU (its frag_length, or what was captured of it).
        ptype: PTYPE name (``bind``, ``request`` ...), ``None`` when not even a header was readable.
        error: why (part of) the PDU did not decode, ``None`` when everything did.
    """

    capture: str
    time: float | None
    conversation: int
    src: str
    dst: str
    direction: str
    offset: int
    size: int
    ptype: str | None
    call_id: int | None = None
    pfc_flags: int | None = None
    p_cont_id: int | None = None
    opnum: int | None = None
    syntax: str | None = None
    syntax_guessed: bool = False
    contexts: tuple[ContextOffer, ...] = ()
    results: tuple[ContextAnswer, ...] = ()
    fault_status: int | None = None
    fault_name: str | None = None
    request: KmsRequestInfo | None = None
    response: KmsResponseInfo | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        """A decode error, a failed error-severity check of a response, or a bad v4 request MAC."""
        if self.error is not None:
            return True
        if self.response is not None and self.response.verified is False:
            return True
        return self.request is not None and self.request.mac_ok is False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with stable keys (the ``--json`` line of ``emu decode``)."""
        return _json_pdu(self)


@dataclass(frozen=True, slots=True)
class StreamNote:
    """Something about a conversation's byte stream that is not one PDU: a gap, a damaged capture."""

    capture: str
    conversation: int
    direction: str | None
    message: str
    time: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "record": "note",
            "capture": self.capture,
            "time": json_time(self.time),
            "conversation": self.conversation,
            "direction": self.direction,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class CaptureDecode:
    """The result of decoding one capture.

    Attributes:
        pdus: every PDU of the KMS conversations, ordered by capture time.
        notes: stream problems of those conversations.
        conversations: number of TCP conversations in the capture.
        kms_conversations: indexes of the conversations decoded as KMS.
    """

    capture: str
    pdus: tuple[DecodedPdu, ...]
    notes: tuple[StreamNote, ...]
    conversations: int
    kms_conversations: tuple[int, ...]
    #: the run's summary record (packets, conversations, PDUs by type, exchanges, errors ...)
    summary: DecodeSummary | None = None

    @property
    def ok(self) -> bool:
        """Every PDU decoded, every verification passed, no stream problem."""
        return not self.notes and not any(p.failed for p in self.pdus)


# --- JSON -------------------------------------------------------------------------------------


def json_time(t: float | None) -> str | None:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, tz=_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_pdu(p: DecodedPdu) -> dict[str, Any]:
    out: dict[str, Any] = {
        "record": "pdu",
        "capture": p.capture,
        "time": json_time(p.time),
        "conversation": p.conversation,
        "src": p.src,
        "dst": p.dst,
        "direction": p.direction,
        "offset": p.offset,
        "size": p.size,
        "ptype": p.ptype,
        "call_id": p.call_id,
        "pfc_flags": p.pfc_flags,
        "p_cont_id": p.p_cont_id,
        "opnum": p.opnum,
        "syntax": p.syntax,
        "syntax_guessed": p.syntax_guessed,
        "contexts": [
            {
                "p_cont_id": c.p_cont_id,
                "abstract_syntax": c.abstract_syntax,
                "transfer_syntaxes": list(c.transfer_syntaxes),
            }
            for c in p.contexts
        ],
        "results": [
            {"p_cont_id": r.p_cont_id, "result": r.result, "reason": r.reason, "transfer_syntax": r.transfer_syntax}
            for r in p.results
        ],
        "fault_status": None if p.fault_status is None else f"0x{p.fault_status:08X}",
        "fault_name": p.fault_name,
        "request": None,
        "response": None,
        "error": p.error,
    }
    if p.request is not None:
        r = p.request
        out["request"] = {
            "version": r.version,
            "size": r.size,
            "refused": r.refused or None,
            "application": r.application,
            "product": r.product,
            "sku_name": r.sku_name,
            "app_id": r.app_id,
            "sku_id": r.sku_id,
            "kms_id": r.kms_id,
            "cmid": r.cmid,
            "previous_cmid": r.previous_cmid,
            "workstation": r.workstation,
            "required_client_count": r.required_client_count,
            "client_time": r.client_time,
            "vm": r.vm,
            "license_status": r.license_status,
            "binding_expiration": r.binding_expiration,
            "mac_ok": r.mac_ok,
        }
    if p.response is not None:
        s = p.response
        out["response"] = {
            "hresult": f"0x{s.hresult:08X}",
            "hresult_name": s.hresult_name,
            "version": s.version,
            "size": s.size,
            "epid": s.epid,
            "epid_problems": list(s.epid_problems),
            "hwid": s.hwid,
            "count": s.count,
            "threshold": s.threshold,
            "activation_interval": s.activation_interval,
            "renewal_interval": s.renewal_interval,
            "cmid": s.cmid,
            "client_time": s.client_time,
            "verified": s.verified,
            "checks": [
                {"name": c.name, "passed": c.passed, "severity": c.severity, "detail": c.detail} for c in s.checks
            ],
            "note": s.note or None,
        }
    return out
