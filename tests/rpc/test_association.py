"""emu.rpc.association: the server side answers binds as spec 2.5 says and replays vlmcsd byte for byte."""

from __future__ import annotations

import uuid

import pytest
from emu_testing import requires_vectors, vector_files, whole_pdus

from emu.errors import UsageError
from emu.pcap.reader import read_conversations
from emu.rpc import association as association_module
from emu.rpc.association import (
    MAX_STUB_LENGTH,
    AssociationState,
    BadCall,
    Call,
    Close,
    Send,
    ServerAssociation,
    ServerRpcConfig,
)
from emu.wire.ndr import TransferSyntax, decode_response_stub, encode_request_stub
from emu.wire.rpc import (
    KMS_INTERFACE,
    NCA_S_OP_RNG_ERROR,
    NCA_S_UNK_IF,
    NDR32_SYNTAX,
    NDR64_SYNTAX,
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    ContextElement,
    ContextResult,
    Fault,
    Request,
    ResultEntry,
    SyntaxId,
    btfn_syntax,
    decode_pdu,
    encode_pdu,
)

ZERO = SyntaxId(uuid.UUID(int=0), 0)
KMS_V4 = bytes.fromhex("00000400") + bytes(248)


def vlmcs_bind(ndr64: bool = True, btfn: int | None = 3, call_id: int = 2) -> bytes:
    syntaxes = [NDR32_SYNTAX] + ([NDR64_SYNTAX] if ndr64 else []) + ([btfn_syntax(btfn)] if btfn is not None else [])
    elems = tuple(ContextElement(i, KMS_INTERFACE, (s,)) for i, s in enumerate(syntaxes))
    return encode_pdu(Bind(call_id=call_id, pfc_flags=0x13, context_elements=elems))


def request(ctx: int = 0, call_id: int = 2, opnum: int = 0, stub: bytes | None = None, flags: int = 0x03) -> bytes:
    stub = encode_request_stub(KMS_V4, TransferSyntax.NDR32) if stub is None else stub
    return encode_pdu(
        Request(call_id=call_id, pfc_flags=flags, alloc_hint=len(stub), p_cont_id=ctx, opnum=opnum, stub_data=stub)
    )


def results_of(action) -> tuple[ResultEntry, ...]:
    assert isinstance(action, Send)
    return decode_pdu(action.data).results


def vlmcsd_conversations():
    """(capture, conversation) of every capture with a vlmcsd server."""
    for path in vector_files():
        if "-vlmcsd-" in path.name:
            for conv in read_conversations(path):
                yield path.name, conv


@requires_vectors
def test_server_replays_every_vlmcsd_conversation_byte_for_byte():
    checked = 0
    for name, conv in vlmcsd_conversations():
        client, server = whole_pdus(conv.client.data), whole_pdus(conv.server.data)
        first_ack = decode_pdu(server[0])
        assert isinstance(first_ack, BindAck)
        port = first_ack.secondary_address.rstrip(b"\0").decode()
        config = ServerRpcConfig(
            ndr64=port != "17690", btfn=True, secondary_address=port, assoc_group_id=first_ack.assoc_group_id
        )
        assoc = ServerAssociation(config)
        answers = iter(server)
        for pdu in client:
            actions = assoc.receive_data(pdu)
            assert len(actions) == 1, (name, actions)
            action, expected = actions[0], next(answers)
            if isinstance(action, Send):
                got = decode_pdu(action.data)
                if isinstance(got, AlterContextResp):  # vlmcsd leaves junk in the pad (Q2); ours is zero
                    assert got.pad == b"\0\0"
                    expected = expected[:26] + b"\0\0" + expected[28:]
                assert action.data == expected, name
            else:
                assert isinstance(action, Call), (name, action)
                stub = decode_response_stub(decode_pdu(expected).stub_data, action.syntax)
                assert assoc.respond(action, stub.kms_data, stub.hresult) == expected, name
            checked += 1
    assert checked > 100


@requires_vectors
def test_server_with_ndr64_off_accepts_ndr32_like_vlmcsd_n0():
    _name, conv = next(
        (n, c) for n, c in vlmcsd_conversations() if n == "edge-vlmcs-vlmcsd-ndr64off-server-v6-win10ent.pcap"
    )
    bind = whole_pdus(conv.client.data)[0]
    results = results_of(ServerAssociation(ServerRpcConfig(ndr64=False)).receive_data(bind)[0])
    assert results == decode_pdu(whole_pdus(conv.server.data)[0]).results
    assert results[0] == ResultEntry(ContextResult.ACCEPTANCE, 0, NDR32_SYNTAX)


