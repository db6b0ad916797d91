"""Fuzz: untrusted bytes into the RPC decoders and both associations raise only our errors."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.errors import DecodeError, RpcError
from emu.rpc.association import Close, ServerAssociation, ServerRpcConfig
from emu.rpc.client import ClientAssociation, ClientState
from emu.wire.ndr import (
    TransferSyntax,
    decode_request_stub,
    decode_response_stub,
    encode_request_stub,
    encode_response_stub,
)
from emu.wire.rpc import (
    KMS_INTERFACE,
    NDR32_SYNTAX,
    NDR64_SYNTAX,
    Bind,
    ContextElement,
    Request,
    Response,
    btfn_syntax,
    decode_pdu,
    encode_pdu,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BIND = encode_pdu(
    Bind(
        call_id=2,
        pfc_flags=0x13,
        context_elements=tuple(
            ContextElement(i, KMS_INTERFACE, (s,)) for i, s in enumerate((NDR32_SYNTAX, NDR64_SYNTAX, btfn_syntax(3)))
        ),
    )
)
REQUEST = encode_pdu(
    Request(call_id=2, alloc_hint=276, p_cont_id=1, stub_data=encode_request_stub(bytes(260), TransferSyntax.NDR64))
)
BIND_ACK = ServerAssociation(ServerRpcConfig(ndr64=False)).receive_data(BIND)[0].data
RESPONSE = encode_pdu(
    Response(
        call_id=2, pfc_flags=0x03, alloc_hint=276, stub_data=encode_response_stub(bytes(260), 0, TransferSyntax.NDR32)
    )
)
SEEDS = st.sampled_from([BIND, REQUEST, BIND + REQUEST, BIND_ACK, RESPONSE])


@st.composite
def mutated(draw) -> bytes:
    """A valid PDU stream with bit flips, a truncation or a rewritten frag_length."""
    data = bytearray(draw(SEEDS))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        data[8:10] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "little")
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


INPUTS = st.one_of(st.binary(max_size=400), mutated())


@FUZZ
@given(INPUTS)
def test_decode_pdu_raises_only_decode_error_and_round_trips(data):
    try:
        pdu = decode_pdu(data)
    except DecodeError:
        return
    assert decode_pdu(encode_pdu(pdu)) == pdu


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(list(TransferSyntax)))
def test_stub_decoders_raise_only_decode_error(data, syntax):
    for decode in (decode_request_stub, decode_response_stub):
        try:
            decode(data, syntax)
        except DecodeError:
            pass


@FUZZ
@given(INPUTS, st.integers(1, 64), st.booleans())
def test_server_association_survives_anything(data, chunk, ndr64):
    assoc = ServerAssociation(ServerRpcConfig(ndr64=ndr64))
    actions = []
    for i in range(0, len(data), chunk):
        actions += assoc.receive_data(data[i : i + chunk])
    assert all(not isinstance(a, Close) for a in actions[:-1])


def _reply_stream(tail: bytes) -> bytes:
    """A bound client's view: our bind_ack, then a (mutated) reply to its first request."""
    return BIND_ACK + tail


@FUZZ
@given(st.one_of(INPUTS, mutated().map(_reply_stream)), st.integers(1, 64))
def test_client_association_raises_only_rpc_error(data, chunk):
    client = ClientAssociation(offer_ndr64=True)
    assert client.bind() == BIND
    requested = False
    try:
        for i in range(0, len(data), chunk):
            if client.state is ClientState.BOUND and not requested:
                client.request(bytes(260))
                requested = True
            client.receive_data(data[i : i + chunk])
    except RpcError:
        pass
