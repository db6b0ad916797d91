"""Fuzz: untrusted bytes into every KMS decoder, open_request and verify_response.

Decoders may raise only DecodeError; open_request only KmsError; verify_response never raises and
reports failed checks instead (style.md "Errors on bad input").
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from kms_vectors import V4_REQUEST, V4_RESPONSE, V5_REQUEST, V5_RESPONSE, V6_PLAIN, V6_REQUEST, V6_RESPONSE

from emu.errors import DecodeError, KmsError
from emu.kms.messages import open_request, verify_response
from emu.wire import kms as w

DECODERS = [
    (w.decode_version, w.encode_version),
    (w.decode_request_base, w.encode_request_base),
    (w.decode_response_base, w.encode_response_base),
    (w.decode_request_v4, w.encode_request_v4),
    (w.decode_response_v4, w.encode_response_v4),
    (w.decode_encrypted_message, w.encode_encrypted_message),
    (w.decode_response_v5_plain, w.encode_response_v5_plain),
    (w.decode_response_v6_plain, w.encode_response_v6_plain),
]
SEEDS = [V4_REQUEST, V4_RESPONSE, V4_REQUEST[:236], V4_RESPONSE[:-16], V5_REQUEST, V6_RESPONSE, V6_PLAIN + b"\x0a" * 10]
PAIRS = [(V4_REQUEST, V4_RESPONSE), (V5_REQUEST, V5_RESPONSE), (V6_REQUEST, V6_RESPONSE)]


@st.composite
def mutated(draw, seeds=SEEDS):
    """A seed message cut short, bit-flipped, byte-replaced or extended, or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "extend"]))
        if op == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=40))
        elif data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = data[i] ^ (1 << draw(st.integers(0, 7))) if op == "flip" else draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(data=mutated())
def test_decoders_raise_only_decode_error_and_round_trip_what_they_accept(data):
    for decode, encode in DECODERS:
        try:
            msg = decode(data)
        except DecodeError:
            continue
        if decode is w.decode_version:
            assert encode(msg) == data[:4]
        else:
            assert encode(msg) == data, decode.__name__


@settings(max_examples=300, deadline=None)
@given(data=mutated(seeds=[V4_REQUEST, V5_REQUEST, V6_REQUEST]))
def test_open_request_raises_only_kms_error(data):
    try:
        opened = open_request(data)
    except KmsError as exc:
        assert exc.wire_code == 0x8007000D
        return
    assert opened.raw == data


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 2), response=st.data())
def test_verify_response_never_raises_and_notices_changes(index, response):
    request, good = PAIRS[index]
    data = response.draw(mutated(seeds=[good]))
    result = verify_response(request, data)
    if data == good:
        assert result.ok
    elif result.ok:
        # v4 (MAC) and v6 (HMAC) protect every byte. v5 has no integrity over the ePID: a change
        # confined to the ePID characters passes vlmcs's checks too (spec 5.3: Hash covers R only).
        assert index == 1, "a v4/v6 change went unnoticed"
        original = verify_response(request, good).base
        assert dataclasses.replace(result.base, epid=original.epid, epid_raw=None) == original
