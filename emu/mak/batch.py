"""The BatchActivation SOAP shape (documented by Microsoft's open-source ActivationWs), with emu's key.

A SOAP 1.1 ``BatchActivate`` call carries ``Digest`` and ``RequestXml``: RequestXml is Base64 of the
UTF-16LE text of an ``ActivationRequest`` document; Digest is Base64 HMAC-SHA256 over the same bytes.
Microsoft's tools embed a fixed HMAC key; emu never ships it and uses an emu lab key the user can set
(:data:`LAB_DIGEST_KEY` by default). RequestType 1 asks for a CID per (PID, IID), 2 for the remaining
count of the PID's key. The service answers with short error codes, mapped to HRESULTs by
:data:`SHORT_CODES` (emu's inferred mapping, docs/mak.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

from emu.errors import ProtocolError

__all__ = [
    "BATCH_PATH",
    "LAB_DIGEST_KEY",
    "REQ_NS",
    "RESP_NS",
    "SHORT_CODES",
    "SOAP_ACTION",
    "SOAP_NS",
    "SVC_NS",
    "BatchFault",
    "BatchItem",
    "BatchRequest",
    "BatchResult",
    "build_envelope",
    "build_fault",
    "build_request_xml",
    "build_response",
    "parse_envelope",
    "parse_response",
    "short_code_for",
]

BATCH_PATH = "/BatchActivation/BatchActivation.asmx"
SOAP_ACTION = "http://www.microsoft.com/BatchActivationService/BatchActivate"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SVC_NS = "http://www.microsoft.com/BatchActivationService"
REQ_NS = "http://www.microsoft.com/DRM/SL/BatchActivationRequest/1.0"
RESP_NS = "http://www.microsoft.com/DRM/SL/BatchActivationResponse/1.0"
#: emu's lab digest key (64 bytes, visibly emu's). Not Microsoft's key, which emu never ships.
LAB_DIGEST_KEY = b"emu lab BatchActivation digest key: not Microsoft's, lab use only".ljust(64, b".")[:64]

#: BatchActivation short error codes -> the HRESULT emu's VAMT reports (inferred mapping).
SHORT_CODES: dict[int, int] = {
    0x7F: 0xC004C020,  # MAK activation limit exceeded
    0x67: 0xC004C003,  # key blocked
    0x68: 0xC004C001,  # invalid key
    0x86: 0xC004F07D,  # invalid key type
    0x90: 0xC004F04D,  # invalid IID
}
_SHORT_OF = {v: k for k, v in SHORT_CODES.items()}


def short_code_for(hresult: int) -> int:
    """The short code the service sends for ``hresult`` (0x68, invalid key, for anything unmapped;
    0x7F also stands for a CSVLK past its unlock limit)."""
    if hresult == 0xC004C008:
        return 0x7F
    return _SHORT_OF.get(hresult, 0x68)


class BatchFault(ProtocolError):
    """A request the service answers with a SOAP fault (bad envelope, bad digest, bad RequestXml)."""


@dataclass(frozen=True)
class BatchItem:
    pid: str
    iid: str | None = None


@dataclass(frozen=True)
class BatchRequest:
    request_type: int
    items: tuple[BatchItem, ...]


@dataclass(frozen=True)
class BatchResult:
    """One answer: a CID (type 1), a remaining count (type 2), or a short error code."""

    pid: str
    cid: str | None = None
    remaining: int | None = None
    error: int | None = None

    @property
    def hresult(self) -> int | None:
        return None if self.error is None else SHORT_CODES.get(self.error, 0xC004C001)


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def build_request_xml(request: BatchRequest) -> bytes:
    """The UTF-16LE bytes of the ActivationRequest document."""
    rows = "".join(
        f"<Request><PID>{escape(i.pid)}</PID>" + (f"<IID>{escape(i.iid)}</IID>" if i.iid else "") + "</Request>"
        for i in request.items
    )
    text = (
        f'<ActivationRequest xmlns="{REQ_NS}"><VersionNumber>2.0</VersionNumber>'
        f"<RequestType>{request.request_type}</RequestType><Requests>{rows}</Requests></ActivationRequest>"
    )
    return text.encode("utf-16-le")


def build_envelope(request: BatchRequest, digest_key: bytes = LAB_DIGEST_KEY) -> bytes:
    """The whole SOAP request body (UTF-8)."""
    raw = build_request_xml(request)
    digest = base64.b64encode(hmac.new(digest_key, raw, hashlib.sha256).digest()).decode()
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>'
        f'<BatchActivate xmlns="{SVC_NS}"><request><Digest>{digest}</Digest>'
        f"<RequestXml>{base64.b64encode(raw).decode()}</RequestXml></request></BatchActivate>"
        "</soap:Body></soap:Envelope>"
    ).encode()


def _parse_xml(data: bytes | str, what: str) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise BatchFault(f"{what} is not well-formed XML: {exc}") from None


def parse_envelope(body: bytes, digest_key: bytes = LAB_DIGEST_KEY) -> BatchRequest:
    """The request in a SOAP body; :class:`BatchFault` for a bad envelope, digest or RequestXml."""
    root = _parse_xml(body, "the SOAP envelope")
    call = root.find(f"{_q(SOAP_NS, 'Body')}/{_q(SVC_NS, 'BatchActivate')}/{_q(SVC_NS, 'request')}")
    if root.tag != _q(SOAP_NS, "Envelope") or call is None:
        raise BatchFault("expected soap:Envelope/soap:Body/BatchActivate/request")
    digest_text = call.findtext(_q(SVC_NS, "Digest")) or ""
    xml_text = call.findtext(_q(SVC_NS, "RequestXml")) or ""
    try:
        raw = base64.b64decode(xml_text, validate=True)
        digest = base64.b64decode(digest_text, validate=True)
    except binascii.Error:
        raise BatchFault("Digest and RequestXml must be Base64") from None
    if not hmac.compare_digest(digest, hmac.new(digest_key, raw, hashlib.sha256).digest()):
        raise BatchFault("the Digest does not match RequestXml (wrong digest key?)")
    try:
        doc = _parse_xml(raw.decode("utf-16-le"), "RequestXml")
    except UnicodeDecodeError:
        raise BatchFault("RequestXml is not UTF-16LE text") from None
    if doc.tag != _q(REQ_NS, "ActivationRequest"):
        raise BatchFault(f"RequestXml must be an ActivationRequest in {REQ_NS}")
    kind = (doc.findtext(_q(REQ_NS, "RequestType")) or "").strip()
    if kind not in ("1", "2"):
        raise BatchFault(f"RequestType must be 1 (CID) or 2 (remaining count), not {kind!r}")
    items = tuple(
        BatchItem((r.findtext(_q(REQ_NS, "PID")) or "").strip(), (r.findtext(_q(REQ_NS, "IID")) or "").strip() or None)
        for r in doc.iterfind(f"{_q(REQ_NS, 'Requests')}/{_q(REQ_NS, 'Request')}")
    )
    if not items:
        raise BatchFault("RequestXml holds no Requests/Request")
    if kind == "1" and any(i.iid is None for i in items):
        raise BatchFault("RequestType 1 needs an IID in every Request")
    return BatchRequest(int(kind), items)


def build_response(request_type: int, results: tuple[BatchResult, ...]) -> bytes:
    """The SOAP response: ResponseXml holds the escaped ActivationResponse document."""
    rows = ""
    for r in results:
        rows += f"<Response><PID>{escape(r.pid)}</PID>"
        if r.error is not None:
            rows += f"<ErrorCode>0x{r.error:X}</ErrorCode><ActivationRemaining>-1</ActivationRemaining>"
        elif r.cid is not None:
            rows += f"<CID>{r.cid}</CID>"
        else:
            rows += f"<ActivationRemaining>{r.remaining}</ActivationRemaining>"
        rows += "</Response>"
    doc = (
        f'<ActivationResponse xmlns="{RESP_NS}"><VersionNumber>2.0</VersionNumber>'
        f"<ResponseType>{request_type}</ResponseType><Responses>{rows}</Responses></ActivationResponse>"
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>'
        f'<BatchActivateResponse xmlns="{SVC_NS}"><BatchActivateResult><ResponseXml>{escape(doc)}</ResponseXml>'
        "</BatchActivateResult></BatchActivateResponse></soap:Body></soap:Envelope>"
    ).encode()


def build_fault(message: str) -> bytes:
    """A SOAP 1.1 client fault."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body><soap:Fault>'
        f"<faultcode>soap:Client</faultcode><faultstring>{escape(message)}</faultstring></soap:Fault>"
        "</soap:Body></soap:Envelope>"
    ).encode()


