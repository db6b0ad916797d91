"""Installation IDs and confirmation IDs: the documented shapes, emu-defined contents.

* IID: 63 digits in 9 groups of 7. Each group is 6 payload digits and a check digit. The 54 payload
  digits are ``91`` (emu's format marker), 20 digits of the product key's emu digest, 20 digits of the
  machine's hardware hash and a 12-digit installation serial (new at each key install or rearm).
* CID: 48 digits in 8 groups of 6, each 5 payload digits and a check digit. The 40 payload digits are
  10 digits of the key digest, 10 of the hardware hash and 20 binding the CID to the exact IID.

The check digit of a group is the Luhn digit of its payload (emu-defined; Microsoft's is not public),
so a mistyped digit gives 0xC004F04D; the key part gives 0xC004F07E for a CID acquired for another key;
the hardware and binding parts give 0xC004F07F for one acquired for another machine or installation.
Anyone can compute a CID from an IID: these IDs are lab artefacts, not secrets (docs/mak.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from emu.mak.errors import ActivationError
from emu.mak.keys import key_hash

__all__ = [
    "E_CHECK_DIGITS",
    "E_CID_FORMAT",
    "E_MISMATCHED_KEY",
    "E_NOT_BOUND",
    "ConfirmationId",
    "InstallationId",
    "confirmation_id_for",
    "hardware_digits",
    "installation_id",
    "key_digits",
    "parse_cid",
    "parse_iid",
    "verify_cid",
]

E_CID_FORMAT = 0xC004F02C
E_CHECK_DIGITS = 0xC004F04D
E_MISMATCHED_KEY = 0xC004F07E
E_NOT_BOUND = 0xC004F07F
_MARKER = "91"


def _luhn(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def _with_checks(payload: str, width: int) -> str:
    groups = [payload[i : i + width] for i in range(0, len(payload), width)]
    return "-".join(g + _luhn(g) for g in groups)


def _strip_checks(text: str, groups: int, width: int, code_on_shape: int, what: str) -> str:
    digits = "".join(ch for ch in text if ch not in "- \t")
    if not digits.isdigit() or len(digits) != groups * (width + 1):
        raise ActivationError(
            code_on_shape, f"{what} has {groups * (width + 1)} digits ({groups} groups of {width + 1})"
        )
    payload = ""
    for n in range(groups):
        group = digits[n * (width + 1) : (n + 1) * (width + 1)]
        if _luhn(group[:width]) != group[width]:
            raise ActivationError(E_CHECK_DIGITS, f"group {n + 1} of the {what} ({group}) has a wrong check digit")
        payload += group[:width]
    return payload


def _digest_digits(data: bytes, n: int) -> str:
    return str(int.from_bytes(hashlib.sha256(data).digest()[:16], "big") % 10**n).zfill(n)


def key_digits(key: str) -> str:
    """20 digits standing for the product key inside IDs."""
    return str(int.from_bytes(key_hash(key)[:16], "big") % 10**20).zfill(20)


def hardware_digits(hardware_id: str) -> str:
    """20 digits standing for the machine (its emu hardware ID) inside IDs."""
    return _digest_digits(b"emu/1 hardware\0" + hardware_id.encode("utf-8"), 20)


@dataclass(frozen=True)
class InstallationId:
    """A parsed IID: canonical text and its parts."""

    text: str
    key_part: str
    hardware_part: str
    serial: str

    @property
    def digits(self) -> str:
        return self.text.replace("-", "")


@dataclass(frozen=True)
class ConfirmationId:
    """A parsed CID."""

    text: str
    key_part: str
    hardware_part: str
    binding: str


def installation_id(key: str, hardware_id: str, serial: int) -> str:
    """The IID of ``key`` installed on ``hardware_id`` (installation ``serial``)."""
    payload = _MARKER + key_digits(key) + hardware_digits(hardware_id) + str(serial % 10**12).zfill(12)
    return _with_checks(payload, 6)


def parse_iid(text: str) -> InstallationId:
    """An IID, or :class:`ActivationError` (0xC004F04D for wrong check digits or shape)."""
    payload = _strip_checks(text, 9, 6, E_CHECK_DIGITS, "installation ID")
    if not payload.startswith(_MARKER):
        raise ActivationError(E_CHECK_DIGITS, "not an emu installation ID (its payload starts with 91)")
    return InstallationId(_with_checks(payload, 6), payload[2:22], payload[22:42], payload[42:54])


def _binding(iid: InstallationId) -> str:
    return _digest_digits(b"emu/1 cid\0" + iid.digits.encode("ascii"), 20)


def confirmation_id_for(iid: InstallationId) -> str:
    """The CID the activation service issues for ``iid`` (after its ledger allowed it)."""
    payload = iid.key_part[:10] + iid.hardware_part[:10] + _binding(iid)
    return _with_checks(payload, 5)


def parse_cid(text: str) -> ConfirmationId:
    """A CID: 0xC004F02C for a wrong length or non-digits, 0xC004F04D for a wrong check digit."""
    payload = _strip_checks(text, 8, 5, E_CID_FORMAT, "confirmation ID")
    return ConfirmationId(_with_checks(payload, 5), payload[:10], payload[10:20], payload[20:40])


def verify_cid(cid_text: str, iid_text: str) -> ConfirmationId:
    """Check a CID against the IID the client currently shows; the documented errors where they fit."""
    cid = parse_cid(cid_text)
    iid = parse_iid(iid_text)
    if cid.key_part != iid.key_part[:10]:
        raise ActivationError(E_MISMATCHED_KEY, "the confirmation ID was acquired for another product key")
    if cid.hardware_part != iid.hardware_part[:10]:
        raise ActivationError(E_NOT_BOUND, "the confirmation ID was acquired for another machine")
    if cid.binding != _binding(iid):
        raise ActivationError(E_NOT_BOUND, "the confirmation ID was acquired for another installation ID")
    return cid
