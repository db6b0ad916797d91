"""emu.wire.kms: the KMS message layouts of kms-wire-protocol.md section 4."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from emu_testing import requires_vectors, vector_exchanges
from hypothesis import given, settings
from hypothesis import strategies as st
from kms_stubs import request_kms, response_kms
from kms_vectors import CMID, EPID, FILETIME, V4_REQUEST, V4_RESPONSE, V6_PLAIN, request_base

from emu.errors import DecodeError
from emu.kms.crypto import cbc_decrypt
from emu.wire import kms as w

# --- field-grouped vectors (spec 5.7) ----------------------------------------------------------


def test_v4_request_vector_fields_decode_to_spec_values():
    msg = w.decode_request_v4(V4_REQUEST)
    assert msg.base == request_base(4)
    assert msg.base.license_status is w.LicenseStatus.OOB_GRACE
    assert msg.mac.hex() == "83032b42faf6e123755549eb5cb8f4fd"


def test_request_base_field_offsets_follow_spec_4_2():
    raw = w.encode_request_base(request_base(6))
    assert raw[0:4] == bytes.fromhex("00000600")  # MinorVer, MajorVer
    assert raw[8:12] == (2).to_bytes(4, "little")  # LicenseStatus
    assert raw[12:16] == (43200).to_bytes(4, "little")  # BindingExpiration
    assert raw[64:80] == CMID.bytes_le  # CMID
    assert raw[80:84] == (25).to_bytes(4, "little")  # RequiredClientCount
    assert raw[84:92] == FILETIME.to_bytes(8, "little")  # ClientTime
    assert raw[108:120] == "TESTPC".encode("utf-16-le")  # WorkstationName
    assert len(raw) == w.REQUEST_BASE_SIZE == w.KmsRequestBase.sizeof()


def test_v4_response_vector_fields_decode_to_spec_values():
    msg = w.decode_response_v4(V4_RESPONSE)
    assert msg.base == w.ResponseBase(
        version=w.Version(4),
        epid=EPID,
        cmid=CMID,
        client_time=FILETIME,
        count=50,
        activation_interval=120,
        renewal_interval=10080,
    )
    assert V4_RESPONSE[4:8] == (98).to_bytes(4, "little")  # PIDSize includes the NUL
    assert w.encode_response_v4(msg) == V4_RESPONSE


def test_v6_plaintext_vector_decodes_every_field():
    padded = V6_PLAIN + b"\x0a" * 10
    msg = w.decode_response_v6_plain(padded)
    assert msg.base.epid == EPID and msg.base.count == 50
    assert msg.hwid.hex() == "3a1c049600b60076"
    assert msg.xored_ivs.hex() == "7c49a81964119e65c24b99a098afe453"
    assert msg.hmac.hex() == "bb2e8f3ebb7995cdbb66105e03ca1329"
    assert msg.padding == b"\x0a" * 10
    assert w.encode_response_v6_plain(msg) == padded


def test_static_struct_sizes():
    assert w.VersionHeader.sizeof() == 4
    assert len(w.encode_request_v4(w.RequestV4(request_base(4), bytes(16)))) == 252


def test_version_round_trip_and_order_is_minor_then_major():
    assert w.decode_version(b"\x01\x00\x06\x00") == w.Version(major=6, minor=1)
    assert w.encode_version(w.Version(major=5)) == b"\x00\x00\x05\x00"


def test_encrypted_message_round_trip():
    raw = b"\x00\x00\x06\x00" + bytes(range(16)) + bytes(240)
    msg = w.decode_encrypted_message(raw)
    assert msg.version == w.Version(6) and msg.iv == bytes(range(16)) and len(msg.ciphertext) == 240
    assert w.encode_encrypted_message(msg) == raw


# --- quirks and losslessness ---------------------------------------------------------------


def test_stale_bytes_after_workstation_name_are_kept_quirk_q3():
    raw = bytearray(w.encode_request_base(request_base(6)))
    raw[108 + 14 : 108 + 20] = b"\x00\x80junk"  # after "TESTPC\0"
    base = w.decode_request_base(bytes(raw))
    assert base.workstation_name == "TESTPC"
    assert base.workstation_tail == b"\x00\x80junk"
    assert w.encode_request_base(base) == bytes(raw)


def test_epid_that_is_not_clean_utf16_keeps_its_raw_bytes():
    base = w.decode_response_v4(V4_RESPONSE).base
    for raw_pid in (b"\x00\xd8A\x00\x00\x00", b"A\x00\x00\x00B\x00\x00\x00", b"A\x00B", b"A\x00B\x00"):
        msg = w.ResponseBase(base.version, "", base.cmid, base.client_time, 1, 2, 3, epid_raw=raw_pid)
        encoded = w.encode_response_base(msg)
        decoded = w.decode_response_base(encoded)
        assert decoded.epid_raw == raw_pid
        assert w.encode_response_base(decoded) == encoded


def test_clean_epid_has_no_raw_form():
    assert w.decode_response_v4(V4_RESPONSE).base.epid_raw is None


# --- malformed input: one named variant per rule --------------------------------------------


def test_unknown_license_status_is_a_decode_error():
    raw = bytearray(V4_REQUEST)
    raw[8] = 7
    with pytest.raises(DecodeError, match="license status 7"):
        w.decode_request_v4(bytes(raw))


def test_absurd_pid_size_is_a_decode_error():
    raw = bytearray(V4_RESPONSE)
    raw[4:8] = (0xFFFFFFF0).to_bytes(4, "little")
    with pytest.raises(DecodeError):
        w.decode_response_v4(bytes(raw))


def test_truncated_v4_request_is_a_decode_error():
    with pytest.raises(DecodeError):
        w.decode_request_v4(V4_REQUEST[:-1])


def test_trailing_bytes_after_v4_request_are_a_decode_error():
    with pytest.raises(DecodeError):
        w.decode_request_v4(V4_REQUEST + b"\0")


def test_request_base_of_wrong_length_is_a_decode_error():
    with pytest.raises(DecodeError, match="236"):
        w.decode_request_base(V4_REQUEST[:240])


def test_short_envelope_is_a_decode_error():
    with pytest.raises(DecodeError):
        w.decode_encrypted_message(b"\x00\x00\x06\x00" + bytes(15))


def test_workstation_name_too_long_cannot_be_encoded():

    base = dataclasses.replace(request_base(4), workstation_name="x" * 65)
    with pytest.raises(ValueError):
        w.encode_request_base(base)


# --- every message of every reference capture -------------------------------------------------


def _request_plain(kms: bytes) -> bytes:
    env = w.decode_encrypted_message(kms)
    return cbc_decrypt(env.version.major, env.iv, env.ciphertext)


@requires_vectors
def test_every_captured_kms_message_decodes_and_reencodes_byte_identical():
    seen = {4: 0, 5: 0, 6: 0}
    stale = 0
    for req_pdu, resp_pdu in vector_exchanges():
        req = request_kms(req_pdu.data)
        version = w.decode_version(req)
        if version.major not in seen:
            continue  # the deliberately bad versions of the edge captures
        if version.major == 4:
            msg = w.decode_request_v4(req)
            assert w.encode_request_v4(msg) == req, req_pdu.capture
            base = msg.base
        else:
            env = w.decode_encrypted_message(req)
            assert w.encode_encrypted_message(env) == req
            plain = _request_plain(req)
            base = w.decode_request_base(plain[:236])
            assert w.encode_request_base(base) == plain[:236], req_pdu.capture
        stale += bool(base.workstation_tail)
        resp, hresult = response_kms(resp_pdu.data)
        if resp is None:
            continue
        assert hresult == 0
        if version.major == 4:
            assert w.encode_response_v4(w.decode_response_v4(resp)) == resp, resp_pdu.capture
        else:
            env = w.decode_encrypted_message(resp)
            plain = cbc_decrypt(version.major, env.iv, env.ciphertext)
            decode = w.decode_response_v5_plain if version.major == 5 else w.decode_response_v6_plain
            encode = w.encode_response_v5_plain if version.major == 5 else w.encode_response_v6_plain
            assert encode(decode(plain)) == plain, resp_pdu.capture
        seen[version.major] += 1
    assert all(seen.values()), seen
    assert stale > 0, "the captures contain vlmcs requests with stale name bytes (Q3)"


@requires_vectors
def test_captured_responses_have_clean_epids():
    for req_pdu, resp_pdu in vector_exchanges():
        req = request_kms(req_pdu.data)
        resp, _ = response_kms(resp_pdu.data)
        if resp is None or w.decode_version(req).major != 4:
            continue
        base = w.decode_response_v4(resp).base
        assert base.epid_raw is None and len(base.epid) in (48, 49)
        assert base.cmid == w.decode_request_v4(req).base.cmid
        assert isinstance(base.cmid, uuid.UUID)


def _by_declaration(data: bytes, major: int):
    """The decrypted response as the Construct declaration alone reads it (the reference)."""
    c = (w._RESPONSE_V6_PLAIN if major == 6 else w._RESPONSE_V5_PLAIN).parse(data)
    base = w._response_base(c.base)
    if major == 6:
        return w.ResponseV6Plain(base, c.random_xored_ivs, c.hash, c.hwid, c.xored_ivs, c.hmac, c.padding)
    return w.ResponseV5Plain(base, c.random_xored_ivs, c.hash, c.padding)


@settings(max_examples=300, deadline=None)
@given(
    major=st.sampled_from([5, 6]),
    pid_size=st.integers(0, 140),
    body=st.binary(min_size=0, max_size=260),
)
def test_response_plaintext_reads_as_its_declaration_does(major, pid_size, body):
    data = b"\x00\x00\x06\x00" + pid_size.to_bytes(4, "little") + body
    decode = w.decode_response_v6_plain if major == 6 else w.decode_response_v5_plain
    try:
        expected = _by_declaration(data, major)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode(data)
        return
    assert decode(data) == expected
