"""The three KMS block ciphers, CBC/PKCS#7, the V4 MAC and the V6 HMAC (docs/kms-wire-protocol.md).

All three protocol versions use Rijndael with 128-bit blocks (docs/kms-wire-protocol.md):

* v4: a 160-bit key, 11 rounds -- not an AES size, so no library has it;
* v5: plain AES-128 (delegated to the ``cryptography`` package);
* v6: AES-128 whose expanded key has bytes 64, 96 and 128 XORed with 0x73, 0x09, 0xE4.

v4 and v6 are implemented here with the classic 32-bit "T-table" formulation: one table lookup per
state byte per round, tables built once at import. A KMS host runs a v6 exchange through about 32
block operations, so these loops are on the hot path; they keep the state in four local ints and
avoid per-block allocations.

Everything here is a pure function of its arguments: no clock, no randomness.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING

from emu.errors import EmuError
from emu.kms import aes_accel

if TYPE_CHECKING:  # imported at run time only on first v5 use (see _v5_cipher)
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

__all__ = [
    "BLOCK_SIZE",
    "KEY_V4",
    "KEY_V5",
    "KEY_V6",
    "TIME_C1",
    "TIME_C2",
    "TIME_C3",
    "V6_KEY_TWEAKS",
    "KmsVersion",
    "PaddingError",
    "accelerator_active",
    "cbc_decrypt",
    "cbc_decrypt_with_iv",
    "cbc_encrypt",
    "decrypt_block",
    "encrypt_block",
    "expanded_key",
    "pkcs7_pad",
    "pkcs7_unpad",
    "use_accelerator",
    "v4_mac",
    "v6_hmac",
    "v6_hmac_key",
]

#: Block size of every KMS cipher, bytes (docs/kms-wire-protocol.md: Rijndael with 128-bit blocks).
BLOCK_SIZE = 16

#: v4 key, 160 bits, 11 rounds (docs/kms-wire-protocol.md table).
KEY_V4 = bytes.fromhex("053D8307F9E5F088EB5EA6686CF037C7E4EFD2D6")
#: v5 key, standard AES-128 (docs/kms-wire-protocol.md table).
KEY_V5 = bytes.fromhex("CD7E796F2AB25DCB55FFC8EF8364C470")
#: v6 key, AES-128 with the modified schedule (docs/kms-wire-protocol.md table).
KEY_V6 = bytes.fromhex("A94A4195E201432D9BCB460405D84A21")
#: v6 schedule modification: (expanded-key byte offset, XOR value) (docs/kms-wire-protocol.md table).
V6_KEY_TWEAKS = ((64, 0x73), (96, 0x09), (128, 0xE4))

#: v6 HMAC key derivation constants (docs/kms-wire-protocol.md step 5; vlmcsd kms.h TIME_C1..C3).
TIME_C1 = 0x00000022816889BD
TIME_C2 = 0x000000208CBAB5ED
TIME_C3 = 0x3156CD5AC628477A

_MASK64 = (1 << 64) - 1


class KmsVersion(IntEnum):
    """Major protocol version, which selects the cipher (docs/kms-wire-protocol.md)."""

    V4 = 4
    V5 = 5
    V6 = 6


class PaddingError(EmuError):
    """Decrypted data does not end in valid PKCS#7 padding (vlmcs "DecryptSuccess" fails, docs/kms-wire-protocol.md)."""


# --- Rijndael tables (FIPS-197) ---------------------------------------------------------------


def _xtime(b: int) -> int:
    b <<= 1
    return (b ^ 0x11B) if b & 0x100 else b


def _gmul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a = _xtime(a)
        b >>= 1
    return out


def _build_sbox() -> tuple[list[int], list[int]]:
    sbox = [0] * 256
    inv = [0] * 256
    for x in range(256):
        # multiplicative inverse in GF(2^8) (0 maps to 0), then the affine transform
        y = 0 if x == 0 else next(c for c in range(1, 256) if _gmul(x, c) == 1)
        s = y
        for shift in range(1, 5):
            s ^= ((y << shift) | (y >> (8 - shift))) & 0xFF
        s ^= 0x63
        sbox[x] = s
        inv[s] = x
    return sbox, inv


_SBOX, _INV_SBOX = _build_sbox()


def _ror8(w: int) -> int:
    return ((w >> 8) | (w << 24)) & 0xFFFFFFFF


