"""emu.kms.messages: requests and responses of every version, and the vlmcs checks (spec 5.3-5.7)."""

from __future__ import annotations

import dataclasses

import pytest
from emu_testing import requires_vectors, vector_exchanges
from kms_stubs import request_kms, response_kms
from kms_vectors import (
    CMID,
    EPID,
    FILETIME,
    HWID,
    IV_REQ,
    IV_RESP,
    V4_REQUEST,
    V4_RESPONSE,
    V5_REQUEST,
    V5_RESPONSE,
    V6_REQUEST,
    V6_RESPONSE,
    R,
    request_base,
)

from emu.errors import KmsError, UsageError, VerificationError
from emu.kms.crypto import cbc_encrypt, pkcs7_pad, v4_mac
from emu.kms.messages import (
    E_INVALIDDATA,
    build_request,
    build_response,
    expected_response_size,
    open_request,
    open_response,
    verify_response,
)
from emu.rng import seeded
from emu.wire.kms import ResponseV6Plain, Version, decode_version

VECTORS = {4: (V4_REQUEST, V4_RESPONSE), 5: (V5_REQUEST, V5_RESPONSE), 6: (V6_REQUEST, V6_RESPONSE)}
CHECKS = {
    4: {"decode_ok", "mac_ok", "version_ok", "cmid_ok", "client_time_ok", "pid_length_ok", "size_ok"},
    5: {
        "decode_ok",
        "decrypt_success",
        "hash_ok",
        "ivs_ok",
        "version_ok",
        "cmid_ok",
        "client_time_ok",
        "pid_length_ok",
        "size_ok",
    },
    6: {
        "decode_ok",
        "decrypt_success",
        "hash_ok",
        "ivs_ok",
        "iv_not_suspicious",
        "hmac_ok",
        "version_ok",
        "cmid_ok",
        "client_time_ok",
        "pid_length_ok",
        "size_ok",
    },
}


def _respond(request: bytes, **kw) -> bytes:
    args = dict(
        epid=EPID, count=50, activation_interval=120, renewal_interval=10080, hwid=HWID, response_iv=IV_RESP, random_r=R
    )
    args.update(kw)
    return build_response(open_request(request), **args)


# --- spec 5.7 vectors, byte-exact -----------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5, 6])
def test_build_request_reproduces_spec_vector(version):
    assert build_request(request_base(version), iv=IV_REQ) == VECTORS[version][0]


@pytest.mark.parametrize("version", [4, 5, 6])
def test_build_response_reproduces_spec_vector(version):
    assert _respond(VECTORS[version][0]) == VECTORS[version][1]


@pytest.mark.parametrize("version", [4, 5, 6])
def test_open_request_recovers_the_spec_base(version):
    opened = open_request(VECTORS[version][0])
    assert opened.base == request_base(version)
    assert opened.version == Version(version)
    if version == 4:
        assert opened.mac_ok is True and opened.iv is None
    else:
        assert opened.iv == IV_REQ and opened.padding == b"\x04" * 4


def test_open_request_gives_decrypted_ivs_of_spec_5_7():
    assert open_request(V5_REQUEST).decrypted_iv.hex() == "86bf207b6970ef43830e988ff1e6f329"
    assert open_request(V6_REQUEST).decrypted_iv.hex() == "7c49a81964119e65c24b99a098afe453"


@pytest.mark.parametrize("version", [4, 5, 6])
def test_spec_vector_response_passes_every_check(version):
    result = verify_response(VECTORS[version][0], VECTORS[version][1])
    assert {c.name for c in result.checks} == CHECKS[version]
    assert result.ok and result.failed == ()
    assert (result.epid, result.count, result.activation_interval, result.renewal_interval) == (EPID, 50, 120, 10080)
    assert result.cmid == CMID and result.client_time == FILETIME
    assert result.hwid == (HWID if version == 6 else None)


def test_v6_hmac_matches_slot_zero():
    assert verify_response(V6_REQUEST, V6_RESPONSE).check("hmac_ok").detail == "slot offset +0"


def test_open_response_decrypts_the_v6_vector():
    msg = open_response(V6_REQUEST, V6_RESPONSE)
    assert isinstance(msg, ResponseV6Plain)
    assert msg.padding == b"\x0a" * 10


def test_open_response_of_garbage_raises_verification_error():
    with pytest.raises(VerificationError):
        open_response(V6_REQUEST, b"\x00\x00\x06\x00" + bytes(16) + bytes(7))