def parse_response(body: bytes) -> tuple[BatchResult, ...]:
    """The results of a BatchActivate response; :class:`BatchFault` with the fault string for a fault."""
    root = _parse_xml(body, "the SOAP response")
    fault = root.find(f"{_q(SOAP_NS, 'Body')}/{_q(SOAP_NS, 'Fault')}")
    if fault is not None:
        raise BatchFault(f"SOAP fault: {fault.findtext('faultstring') or '(no text)'}")
    text = root.findtext(f".//{_q(SVC_NS, 'ResponseXml')}")
    if text is None:
        raise BatchFault("the response holds no ResponseXml")
    doc = _parse_xml(text, "ResponseXml")
    results = []
    for r in doc.iterfind(f"{_q(RESP_NS, 'Responses')}/{_q(RESP_NS, 'Response')}"):
        err = r.findtext(_q(RESP_NS, "ErrorCode"))
        left = r.findtext(_q(RESP_NS, "ActivationRemaining"))
        results.append(
            BatchResult(
                pid=r.findtext(_q(RESP_NS, "PID")) or "",
                cid=r.findtext(_q(RESP_NS, "CID")),
                remaining=int(left) if left is not None and err is None else None,
                error=int(err, 16) if err is not None else None,
            )
        )
    return tuple(results)
