"""emu.rpc.client: vlmcs-style client association, replayed against every vlmcs capture, and its checks."""

from __future__ import annotations

import uuid

import pytest
from emu_testing import requires_vectors, vector_files, whole_pdus

from emu.errors import RpcError, UsageError
from emu.pcap.reader import read_conversations
from emu.rpc.association import Call, ServerAssociation, ServerRpcConfig
from emu.rpc.client import (
    CHECK_ACCEPTED_SYNTAX,
    CHECK_ALLOC_HINT,
    CHECK_BTFN_ENTRY,
    CHECK_CALL_ID,
    CHECK_CANCEL_COUNT,
    CHECK_CONC_MPX,
    CHECK_DECODE,
    CHECK_DREP,
    CHECK_FRAGMENT_FLAGS,
    CHECK_N_RESULTS,
    CHECK_NDR_DATA_LENGTH,
    CHECK_NO_PROTSEQS,
    CHECK_P_CONT_ID,
    CHECK_PTYPE,
    CHECK_REJECTED_ENTRY,
    CHECK_VERSION,
    BindAccepted,
    ClientAssociation,
    ClientState,
    FaultReceived,
    Reply,
    RpcCheckFailed,
    RpcWarning,
    SendAlterContext,
)
from emu.wire.ndr import TransferSyntax, decode_request_stub, decode_response_stub
from emu.wire.rpc import (
    NCA_S_UNK_IF,
    NDR32_SYNTAX,
    BindAck,
    ContextResult,
    Fault,
    Request,
    Response,
    ResultEntry,
    SyntaxId,
    decode_pdu,
    encode_pdu,
)

NDR32, NDR64 = TransferSyntax.NDR32, TransferSyntax.NDR64
KMS = bytes.fromhex("00000600") + bytes(256)


def pair(config: ServerRpcConfig | None = None, **client_options) -> tuple[ClientAssociation, ServerAssociation, list]:
    """A client bound to our server; returns them and the client's bind events."""
    client, server = ClientAssociation(**client_options), ServerAssociation(config)
    events = client.receive_data(server.receive_data(client.bind())[0].data)
    if isinstance(events[-1], SendAlterContext):
        events += client.receive_data(server.receive_data(events[-1].data)[0].data)
    return client, server, events


def exchange(client: ClientAssociation, server: ServerAssociation, kms: bytes, answer: bytes | None, hresult: int = 0):
    (call,) = server.receive_data(client.request(kms))
    assert isinstance(call, Call) and call.kms_request == kms
    return client.receive_data(server.respond(call, answer, hresult))


@requires_vectors
def test_client_reproduces_every_vlmcs_conversation():
    checked = 0
    for path in vector_files():
        if not path.name.startswith(("vlmcs-", "edge-vlmcs-")):
            continue
        for conv in read_conversations(path):
            sent, received = whole_pdus(conv.client.data), whole_pdus(conv.server.data)
            bind = decode_pdu(sent[0])
            offered = [e.transfer_syntaxes[0] for e in bind.context_elements]
            client = ClientAssociation(
                offer_ndr64=NDR64.syntax_id in offered,
                offer_btfn=TransferSyntax.of(offered[-1]) is None,
                multiplex=bool(bind.pfc_flags & 0x10),
                first_call_id=bind.call_id,
            )
            assert client.bind() == sent[0], path.name
            events = client.receive_data(received[0])
            step = 1
            if isinstance(events[-1], SendAlterContext):
                assert events[-1].data == sent[1], path.name
                events = client.receive_data(received[1])
                step = 2
            assert isinstance(events[-1], BindAccepted), (path.name, events)
            warnings = [e.check for e in events if isinstance(e, RpcWarning)]
            expect = [CHECK_CONC_MPX] if "pykms" in path.name and "nomultiplex" in path.name else []
            assert warnings == expect, path.name
            for request_bytes, response_bytes in zip(sent[step:], received[step:] + [None] * len(sent)):
                request = decode_pdu(request_bytes)
                syntax = NDR32 if request.p_cont_id == client.contexts.get(NDR32) else NDR64
                kms = decode_request_stub(request.stub_data, syntax).kms_data
                assert client.request(kms) == request_bytes, path.name
                if response_bytes is None:
                    continue
                (reply,) = client.receive_data(response_bytes)
                stub = decode_response_stub(decode_pdu(response_bytes).stub_data, syntax)
                assert reply == Reply(request.call_id, stub.kms_data, stub.hresult, syntax)
                checked += 1
    assert checked > 50


