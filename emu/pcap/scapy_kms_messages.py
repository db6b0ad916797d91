"""Scapy layers for the KMS v4/v5/v6 request and response messages (see :mod:`emu.pcap.scapy_kms`).

Layouts come from :mod:`emu.wire.kms`; the v5/v6 response assembly (hash of R, R mask, v6 HMAC)
from :mod:`emu.kms.messages`, so nothing is restated here.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from scapy.config import conf
from scapy.fields import (
    AnyField,
    Field,
    IntEnumField,
    LEIntField,
    LEShortField,
    XStrField,
)
from scapy.packet import Packet

from emu.errors import DecodeError
from emu.kms import crypto, messages
from emu.kms.messages import REQUEST_V4_SIZE, REQUEST_V5_SIZE
from emu.pcap.scapy_kms_base import (
    _LICENSE_NAMES,
    _ZERO_UUID,
    _FileTimeField,
    _GuidField,
    _TextField,
    _WireLayer,
    filetime_now,
)
from emu.wire import kms as wkms

__all__ = [
    "KMSRequest",
    "KMSRequestV4",
    "KMSRequestV5",
    "KMSRequestV6",
    "KMSResponse",
    "KMSResponseV4",
    "KMSResponseV5",
    "KMSResponseV6",
]

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
        size = 60 + wkms.pid_size_of(s)
        msg = wkms.decode_response_v4(s[:size])
        return {**self._base_values(msg.base), "mac": msg.mac}, size

    def _encode(self, payload: bytes) -> bytes:
        body = wkms.encode_response_base(self._base())
        mac = self._value("mac")
        return body + (crypto.v4_mac(body) if mac is None else bytes(mac))


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
        return messages.response_hash(messages.xor_block(bytes(self._value("random_xored_ivs")), self._r_mask(iv)))


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
        return messages.response_r_mask(5, iv)

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
            mac = messages.v6_response_hmac(base.client_time, iv, plain)
        return plain + bytes(mac)


_REQUEST_CLASSES: dict[int, type[KMSRequest]] = {4: KMSRequestV4, 5: KMSRequestV5, 6: KMSRequestV6}
_RESPONSE_CLASSES: dict[int, type[KMSResponse]] = {4: KMSResponseV4, 5: KMSResponseV5, 6: KMSResponseV6}


def _version_of(data: bytes) -> int | None:
    if len(data) < 4:
        return None
    version = wkms.decode_version(data)
    minor, major = version.minor, version.major
    return major if minor == 0 and major in (4, 5, 6) else None
