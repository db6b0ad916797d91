"""The local lab stand-in for the activation service when a forest is activated (docs/adba.md
"Forest activation").

emu-defined throughout: what online forest activation sends to Microsoft is not public, nor are the
IID/CID algorithms. The :class:`ActivationService` protocol is the seam: the activation service of emu's
MAK support can implement it and replace :class:`LabSigner` without touching ``emu adba``.

IID: 9 groups of 7 digits; CID: 8 groups of 6 digits; the last digit of each group is a check digit
(sum of the group's other digits, weighted 1..n, mod 10). Both are bound to the key and the forest.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Protocol

from emu.adba.licence import LAB_KEY_SEED, Licence, sign_licence

__all__ = ["ActivationService", "IidCidError", "LabSigner", "group_digits"]


class IidCidError(ValueError):
    """An IID or CID that is malformed (``hresult`` 0xC004F04D) or does not belong (0xC004F07E)."""

    def __init__(self, hresult: int, message: str) -> None:
        super().__init__(f"0x{hresult:08X}: {message}")
        self.hresult = hresult


class ActivationService(Protocol):
    """What forest activation needs from an activation service."""

    def online_licences(
        self, key: str, forest: str, sku_id: uuid.UUID, kms_ids: tuple[uuid.UUID, ...], now: float
    ) -> dict[str, bytes]:
        """Licences for an online forest activation (attribute kind -> blob)."""
        ...

    def confirmation_id(self, iid: str) -> str:
        """The CID for a phone/proxy activation's IID."""
        ...


def _check_digit(digits: str) -> str:
    return str(sum((i + 1) * int(d) for i, d in enumerate(digits)) % 10)


def group_digits(raw: str, size: int) -> str:
    """Split ``raw`` into groups of ``size - 1`` digits and append a check digit to each."""
    step = size - 1
    return "-".join(raw[i : i + step] + _check_digit(raw[i : i + step]) for i in range(0, len(raw), step))


def _verify(text: str, groups: int, size: int, what: str) -> str:
    parts = text.strip().replace(" ", "-").split("-")
    if len(parts) != groups or any(len(p) != size or not p.isdigit() for p in parts):
        raise IidCidError(0xC004F04D, f"{what} must be {groups} groups of {size} digits")
    for p in parts:
        if _check_digit(p[:-1]) != p[-1]:
            raise IidCidError(0xC004F04D, f"{what} group {p} fails its check digit")
    return "".join(p[:-1] for p in parts)


def _digits(seed: bytes, n: int) -> str:
    out = ""
    counter = 0
    while len(out) < n:
        out += str(int.from_bytes(hashlib.sha256(seed + counter.to_bytes(4, "big")).digest(), "big"))
        counter += 1
    return out[:n]


class LabSigner:
    """emu's local, lab-only activation service for forests."""

    def online_licences(
        self, key: str, forest: str, sku_id: uuid.UUID, kms_ids: tuple[uuid.UUID, ...], now: float
    ) -> dict[str, bytes]:
        return {
            kind.capitalize(): sign_licence(Licence(kind, forest.lower(), sku_id, kms_ids, now))
            for kind in ("online", "config", "issuance")
        }

    def phone_licences(
        self, forest: str, sku_id: uuid.UUID, kms_ids: tuple[uuid.UUID, ...], now: float
    ) -> dict[str, bytes]:
        return {
            kind.capitalize(): sign_licence(Licence(kind, forest.lower(), sku_id, kms_ids, now))
            for kind in ("phone", "config", "issuance")
        }

    @staticmethod
    def installation_id(key: str, forest: str) -> str:
        """The forest IID for ``key`` (bound to key and forest, not to any machine)."""
        raw = _digits(f"emu-iid/1|{key.upper()}|{forest.lower()}".encode(), 54)
        return group_digits(raw, 7)

    def confirmation_id(self, iid: str) -> str:
        raw_iid = _verify(iid, 9, 7, "installation ID")
        mac = hmac.new(LAB_KEY_SEED, f"emu-cid/1|{raw_iid}".encode(), hashlib.sha256).digest()
        return group_digits(_digits(mac, 40), 6)

    def check_cid(self, key: str, forest: str, cid: str) -> None:
        """Raise IidCidError unless ``cid`` is the CID of this key's forest IID."""
        _verify(cid, 8, 6, "confirmation ID")
        if self.confirmation_id(self.installation_id(key, forest)) != cid.strip().replace(" ", "-"):
            raise IidCidError(0xC004F07E, "the confirmation ID belongs to another key or forest")
