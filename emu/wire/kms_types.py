"""The KMS messages as typed values: what :mod:`emu.wire.kms` decodes into and encodes from.

Spec: docs/kms-wire-protocol.md. The layouts (Construct declarations) and the codecs are in
:mod:`emu.wire.kms`, which also exports these names; this module holds only the dataclasses and the
one enumeration a request carries, so that the layout module stays small.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "EncryptedMessage",
    "LicenseStatus",
    "RequestBase",
    "RequestV4",
    "ResponseBase",
    "ResponseV4",
    "ResponseV5Plain",
    "ResponseV6Plain",
    "Version",
]


class LicenseStatus(IntEnum):
    """Client licence state sent in the request (docs/kms-wire-protocol.md, LicenseStatus)."""

    UNLICENSED = 0
    LICENSED = 1
    OOB_GRACE = 2
    OOT_GRACE = 3
    NON_GENUINE_GRACE = 4
    NOTIFICATION = 5
    EXTENDED_GRACE = 6


@dataclass(frozen=True, slots=True)
class Version:
    """The 4-byte version header: MinorVer then MajorVer (docs/kms-wire-protocol.md)."""

    major: int
    minor: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True, slots=True)
class RequestBase:
    """The 236-byte request base, identical for all versions (docs/kms-wire-protocol.md)."""

    version: Version
    vm_info: int
    license_status: LicenseStatus
    binding_expiration: int
    app_id: uuid.UUID
    sku_id: uuid.UUID
    kms_id: uuid.UUID
    cmid: uuid.UUID
    required_client_count: int
    client_time: int
    previous_cmid: uuid.UUID
    workstation_name: str
    #: bytes after the name's NUL, trailing zeros removed (vlmcs leaves stale memory there, Q3)
    workstation_tail: bytes = b""


@dataclass(frozen=True, slots=True)
class ResponseBase:
    """The response base, 44 + P bytes (docs/kms-wire-protocol.md)."""

    version: Version
    epid: str
    cmid: uuid.UUID
    client_time: int
    count: int
    activation_interval: int
    renewal_interval: int
    #: the KmsPID bytes as received when they are not exactly UTF-16LE(epid) + one NUL; else None
    epid_raw: bytes | None = None

    @property
    def pid_bytes(self) -> bytes:
        """KmsPID as it goes on the wire (PIDSize = its length)."""
        if self.epid_raw is not None:
            return self.epid_raw
        return self.epid.encode("utf-16-le", "surrogatepass") + b"\0\0"


@dataclass(frozen=True, slots=True)
class RequestV4:
    """A v4 request: base plus V4-MAC (docs/kms-wire-protocol.md)."""

    base: RequestBase
    mac: bytes


@dataclass(frozen=True, slots=True)
class ResponseV4:
    """A v4 response: base plus V4-MAC (docs/kms-wire-protocol.md)."""

    base: ResponseBase
    mac: bytes


@dataclass(frozen=True, slots=True)
class EncryptedMessage:
    """A v5/v6 request or response as sent: clear version, IV, ciphertext (docs/kms-wire-protocol.md)."""

    version: Version
    iv: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class ResponseV5Plain:
    """Decrypted v5 response (docs/kms-wire-protocol.md); ``padding`` is the PKCS#7 tail as decrypted."""

    base: ResponseBase
    random_xored_ivs: bytes
    hash: bytes
    padding: bytes = b""


@dataclass(frozen=True, slots=True)
class ResponseV6Plain:
    """Decrypted v6 response (docs/kms-wire-protocol.md); ``padding`` is the PKCS#7 tail as decrypted."""

    base: ResponseBase
    random_xored_ivs: bytes
    hash: bytes
    hwid: bytes
    xored_ivs: bytes
    hmac: bytes
    padding: bytes = b""
