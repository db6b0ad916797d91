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

import hashlib
import os
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

from scapy.config import conf
from scapy.fields import (
    AnyField,
    Field,
    IntEnumField,
    LEIntField,
    LEShortField,
    StrField,
    UUIDField,
    XLEIntField,
    XStrField,
    _StrField,
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

from emu.clock import filetime_to_unix, unix_to_filetime
from emu.errors import DecodeError
from emu.kms import crypto
from emu.kms.messages import REQUEST_V4_SIZE, REQUEST_V5_SIZE
from emu.wire import kms as wkms
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

#: The KMS TCP port (docs/kms-wire-protocol.md).
KMS_PORT = 1688
_ZERO_UUID = uuid.UUID(int=0)
_LICENSE_NAMES = {int(s): s.name.lower() for s in wkms.LicenseStatus}


def filetime_now() -> int:
    """The current UTC time as a FILETIME (the default ``client_time`` of a crafted request)."""
    return unix_to_filetime(time.time())


def _product_name(kind: str, value: uuid.UUID) -> str | None:
    from emu.kms import products

    data = products.product_data()
    if kind == "sku":
        sku = data.find_sku(value)
        return None if sku is None else sku.name
    if kind == "kms":
        item = data.find_kms_item(value)
        return None if item is None else item.name
    for app in data.applications():
        if app.id == value:
            return app.name
    return None


class _GuidField(UUIDField):
    """A GUID shown with the product, KMS group or application it names (display only)."""

    __slots__ = ["kind"]

    def __init__(self, name: str, default: Any, kind: str = "") -> None:
        super().__init__(name, default, uuid_fmt=UUIDField.FORMAT_LE)
        self.kind = kind

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        text = super().i2repr(pkt, x)
        if self.kind and isinstance(x, uuid.UUID):
            name = _product_name(self.kind, x)
            if name:
                return f"{text} ({name})"
        return text


class _TextField(_StrField[str]):
    """A text value (str), such as the workstation name or the ePID (display only).

    Scapy's ``StrField`` is ``_StrField[bytes]`` with nothing added; this is the same field
    holding ``str`` (``h2i`` decodes what ``any2i`` encodes).
    """

    def h2i(self, pkt: Packet | None, x: Any) -> Any:
        return x.decode("utf-8") if isinstance(x, bytes) else x

    def i2h(self, pkt: Packet | None, x: Any) -> Any:
        return x

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        return repr(x)


class _FileTimeField(Field[int, int]):
    """A FILETIME shown with its UTC date (display only)."""

    def __init__(self, name: str, default: int | None) -> None:
        super().__init__(name, default, "<Q")

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        if not isinstance(x, int):
            return repr(x)
        seconds = filetime_to_unix(x)
        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
        except (OverflowError, OSError, ValueError):
            when = "out of range"
        return f"{x} ({when} UTC)"


class _WireLayer(Packet):
    """A layer whose bytes come from :mod:`emu.wire`; ``fields_desc`` only names the values.

    Subclasses implement :meth:`_decode` (bytes -> field values and bytes consumed) and
    :meth:`_encode` (field values -> bytes). A dissected layer keeps its exact bytes until a field
    is changed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # DceRpcSession passes NDR context to the classes of a registered interface.
        self._ndr64_hint = kwargs.pop("ndr64", None)
        kwargs.pop("ndrendian", None)
        kwargs.pop("request_packet", None)
        super().__init__(*args, **kwargs)

    __slots__ = ["_ndr64_hint"]

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        raise NotImplementedError

    def _encode(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def do_dissect(self, s: bytes) -> bytes:
        values, used = self._decode(bytes(s))
        self.fields.update(values)
        self.raw_packet_cache = None
        self.raw_packet_cache_fields = None
        self.explicit = 1
        return s[used:]

    def self_build(self) -> bytes:
        return b""

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        return self._encode(pay)

    def _value(self, name: str) -> Any:
        return self.getfieldval(name)


# --- KMS messages ------------------------------------------------------------------------------


class _KmsMessage(_WireLayer):
    """Common part of the six KMS message classes; leaf layers (anything after them is padding)."""

    name: str  # every message class names itself (Scapy allows None)
    _major = 0
    match_subclass = True  # so that ``KMSRequest in pkt`` finds any version
    __slots__ = ["_raw"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._raw: bytes | None = None
        super().__init__(*args, **kwargs)

    def do_dissect(self, s: bytes) -> bytes:
        rest = super().do_dissect(s)
        self._raw = bytes(s[: len(s) - len(rest)])
        return rest

    def setfieldval(self, attr: str, val: Any) -> None:
        self._raw = None
        super().setfieldval(attr, val)

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        body = self._raw if self._raw is not None else self._encode(b"")
        return body + pay

    def default_payload_class(self, payload: bytes) -> type[Packet]:
        return conf.padding_layer

    def mysummary(self) -> str:
        cmid = self.getfieldval("cmid")
        return f"KMS v{self.getfieldval('major_ver')} {self.name.split()[1].lower()} cmid={cmid}"


def _request_base_fields(major: int) -> list[AnyField]:
    return [
        LEShortField("minor_ver", 0),
        LEShortField("major_ver", major),
        LEIntField("vm_info", 0),
        IntEnumField("license_status", 2, _LICENSE_NAMES),
        LEIntField("binding_expiration", 43200),
        _GuidField("app_id", uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f"), "app"),
        _GuidField("sku_id", uuid.UUID("73111121-5638-40f6-bc11-f1d7b0d64300"), "sku"),
        _GuidField("kms_id", uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148"), "kms"),
        _GuidField("cmid", None),
        LEIntField("required_client_count", 25),
        _FileTimeField("client_time", None),
        _GuidField("previous_cmid", _ZERO_UUID),
        _TextField("workstation_name", "emu-client"),
        XStrField("workstation_tail", b""),
    ]


class KMSRequest(_KmsMessage):
    """Base of the request classes: the 236-byte request base (docs/kms-wire-protocol.md), by field name."""

    name = "KMS Request"

    def _base(self) -> wkms.RequestBase:
        cmid = self._value("cmid")
        client_time = self._value("client_time")
        return wkms.RequestBase(
            version=wkms.Version(self._value("major_ver"), self._value("minor_ver")),
            vm_info=self._value("vm_info"),
            license_status=wkms.LicenseStatus(self._value("license_status")),
            binding_expiration=self._value("binding_expiration"),
            app_id=uuid.UUID(str(self._value("app_id"))),
            sku_id=uuid.UUID(str(self._value("sku_id"))),
            kms_id=uuid.UUID(str(self._value("kms_id"))),
            cmid=uuid.uuid4() if cmid is None else uuid.UUID(str(cmid)),
            required_client_count=self._value("required_client_count"),
            client_time=filetime_now() if client_time is None else client_time,
            previous_cmid=uuid.UUID(str(self._value("previous_cmid"))),
            workstation_name=self._value("workstation_name"),
            workstation_tail=bytes(self._value("workstation_tail")),
        )

    @staticmethod
    def _base_values(base: wkms.RequestBase) -> dict[str, Any]:
        return {
            "minor_ver": base.version.minor,
            "major_ver": base.version.major,
            "vm_info": base.vm_info,
            "license_status": int(base.license_status),
            "binding_expiration": base.binding_expiration,
            "app_id": base.app_id,
            "sku_id": base.sku_id,
            "kms_id": base.kms_id,
            "cmid": base.cmid,
            "required_client_count": base.required_client_count,
            "client_time": base.client_time,
            "previous_cmid": base.previous_cmid,
            "workstation_name": base.workstation_name,
            "workstation_tail": base.workstation_tail,
        }

    def hashret(self) -> bytes:
        return str(self.getfieldval("cmid")).encode()


class KMSRequestV4(KMSRequest):
    """A v4 request: base ‖ V4-MAC (docs/kms-wire-protocol.md). ``mac=None`` computes the MAC."""

    name = "KMS RequestV4"
    _major = 4
    fields_desc = _request_base_fields(4) + [XStrField("mac", None)]

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        msg = wkms.decode_request_v4(s[:REQUEST_V4_SIZE])
        return {**self._base_values(msg.base), "mac": msg.mac}, REQUEST_V4_SIZE

    def _encode(self, payload: bytes) -> bytes:
        body = wkms.encode_request_base(self._base())
        mac = self._value("mac")
        return body + (crypto.v4_mac(body) if mac is None else bytes(mac))


class _KMSRequestEncrypted(KMSRequest):
    """A v5/v6 request: version ‖ IV ‖ CBC(base ‖ 04040404) (docs/kms-wire-protocol.md), shown decrypted."""

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        env = wkms.decode_encrypted_message(s[:REQUEST_V5_SIZE])
        if len(env.ciphertext) != REQUEST_V5_SIZE - 20:
            raise DecodeError(f"a v{self._major} request is {REQUEST_V5_SIZE} bytes, got {len(s)}")
        plain = crypto.cbc_decrypt(env.version.major, env.iv, env.ciphertext)
        base = wkms.decode_request_base(plain[: wkms.REQUEST_BASE_SIZE])
        values = self._base_values(base)
        values.update(major_ver=env.version.major, minor_ver=env.version.minor, iv=env.iv)
        return values, REQUEST_V5_SIZE

    def _encode(self, payload: bytes) -> bytes:
        base = self._base()
        iv = self._value("iv")
        iv = os.urandom(16) if iv is None else bytes(iv)
        major = base.version.major if base.version.major in (5, 6) else self._major
        return (
            wkms.encode_version(base.version)
            + iv
            + crypto.cbc_encrypt(major, iv, crypto.pkcs7_pad(wkms.encode_request_base(base)))
        )


class KMSRequestV5(_KMSRequestEncrypted):
    """A v5 request (AES-128-CBC, public key), shown decrypted; ``iv=None`` picks a random IV."""

    name = "KMS RequestV5"
    _major = 5
    fields_desc = _request_base_fields(5)[:2] + [XStrField("iv", None)] + _request_base_fields(5)[2:]


class KMSRequestV6(_KMSRequestEncrypted):
    """A v6 request (AES-128 with the v6 key schedule), shown decrypted; ``iv=None`` picks a random IV."""

    name = "KMS RequestV6"
    _major = 6
    fields_desc = _request_base_fields(6)[:2] + [XStrField("iv", None)] + _request_base_fields(6)[2:]


def _response_base_fields(major: int) -> list[AnyField]:
    return [
        LEShortField("minor_ver", 0),
        LEShortField("major_ver", major),
        _TextField("epid", "06401-00206-271-298329-03-1033-17763.0000-0452024"),
        XStrField("epid_raw", None),
        _GuidField("cmid", _ZERO_UUID),
        _FileTimeField("client_time", 0),
        LEIntField("count", 50),
        LEIntField("activation_interval", 120),
        LEIntField("renewal_interval", 10080),
    ]


class KMSResponse(_KmsMessage):
    """Base of the response classes: the response base (docs/kms-wire-protocol.md), by field name."""

    name = "KMS Response"

    def _base(self) -> wkms.ResponseBase:
        raw = self._value("epid_raw")
        return wkms.ResponseBase(
            version=wkms.Version(self._value("major_ver"), self._value("minor_ver")),
            epid=self._value("epid"),
            cmid=uuid.UUID(str(self._value("cmid"))),
            client_time=self._value("client_time") or 0,
            count=self._value("count"),
            activation_interval=self._value("activation_interval"),
            renewal_interval=self._value("renewal_interval"),
            epid_raw=None if raw is None else bytes(raw),
        )

    @staticmethod
    def _base_values(base: wkms.ResponseBase) -> dict[str, Any]:
        return {
            "minor_ver": base.version.minor,
            "major_ver": base.version.major,
            "epid": base.epid,
            "epid_raw": base.epid_raw,
            "cmid": base.cmid,
            "client_time": base.client_time,
            "count": base.count,
            "activation_interval": base.activation_interval,
            "renewal_interval": base.renewal_interval,
        }

    def hashret(self) -> bytes:
        return str(self.getfieldval("cmid")).encode()

    def answers(self, other: Packet) -> int:
        """A response answers the request of the same version, CMID and client time (docs/kms-wire-protocol.md echoes)."""
        if not isinstance(other, KMSRequest):
            return 0
        return int(
            other.getfieldval("major_ver") == self.getfieldval("major_ver")
            and str(other.getfieldval("cmid")) == str(self.getfieldval("cmid"))
            and other.getfieldval("client_time") == self.getfieldval("client_time")
        )


class KMSResponseV4(KMSResponse):
    """A v4 response: base ‖ V4-MAC (docs/kms-wire-protocol.md). ``mac=None`` computes the MAC."""

    name = "KMS ResponseV4"
    _major = 4
    fields_desc = _response_base_fields(4) + [XStrField("mac", None)]

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        if len(s) < 8:
            raise DecodeError("a v4 response is at least 8 bytes")
        (pid_size,) = struct.unpack_from("<I", s, 4)
        size = 60 + pid_size
        msg = wkms.decode_response_v4(s[:size])
        return {**self._base_values(msg.base), "mac": msg.mac}, size

    def _encode(self, payload: bytes) -> bytes:
        body = wkms.encode_response_base(self._base())
        mac = self._value("mac")
        return body + (crypto.v4_mac(body) if mac is None else bytes(mac))


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


class _KMSResponseEncrypted(KMSResponse):
    """A v5/v6 response: version ‖ IV ‖ CBC(plaintext), shown decrypted (docs/kms-wire-protocol.md).

    ``inner_major_ver``/``inner_minor_ver`` are the response base's own version (``None``: the
    outer one). ``hash=None`` is computed as SHA-256(R) with R = random_xored_ivs xor D(request
    IV), where D(request IV) is D(iv) for v5 (same IV) and ``xored_ivs`` for v6.
    """

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        env = wkms.decode_encrypted_message(s)
        usable = len(env.ciphertext) - len(env.ciphertext) % 16
        if usable == 0:
            raise DecodeError("a v5/v6 response has no whole cipher block")
        plain = crypto.cbc_decrypt(env.version.major, env.iv, env.ciphertext[:usable])
        msg = self._decode_plain(plain)
        values = self._base_values(msg.base)
        values.update(
            major_ver=env.version.major,
            minor_ver=env.version.minor,
            inner_major_ver=msg.base.version.major,
            inner_minor_ver=msg.base.version.minor,
            iv=env.iv,
            random_xored_ivs=msg.random_xored_ivs,
            hash=msg.hash,
            padding=msg.padding,
        )
        self._extra_values(msg, values)
        return values, 20 + usable

    def _decode_plain(self, plain: bytes) -> Any:
        raise NotImplementedError

    def _extra_values(self, msg: Any, values: dict[str, Any]) -> None:
        pass

    def _base(self) -> wkms.ResponseBase:
        base = super()._base()
        major, minor = self._value("inner_major_ver"), self._value("inner_minor_ver")
        version = wkms.Version(
            base.version.major if major is None else major, base.version.minor if minor is None else minor
        )
        return wkms.ResponseBase(
            version,
            base.epid,
            base.cmid,
            base.client_time,
            base.count,
            base.activation_interval,
            base.renewal_interval,
            base.epid_raw,
        )

    def _r_mask(self, iv: bytes) -> bytes:
        raise NotImplementedError

    def _plain(self, base: wkms.ResponseBase, iv: bytes) -> bytes:
        raise NotImplementedError

    def _encode(self, payload: bytes) -> bytes:
        iv = self._value("iv")
        iv = os.urandom(16) if iv is None else bytes(iv)
        base = self._base()
        plain = self._plain(base, iv)
        padding = self._value("padding")
        plain += crypto.pkcs7_pad(plain)[len(plain) :] if padding is None else bytes(padding)
        major = self._value("major_ver")
        version = wkms.Version(major, self._value("minor_ver"))
        return wkms.encode_version(version) + iv + crypto.cbc_encrypt(self._major, iv, plain)

    def _hash(self, iv: bytes) -> bytes:
        given = self._value("hash")
        if given is not None:
            return bytes(given)
        r = _xor(bytes(self._value("random_xored_ivs")), self._r_mask(iv))
        return hashlib.sha256(r).digest()


def _encrypted_response_fields(major: int) -> list[AnyField]:
    base = _response_base_fields(major)
    return [
        LEShortField("minor_ver", 0),
        LEShortField("major_ver", major),
        XStrField("iv", None),
        Field("inner_minor_ver", None, "<H"),
        Field("inner_major_ver", None, "<H"),
        *base[2:],
        XStrField("random_xored_ivs", bytes(16)),
        XStrField("hash", None),
    ]


class KMSResponseV5(_KMSResponseEncrypted):
    """A v5 response (docs/kms-wire-protocol.md); its IV is the request's IV."""

    name = "KMS ResponseV5"
    _major = 5
    fields_desc = _encrypted_response_fields(5) + [XStrField("padding", None)]

    def _decode_plain(self, plain: bytes) -> Any:
        return wkms.decode_response_v5_plain(plain)

    def _r_mask(self, iv: bytes) -> bytes:
        return crypto.decrypt_block(5, iv)

    def _plain(self, base: wkms.ResponseBase, iv: bytes) -> bytes:
        return wkms.encode_response_base(base) + bytes(self._value("random_xored_ivs")) + self._hash(iv)


