"""KMS message layer: version header, request/response bases, v4 bodies, v5/v6 envelopes and plaintexts.

Spec: docs/kms-wire-protocol.md (one Construct struct per table). Only layout lives here;
MACs, encryption and the checks on the values are in :mod:`emu.kms.crypto` and
:mod:`emu.kms.messages`.

Decoding is lossless: the stale bytes after the workstation name's NUL (quirk Q3) and an ePID that
is not clean UTF-16 with one trailing NUL are kept, so ``encode_x(decode_x(b)) == b`` for every
input that decodes.
"""

from __future__ import annotations

import struct
from typing import Any

import construct as cs

from emu.errors import DecodeError
from emu.wire.common import ExactBytes, FileTime, Guid, decode_guard, join_fixed_utf16, split_fixed_utf16
from emu.wire.kms_types import (
    EncryptedMessage,
    LicenseStatus,
    RequestBase,
    RequestV4,
    ResponseBase,
    ResponseV4,
    ResponseV5Plain,
    ResponseV6Plain,
    Version,
)
from emu.wire.layout import Compiled, FixedLayout

__all__ = [
    "HASH_SIZE",
    "HWID_SIZE",
    "IV_SIZE",
    "MAC_SIZE",
    "REQUEST_BASE_SIZE",
    "WORKSTATION_NAME_SIZE",
    "EncryptedMessage",
    "KmsEncryptedMessage",
    "KmsRequestBase",
    "KmsRequestV4",
    "KmsResponseBase",
    "KmsResponseV4",
    "KmsResponseV5Plain",
    "KmsResponseV6Plain",
    "LicenseStatus",
    "RequestBase",
    "RequestV4",
    "ResponseBase",
    "ResponseV4",
    "ResponseV5Plain",
    "ResponseV6Plain",
    "Version",
    "VersionHeader",
    "decode_encrypted_message",
    "decode_request_base",
    "decode_request_v4",
    "decode_response_base",
    "decode_response_v4",
    "decode_response_v5_plain",
    "decode_response_v6_plain",
    "decode_version",
    "encode_encrypted_message",
    "encode_request_base",
    "encode_request_v4",
    "encode_response_base",
    "encode_response_v4",
    "encode_response_v5_plain",
    "encode_response_v6_plain",
    "encode_version",
    "pid_size_of",
]

#: Request base size, bytes (docs/kms-wire-protocol.md).
REQUEST_BASE_SIZE = 236
#: WorkstationName buffer, WCHAR[64] (docs/kms-wire-protocol.md).
WORKSTATION_NAME_SIZE = 128
#: V4 MAC size (docs/kms-wire-protocol.md).
MAC_SIZE = 16
#: v5/v6 IV size (docs/kms-wire-protocol.md).
IV_SIZE = 16
#: SHA-256 hash of R (docs/kms-wire-protocol.md).
HASH_SIZE = 32
#: HwId size (docs/kms-wire-protocol.md).
HWID_SIZE = 8


# --- Construct definitions, one per spec table --------------------------------------------------

# docs/kms-wire-protocol.md
VersionHeader = cs.Struct(
    "minor_ver" / cs.Int16ul * "minor protocol version, 0",  # +0x00
    "major_ver" / cs.Int16ul * "major protocol version, 4/5/6",  # +0x02
)

# docs/kms-wire-protocol.md (236 bytes)
KmsRequestBase = cs.Struct(
    "version" / VersionHeader,  # +0x00
    "vm_info" / cs.Int32ul * "0 physical, 1 virtual machine",  # +0x04
    "license_status" / cs.Int32ul * "LicenseStatus 0..6",  # +0x08
    "binding_expiration" / cs.Int32ul * "minutes until the current status expires",  # +0x0c
    "app_id" / Guid * "application family",  # +0x10
    "sku_id" / Guid * "activation id of the edition",  # +0x20
    "kms_id" / Guid * "KMS counted id (product group)",  # +0x30
    "cmid" / Guid * "client machine id",  # +0x40
    "required_client_count" / cs.Int32ul * "activation threshold N",  # +0x50
    "client_time" / FileTime * "client UTC time, FILETIME",  # +0x54
    "previous_cmid" / Guid * "previous client machine id, normally zero",  # +0x5c
    "workstation_name"
    / ExactBytes(WORKSTATION_NAME_SIZE)
    * "UTF-16LE, NUL-terminated; stale bytes after (Q3)",  # +0x6c
)

