"""Known-answer tests of the KMS ciphers, MAC and HMAC (kms-wire-protocol.md 5.1-5.4, 5.7)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.kms import crypto
from emu.kms.crypto import (
    PaddingError,
    cbc_decrypt,
    cbc_encrypt,
    decrypt_block,
    encrypt_block,
    expanded_key,
    pkcs7_pad,
    pkcs7_unpad,
    v4_mac,
    v6_hmac,
    v6_hmac_key,
)

ZERO = bytes(16)
IV_0F = bytes(range(16))
IV_2F = bytes(range(0x20, 0x30))


@pytest.mark.parametrize(
    "version, expected",
    [
        (4, "933030f10e2e7782b80915d5778a4957"),
        (5, "ec7c7e75b1923978eac4b2d2260235d5"),
        (6, "8ca59de0c483c04aa7026a22d6dd208e"),
    ],
)
def test_encrypt_zero_block_matches_spec_5_1(version, expected):
    assert encrypt_block(version, ZERO).hex() == expected


@pytest.mark.parametrize(
    "version, expected", [(5, "9f1680f29feed1274e875c9d86d107af"), (6, "8a1a5b385caaff8dd0ce3913d2cbc26f")]
)
def test_decrypt_zero_block_matches_spec_5_1(version, expected):
    assert decrypt_block(version, ZERO).hex() == expected


def test_v6_round_keys_are_tweaked_at_bytes_64_96_128():
    key = expanded_key(6)
    assert key[64:80].hex() == "0530e12e111e2b4d3f6a5901edca6094"
    assert key[96:112].hex() == "63dec9456920217355b4904484ea41e7"
    assert key[128:144].hex() == "efc82943cfb5552a5e7cb9074b5f14cd"


def test_v6_round_keys_before_tweak_match_spec_prefixes():
    # The untweaked schedule is plain AES-128 expansion of the v6 key (spec 5.1 "before tweak").
    key = bytearray(expanded_key(6))
    for offset, value in crypto.V6_KEY_TWEAKS:
        key[offset] ^= value
    assert key[64:68].hex() == "7630e12e"
    assert key[96:100].hex() == "6adec945"
    assert key[128:132].hex() == "0bc82943"


def test_v4_expanded_key_has_twelve_round_keys():
    assert len(expanded_key(4)) == 192
    assert expanded_key(4)[:20] == crypto.KEY_V4


def test_v5_is_standard_aes_128():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(crypto.KEY_V5), modes.ECB()).encryptor()
    block = bytes(range(100, 116))
    assert encrypt_block(5, block) == enc.update(block)


@pytest.mark.parametrize(
    "version, iv, expected",
    [
        (5, IV_0F, "86bf207b6970ef43830e988ff1e6f329"),
        (6, IV_0F, "7c49a81964119e65c24b99a098afe453"),
        (6, IV_2F, "863a6543321f0a526fac8d18a22bb34d"),
    ],
)
def test_decrypted_iv_matches_spec_5_7(version, iv, expected):
    assert decrypt_block(version, iv).hex() == expected


def test_v4_mac_of_empty_message_matches_spec_5_2():
    assert v4_mac(b"").hex() == "d144963029e2bd12f9970c9f52b27f09"


def test_v4_mac_of_one_zero_block_matches_spec_5_2():
    assert v4_mac(ZERO).hex() == "2a090d7c1155251ab86445447d060335"


def test_v4_mac_is_cbc_mac_over_80_padding():
    data = bytes(range(40))
    padded = data + b"\x80" + bytes(7)
    assert v4_mac(data) == cbc_encrypt(4, ZERO, padded)[-16:]


def test_v6_hmac_key_example_matches_spec_5_4():
    assert v6_hmac_key(133485408000000000).hex() == "2e37461994584e155504b4d24dad5ddf"
    slot = 0x3316286135565FD5
    assert hashlib.sha256(slot.to_bytes(8, "little")).digest()[16:] == v6_hmac_key(133485408000000000)


def test_v6_hmac_key_offsets_move_the_slot_by_c1_as_vlmcs_does():
    t = 133485408000000000
    slot = ((t // crypto.TIME_C1) * crypto.TIME_C2 + crypto.TIME_C3 + crypto.TIME_C1) % 2**64
    assert v6_hmac_key(t, 1) == hashlib.sha256(slot.to_bytes(8, "little")).digest()[16:]
    assert v6_hmac_key(t, -1) != v6_hmac_key(t, 0) != v6_hmac_key(t, 1)


def test_v6_hmac_is_second_half_of_hmac_sha256():
    import hmac

    key, msg = b"k" * 16, b"message"
    assert v6_hmac(key, msg) == hmac.new(key, msg, "sha256").digest()[16:]


def test_pkcs7_pad_always_adds_one_to_sixteen_bytes():
    assert pkcs7_pad(bytes(236))[-4:] == b"\x04" * 4
    assert pkcs7_pad(bytes(16)) == bytes(16) + b"\x10" * 16
    assert len(pkcs7_pad(b"")) == 16


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(15),
        bytes(15) + b"\x00",
        bytes(15) + b"\x11",
        bytes(14) + b"\x01\x02",
        bytes(16) + b"\x05" * 15 + b"\x04",
    ],
)
def test_pkcs7_unpad_rejects_bad_padding(data):
    with pytest.raises(PaddingError):
        pkcs7_unpad(data)


def test_block_functions_reject_wrong_sizes_and_versions():
    with pytest.raises(ValueError):
        encrypt_block(6, bytes(15))
    with pytest.raises(ValueError):
        decrypt_block(3, ZERO)
    with pytest.raises(ValueError):
        cbc_encrypt(6, ZERO, bytes(17))


@settings(max_examples=200, deadline=None)
@given(version=st.sampled_from([4, 5, 6]), iv=st.binary(min_size=16, max_size=16), data=st.binary(max_size=100))
def test_cbc_round_trips_with_padding(version, iv, data):
    ct = cbc_encrypt(version, iv, pkcs7_pad(data))
    assert pkcs7_unpad(cbc_decrypt(version, iv, ct)) == data


@settings(max_examples=200, deadline=None)
@given(version=st.sampled_from([4, 6]), block=st.binary(min_size=16, max_size=16))
def test_block_decrypt_inverts_encrypt(version, block):
    assert decrypt_block(version, encrypt_block(version, block)) == block


def test_cbc_chains_blocks_with_the_iv():
    data = bytes(range(32))
    ct = cbc_encrypt(6, IV_0F, data)
    first = encrypt_block(6, bytes(a ^ b for a, b in zip(data[:16], IV_0F)))
    second = encrypt_block(6, bytes(a ^ b for a, b in zip(data[16:], first)))
    assert ct == first + second


@settings(max_examples=60, deadline=None)
@given(version=st.sampled_from([4, 5, 6]), iv=st.binary(min_size=16, max_size=16), blocks=st.integers(1, 17))
def test_one_run_gives_the_decrypted_iv_and_the_plaintext(version, iv, blocks):
    data = bytes((i * 7 + blocks) & 0xFF for i in range(16 * blocks))
    assert crypto.cbc_decrypt_with_iv(version, iv, data) == (
        decrypt_block(version, iv),
        crypto.cbc_decrypt(version, iv, data),
    )


def test_hmac_keys_are_the_same_whether_remembered_or_not():
    times = [133_000_000_000_000_000 + i * 1_000_000_007 for i in range(200)]
    first = [crypto.v6_hmac_key(t, offset) for t in times for offset in (-1, 0, 1)]
    crypto._HMAC_KEYS.clear()
    assert [crypto.v6_hmac_key(t, offset) for t in times for offset in (-1, 0, 1)] == first
    assert len(crypto._HMAC_KEYS) <= crypto._HMAC_KEYS_KEPT