def test_bind_is_vlmcs_style():
    data = ClientAssociation().bind()
    assert len(data) == 160 and data[3] == 0x13 and data[12:16] == b"\x02\0\0\0"
    assert len(ClientAssociation(offer_ndr64=False).bind()) == 116
    assert ClientAssociation(offer_ndr64=False, offer_btfn=False, multiplex=False).bind()[3] == 0x03


def test_ndr32_rejected_leads_to_alter_context_then_ndr32_first_ndr64_later():
    client, _server, events = pair()
    assert [type(e) for e in events] == [SendAlterContext, BindAccepted]
    assert events[-1].syntaxes == (NDR32, NDR64)
    first, second = client.request(KMS), client.request(KMS)
    assert decode_pdu(first).p_cont_id == 0 and len(first) == 292
    assert decode_pdu(second).p_cont_id == 1 and len(second) == 300
    assert (decode_pdu(first).call_id, decode_pdu(second).call_id) == (2, 3)


def test_reply_carries_the_kms_response_and_error_hresults():
    client, server, _ = pair(ServerRpcConfig(ndr64=False))
    assert exchange(client, server, KMS, b"\x01" * 260) == [Reply(2, b"\x01" * 260, 0, NDR32)]
    assert exchange(client, server, KMS, None, 0x8007000D) == [Reply(3, None, 0x8007000D, NDR32)]


def test_forced_syntax_must_have_been_negotiated():
    client, _server, _ = pair(ServerRpcConfig(ndr64=False))
    with pytest.raises(UsageError, match="NDR64 was not negotiated"):
        client.request(KMS, NDR64)


def test_request_before_bind_is_a_usage_error():
    with pytest.raises(UsageError):
        ClientAssociation().request(KMS)


def test_fault_is_reported_with_its_status():
    client, _server, _ = pair(ServerRpcConfig(ndr64=False))
    client.request(KMS)
    fault = encode_pdu(Fault(call_id=2, pfc_flags=0x23, alloc_hint=32, status=NCA_S_UNK_IF))
    assert client.receive_data(fault) == [FaultReceived(2, NCA_S_UNK_IF)]


def test_reply_with_call_id_1_is_a_warning():
    client, server, _ = pair(ServerRpcConfig(ndr64=False))
    (call,) = server.receive_data(client.request(KMS))
    data = bytearray(server.respond(call, KMS))
    data[12:16] = (1).to_bytes(4, "little")
    events = client.receive_data(bytes(data))
    assert [type(e) for e in events] == [RpcWarning, Reply] and events[0].check == CHECK_CALL_ID


def _bound_reply(mutate) -> bytes:
    client, server, _ = pair(ServerRpcConfig(ndr64=False))
    (call,) = server.receive_data(client.request(KMS))
    pdu = decode_pdu(server.respond(call, b"\x01" * 158))
    return client, mutate(pdu)


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (lambda p: encode_pdu(Response(**{**_fields(p), "call_id": 9})), CHECK_CALL_ID),
        (lambda p: encode_pdu(Response(**{**_fields(p), "drep": b"\0\0\0\0"})), CHECK_DREP),
        (lambda p: encode_pdu(Response(**{**_fields(p), "pfc_flags": 0x01})), CHECK_FRAGMENT_FLAGS),
        (lambda p: encode_pdu(Response(**{**_fields(p), "rpc_vers_minor": 1})), CHECK_VERSION),
        (lambda p: encode_pdu(Response(**{**_fields(p), "cancel_count": 1})), CHECK_CANCEL_COUNT),
        (lambda p: encode_pdu(Response(**{**_fields(p), "p_cont_id": 1})), CHECK_P_CONT_ID),
        (
            lambda p: encode_pdu(Response(**{**_fields(p), "stub_data": b"\x9d" + p.stub_data[1:]})),
            CHECK_NDR_DATA_LENGTH,
        ),
        (lambda p: encode_pdu(BindAck(call_id=2)), CHECK_PTYPE),
        (lambda p: b"\x05\x00\x10\x03" + encode_pdu(p)[4:], CHECK_DECODE),
    ],
)
def test_fatal_checks_raise_by_name_and_fail_the_association(mutate, check):
    client, data = _bound_reply(mutate)
    with pytest.raises(RpcCheckFailed) as info:
        client.receive_data(data)
    assert info.value.check == check
    assert client.state is ClientState.ERROR
    with pytest.raises(RpcError):
        client.receive_data(b"")