# docs/kms-wire-protocol.md (44 + P bytes; fields after KmsPID are unaligned)
KmsResponseBase = cs.Struct(
    "version" / VersionHeader,  # +0x00
    "pid_size" / cs.Rebuild(cs.Int32ul, cs.len_(cs.this.kms_pid)) * "P: bytes of KmsPID incl. NUL",  # +0x04
    "kms_pid" / ExactBytes(cs.this.pid_size) * "ePID, UTF-16LE + NUL",  # +0x08
    "cmid" / Guid * "echo of the request's CMID",
    "client_time" / FileTime * "echo of the request's ClientTime",
    "count" / cs.Int32ul * "active clients claimed by the host",
    "activation_interval" / cs.Int32ul * "minutes between retries while not activated",
    "renewal_interval" / cs.Int32ul * "minutes between renewals",
)

# docs/kms-wire-protocol.md, request (252 bytes)
KmsRequestV4 = cs.Struct(
    "base" / KmsRequestBase,  # +0x00
    "mac" / ExactBytes(MAC_SIZE) * "V4-MAC of the base (5.2)",  # +0xec
    cs.Terminated,
)

# docs/kms-wire-protocol.md, response (60 + P bytes)
KmsResponseV4 = cs.Struct(
    "base" / KmsResponseBase,
    "mac" / ExactBytes(MAC_SIZE) * "V4-MAC of the base (5.2)",
    cs.Terminated,
)

# docs/kms-wire-protocol.md: the clear-text envelope of every v5/v6 request and response
KmsEncryptedMessage = cs.Struct(
    "version" / VersionHeader,  # +0x00
    "iv" / ExactBytes(IV_SIZE) * "CBC IV (py-kms: salt)",  # +0x04
    "ciphertext" / cs.GreedyBytes * "CBC ciphertext of the PKCS#7-padded plaintext",  # +0x14
)

# docs/kms-wire-protocol.md, response plaintext (92 + P bytes, then PKCS#7 padding)
KmsResponseV5Plain = cs.Struct(
    "base" / KmsResponseBase,
    "random_xored_ivs" / ExactBytes(IV_SIZE) * "R xor D(request IV)",
    "hash" / ExactBytes(HASH_SIZE) * "SHA-256(R)",
    "padding" / cs.GreedyBytes * "PKCS#7 padding bytes, kept as received",
)

# docs/kms-wire-protocol.md, response plaintext (132 + P bytes, then PKCS#7 padding)
KmsResponseV6Plain = cs.Struct(
    "base" / KmsResponseBase,
    "random_xored_ivs" / ExactBytes(IV_SIZE) * "R xor D(request IV)",
    "hash" / ExactBytes(HASH_SIZE) * "SHA-256(R)",
    "hwid" / ExactBytes(HWID_SIZE) * "KMS host hardware id",
    "xored_ivs" / ExactBytes(IV_SIZE) * "D(request IV)",
    "hmac" / ExactBytes(16) * "last 16 bytes of HMAC-SHA256 (5.4)",
    "padding" / cs.GreedyBytes * "PKCS#7 padding bytes, kept as received",
)


# --- conversions between Containers and dataclasses ---------------------------------------------


def _version(c: cs.Container) -> Version:
    return Version(major=c.major_ver, minor=c.minor_ver)


def _version_dict(v: Version) -> dict[str, int]:
    return {"minor_ver": v.minor, "major_ver": v.major}


def _epid_of(raw: bytes) -> tuple[str, bytes | None]:
    """Text of a KmsPID and, when the bytes are not clean UTF-16LE + one NUL, the raw bytes."""
    if len(raw) >= 2 and len(raw) % 2 == 0 and raw[-2:] == b"\0\0":
        try:
            text = raw[:-2].decode("utf-16-le")
        except UnicodeDecodeError:
            text = None
        if text is not None and "\0" not in text:
            return text, None
    # Not clean: show the text up to the first NUL, keep the bytes for a lossless re-encoding.
    text, _ = split_fixed_utf16(raw)
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), bytes(raw)


