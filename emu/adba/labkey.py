"""emu's lab CSVLKs: visibly fake 5x5 keys that name the KMS host key group they stand for.

emu-defined (docs/adba.md "Lab keys"). Form: ``EMULA-BCSVL-KNNNN-NNNNN-CCCCC`` ("EMU LAB CSVLK"), where
N is the lab key number in 9 digits (the CSVLK group's position in emu's CSVLK table) and C five check
characters. The last five characters are
what the activation object stores as the partial product key.
"""

from __future__ import annotations

import hashlib
import re
import uuid

__all__ = ["LabKeyError", "csvlk_sku_id", "lab_csvlk", "parse_lab_csvlk"]

_ALPHABET = "BCDFGHJKMPQRTVWXY2346789"
_FORM = re.compile(r"^EMULA-BCSVL-K(\d{4})-(\d{5})-([A-Z0-9]{5})$")
_NS = uuid.UUID("6d2f2c1e-9a51-4c8e-8e6b-656d75616462")  # emu-defined namespace for lab CSVLK SKU IDs


class LabKeyError(ValueError):
    """Not an emu lab CSVLK (wrong form or check characters)."""


def _check(group_id: int) -> str:
    digest = hashlib.sha256(f"emu-lab-csvlk/{group_id}".encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:5])


def lab_csvlk(group_id: int) -> str:
    """The lab CSVLK with this lab key number."""
    digits = f"{group_id:09d}"
    return f"EMULA-BCSVL-K{digits[:4]}-{digits[4:]}-{_check(group_id)}"


def parse_lab_csvlk(key: str) -> int:
    """The lab key number of a lab CSVLK; LabKeyError if ``key`` is not one."""
    match = _FORM.match(key.strip().upper())
    if match is None:
        raise LabKeyError(f"{key!r} is not an emu lab CSVLK (EMULA-BCSVL-Kxxxx-xxxxx-xxxxx)")
    group_id = int(match[1] + match[2])
    if match[3] != _check(group_id):
        raise LabKeyError(f"{key!r}: check characters do not match")
    return group_id


def csvlk_sku_id(group_id: int) -> uuid.UUID:
    """The SKU ID emu gives a lab CSVLK (emu-defined, stable)."""
    return uuid.uuid5(_NS, f"emu-lab-csvlk/{group_id}")
