"""The resolver and the decoder survive any input: a response or a drop, never an exception."""

from __future__ import annotations

import dns.message
import dns.update
from dns_testing import NOW, PEER, SECRET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.errors import DecodeError
from emu.wire.dns import decode_message

_SEEDS = [
    dns.message.make_query("_vlmcs._tcp.kms.test.", "SRV", use_edns=0).to_wire(),
    dns.message.make_query("kms1.kms.test.", "A").to_wire(),
]
_update = dns.update.UpdateMessage(
    "kms.test.",
    keyring={dns.name.from_text("kms1-key"): dns.tsig.Key("kms1-key", SECRET, dns.tsig.HMAC_SHA256)},
    keyalgorithm=dns.tsig.HMAC_SHA256,
)
_update.present("kms1.kms.test.")
_update.absent("kms2.kms.test.", "A")
_update.delete("_vlmcs._tcp.kms.test.", "SRV", "0 0 1688 kms1.kms.test.")
_update.add("kms2.kms.test.", 60, "A", "10.0.0.2")
_SEEDS.append(_update.to_wire())

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(resolver, data: bytes) -> None:
    out = resolver.handle(data, PEER, NOW)
    assert out is None or (len(out) >= 12 and out[:2] == data[:2])
    try:
        decode_message(data)
    except DecodeError:
        pass


@_FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_never_raise(resolver, data):
    _check(resolver, data)


@_FUZZ
@given(
    seed=st.sampled_from(_SEEDS), flips=st.lists(st.integers(min_value=0, max_value=8 * 400), min_size=1, max_size=6)
)
def test_bit_flipped_messages_never_raise(resolver, seed, flips):
    data = bytearray(seed)
    for bit in flips:
        data[(bit // 8) % len(data)] ^= 1 << (bit % 8)
    _check(resolver, bytes(data))


@_FUZZ
@given(seed=st.sampled_from(_SEEDS), cut=st.integers(min_value=0, max_value=400))
def test_truncated_messages_never_raise(resolver, seed, cut):
    _check(resolver, seed[:cut])