def _response_base(c: cs.Container) -> ResponseBase:
    epid, raw = _epid_of(c.kms_pid)
    return ResponseBase(
        version=_version(c.version),
        epid=epid,
        cmid=c.cmid,
        client_time=c.client_time,
        count=c.count,
        activation_interval=c.activation_interval,
        renewal_interval=c.renewal_interval,
        epid_raw=raw,
    )


def _response_base_dict(b: ResponseBase) -> dict[str, object]:
    return {
        "version": _version_dict(b.version),
        "kms_pid": b.pid_bytes,
        "cmid": b.cmid,
        "client_time": b.client_time,
        "count": b.count,
        "activation_interval": b.activation_interval,
        "renewal_interval": b.renewal_interval,
    }


# --- compiled codecs -----------------------------------------------------------------------------
#
# The fixed-width messages on a host's hot path (version header, request base, envelope head) go
# through a struct layout generated from the tables above; the rest through Struct.compile().

_VERSION = FixedLayout(VersionHeader)
_REQUEST_BASE = FixedLayout(KmsRequestBase)
_ENVELOPE = FixedLayout(KmsEncryptedMessage)  # version and IV; the ciphertext is the rest
_RESPONSE_BASE_ALONE = cs.Struct("base" / KmsResponseBase, cs.Terminated)
_RESPONSE_BASE = Compiled(_RESPONSE_BASE_ALONE, "KMS response base")
_RESPONSE_V4 = Compiled(KmsResponseV4, "KMS v4 response")
_RESPONSE_V5_PLAIN = Compiled(KmsResponseV5Plain, "KMS v5 response plaintext")
_RESPONSE_V6_PLAIN = Compiled(KmsResponseV6Plain, "KMS v6 response plaintext")
_RESPONSE_HEAD = FixedLayout(KmsResponseBase)  # version and pid_size; kms_pid follows
_RESPONSE_TAIL = FixedLayout(KmsResponseBase, start="cmid")  # the fields after kms_pid
_V5_AFTER_BASE = FixedLayout(KmsResponseV5Plain, start="random_xored_ivs", stop="padding")
_V6_AFTER_BASE = FixedLayout(KmsResponseV6Plain, start="random_xored_ivs", stop="padding")
_LICENSE_STATUS = {int(status): status for status in LicenseStatus}  # a dict lookup, not an enum call per request


def _request_base(data: bytes) -> RequestBase:
    v = _REQUEST_BASE.unpack_from(data)  # the fields of table 4.2 in order, version split in two
    license_status = _LICENSE_STATUS.get(v[3])
    if license_status is None:
        raise DecodeError(f"license status {v[3]} is not one of 0..6", offset=8, path="license_status")
    name, tail = split_fixed_utf16(v[12])
    return RequestBase(
        Version(major=v[1], minor=v[0]),
        v[2],
        license_status,
        v[4],
        v[5],
        v[6],
        v[7],
        v[8],
        v[9],
        v[10],
        v[11],
        name,
        tail,
    )


# --- public decode/encode ---------------------------------------------------------------------


def decode_version(data: bytes) -> Version:
    """The version header at the start of any KMS message (extra bytes after it are ignored).

    Raises:
        DecodeError: fewer than 4 bytes.
    """
    if len(data) < 4:
        raise DecodeError(f"a KMS version header is 4 bytes, got {len(data)}", offset=len(data), path="version")
    minor, major = _VERSION.unpack_from(data)
    return Version(major=major, minor=minor)


def pid_size_of(data: bytes) -> int:
    """PIDSize of a response base (or v4 response) from its first 8 bytes; the base is 44 + it.

    Raises:
        DecodeError: fewer than 8 bytes.
    """
    if len(data) < _RESPONSE_HEAD.size:
        raise DecodeError(f"a KMS response starts with 8 bytes, got {len(data)}", offset=len(data), path="pid_size")
    return int(_RESPONSE_HEAD.unpack_from(data)[2])


def encode_version(version: Version) -> bytes:
    """The 4-byte version header."""
    try:
        return _VERSION.pack(version.minor, version.major)
    except struct.error as exc:
        raise ValueError(f"version {version} does not fit in two u16: {exc}") from exc


def decode_request_base(data: bytes) -> RequestBase:
    """A 236-byte request base (docs/kms-wire-protocol.md).

    Raises:
        DecodeError: wrong length or a license status outside 0..6.
    """
    if len(data) != REQUEST_BASE_SIZE:
        raise DecodeError(
            f"KMS request base is {REQUEST_BASE_SIZE} bytes, got {len(data)}",
            offset=min(len(data), REQUEST_BASE_SIZE),
            path="request base",
        )
    return _request_base(bytes(data))