# --- server side: refusing requests -----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00",
        b"\x00\x00\x07\x00" + bytes(256),
        b"\x00\x00\x03\x00" + bytes(248),
        b"\x01\x00\x06\x00" + V6_REQUEST[4:],
        V6_REQUEST[:-16],
        V6_REQUEST + bytes(16),
        V4_REQUEST[:-1],
    ],
    ids=["empty", "half-header", "v7", "v3", "minor-1", "v6-short", "v6-long", "v4-short"],
)
def test_bad_requests_are_refused_with_8007000d(data):
    with pytest.raises(KmsError) as info:
        open_request(data)
    assert info.value.wire_code == E_INVALIDDATA == 0x8007000D


def test_v4_request_with_bad_mac_is_opened_but_flagged():
    raw = V4_REQUEST[:-1] + bytes([V4_REQUEST[-1] ^ 1])
    assert open_request(raw).mac_ok is False


def test_v6_request_with_bad_license_status_inside_is_refused():
    body = bytearray(pkcs7_pad(bytes(V6_REQUEST[:4]) + bytes(232)))
    body[8] = 9
    data = V6_REQUEST[:20] + cbc_encrypt(6, IV_REQ, bytes(body))
    with pytest.raises(KmsError, match="license status"):
        open_request(data)


# --- builders: randomness and argument checks ---------------------------------------------


def test_v6_response_iv_comes_from_rng_and_differs_from_request_iv():
    a = build_response(open_request(V6_REQUEST), EPID, 50, 120, 10080, HWID, seeded(1))
    b = build_response(open_request(V6_REQUEST), EPID, 50, 120, 10080, HWID, seeded(1))
    assert a == b and a[4:20] != IV_REQ
    assert verify_response(V6_REQUEST, a).ok


def test_v5_response_reuses_the_request_iv():
    resp = build_response(open_request(V5_REQUEST), EPID, 50, 120, 10080, HWID, seeded(2))
    assert resp[4:20] == IV_REQ


def test_requests_take_their_iv_from_the_rng():
    a, b = build_request(request_base(6), seeded(3)), build_request(request_base(6), seeded(4))
    assert a[4:20] != b[4:20]
    assert open_request(a).base == open_request(b).base == request_base(6)


def test_builders_reject_missing_randomness_and_bad_sizes():
    with pytest.raises(UsageError):
        build_request(request_base(6))
    with pytest.raises(UsageError):
        build_request(dataclasses.replace(request_base(6), version=Version(7)))  # v6 layout: needs an IV too
    with pytest.raises(UsageError):
        _respond(V6_REQUEST, hwid=b"short")
    with pytest.raises(UsageError):
        _respond(V5_REQUEST, random_r=b"x")
    with pytest.raises(UsageError):
        _respond(V4_REQUEST, epid="9" * 64)


@pytest.mark.parametrize("epid_len, v5_size", [(48, 212), (49, 228)])
def test_response_sizes_follow_spec_4_7(epid_len, v5_size):
    epid = "1" * epid_len
    assert len(_respond(V4_REQUEST, epid=epid)) == 60 + 2 * (epid_len + 1)
    assert len(_respond(V5_REQUEST, epid=epid)) == v5_size == expected_response_size(5, 2 * (epid_len + 1))
    assert len(_respond(V6_REQUEST, epid=epid)) == 260


# --- verification: each tampering is caught by the right check ----------------------------------


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def test_flipped_v4_mac_fails_mac_ok():
    result = verify_response(V4_REQUEST, _flip(V4_RESPONSE, len(V4_RESPONSE) - 1))
    assert not result.ok and result.failed == ("mac_ok",)


def test_flipped_v4_count_fails_mac_ok_only():
    result = verify_response(V4_REQUEST, _flip(V4_RESPONSE, 32 + 98))  # Count at 32 + P
    assert result.failed == ("mac_ok",) and result.count == 51


def test_v4_response_with_other_cmid_fails_cmid_ok():
    body = bytearray(V4_RESPONSE[:-16])
    body[0x6A] ^= 0xFF  # first CMID byte (8 + 98)
    result = verify_response(V4_REQUEST, bytes(body) + v4_mac(bytes(body)))
    assert result.failed == ("cmid_ok",)


@pytest.mark.parametrize("version", [5, 6])
def test_flipped_last_ciphertext_byte_fails_padding(version):
    req, resp = VECTORS[version]
    result = verify_response(req, _flip(resp, len(resp) - 1))
    assert not result.ok
    assert not result.check("decrypt_success").passed


@pytest.mark.parametrize("version", [5, 6])
def test_flipped_first_ciphertext_byte_fails_content_checks(version):
    req, resp = VECTORS[version]
    result = verify_response(req, _flip(resp, 20))
    assert not result.ok
    assert result.check("decrypt_success").passed  # padding is in the last block
    assert not {"version_ok", "pid_length_ok", "decode_ok"}.isdisjoint(result.failed)


