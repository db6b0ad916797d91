"""emu's online activation exchange (emu-defined wire: Windows' own online exchange is not public).

``POST /emu/1/activate`` with ``<ActivateRequest xmlns="urn:emu:actsvc:1">`` holding the ProductKey,
the client's InstallationId and a Purpose (``client`` for a MAK, ``host`` for a KMS host's CSVLK,
``forest`` for an ADBA forest). The answer is ``<ActivateResponse>`` with the ConfirmationId the client
deposits, or ``<ActivateFault>`` with an HResult from emu's error table.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

from emu.errors import ProtocolError

__all__ = [
    "ONLINE_NS",
    "ONLINE_PATH",
    "PURPOSES",
    "OnlineRequest",
    "build_answer",
    "build_request",
    "parse_answer",
    "parse_request",
]

ONLINE_PATH = "/emu/1/activate"
ONLINE_NS = "urn:emu:actsvc:1"
PURPOSES = ("client", "host", "forest")


@dataclass(frozen=True)
class OnlineRequest:
    key: str
    iid: str
    purpose: str = "client"


def _q(tag: str) -> str:
    return f"{{{ONLINE_NS}}}{tag}"


def build_request(request: OnlineRequest) -> bytes:
    return (
        f'<ActivateRequest xmlns="{ONLINE_NS}"><ProductKey>{escape(request.key)}</ProductKey>'
        f"<InstallationId>{escape(request.iid)}</InstallationId><Purpose>{escape(request.purpose)}</Purpose>"
        "</ActivateRequest>"
    ).encode()


def parse_request(body: bytes) -> OnlineRequest:
    """The request; :class:`ProtocolError` for anything else."""
    try:
        doc = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ProtocolError(f"the request is not well-formed XML: {exc}") from None
    if doc.tag != _q("ActivateRequest"):
        raise ProtocolError(f"expected ActivateRequest in {ONLINE_NS}")
    key = (doc.findtext(_q("ProductKey")) or "").strip()
    iid = (doc.findtext(_q("InstallationId")) or "").strip()
    purpose = (doc.findtext(_q("Purpose")) or "client").strip()
    if not key or not iid:
        raise ProtocolError("ActivateRequest needs ProductKey and InstallationId")
    if purpose not in PURPOSES:
        raise ProtocolError(f"Purpose must be one of {', '.join(PURPOSES)}")
    return OnlineRequest(key, iid, purpose)


def build_answer(cid: str | None, hresult: int = 0, message: str = "") -> bytes:
    if cid is not None:
        return (
            f'<ActivateResponse xmlns="{ONLINE_NS}"><ConfirmationId>{cid}</ConfirmationId></ActivateResponse>'.encode()
        )
    return (
        f'<ActivateFault xmlns="{ONLINE_NS}"><HResult>0x{hresult:08X}</HResult>'
        f"<Message>{escape(message)}</Message></ActivateFault>"
    ).encode()


def parse_answer(body: bytes) -> tuple[str | None, int]:
    """(CID, 0) or (None, HRESULT)."""
    try:
        doc = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ProtocolError(f"the answer is not well-formed XML: {exc}") from None
    if doc.tag == _q("ActivateResponse"):
        return (doc.findtext(_q("ConfirmationId")) or "").strip(), 0
    if doc.tag == _q("ActivateFault"):
        try:
            return None, int(doc.findtext(_q("HResult")) or "", 16)
        except ValueError:
            raise ProtocolError("ActivateFault without a hexadecimal HResult") from None
    raise ProtocolError(f"unexpected answer element {doc.tag}")