def encode_request_base(base: RequestBase) -> bytes:
    """The 236 bytes of a request base.

    Raises:
        ValueError: the workstation name (with tail) does not fit in 128 bytes.
    """
    try:
        return _REQUEST_BASE.pack(
            base.version.minor,
            base.version.major,
            base.vm_info,
            int(base.license_status),
            base.binding_expiration,
            base.app_id,
            base.sku_id,
            base.kms_id,
            base.cmid,
            base.required_client_count,
            base.client_time,
            base.previous_cmid,
            join_fixed_utf16(base.workstation_name, base.workstation_tail, WORKSTATION_NAME_SIZE),
        )
    except struct.error as exc:
        raise ValueError(f"request base field out of range: {exc}") from exc


def decode_response_base(data: bytes) -> ResponseBase:
    """A response base of exactly 44 + PIDSize bytes (docs/kms-wire-protocol.md).

    Raises:
        DecodeError: truncated, PIDSize beyond the data, or trailing bytes.
    """
    c = _RESPONSE_BASE.parse(data)
    with decode_guard("KMS response base"):
        return _response_base(c.base)


def encode_response_base(base: ResponseBase) -> bytes:
    """The 44 + P bytes of a response base."""
    pid = base.pid_bytes
    try:
        return (
            _RESPONSE_HEAD.pack(base.version.minor, base.version.major, len(pid))
            + pid
            + _RESPONSE_TAIL.pack(
                base.cmid, base.client_time, base.count, base.activation_interval, base.renewal_interval
            )
        )
    except struct.error as exc:
        raise ValueError(f"response base field out of range: {exc}") from exc


def decode_request_v4(data: bytes) -> RequestV4:
    """A 252-byte v4 request (docs/kms-wire-protocol.md). The MAC is not checked here.

    Raises:
        DecodeError: wrong length or a bad field.
    """
    size = REQUEST_BASE_SIZE + MAC_SIZE
    if len(data) != size:
        raise DecodeError(
            f"a v4 request is {size} bytes, got {len(data)}", offset=min(len(data), size), path="v4 request"
        )
    data = bytes(data)
    return RequestV4(base=_request_base(data[:REQUEST_BASE_SIZE]), mac=data[REQUEST_BASE_SIZE:])


def encode_request_v4(msg: RequestV4) -> bytes:
    """The 252 bytes of a v4 request (the MAC is written as given)."""
    if len(msg.mac) != MAC_SIZE:
        raise ValueError(f"the MAC is {MAC_SIZE} bytes, got {len(msg.mac)}")
    return encode_request_base(msg.base) + msg.mac


def decode_response_v4(data: bytes) -> ResponseV4:
    """A v4 response, 60 + P bytes (docs/kms-wire-protocol.md). The MAC is not checked here.

    Raises:
        DecodeError: truncated, PIDSize beyond the data, or trailing bytes.
    """
    c = _RESPONSE_V4.parse(data)
    with decode_guard("KMS v4 response"):
        return ResponseV4(base=_response_base(c.base), mac=c.mac)


def encode_response_v4(msg: ResponseV4) -> bytes:
    """The bytes of a v4 response (the MAC is written as given)."""
    return _RESPONSE_V4.build({"base": _response_base_dict(msg.base), "mac": msg.mac})


def decode_encrypted_message(data: bytes) -> EncryptedMessage:
    """The clear envelope of a v5/v6 message: version, IV, ciphertext (docs/kms-wire-protocol.md).

    The ciphertext length is not checked here (see :mod:`emu.kms.messages`).

    Raises:
        DecodeError: fewer than 20 bytes.
    """
    if len(data) < 4 + IV_SIZE:
        raise DecodeError(
            f"a v5/v6 message has at least {4 + IV_SIZE} bytes, got {len(data)}", offset=len(data), path="iv"
        )
    data = bytes(data)
    minor, major, iv = _ENVELOPE.unpack_from(data)
    return EncryptedMessage(version=Version(major=major, minor=minor), iv=iv, ciphertext=data[_ENVELOPE.size :])