def test_ndr64_offered_and_enabled_rejects_ndr32():
    results = results_of(ServerAssociation().receive_data(vlmcs_bind())[0])
    assert results == (
        ResultEntry(ContextResult.PROVIDER_REJECTION, 2, ZERO),
        ResultEntry(ContextResult.ACCEPTANCE, 0, NDR64_SYNTAX),
        ResultEntry(ContextResult.NEGOTIATE_ACK, 3, ZERO),
    )


def test_ndr64_disabled_and_btfn_disabled_match_vlmcsd_n0_b0():
    assoc = ServerAssociation(ServerRpcConfig(ndr64=False, btfn=False))
    assert results_of(assoc.receive_data(vlmcs_bind())[0]) == (
        ResultEntry(ContextResult.ACCEPTANCE, 0, NDR32_SYNTAX),
        ResultEntry(ContextResult.PROVIDER_REJECTION, 2, ZERO),
        ResultEntry(ContextResult.PROVIDER_REJECTION, 2, ZERO),
    )
    assert assoc.contexts == {0: TransferSyntax.NDR32}


@pytest.mark.parametrize(("requested", "granted"), [(0x01, 1), (0x03, 3), (0x07, 3)])
def test_btfn_grants_the_requested_bits_it_supports(requested, granted):
    results = results_of(ServerAssociation().receive_data(vlmcs_bind(ndr64=False, btfn=requested))[0])
    assert results[1] == ResultEntry(ContextResult.NEGOTIATE_ACK, granted, ZERO)


def test_wrong_interface_is_rejected_with_reason_1():
    other = SyntaxId(uuid.UUID("12345678-1234-1234-1234-123456789abc"), 1)
    bind = encode_pdu(
        Bind(
            call_id=2,
            context_elements=(
                ContextElement(0, other, (NDR32_SYNTAX,)),
                ContextElement(1, KMS_INTERFACE, (NDR32_SYNTAX,)),
            ),
        )
    )
    assoc = ServerAssociation()
    assert results_of(assoc.receive_data(bind)[0]) == (
        ResultEntry(ContextResult.PROVIDER_REJECTION, 1, ZERO),
        ResultEntry(ContextResult.ACCEPTANCE, 0, NDR32_SYNTAX),
    )
    assert assoc.contexts == {1: TransferSyntax.NDR32}


def test_element_with_two_transfer_syntaxes_gets_ndr64_when_enabled():
    bind = encode_pdu(
        Bind(call_id=2, context_elements=(ContextElement(4, KMS_INTERFACE, (NDR32_SYNTAX, NDR64_SYNTAX)),))
    )
    assoc = ServerAssociation()
    assert results_of(assoc.receive_data(bind)[0]) == (ResultEntry(ContextResult.ACCEPTANCE, 0, NDR64_SYNTAX),)
    assert assoc.contexts == {4: TransferSyntax.NDR64}


def test_bind_ack_carries_config_echoes_and_zero_padding():
    config = ServerRpcConfig(secondary_address="1688", assoc_group_id=0x6CCE2CD8)
    ack = decode_pdu(ServerAssociation(config).receive_data(vlmcs_bind(call_id=9))[0].data)
    assert isinstance(ack, BindAck)
    assert (ack.call_id, ack.pfc_flags, ack.assoc_group_id) == (9, 0x13, 0x6CCE2CD8)
    assert (ack.secondary_address, ack.pad, ack.max_xmit_frag) == (b"1688\0", b"\0", 5840)


def test_alter_context_resp_has_empty_secondary_address_and_accepts_ndr32():
    assoc = ServerAssociation()
    assoc.receive_data(vlmcs_bind())
    alter = encode_pdu(
        AlterContext(call_id=2, pfc_flags=0x13, context_elements=(ContextElement(0, KMS_INTERFACE, (NDR32_SYNTAX,)),))
    )
    data = assoc.receive_data(alter)[0].data
    resp = decode_pdu(data)
    assert isinstance(resp, AlterContextResp) and len(data) == 56
    assert (resp.secondary_address, resp.pad, resp.pfc_flags) == (b"", b"\0\0", 0x03)
    assert resp.results == (ResultEntry(ContextResult.ACCEPTANCE, 0, NDR32_SYNTAX),)
    assert assoc.contexts == {0: TransferSyntax.NDR32, 1: TransferSyntax.NDR64}
    assert assoc.state is AssociationState.BOUND


def test_request_before_bind_gets_unk_if_fault_with_its_call_id():
    (action,) = ServerAssociation().receive_data(request(call_id=123))
    assert isinstance(action, Send) and len(action.data) == 32
    fault = decode_pdu(action.data)
    assert fault == Fault(call_id=123, pfc_flags=0x23, alloc_hint=32, status=NCA_S_UNK_IF)