def _fields(pdu) -> dict:
    return {name: getattr(pdu, name) for name in pdu.__dataclass_fields__}


def test_alloc_hint_and_pad_mismatches_are_warnings():
    client, data = _bound_reply(lambda p: encode_pdu(Response(**{**_fields(p), "alloc_hint": 1})))
    events = client.receive_data(data)
    assert [e.check for e in events if isinstance(e, RpcWarning)] == [CHECK_ALLOC_HINT]
    client, data = _bound_reply(
        lambda p: encode_pdu(Response(**{**_fields(p), "stub_data": p.stub_data[:-6] + b"\1\1" + bytes(4)}))
    )
    events = client.receive_data(data)
    assert [e.check for e in events if isinstance(e, RpcWarning)] == ["pad"]


def _ack(client: ClientAssociation, results, flags=0x13, call_id=2) -> bytes:
    return encode_pdu(BindAck(call_id=call_id, pfc_flags=flags, secondary_address=b"1688\0", results=tuple(results)))


ZERO = SyntaxId(uuid.UUID(int=0), 0)
ACCEPT32 = ResultEntry(ContextResult.ACCEPTANCE, 0, NDR32_SYNTAX)
REJECT = ResultEntry(ContextResult.PROVIDER_REJECTION, 2, ZERO)
BTFN_OK = ResultEntry(ContextResult.NEGOTIATE_ACK, 3, ZERO)


def test_bind_ack_warnings_are_named():
    client = ClientAssociation()
    client.bind()
    events = client.receive_data(
        _ack(
            client,
            [
                ACCEPT32,
                ResultEntry(ContextResult.PROVIDER_REJECTION, 1, ZERO),
                ResultEntry(ContextResult.NEGOTIATE_ACK, 1, ZERO),
            ],
            flags=0x03,
        )
    )
    assert [e.check for e in events if isinstance(e, RpcWarning)] == [
        CHECK_CONC_MPX,
        CHECK_REJECTED_ENTRY,
        CHECK_BTFN_ENTRY,
    ]
    assert events[-1] == BindAccepted((NDR32,))


@pytest.mark.parametrize(
    ("results", "check"),
    [
        ([ACCEPT32, REJECT], CHECK_N_RESULTS),
        ([REJECT, REJECT, BTFN_OK], CHECK_NO_PROTSEQS),
        ([ResultEntry(ContextResult.ACCEPTANCE, 0, ZERO), REJECT, BTFN_OK], CHECK_ACCEPTED_SYNTAX),
    ],
)
def test_fatal_bind_ack_checks(results, check):
    client = ClientAssociation()
    client.bind()
    with pytest.raises(RpcCheckFailed) as info:
        client.receive_data(_ack(client, results))
    assert info.value.check == check


def test_replies_split_into_single_bytes_give_the_same_events():
    client, server, _ = pair(ServerRpcConfig(ndr64=False))
    (call,) = server.receive_data(client.request(KMS))
    data = server.respond(call, KMS)
    events = []
    for i in range(len(data)):
        events += client.receive_data(data[i : i + 1])
    assert events == [Reply(2, KMS, 0, NDR32)]


def test_request_pdu_matches_spec_sizes():
    client, _, _ = pair(ServerRpcConfig(ndr64=False), offer_ndr64=False)
    pdu = decode_pdu(client.request(bytes(252)))
    assert isinstance(pdu, Request) and pdu.alloc_hint == 260 and pdu.pfc_flags == 0x03