def encode_encrypted_message(msg: EncryptedMessage) -> bytes:
    """Version ‖ IV ‖ ciphertext.

    Raises:
        ValueError: the IV is not 16 bytes.
    """
    if len(msg.iv) != IV_SIZE:
        raise ValueError(f"IV must be {IV_SIZE} bytes, got {len(msg.iv)}")
    try:
        return _ENVELOPE.pack(msg.version.minor, msg.version.major, msg.iv) + msg.ciphertext
    except struct.error as exc:
        raise ValueError(f"version {msg.version} does not fit in two u16: {exc}") from exc


def decode_response_v5_plain(data: bytes) -> ResponseV5Plain:
    """A decrypted v5 response, padding included (docs/kms-wire-protocol.md). The padding is kept, not checked.

    Raises:
        DecodeError: truncated or PIDSize beyond the data.
    """
    data = bytes(data)
    split = _split_response_plain(data, _V5_AFTER_BASE)
    if split is not None:
        base, (random_xored_ivs, digest), padding = split
        return ResponseV5Plain(base, random_xored_ivs, digest, padding)
    c = _RESPONSE_V5_PLAIN.parse(data)
    with decode_guard("KMS v5 response plaintext"):
        return ResponseV5Plain(
            base=_response_base(c.base), random_xored_ivs=c.random_xored_ivs, hash=c.hash, padding=c.padding
        )


def encode_response_v5_plain(msg: ResponseV5Plain) -> bytes:
    """The plaintext of a v5 response, followed by ``msg.padding`` as given."""
    return _RESPONSE_V5_PLAIN.build(
        {
            "base": _response_base_dict(msg.base),
            "random_xored_ivs": msg.random_xored_ivs,
            "hash": msg.hash,
            "padding": msg.padding,
        }
    )


def _split_response_plain(data: bytes, after: FixedLayout) -> tuple[ResponseBase, tuple[Any, ...], bytes] | None:
    """A decrypted v5/v6 response read with the struct layouts generated from its declaration: the
    base, the fixed fields after it and the padding; None when it is too short for them (the caller
    then lets the Construct declaration say what is missing)."""
    if len(data) < _RESPONSE_HEAD.size:
        return None
    minor, major, pid_size = _RESPONSE_HEAD.unpack_from(data)
    tail_at = _RESPONSE_HEAD.size + pid_size
    end = tail_at + _RESPONSE_TAIL.size + after.size
    if len(data) < end:
        return None
    cmid, client_time, count, activation, renewal = _RESPONSE_TAIL.unpack_from(data, tail_at)
    epid, raw = _epid_of(data[_RESPONSE_HEAD.size : tail_at])
    base = ResponseBase(Version(major=major, minor=minor), epid, cmid, client_time, count, activation, renewal, raw)
    return base, after.unpack_from(data, tail_at + _RESPONSE_TAIL.size), data[end:]


def decode_response_v6_plain(data: bytes) -> ResponseV6Plain:
    """A decrypted v6 response, padding included (docs/kms-wire-protocol.md). The padding is kept, not checked.

    Raises:
        DecodeError: truncated or PIDSize beyond the data.
    """
    data = bytes(data)
    split = _split_response_plain(data, _V6_AFTER_BASE)
    if split is not None:
        base, (random_xored_ivs, digest, hwid, xored_ivs, hmac), padding = split
        return ResponseV6Plain(base, random_xored_ivs, digest, hwid, xored_ivs, hmac, padding)
    c = _RESPONSE_V6_PLAIN.parse(data)
    with decode_guard("KMS v6 response plaintext"):
        return ResponseV6Plain(
            base=_response_base(c.base),
            random_xored_ivs=c.random_xored_ivs,
            hash=c.hash,
            hwid=c.hwid,
            xored_ivs=c.xored_ivs,
            hmac=c.hmac,
            padding=c.padding,
        )


def encode_response_v6_plain(msg: ResponseV6Plain) -> bytes:
    """The plaintext of a v6 response, followed by ``msg.padding`` as given."""
    return _RESPONSE_V6_PLAIN.build(
        {
            "base": _response_base_dict(msg.base),
            "random_xored_ivs": msg.random_xored_ivs,
            "hash": msg.hash,
            "hwid": msg.hwid,
            "xored_ivs": msg.xored_ivs,
            "hmac": msg.hmac,
            "padding": msg.padding,
        }
    )
