"""The OpenSSL-backed v6 cipher is the pure implementation, only faster (spec 5.1, 5.7 vectors)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu.kms import crypto

V6_E0 = "8ca59de0c483c04aa7026a22d6dd208e"  # spec 5.1: v6 E(16 x 00)
V6_D0 = "8a1a5b385caaff8dd0ce3913d2cbc26f"  # spec 5.1: v6 D(16 x 00)
V6_DIV = "7c49a81964119e65c24b99a098afe453"  # spec 5.7: D_V6(000102..0f)


@pytest.fixture(params=[False, True], ids=["pure", "accelerated"])
def backend(request):
    active = crypto.use_accelerator(request.param)
    if request.param and not active:
        pytest.skip("no usable OpenSSL low-level AES on this machine: the pure cipher is used")
    yield request.param
    crypto.use_accelerator(True)


def test_v6_known_answers_hold_on_both_backends(backend):
    assert crypto.encrypt_block(6, bytes(16)).hex() == V6_E0
    assert crypto.decrypt_block(6, bytes(16)).hex() == V6_D0
    assert crypto.decrypt_block(6, bytes(range(16))).hex() == V6_DIV


def test_switching_the_accelerator_off_uses_the_pure_cipher():
    assert crypto.use_accelerator(False) is False
    assert crypto.accelerator_active() is False
    crypto.use_accelerator(True)


@settings(max_examples=200, deadline=None)
@given(iv=st.binary(min_size=16, max_size=16), blocks=st.integers(1, 20), seed=st.binary(min_size=16, max_size=16))
def test_accelerated_cbc_equals_pure_cbc(iv, blocks, seed):
    data = (seed * blocks)[: 16 * blocks]
    if not crypto.use_accelerator(True):
        pytest.skip("accelerator unavailable")
    fast_enc, fast_dec = crypto.cbc_encrypt(6, iv, data), crypto.cbc_decrypt(6, iv, data)
    crypto.use_accelerator(False)
    try:
        assert fast_enc == crypto.cbc_encrypt(6, iv, data)
        assert fast_dec == crypto.cbc_decrypt(6, iv, data)
    finally:
        crypto.use_accelerator(True)


def test_v4_never_uses_the_accelerator():
    crypto.use_accelerator(True)
    assert crypto.encrypt_block(4, bytes(16)).hex() == "933030f10e2e7782b80915d5778a4957"  # spec 5.1