class KMSResponseV6(_KMSResponseEncrypted):
    """A v6 response (docs/kms-wire-protocol.md). ``xored_ivs`` must be D(request IV); ``hmac=None`` computes the HMAC."""

    name = "KMS ResponseV6"
    _major = 6
    fields_desc = _encrypted_response_fields(6) + [
        XStrField("hwid", bytes.fromhex("3A1C049600B60076")),
        XStrField("xored_ivs", bytes(16)),
        XStrField("hmac", None),
        XStrField("padding", None),
    ]

    def _decode_plain(self, plain: bytes) -> Any:
        return wkms.decode_response_v6_plain(plain)

    def _extra_values(self, msg: Any, values: dict[str, Any]) -> None:
        values.update(hwid=msg.hwid, xored_ivs=msg.xored_ivs, hmac=msg.hmac)

    def _r_mask(self, iv: bytes) -> bytes:
        return bytes(self._value("xored_ivs"))

    def _plain(self, base: wkms.ResponseBase, iv: bytes) -> bytes:
        plain = (
            wkms.encode_response_base(base)
            + bytes(self._value("random_xored_ivs"))
            + self._hash(iv)
            + bytes(self._value("hwid"))
            + bytes(self._value("xored_ivs"))
        )
        mac = self._value("hmac")
        if mac is None:
            mac = crypto.v6_hmac(crypto.v6_hmac_key(base.client_time), crypto.decrypt_block(6, iv) + plain)
        return plain + bytes(mac)