def _tables(box: list[int], coeffs: tuple[int, int, int, int]) -> tuple[tuple[int, ...], ...]:
    t0 = tuple(
        (_gmul(s, coeffs[0]) << 24) | (_gmul(s, coeffs[1]) << 16) | (_gmul(s, coeffs[2]) << 8) | _gmul(s, coeffs[3])
        for s in box
    )
    t1 = tuple(_ror8(w) for w in t0)
    t2 = tuple(_ror8(w) for w in t1)
    t3 = tuple(_ror8(w) for w in t2)
    return t0, t1, t2, t3


# Encryption tables: SubBytes + MixColumns column (2, 1, 1, 3) and its rotations.
_TE0, _TE1, _TE2, _TE3 = _tables(_SBOX, (2, 1, 1, 3))
# Decryption tables: InvSubBytes + InvMixColumns column (14, 9, 13, 11) and its rotations.
_TD0, _TD1, _TD2, _TD3 = _tables(_INV_SBOX, (14, 9, 13, 11))
# Last-round tables: the S-box value placed in byte 0..3 of a word.
_FE = tuple(tuple(s << sh for s in _SBOX) for sh in (24, 16, 8, 0))
_FD = tuple(tuple(s << sh for s in _INV_SBOX) for sh in (24, 16, 8, 0))

# Round constants (docs/kms-wire-protocol.md: 01 02 04 08 10 20 40 80 1B 36).
_RCON = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36)