def test_request_on_unknown_context_gets_unk_if_fault():
    assoc = ServerAssociation(ServerRpcConfig(ndr64=False))
    assoc.receive_data(vlmcs_bind())
    (action,) = assoc.receive_data(request(ctx=7))
    assert decode_pdu(action.data).status == NCA_S_UNK_IF


def test_opnum_other_than_zero_gets_op_rng_error_fault():
    assoc = ServerAssociation(ServerRpcConfig(ndr64=False))
    assoc.receive_data(vlmcs_bind())
    (action,) = assoc.receive_data(request(opnum=3, call_id=5))
    fault = decode_pdu(action.data)
    assert (fault.status, fault.call_id) == (NCA_S_OP_RNG_ERROR, 5)


def test_undecodable_stub_is_a_bad_call_answered_with_invalid_data():
    assoc = ServerAssociation(ServerRpcConfig(ndr64=False))
    assoc.receive_data(vlmcs_bind())
    (action,) = assoc.receive_data(request(stub=bytes.fromhex("fc000000 fc000000") + bytes(10)))
    assert isinstance(action, BadCall) and "max_count 252" in action.reason
    data = assoc.respond(action, None, 0x8007000D)
    assert len(data) == 36 and data[-4:] == bytes.fromhex("0d000780")
    assert decode_pdu(data).alloc_hint == 12


def test_call_carries_the_kms_message_and_respond_echoes_the_request():
    assoc = ServerAssociation(ServerRpcConfig(ndr64=False))
    assoc.receive_data(vlmcs_bind())
    (call,) = assoc.receive_data(request(call_id=77))
    assert isinstance(call, Call)
    assert (call.call_id, call.context_id, call.syntax, call.kms_request) == (77, 0, TransferSyntax.NDR32, KMS_V4)
    response = decode_pdu(assoc.respond(call, bytes(158)))
    assert (response.call_id, response.pfc_flags, response.p_cont_id, response.alloc_hint) == (77, 0x03, 0, 176)


def test_a_call_can_be_answered_with_a_fault_and_the_association_goes_on():
    assoc = ServerAssociation(ServerRpcConfig(ndr64=False))
    assoc.receive_data(vlmcs_bind())
    (call,) = assoc.receive_data(request(call_id=9))
    data = assoc.fault(call, NCA_S_UNK_IF)
    assert len(data) == 32
    assert decode_pdu(data) == Fault(call_id=9, pfc_flags=0x23, alloc_hint=32, status=NCA_S_UNK_IF)
    assert assoc.state is AssociationState.BOUND
    (again,) = assoc.receive_data(request(call_id=10))
    assert isinstance(again, Call) and again.call_id == 10
    with pytest.raises(UsageError):
        assoc.fault(again, 1 << 32)


def test_pdus_fed_one_byte_at_a_time_give_the_same_actions():
    whole = ServerAssociation().receive_data(
        vlmcs_bind() + request(ctx=1, stub=encode_request_stub(KMS_V4, TransferSyntax.NDR64))
    )
    assoc = ServerAssociation()
    stream = vlmcs_bind() + request(ctx=1, stub=encode_request_stub(KMS_V4, TransferSyntax.NDR64))
    actions = []
    for i in range(len(stream)):
        actions += assoc.receive_data(stream[i : i + 1])
    assert actions == whole
    assert [type(a) for a in actions] == [Send, Call]


def test_several_pdus_in_one_chunk_are_all_answered_in_order():
    assoc = ServerAssociation(ServerRpcConfig(ndr64=False))
    actions = assoc.receive_data(vlmcs_bind() + request(call_id=2) + request(call_id=3) + request(call_id=4, opnum=1))
    assert [type(a) for a in actions] == [Send, Call, Call, Send]
    assert [a.call_id for a in actions[1:3]] == [2, 3]


def test_fragmented_request_is_reassembled():
    assoc = ServerAssociation(ServerRpcConfig(ndr64=False))
    assoc.receive_data(vlmcs_bind())
    stub = encode_request_stub(KMS_V4, TransferSyntax.NDR32)
    parts = [
        request(stub=stub[:100], flags=0x01),
        request(stub=stub[100:200], flags=0x00),
        request(stub=stub[200:], flags=0x02),
    ]
    assert assoc.receive_data(parts[0]) == [] and assoc.receive_data(parts[1]) == []
    (call,) = assoc.receive_data(parts[2])
    assert isinstance(call, Call) and call.kms_request == KMS_V4 and call.request.pfc_flags == 0x03