_REQUEST_CLASSES: dict[int, type[KMSRequest]] = {4: KMSRequestV4, 5: KMSRequestV5, 6: KMSRequestV6}
_RESPONSE_CLASSES: dict[int, type[KMSResponse]] = {4: KMSResponseV4, 5: KMSResponseV5, 6: KMSResponseV6}


def _version_of(data: bytes) -> int | None:
    if len(data) < 4:
        return None
    minor, major = struct.unpack_from("<HH", data)
    return major if minor == 0 and major in (4, 5, 6) else None


# --- RequestActivation stubs ----------------------------------------------------------------------


def _syntax(ndr_word: int) -> ndr.TransferSyntax:
    return ndr.TransferSyntax.NDR64 if ndr_word == 64 else ndr.TransferSyntax.NDR32


def _request_stub_syntax(s: bytes) -> ndr.TransferSyntax | None:
    """Which NDR a request stub is in, from its two equal size fields, or ``None``: not a KMS stub."""
    for syntax, fmt in ((ndr.TransferSyntax.NDR32, "<II"), (ndr.TransferSyntax.NDR64, "<QQ")):
        w = syntax.word
        if len(s) >= 2 * w + 4:
            size, count = struct.unpack_from(fmt, s)
            if size == count and 2 * w + count <= len(s) <= 2 * w + count + 8:
                return syntax
    return None


def _response_stub_syntax(s: bytes) -> ndr.TransferSyntax | None:
    """Which NDR a response stub is in, or ``None`` when it does not look like a KMS response stub."""
    for syntax, fmt in ((ndr.TransferSyntax.NDR32, "<III"), (ndr.TransferSyntax.NDR64, "<QQQ")):
        w = syntax.word
        if len(s) < 2 * w + 4:
            continue
        size, referent = struct.unpack_from(fmt[:3], s)
        if referent == 0:
            if size == 0 and len(s) == 2 * w + 4:
                return syntax
            continue
        if len(s) >= 3 * w + 4:
            (count,) = struct.unpack_from(fmt[:2], s, 2 * w)
            if count == size and 3 * w + count + 4 <= len(s) <= 3 * w + count + 16:
                return syntax
    return None


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

    _stub_syntax = staticmethod(_request_stub_syntax)

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        syntax = _request_stub_syntax(s)
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

    _stub_syntax = staticmethod(_response_stub_syntax)

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        syntax = _response_stub_syntax(s)
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
            head = struct.pack("<I" if syntax.word == 4 else "<Q", 0 if size is None else size)
            return head + bytes(syntax.word) + struct.pack("<I", hresult) + bytes(self._value("trailer"))
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
