"""An optional accelerator for the KMS Rijndael variants: the system OpenSSL's table AES with our round keys.

emu's own implementation of the v5 and v6 ciphers (``emu.kms.crypto``) is the reference; this module only
runs the *same* round keys through OpenSSL's low-level ``AES_encrypt``/``AES_decrypt``/
``AES_cbc_encrypt``, which read whatever 10-round key schedule they are handed in their public
``AES_KEY`` structure. That makes the v6 cipher (AES-128 with three round-key bytes changed, docs/kms-wire-protocol.md) about 30 times faster, which is what a host answering thousands of v6 exchanges a second
needs. v5 (plain AES-128) goes the same way, so a host never loads the ``cryptography`` package for it.
v4 (11 rounds) does not fit OpenSSL's two-rounds-per-loop code and stays pure Python.

Nothing here is trusted blindly: :func:`load` builds the schedules, then checks the accelerated
cipher against the pure implementation on known blocks and returns ``None`` (use pure Python) when
the library is missing, has no low-level AES, or disagrees in any way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Sequence

__all__ = ["AcceleratedCipher", "load"]

#: Words in OpenSSL's ``AES_KEY.rd_key`` (4 * (AES_MAXNR + 1), AES_MAXNR = 14).
_RD_KEY_WORDS = 60


class _AesKey(ctypes.Structure):
    _fields_ = [("rd_key", ctypes.c_uint32 * _RD_KEY_WORDS), ("rounds", ctypes.c_int)]


class AcceleratedCipher:
    """ECB blocks and CBC runs of one 10-round Rijndael schedule through OpenSSL."""

    def __init__(self, lib: ctypes.CDLL, enc_words: Sequence[int], dec_words: Sequence[int]) -> None:
        if len(enc_words) != 44 or len(dec_words) != 44:
            raise ValueError("only 10-round (AES-128 sized) schedules can be accelerated")
        self._enc = _AesKey()
        self._dec = _AesKey()
        for i, w in enumerate(enc_words):
            self._enc.rd_key[i] = w
        for i, w in enumerate(dec_words):
            self._dec.rd_key[i] = w
        self._enc.rounds = self._dec.rounds = 10
        self._encrypt = lib.AES_encrypt
        self._decrypt = lib.AES_decrypt
        self._cbc = lib.AES_cbc_encrypt
        for fn in (self._encrypt, self._decrypt):
            fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]
            fn.restype = None
        self._cbc.argtypes = [
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
        self._cbc.restype = None
        self._enc_ref = ctypes.byref(self._enc)
        self._dec_ref = ctypes.byref(self._dec)

    def encrypt_block(self, block: bytes) -> bytes:
        out = ctypes.create_string_buffer(16)
        self._encrypt(block, out, self._enc_ref)
        return out.raw

    def decrypt_block(self, block: bytes) -> bytes:
        out = ctypes.create_string_buffer(16)
        self._decrypt(block, out, self._dec_ref)
        return out.raw

    def cbc_encrypt(self, iv: bytes, data: bytes) -> bytes:
        out = ctypes.create_string_buffer(len(data))
        ivec = ctypes.create_string_buffer(iv, 16)
        self._cbc(data, out, len(data), self._enc_ref, ivec, 1)
        return out.raw

    def cbc_decrypt(self, iv: bytes, data: bytes) -> bytes:
        out = ctypes.create_string_buffer(len(data))
        ivec = ctypes.create_string_buffer(iv, 16)
        self._cbc(data, out, len(data), self._dec_ref, ivec, 0)
        return out.raw


def _library() -> ctypes.CDLL | None:
    for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if all(hasattr(lib, fn) for fn in ("AES_encrypt", "AES_decrypt", "AES_cbc_encrypt")):
            return lib
    return None


def _swap(word: int) -> int:
    return int.from_bytes(word.to_bytes(4, "big"), "little")


def _word_order(
    lib: ctypes.CDLL, probe_key: bytes, enc_words: Sequence[int], dec_words: Sequence[int]
) -> Callable[[int], int] | None:
    """How this OpenSSL stores round-key words: as read big-endian (C code) or little-endian (the
    x86-64 assembly). Found by letting OpenSSL expand ``probe_key`` (a standard AES-128 key whose
    schedule we know) and comparing; None when neither matches."""
    enc, dec = _AesKey(), _AesKey()
    for fn in (lib.AES_set_encrypt_key, lib.AES_set_decrypt_key):
        fn.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
        fn.restype = ctypes.c_int
    if lib.AES_set_encrypt_key(probe_key, 128, ctypes.byref(enc)) or lib.AES_set_decrypt_key(
        probe_key, 128, ctypes.byref(dec)
    ):
        return None
    for order in (lambda w: w, _swap):
        if list(enc.rd_key[:44]) == [order(w) for w in enc_words] and list(dec.rd_key[:44]) == [
            order(w) for w in dec_words
        ]:
            return order
    return None


def load(
    enc_words: Sequence[int],
    dec_words: Sequence[int],
    reference_encrypt: Callable[[bytes], bytes],
    reference_decrypt: Callable[[bytes], bytes],
    probe: tuple[bytes, Sequence[int], Sequence[int]],
) -> AcceleratedCipher | None:
    """An accelerated cipher for this schedule, or None when it is unavailable or not identical.

    ``probe`` is a standard AES-128 key with its encryption and decryption schedules as computed
    by the pure implementation (tells the word layout). ``reference_*`` are the pure block
    functions: the accelerated cipher must agree with them on probe blocks (ECB both ways and a
    CBC run) to be used at all.
    """
    lib = _library()
    if lib is None:
        return None
    try:
        order = _word_order(lib, *probe)
        if order is None:
            return None
        cipher = AcceleratedCipher(lib, [order(w) for w in enc_words], [order(w) for w in dec_words])
        probes = [bytes(16), bytes(range(16)), bytes([0xFF] * 16), bytes(range(0xA0, 0xB0))]
        for block in probes:
            if cipher.encrypt_block(block) != reference_encrypt(block) or cipher.decrypt_block(
                block
            ) != reference_decrypt(block):
                return None
        iv, data = bytes(range(16, 32)), b"".join(probes)
        chained = cipher.cbc_encrypt(iv, data)
        previous = iv
        for i in range(0, len(data), 16):
            expected = reference_encrypt(bytes(a ^ b for a, b in zip(data[i : i + 16], previous)))
            if chained[i : i + 16] != expected:
                return None
            previous = expected
        if cipher.cbc_decrypt(iv, chained) != data:
            return None
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return cipher