def test_reassembly_beyond_the_cap_closes():
    assoc = ServerAssociation(ServerRpcConfig(ndr64=False))
    assoc.receive_data(vlmcs_bind())
    chunk = request(stub=bytes(4000), flags=0x00)
    actions = assoc.receive_data(request(stub=bytes(4000), flags=0x01))
    for _ in range(MAX_STUB_LENGTH // 4000 + 1):
        actions += assoc.receive_data(chunk)
    assert isinstance(actions[-1], Close) and "exceeds" in actions[-1].reason


def test_fragment_without_first_flag_closes():
    (action,) = ServerAssociation().receive_data(request(flags=0x02))
    assert isinstance(action, Close) and "FIRST_FRAG" in action.reason


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda b: b"\x04" + b[1:], "RPC version 4.0"),
        (lambda b: b[:2] + b"\x02" + b[3:], "PTYPE 2"),
        (lambda b: b[:2] + b"\x0c" + b[3:], "PTYPE 12"),
        (lambda b: b[:8] + (6000).to_bytes(2, "little") + b[10:], "frag_length 6000"),
        (lambda b: b[:8] + (12).to_bytes(2, "little") + b[10:], "frag_length 12"),
        (lambda b: b[:4] + b"\x00\x00\x00\x00" + b[8:], "data representation"),
        (lambda b: b[:10] + b"\x08\x00" + b[12:], "auth_length"),
        (lambda b: b[:24] + b"\x09" + b[25:], "malformed PDU"),
    ],
)
def test_protocol_violations_close_the_connection(mutate, words):
    assoc = ServerAssociation()
    (action,) = assoc.receive_data(mutate(vlmcs_bind()))
    assert isinstance(action, Close) and words in action.reason
    assert assoc.state is AssociationState.ERROR
    assert assoc.receive_data(vlmcs_bind()) == []


def test_bind_with_too_many_contexts_closes():
    elems = tuple(ContextElement(i, KMS_INTERFACE, (NDR32_SYNTAX,)) for i in range(7))
    (action,) = ServerAssociation().receive_data(encode_pdu(Bind(call_id=2, context_elements=elems)))
    assert isinstance(action, Close) and "7 context elements" in action.reason


def test_actions_before_a_violation_in_the_same_chunk_are_kept():
    actions = ServerAssociation().receive_data(vlmcs_bind() + b"\x04" * 16)
    assert [type(a) for a in actions] == [Send, Close]


def _answer_without_memo(config: ServerRpcConfig, *pdus: bytes) -> tuple[list[bytes], dict[int, TransferSyntax]]:
    association_module._bind_memo.clear()
    assoc = ServerAssociation(config)
    out = [assoc.receive_data(pdu)[0].data for pdu in pdus]
    association_module._bind_memo.clear()
    return out, dict(assoc.contexts)


@pytest.mark.parametrize("ndr64", [True, False])
def test_a_remembered_bind_is_answered_as_a_fresh_one_with_its_own_group_id(ndr64):
    alter = encode_pdu(
        AlterContext(call_id=3, pfc_flags=0x13, context_elements=(ContextElement(0, KMS_INTERFACE, (NDR32_SYNTAX,)),))
    )
    for group in (0x11111111, 0x2222, 0):
        config = ServerRpcConfig(ndr64=ndr64, assoc_group_id=group)
        fresh, contexts = _answer_without_memo(config, vlmcs_bind(), alter)
        ServerAssociation(ServerRpcConfig(ndr64=ndr64, assoc_group_id=group ^ 0x5A5A)).receive_data(vlmcs_bind())
        assoc = ServerAssociation(config)
        first = assoc.receive_data(vlmcs_bind())[0].data
        assert first == fresh[0] and decode_pdu(first).assoc_group_id == group
        assert assoc.receive_data(alter)[0].data == fresh[1]
        assert assoc.contexts == contexts and assoc.state is AssociationState.BOUND


def test_the_bind_memo_keeps_settings_apart_and_stays_bounded():
    association_module._bind_memo.clear()
    with_ndr64 = ServerAssociation(ServerRpcConfig(ndr64=True))
    with_ndr64.receive_data(vlmcs_bind())
    without = ServerAssociation(ServerRpcConfig(ndr64=False))
    without.receive_data(vlmcs_bind())
    assert with_ndr64.contexts == {1: TransferSyntax.NDR64}
    assert without.contexts == {0: TransferSyntax.NDR32}
    for call_id in range(association_module.BIND_MEMO_SIZE * 2):
        ServerAssociation().receive_data(vlmcs_bind(call_id=call_id))
    assert len(association_module._bind_memo) <= association_module.BIND_MEMO_SIZE


def test_a_bad_bind_is_not_remembered():
    association_module._bind_memo.clear()
    too_many = encode_pdu(
        Bind(call_id=2, context_elements=tuple(ContextElement(i, KMS_INTERFACE, (NDR32_SYNTAX,)) for i in range(7)))
    )
    assert isinstance(ServerAssociation().receive_data(too_many)[0], Close)
    assert isinstance(ServerAssociation().receive_data(too_many)[0], Close)
    assert association_module._bind_memo == {}
