"""The OpenSSL-backed v6 and v5 ciphers are the pure implementation, only faster (spec 5.1, 5.7 vectors)."""

from __future__ import annotations

import subprocess
import sys

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
@given(
    version=st.sampled_from([5, 6]),
    iv=st.binary(min_size=16, max_size=16),
    blocks=st.integers(1, 20),
    seed=st.binary(min_size=16, max_size=16),
)
def test_accelerated_cbc_equals_pure_cbc(version, iv, blocks, seed):
    data = (seed * blocks)[: 16 * blocks]
    if not crypto.use_accelerator(True):
        pytest.skip("accelerator unavailable")
    fast = (
        crypto.cbc_encrypt(version, iv, data),
        crypto.cbc_decrypt(version, iv, data),
        crypto.decrypt_block(version, iv),
    )
    crypto.use_accelerator(False)
    try:
        assert fast == (
            crypto.cbc_encrypt(version, iv, data),
            crypto.cbc_decrypt(version, iv, data),
            crypto.decrypt_block(version, iv),
        )
    finally:
        crypto.use_accelerator(True)


def test_a_host_answering_v5_does_not_load_the_cryptography_package():
    """v5 is AES-128 through OpenSSL like v6: a host's memory stays free of ``cryptography`` (several MB)."""
    script = (
        "import sys, time, uuid\n"
        "from emu.kms import crypto, products\n"
        "from emu.kms.host import HostConfig, KmsHost\n"
        "from emu.kms.messages import build_request\n"
        "from emu.rng import seeded\n"
        "from emu.wire.kms import LicenseStatus, RequestBase, Version\n"
        "assert crypto.accelerator_active()\n"
        "sku = products.lookup('win10ent')\n"
        "base = RequestBase(Version(5), 0, LicenseStatus.OOB_GRACE, 43200, sku.app_id, sku.id, sku.kms_id,\n"
        "    uuid.uuid4(), 25, 133000000000000000, uuid.UUID(int=0), 'pc')\n"
        "answer = KmsHost(HostConfig(), seeded(1), time.time()).handle_request(build_request(base, seeded(2)), time.time())\n"
        "assert answer.ok, answer\n"
        "assert 'cryptography' not in sys.modules, 'cryptography was imported'\n"
    )
    if not crypto.use_accelerator(True):
        pytest.skip("accelerator unavailable: v5 then uses the cryptography package")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_v4_never_uses_the_accelerator():
    crypto.use_accelerator(True)
    assert crypto.encrypt_block(4, bytes(16)).hex() == "933030f10e2e7782b80915d5778a4957"  # spec 5.1
