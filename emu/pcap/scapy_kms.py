"""Scapy layers for KMS over DCE/RPC: the RequestActivation stubs and the v4/v5/v6 messages.

Importing this module (it imports Scapy, so only ``emu.net`` code does it, lazily) registers:

* DCE/RPC v5 on TCP 1688 in both directions (:func:`bind_kms_port` adds other ports, such as the
  reference captures' 17688-17692);
* the KMS interface ``51c82175-...`` opnum 0 with Scapy's DCE/RPC interface registry, so
  ``sniff(session=TCPSession)`` with ``conf.dcerpc_session_enable`` dissects by opnum;
* a bottom-up binding from ``DceRpc5Request``/``DceRpc5Response`` to the stub classes, whose
  :meth:`dispatch_hook` accepts only bytes shaped like a KMS stub, so plain ``rdpcap()`` shows the
  KMS fields too, packet by packet.

Byte layouts are not described twice: every class here keeps Scapy fields only for names, defaults
and display, and delegates decoding and encoding to :mod:`emu.wire` (and, for the encrypted v5/v6
messages, to :mod:`emu.kms.crypto`, whose keys are public). So
``bytes(KMSRequestV6(cmid=..., workstation_name="pc1"))`` is a request a host accepts, and a
dissected packet re-encodes byte for byte unless a field is changed.

Fields left at ``None`` are filled in when the packet is built: sizes, MACs, the v5/v6 hash and
v6 HMAC, the PKCS#7 padding; and, as Scapy does for random fields, the CMID (random), the client
time (now) and IVs (random). Give them explicitly for reproducible bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scapy.config import conf
from scapy.fields import (
    Field,
    StrField,
    XLEIntField,
    XStrField,
)
from scapy.layers.dcerpc import (
    DceRpc5,
    DceRpc5Request,
    DceRpc5Response,
    DceRpcOp,
    register_dcerpc_interface,
)
from scapy.layers.inet import TCP
from scapy.packet import Packet, bind_bottom_up, bind_top_down

from emu.errors import DecodeError
from emu.pcap.scapy_kms_base import KMS_PORT, _WireLayer, filetime_now
from emu.pcap.scapy_kms_messages import (
    _REQUEST_CLASSES,
    _RESPONSE_CLASSES,
    KMSRequest,
    KMSRequestV4,
    KMSRequestV5,
    KMSRequestV6,
    KMSResponse,
    KMSResponseV4,
    KMSResponseV5,
    KMSResponseV6,
    _version_of,
)
from emu.wire import ndr
from emu.wire.rpc import KMS_INTERFACE

__all__ = [
    "KMS_PORT",
    "KMSActivationRequest",
    "KMSActivationResponse",
    "KMSRequest",
    "KMSRequestV4",
    "KMSRequestV5",
    "KMSRequestV6",
    "KMSResponse",
    "KMSResponseV4",
    "KMSResponseV5",
    "KMSResponseV6",
    "bind_kms_port",
    "filetime_now",
]

# --- RequestActivation stubs ----------------------------------------------------------------------


def _syntax(ndr_word: int) -> ndr.TransferSyntax:
    return ndr.TransferSyntax.NDR64 if ndr_word == 64 else ndr.TransferSyntax.NDR32


class _ActivationStub(_WireLayer):
    """What the request and response stub layers share: NDR64 on request, raw when not a KMS stub."""

    _stub_syntax: Callable[[bytes], ndr.TransferSyntax | None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._ndr64_hint and "ndr" not in kwargs and not args:
            self.ndr = 64

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        if _pkt is not None and cls._stub_syntax(bytes(_pkt)) is None:
            return conf.raw_layer
        return cls


class KMSActivationRequest(_ActivationStub):
    """RequestActivation request stub (docs/kms-wire-protocol.md); the KMS request is its payload.

    ``ndr`` is 32 or 64; the size fields left at ``None`` are the payload's length.
    """

    name = "KMS RequestActivation request"
    fields_desc = [
        Field("ndr", 32, "B"),
        Field("request_size", None, "<I"),
        Field("max_count", None, "<I"),
        XStrField("trailer", b""),
    ]

    _stub_syntax = staticmethod(ndr.request_stub_syntax)

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        syntax = ndr.request_stub_syntax(s)
        if syntax is None:
            raise DecodeError("not a KMS RequestActivation request stub")
        stub = ndr.decode_request_stub(s, syntax)
        values = {
            "ndr": syntax.value,
            "request_size": stub.request_size,
            "max_count": stub.max_count,
            "trailer": stub.trailer,
        }
        return values, 2 * syntax.word

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes | None]:
        n = len(self.getfieldval("trailer") or b"")
        return (s[: len(s) - n], None) if n else (s, None)

    def _encode(self, payload: bytes) -> bytes:
        syntax = _syntax(self._value("ndr"))
        size, count = self._value("request_size"), self._value("max_count")
        stub = ndr.RequestStub(
            syntax,
            payload,
            len(payload) if size is None else size,
            len(payload) if count is None else count,
            bytes(self._value("trailer")),
        )
        return ndr.reencode_stub(stub)

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return _REQUEST_CLASSES.get(_version_of(payload) or 0, conf.raw_layer)


class KMSActivationResponse(_ActivationStub):
    """RequestActivation response stub (docs/kms-wire-protocol.md); the KMS response is its payload.

    ``hresult`` is the return value; without a payload the stub has the error form (NULL pointer).
    ``placement`` says whether the HRESULT follows the alignment pad ("ndr") or precedes it
    ("server", what vlmcsd and py-kms write, quirk Q10).
    """

    name = "KMS RequestActivation response"
    fields_desc = [
        Field("ndr", 32, "B"),
        Field("response_size", None, "<I"),
        XLEIntField("referent_id", None),
        Field("max_count", None, "<I"),
        XStrField("pad", b""),
        StrField("placement", b"ndr"),
        XLEIntField("hresult", 0),
        XStrField("trailer", b""),
    ]

    _stub_syntax = staticmethod(ndr.response_stub_syntax)

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        syntax = ndr.response_stub_syntax(s)
        if syntax is None:
            raise DecodeError("not a KMS RequestActivation response stub")
        stub = ndr.decode_response_stub(s, syntax)
        values = {
            "ndr": syntax.value,
            "response_size": stub.response_size,
            "referent_id": stub.referent_id,
            "max_count": stub.max_count,
            "pad": stub.pad,
            "placement": stub.placement.value,
            "hresult": stub.hresult,
            "trailer": stub.trailer,
        }
        self._kms_len = 0 if stub.kms_data is None else len(stub.kms_data)
        return values, (3 * syntax.word if stub.kms_data is not None else len(s))

    __slots__ = ["_kms_len"]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes | None]:
        n = getattr(self, "_kms_len", None)
        if n is None:
            return s, None
        return s[:n], None  # the pad, HRESULT and trailer after the data are fields of this layer

    def _encode(self, payload: bytes) -> bytes:
        syntax = _syntax(self._value("ndr"))
        hresult = self._value("hresult")
        referent = self._value("referent_id")
        if not payload or referent == 0:
            size = self._value("response_size")
            error_form = ndr.ResponseStub(
                syntax, None, hresult, 0 if size is None else size, 0, trailer=bytes(self._value("trailer"))
            )
            return ndr.reencode_stub(error_form)
        size, count = self._value("response_size"), self._value("max_count")
        placement = self._value("placement")
        placement = placement.decode() if isinstance(placement, bytes) else placement
        stub = ndr.ResponseStub(
            syntax,
            payload,
            hresult,
            len(payload) if size is None else size,
            ndr.REFERENT_ID if referent is None else referent,
            len(payload) if count is None else count,
            bytes(self._value("pad")),
            ndr.Placement(placement),
            bytes(self._value("trailer")),
        )
        return ndr.reencode_stub(stub)

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return _RESPONSE_CLASSES.get(_version_of(payload) or 0, conf.raw_layer)

    def answers(self, other: Packet) -> int:
        if not isinstance(other, KMSActivationRequest):
            return 0
        if isinstance(self.payload, KMSResponse) and isinstance(other.payload, KMSRequest):
            return self.payload.answers(other.payload)
        return 1


# --- registration --------------------------------------------------------------------------------

_BOUND_PORTS: set[int] = set()


def bind_kms_port(port: int) -> None:
    """Dissect TCP ``port`` (either direction) as DCE/RPC v5, so KMS stubs show by name.

    Port 1688 is bound on import; use this for captures of hosts on other ports.
    """
    if port in _BOUND_PORTS:
        return
    bind_bottom_up(TCP, DceRpc5, dport=port)
    bind_bottom_up(TCP, DceRpc5, sport=port)
    _BOUND_PORTS.add(port)


def _register() -> None:
    bind_kms_port(KMS_PORT)
    bind_top_down(TCP, DceRpc5, dport=KMS_PORT)
    bind_bottom_up(DceRpc5Request, KMSActivationRequest, opnum=0)
    bind_bottom_up(DceRpc5Response, KMSActivationResponse)
    register_dcerpc_interface(  # type: ignore[no-untyped-call]  # Scapy leaves it unannotated
        name="KMS",
        uuid=KMS_INTERFACE.uuid,
        version="1.0",
        opnums={0: DceRpcOp(KMSActivationRequest, KMSActivationResponse)},
    )


_register()
