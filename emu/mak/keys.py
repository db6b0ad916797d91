"""emu's lab product keys: the documented 5x5 shape, an emu-defined content that can never be a real key.

A lab key reads ``EMUM1-XXXXX-XXXXX-XXXXX-XXXXC``: the first group is a fixed marker (``EMU``, the key
kind, the format version ``1``), then 19 payload symbols and one check symbol. Real keys use the
alphabet ``BCDFGHJKMPQRTVWXY2346789`` plus one ``N``; ``E``, ``U`` and ``1`` are not in it, so no lab key
is a real key and no real key parses as a lab key. The check symbol is emu's own (a weighted sum of
the 24 symbols before it, modulo 31), so a mistyped symbol is caught at install time (0xC004F050).
GVLKs are the published ones and are recognised through a lookup the caller injects (emu's product
data lives in another layer-2 package).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from emu.hresults import lookup
from emu.mak.errors import ActivationError
from emu.rng import Rng

__all__ = [
    "ALPHABET",
    "E_INVALID_PRODUCT_KEY",
    "KeyKind",
    "ProductKey",
    "classify",
    "extended_pid",
    "key_hash",
    "make_key",
    "normalise",
    "parse_lab_key",
]

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CHECK_MODULUS = 31
E_INVALID_PRODUCT_KEY = 0xC004F050
assert lookup(E_INVALID_PRODUCT_KEY) is not None


class KeyKind(enum.Enum):
    """What a key is for."""

    MAK = "MAK"
    CSVLK = "CSVLK"  # KMS host key
    GVLK = "GVLK"  # KMS client setup key (public)


_KIND_LETTER = {KeyKind.MAK: "M", KeyKind.CSVLK: "K"}
_LETTER_KIND = {v: k for k, v in _KIND_LETTER.items()}


@dataclass(frozen=True)
class ProductKey:
    """A parsed key: its text (canonical, with dashes), its kind and, for a GVLK, the product it sets up."""

    text: str
    kind: KeyKind
    product: str | None = None

    @property
    def partial(self) -> str:
        """The last five characters, as Windows shows a key (``slmgr /dli``)."""
        return self.text[-5:]


def normalise(text: str) -> str:
    """Upper case, the separators and spaces removed: 25 symbols, or whatever the user typed."""
    return "".join(ch for ch in text.upper() if ch not in "- \t")


def _grouped(symbols: str) -> str:
    return "-".join(symbols[i : i + 5] for i in range(0, 25, 5))


def _check_symbol(symbols: str) -> str:
    total = sum((i + 1) * int(ch, 36) for i, ch in enumerate(symbols))
    return ALPHABET[total % _CHECK_MODULUS]


def make_key(kind: KeyKind, rng: Rng) -> str:
    """A fresh lab key of ``kind`` (MAK or CSVLK)."""
    if kind not in _KIND_LETTER:
        raise ValueError(f"emu makes lab keys for MAK and CSVLK only, not {kind.value}")
    body = f"EMU{_KIND_LETTER[kind]}1" + "".join(rng.choice(ALPHABET) for _ in range(19))
    return _grouped(body + _check_symbol(body))


def parse_lab_key(text: str) -> ProductKey:
    """A lab key, or :class:`ActivationError` 0xC004F050 saying what is wrong with it."""
    symbols = normalise(text)
    if len(symbols) != 25:
        raise ActivationError(E_INVALID_PRODUCT_KEY, f"a product key has 25 characters, this has {len(symbols)}")
    if not symbols.startswith("EMU") or symbols[4] != "1" or symbols[3] not in _LETTER_KIND:
        raise ActivationError(E_INVALID_PRODUCT_KEY, "not an emu lab key (they begin EMUM1- or EMUK1-)")
    bad = sorted({ch for ch in symbols[5:] if ch not in ALPHABET})
    if bad:
        raise ActivationError(E_INVALID_PRODUCT_KEY, f"characters not used in lab keys: {''.join(bad)}")
    if _check_symbol(symbols[:24]) != symbols[24]:
        raise ActivationError(E_INVALID_PRODUCT_KEY, "the check character does not match (a mistyped character?)")
    return ProductKey(_grouped(symbols), _LETTER_KIND[symbols[3]])


def classify(text: str, gvlk_product: Callable[[str], str | None] = lambda _k: None) -> ProductKey:
    """Any key emu accepts: a published GVLK (``gvlk_product`` names its product) or a lab key."""
    symbols = normalise(text)
    if len(symbols) == 25:
        product = gvlk_product(_grouped(symbols))
        if product is not None:
            return ProductKey(_grouped(symbols), KeyKind.GVLK, product)
    return parse_lab_key(text)


def key_hash(key: str) -> bytes:
    """The 32-byte digest emu's IDs carry instead of the key (emu-defined)."""
    return hashlib.sha256(b"emu/1 product key\0" + normalise(key).encode("ascii")).digest()


def extended_pid(key: str) -> str:
    """The emu extended product ID of a lab key, in the documented ePID shape with channel 03 (volume)
    and the fixed emu build field ``9999``: ``PPPPP-GGGGG-KKK-KKKKKK-03-1033-9999.0000-0012026``."""
    digits = str(int.from_bytes(key_hash(key)[:12], "big")).zfill(29)[-19:]
    return f"{digits[:5]}-{digits[5:10]}-{digits[10:13]}-{digits[13:19]}-03-1033-9999.0000-0012026"