def test_flipped_v6_hash_block_fails_hash_ok():
    # ciphertext block 8 (plaintext bytes 128..143) holds part of RandomXoredIVs/Hash; CBC garbles
    # that block and flips one bit in the next.
    result = verify_response(V6_REQUEST, _flip(V6_RESPONSE, 20 + 16 * 9))
    assert not result.check("hash_ok").passed and not result.check("hmac_ok").passed


def test_flipped_v6_hmac_fails_hmac_ok_only():
    # plaintext byte 220 lies in the HMAC (214..229); flip it through the previous ciphertext block
    result = verify_response(V6_REQUEST, _flip(V6_RESPONSE, 20 + 220 - 16))
    assert "hmac_ok" in result.failed and not result.ok


def test_flipped_v5_iv_fails_ivs_ok_and_hash():
    result = verify_response(V5_REQUEST, _flip(V5_RESPONSE, 4))
    assert "ivs_ok" in result.failed


def test_v6_response_with_request_iv_is_only_a_warning():
    resp = _respond(V6_REQUEST, response_iv=IV_REQ)
    result = verify_response(V6_REQUEST, resp)
    assert result.failed == ("iv_not_suspicious",)
    assert result.check("iv_not_suspicious").severity == "warning"
    assert result.ok


def test_response_with_other_version_fails_version_ok():
    resp = bytearray(V6_RESPONSE)
    resp[2] = 5
    result = verify_response(V6_REQUEST, bytes(resp))
    assert result.failed == ("version_ok",)


def test_response_for_another_client_time_fails_client_time_and_is_keyed_by_response_time():
    req2 = build_request(dataclasses.replace(request_base(6), client_time=FILETIME + 10**12), iv=IV_REQ)
    resp = _respond(req2)
    result = verify_response(V6_REQUEST, resp)
    assert "client_time_ok" in result.failed
    assert result.check("hmac_ok").passed  # vlmcs keys the HMAC with the response's ClientTime


@pytest.mark.parametrize("junk", [b"", b"\x00", bytes(19), bytes(20), bytes(21), bytes(300), b"\xff" * 260])
@pytest.mark.parametrize("version", [4, 5, 6])
def test_garbage_response_gives_failed_checks_not_exceptions(version, junk):
    result = verify_response(VECTORS[version][0], junk)
    assert not result.ok
    assert CHECKS[version] <= {c.name for c in result.checks}


# --- the reference captures -------------------------------------------------------------


def _captured():
    for req_pdu, resp_pdu in vector_exchanges():
        req = request_kms(req_pdu.data)
        resp, hresult = response_kms(resp_pdu.data)
        yield req_pdu.capture, req, resp, hresult


@requires_vectors
def test_every_captured_successful_response_passes_every_check():
    versions = set()
    for capture, req, resp, _hresult in _captured():
        if resp is None:
            continue
        result = verify_response(req, resp)
        assert result.failed == (), (capture, [c for c in result.checks if not c.passed])
        assert {c.name for c in result.checks} == CHECKS[result.version.major]
        versions.add(result.version.major)
    assert versions == {4, 5, 6}


@requires_vectors
def test_captured_bad_versions_are_refused_like_vlmcsd():
    refused = 0
    for capture, req, resp, hresult in _captured():
        if "badversion" not in capture:
            continue
        with pytest.raises(KmsError) as info:
            open_request(req)
        assert info.value.wire_code == E_INVALIDDATA
        if "vlmcsd" in capture:
            assert resp is None and hresult == E_INVALIDDATA
        refused += 1
    assert refused >= 2


@requires_vectors
def test_a_response_built_for_every_captured_request_verifies():
    rng = seeded(7)
    count = 0
    for capture, req, _resp, _hresult in _captured():
        if decode_version(req).major not in (4, 5, 6) or decode_version(req).minor:
            continue
        opened = open_request(req)
        resp = build_response(opened, EPID, 50, 120, 10080, HWID, rng)
        result = verify_response(opened, resp)
        assert result.failed == (), (capture, result.failed)
        count += 1
    assert count > 50


@requires_vectors
def test_flipping_a_captured_v6_response_byte_is_caught():
    for capture, req, resp, _ in _captured():
        if resp is None or decode_version(req).major != 6:
            continue
        for index in (4, 20, 100, len(resp) - 20, len(resp) - 1):
            assert not verify_response(req, _flip(resp, index)).ok, (capture, index)