def _expand_key(key: bytes) -> list[int]:
    """Standard Rijndael key expansion for Nk = len(key)/4 words, Nr = Nk + 6 rounds (docs/kms-wire-protocol.md)."""
    nk = len(key) // 4
    nr = nk + 6
    words = list(struct.unpack(f">{nk}I", key))
    for i in range(nk, 4 * (nr + 1)):
        temp = words[i - 1]
        if i % nk == 0:
            temp = ((temp << 8) | (temp >> 24)) & 0xFFFFFFFF
            temp = (
                (_SBOX[temp >> 24] << 24)
                | (_SBOX[(temp >> 16) & 255] << 16)
                | (_SBOX[(temp >> 8) & 255] << 8)
                | _SBOX[temp & 255]
            ) ^ (_RCON[i // nk - 1] << 24)
        elif nk > 6 and i % nk == 4:
            temp = (
                (_SBOX[temp >> 24] << 24)
                | (_SBOX[(temp >> 16) & 255] << 16)
                | (_SBOX[(temp >> 8) & 255] << 8)
                | _SBOX[temp & 255]
            )
        words.append(words[i - nk] ^ temp)
    return words


def _inv_mix_word(w: int) -> int:
    return _TD0[_SBOX[w >> 24]] ^ _TD1[_SBOX[(w >> 16) & 255]] ^ _TD2[_SBOX[(w >> 8) & 255]] ^ _TD3[_SBOX[w & 255]]


def _decryption_key(enc: list[int]) -> list[int]:
    """Round keys for the equivalent inverse cipher: reversed, InvMixColumns on the inner rounds.

    InvMixColumns is linear, so this is exact for any round keys, the tweaked v6 ones included.
    """
    nr = len(enc) // 4 - 1
    out: list[int] = []
    for r in range(nr, -1, -1):
        rk = enc[4 * r : 4 * r + 4]
        out.extend(rk if r in (0, nr) else [_inv_mix_word(w) for w in rk])
    return out


_Block4 = tuple[int, int, int, int]


# Column order of the four state words feeding output word i, for encryption (ShiftRows) and
# decryption (InvShiftRows): output i takes byte 0 of word i, byte 1 of word i+1 (enc) / i-1 (dec), ...
_ENC_ORDER = ((0, 1, 2, 3), (1, 2, 3, 0), (2, 3, 0, 1), (3, 0, 1, 2))
_DEC_ORDER = ((0, 3, 2, 1), (1, 0, 3, 2), (2, 1, 0, 3), (3, 2, 1, 0))


def _round_source(src: str, dst: str, tables: str, order: tuple[tuple[int, ...], ...], keys: list[int]) -> list[str]:
    lines = []
    for i, (a, b, c, d) in enumerate(order):
        lines.append(
            f"    {dst}{i} = {tables}0[{src}{a} >> 24] ^ {tables}1[({src}{b} >> 16) & 255]"
            f" ^ {tables}2[({src}{c} >> 8) & 255] ^ {tables}3[{src}{d} & 255] ^ {keys[i]:#010x}"
        )
    return lines


def _unrolled(name: str, rk: list[int], round_tables: str, last_tables: str, order: tuple[tuple[int, ...], ...]) -> str:
    """Source of a block function with every round written out and the round keys as literals.

    Unrolling removes the loop, the tuple packing of the state and the key look-ups, which
    roughly halves the time per block in CPython; the generated code is the textbook T-table
    round, nothing else.
    """
    nr = len(rk) // 4 - 1
    lines = [f"def {name}(s0, s1, s2, s3):"]
    lines += [f"    s{i} ^= {rk[i]:#010x}" for i in range(4)]
    src, dst = "s", "t"
    for r in range(1, nr):
        lines += _round_source(src, dst, round_tables, order, rk[4 * r : 4 * r + 4])
        src, dst = dst, src
    lines += _round_source(src, "u", last_tables, order, rk[4 * nr : 4 * nr + 4])
    lines.append("    return u0, u1, u2, u3")
    return "\n".join(lines)


def _compile(name: str, source: str) -> Callable[[int, int, int, int], _Block4]:
    namespace: dict[str, object] = {
        "T0": _TE0,
        "T1": _TE1,
        "T2": _TE2,
        "T3": _TE3,
        "F0": _FE[0],
        "F1": _FE[1],
        "F2": _FE[2],
        "F3": _FE[3],
        "D0": _TD0,
        "D1": _TD1,
        "D2": _TD2,
        "D3": _TD3,
        "G0": _FD[0],
        "G1": _FD[1],
        "G2": _FD[2],
        "G3": _FD[3],
    }
    exec(compile(source, f"<emu.kms.crypto {name}>", "exec"), namespace)
    return namespace[name]  # type: ignore[return-value]


def _make_encryptor(rk: list[int]) -> Callable[[int, int, int, int], _Block4]:
    """A block encryptor over four big-endian column words, bound to one expanded key."""
    return _compile("encrypt", _unrolled("encrypt", rk, "T", "F", _ENC_ORDER))


def _make_decryptor(drk: list[int]) -> Callable[[int, int, int, int], _Block4]:
    """A block decryptor (equivalent inverse cipher) over four big-endian column words."""
    return _compile("decrypt", _unrolled("decrypt", drk, "D", "G", _DEC_ORDER))


def _v6_expanded_key() -> list[int]:
    words = _expand_key(KEY_V6)
    for offset, value in V6_KEY_TWEAKS:
        # byte `offset` is the most significant byte of big-endian word offset/4
        words[offset // 4] ^= value << (24 - 8 * (offset % 4))
    return words


_ENC_KEYS = {KmsVersion.V4: _expand_key(KEY_V4), KmsVersion.V5: _expand_key(KEY_V5), KmsVersion.V6: _v6_expanded_key()}
_ENCRYPT = {v: _make_encryptor(k) for v, k in _ENC_KEYS.items()}
_DECRYPT = {v: _make_decryptor(_decryption_key(k)) for v, k in _ENC_KEYS.items()}
_BLOCK = struct.Struct(">4I")


def _v5_cipher(iv: bytes) -> Cipher[modes.CBC]:
    """AES-128-CBC with the v5 key from the ``cryptography`` package, when OpenSSL's low-level AES
    cannot be used (imported on first such use: it costs several MB of memory)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    return Cipher(algorithms.AES(KEY_V5), modes.CBC(iv))


def _pure(
    table: dict[KmsVersion, Callable[[int, int, int, int], _Block4]], version: KmsVersion
) -> Callable[[bytes], bytes]:
    fn = table[version]
    return lambda block: _BLOCK.pack(*fn(*_BLOCK.unpack(block)))


#: v6 (our tweaked schedule) and v5 (plain AES-128) through the system OpenSSL's table AES, when it
#: is present and agrees with the pure implementation (see emu.kms.aes_accel); v4 has 11 rounds and
#: stays pure. v5 through OpenSSL also spares a host the several MB the ``cryptography`` package costs.
_ACCELERATORS: dict[KmsVersion, aes_accel.AcceleratedCipher] = {}
_PROBE = (KEY_V5, _ENC_KEYS[KmsVersion.V5], _decryption_key(_ENC_KEYS[KmsVersion.V5]))
_LOADED = {
    version: aes_accel.load(
        _ENC_KEYS[version],
        _decryption_key(_ENC_KEYS[version]),
        _pure(_ENCRYPT, version),
        _pure(_DECRYPT, version),
        _PROBE,
    )
    for version in (KmsVersion.V6, KmsVersion.V5)
}


def use_accelerator(enabled: bool = True) -> bool:
    """Switch the OpenSSL-backed v6 cipher on or off; returns whether it is now in use.

    Off, every version runs emu's own pure-Python Rijndael (the reference the tests check the
    accelerator against).
    """
    _ACCELERATORS.clear()
    if enabled:
        _ACCELERATORS.update((version, accel) for version, accel in _LOADED.items() if accel is not None)
    return accelerator_active()


def accelerator_active() -> bool:
    """Whether the v6 cipher currently runs through the accelerator."""
    return KmsVersion.V6 in _ACCELERATORS


use_accelerator(True)


def expanded_key(version: int) -> bytes:
    """The (v6: tweaked) expanded encryption key of a version, as bytes (docs/kms-wire-protocol.md; for tests and display)."""
    words = _ENC_KEYS[KmsVersion(version)]
    return struct.pack(f">{len(words)}I", *words)


def _check_block(block: bytes) -> None:
    if len(block) != BLOCK_SIZE:
        raise ValueError(f"a cipher block is {BLOCK_SIZE} bytes, got {len(block)}")


_KMS_VERSIONS = {int(v): v for v in KmsVersion}
_ZERO_BLOCK = bytes(BLOCK_SIZE)


def _kms_version(version: int) -> KmsVersion:
    """``KmsVersion(version)`` by a dict lookup (this runs several times per exchange)."""
    known = _KMS_VERSIONS.get(version)
    if known is None:
        raise ValueError(f"{version!r} is not a valid KmsVersion (4, 5 or 6)")
    return known


def encrypt_block(version: int, block: bytes) -> bytes:
    """E_K(block): one raw (ECB) block encryption with the cipher of ``version`` (docs/kms-wire-protocol.md).

    Raises:
        ValueError: ``version`` is not 4, 5 or 6 or the block is not 16 bytes.
    """
    _check_block(block)
    version = _kms_version(version)
    accel = _ACCELERATORS.get(version)
    if accel is not None:
        return accel.encrypt_block(bytes(block))
    return _BLOCK.pack(*_ENCRYPT[version](*_BLOCK.unpack(block)))


def decrypt_block(version: int, block: bytes) -> bytes:
    """D_K(block): one raw (ECB) block decryption with the cipher of ``version`` (docs/kms-wire-protocol.md).

    Raises:
        ValueError: ``version`` is not 4, 5 or 6 or the block is not 16 bytes.
    """
    _check_block(block)
    version = _kms_version(version)
    accel = _ACCELERATORS.get(version)
    if accel is not None:
        return accel.decrypt_block(bytes(block))
    return _BLOCK.pack(*_DECRYPT[version](*_BLOCK.unpack(block)))


def _check_cbc(version: int, iv: bytes, data: bytes) -> KmsVersion:
    _check_block(iv)
    if len(data) % BLOCK_SIZE:
        raise ValueError(f"CBC data must be a multiple of {BLOCK_SIZE} bytes, got {len(data)}")
    return _kms_version(version)


def cbc_encrypt(version: int, iv: bytes, data: bytes) -> bytes:
    """CBC encryption without padding (the caller pads; docs/kms-wire-protocol.md).

    Raises:
        ValueError: bad version, IV not 16 bytes, or data not a multiple of 16 bytes.
    """
    version = _check_cbc(version, iv, data)
    accel = _ACCELERATORS.get(version)
    if accel is not None:
        return accel.cbc_encrypt(bytes(iv), bytes(data))
    if version is KmsVersion.V5:
        enc = _v5_cipher(iv).encryptor()
        return enc.update(data) + enc.finalize()
    encrypt = _ENCRYPT[version]
    unpack_from = _BLOCK.unpack_from
    pack_into = _BLOCK.pack_into
    out = bytearray(len(data))
    c0, c1, c2, c3 = _BLOCK.unpack(iv)
    for off in range(0, len(data), BLOCK_SIZE):
        p0, p1, p2, p3 = unpack_from(data, off)
        c0, c1, c2, c3 = encrypt(p0 ^ c0, p1 ^ c1, p2 ^ c2, p3 ^ c3)
        pack_into(out, off, c0, c1, c2, c3)
    return bytes(out)


def cbc_decrypt(version: int, iv: bytes, data: bytes) -> bytes:
    """CBC decryption without unpadding (docs/kms-wire-protocol.md).

    Raises:
        ValueError: bad version, IV not 16 bytes, or data not a multiple of 16 bytes.
    """
    version = _check_cbc(version, iv, data)
    accel = _ACCELERATORS.get(version)
    if accel is not None:
        return accel.cbc_decrypt(bytes(iv), bytes(data))
    if version is KmsVersion.V5:
        dec = _v5_cipher(iv).decryptor()
        return dec.update(data) + dec.finalize()
    decrypt = _DECRYPT[version]
    unpack_from = _BLOCK.unpack_from
    pack_into = _BLOCK.pack_into
    out = bytearray(len(data))
    v0, v1, v2, v3 = _BLOCK.unpack(iv)
    for off in range(0, len(data), BLOCK_SIZE):
        c0, c1, c2, c3 = unpack_from(data, off)
        p0, p1, p2, p3 = decrypt(c0, c1, c2, c3)
        pack_into(out, off, p0 ^ v0, p1 ^ v1, p2 ^ v2, p3 ^ v3)
        v0, v1, v2, v3 = c0, c1, c2, c3
    return bytes(out)


def cbc_decrypt_with_iv(version: int, iv: bytes, data: bytes) -> tuple[bytes, bytes]:
    """``(D(iv), cbc_decrypt(version, iv, data))`` in one cipher run.

    CBC with a zero IV over ``iv ‖ data`` yields exactly that: its first block is D(iv) xor 0 and
    every later block is chained on the block before it, as with ``iv``. A host needs both for each
    v5/v6 request (the plaintext, and D(IV) to mask its answer), so this halves its cipher calls.

    Raises:
        ValueError: as :func:`cbc_decrypt`.
    """
    _check_cbc(version, iv, data)
    both = cbc_decrypt(version, _ZERO_BLOCK, bytes(iv) + bytes(data))
    return both[:BLOCK_SIZE], both[BLOCK_SIZE:]


def pkcs7_pad(data: bytes) -> bytes:
    """Append PKCS#7 padding: 1..16 bytes, each equal to the pad length (always present, docs/kms-wire-protocol.md)."""
    n = BLOCK_SIZE - len(data) % BLOCK_SIZE
    return data + bytes((n,)) * n


def pkcs7_unpad(data: bytes) -> bytes:
    """Strip PKCS#7 padding strictly, as vlmcs's "DecryptSuccess" check does (docs/kms-wire-protocol.md).

    Raises:
        PaddingError: empty or non-block-aligned data, a pad value outside 1..16, or unequal pad bytes.
    """
    if not data or len(data) % BLOCK_SIZE:
        raise PaddingError(f"decrypted data of {len(data)} bytes is not a whole number of blocks")
    n = data[-1]
    if not 1 <= n <= BLOCK_SIZE:
        raise PaddingError(f"PKCS#7 pad value {n} is outside 1..{BLOCK_SIZE}")
    if data[-n:] != bytes((n,)) * n:
        raise PaddingError(f"PKCS#7 pad bytes are not all equal to {n}")
    return data[:-n]


def v4_mac(data: bytes) -> bytes:
    """The V4 MAC: a CBC-MAC with the v4 cipher over ``data ‖ 80 00..`` (docs/kms-wire-protocol.md; not CMAC)."""
    padded = data + b"\x80" + bytes(-(len(data) + 1) % BLOCK_SIZE)
    encrypt = _ENCRYPT[KmsVersion.V4]
    unpack_from = _BLOCK.unpack_from
    m0 = m1 = m2 = m3 = 0
    for off in range(0, len(padded), BLOCK_SIZE):
        b0, b1, b2, b3 = unpack_from(padded, off)
        m0, m1, m2, m3 = encrypt(m0 ^ b0, m1 ^ b1, m2 ^ b2, m3 ^ b3)
    return _BLOCK.pack(m0, m1, m2, m3)


#: Recent v6 HMAC keys by slot value: clients' clocks agree, so one host or capture meets few slots.
_HMAC_KEYS: dict[int, bytes] = {}
_HMAC_KEYS_KEPT = 64


def v6_hmac_key(filetime: int, slot_offset: int = 0) -> bytes:
    """The v6 HMAC key for a response whose ClientTime is ``filetime`` (docs/kms-wire-protocol.md step 5).

    ``slot_offset`` reproduces vlmcs's tolerance, which adds ``slot_offset * C1`` to the *slot
    value* (quirk Q5, docs/kms-wire-protocol.md), not to the time.
    """
    slot = ((filetime // TIME_C1) * TIME_C2 + TIME_C3 + slot_offset * TIME_C1) & _MASK64
    key = _HMAC_KEYS.get(slot)
    if key is None:
        key = hashlib.sha256(slot.to_bytes(8, "little")).digest()[16:]
        if len(_HMAC_KEYS) >= _HMAC_KEYS_KEPT:
            _HMAC_KEYS.clear()
        _HMAC_KEYS[slot] = key
    return key


def v6_hmac(key: bytes, message: bytes) -> bytes:
    """The stored v6 HMAC: the last 16 bytes of HMAC-SHA256(key, message) (docs/kms-wire-protocol.md step 7)."""
    return hmac.digest(key, message, "sha256")[16:]
