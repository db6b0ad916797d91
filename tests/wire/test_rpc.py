"""emu.wire.rpc: the DCE/RPC PDUs against the spec tables, the annotated exchange and every capture."""

from __future__ import annotations

import uuid

import pytest
from emu_testing import requires_vectors, vector_pdus

from emu.errors import DecodeError, UsageError
from emu.wire.rpc import (
    KMS_INTERFACE,
    NCA_S_UNK_IF,
    NDR32_SYNTAX,
    NDR64_SYNTAX,
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    BindNak,
    ContextElement,
    ContextResult,
    Fault,
    PfcFlag,
    PType,
    Request,
    Response,
    ResultEntry,
    RpcHeader,
    RpcResultEntry,
    RpcSyntaxId,
    SyntaxId,
    btfn_bitmask,
    btfn_syntax,
    decode_pdu,
    encode_pdu,
    frag_length_of,
    secondary_address_bytes,
)

ZERO = SyntaxId(uuid.UUID(int=0), 0)


def _hex(text: str) -> bytes:
    """Bytes from a hex dump whose lines may carry '#' comments."""
    return bytes.fromhex("".join(line.split("#")[0] for line in text.splitlines()))


# Spec 11: vlmcs -> vlmcsd bind (160 bytes).
BIND_160 = _hex("""
05 00 0b 13 10 00 00 00 a0 00 00 00 02 00 00 00   # v5.0 bind flags 13 drep, frag 160, auth 0, call 2
d0 16 d0 16 00 00 00 00                           # max_xmit 5840, max_recv 5840, assoc_group 0
03 00 00 00                                       # n_context_elem 3, reserved
00 00 01 00                                       # ctx0, 1 transfer syntax
75 21 c8 51 4e 84 50 47 b0 d8 ec 25 55 55 bc 06 01 00 00 00   # KMS interface v1.0
04 5d 88 8a eb 1c c9 11 9f e8 08 00 2b 10 48 60 02 00 00 00   # NDR32 v2
01 00 01 00                                       # ctx1
75 21 c8 51 4e 84 50 47 b0 d8 ec 25 55 55 bc 06 01 00 00 00
33 05 71 71 ba be 37 49 83 19 b5 db ef 9c cc 36 01 00 00 00   # NDR64 v1
02 00 01 00                                       # ctx2
75 21 c8 51 4e 84 50 47 b0 d8 ec 25 55 55 bc 06 01 00 00 00
2c 1c b7 6c 12 98 40 45 03 00 00 00 00 00 00 00 01 00 00 00   # BTFN bitmask 03, v1
""")

# Spec 11: the bind_ack (108 bytes), NDR64 on.
BIND_ACK_108 = _hex("""
05 00 0c 13 10 00 00 00 6c 00 00 00 02 00 00 00   # header: bind_ack, flags copied, frag 108, call 2
d0 16 d0 16 d8 2c ce 6c                           # frags copied, assoc_group 6cce2cd8
05 00 31 36 38 38 00                              # secondary address "1688\\0" (L = 5)
00                                                # pad to offset 32
03 00 00 00                                       # n_results 3
02 00 02 00 00000000000000000000000000000000 00000000   # NDR32 provider rejection, reason 2
00 00 00 00 33057171babe37498319b5dbef9ccc36 01000000   # NDR64 accepted
03 00 03 00 00000000000000000000000000000000 00000000   # BTFN negotiate_ack 3
""")

# Spec 11: alter_context_resp (56 bytes) with vlmcsd's uninitialised pad "31 36" (Q2).
ALTER_RESP_56 = _hex("""
05 00 0f 03 10 00 00 00 38 00 00 00 02 00 00 00   # alter_context_resp, flags forced 03
d0 16 d0 16 d8 2c ce 6c                           # frags, assoc_group
00 00                                             # secondary address length 0
31 36                                             # 2 junk pad bytes
01 00 00 00                                       # n_results 1
00 00 00 00 045d888aeb1cc9119fe808002b104860 02000000   # NDR32 accepted
""")


def test_annotated_bind_decodes_to_three_kms_contexts():
    pdu = decode_pdu(BIND_160)
    assert pdu == Bind(
        call_id=2,
        pfc_flags=0x13,
        max_xmit_frag=5840,
        max_recv_frag=5840,
        assoc_group_id=0,
        context_elements=(
            ContextElement(0, KMS_INTERFACE, (NDR32_SYNTAX,)),
            ContextElement(1, KMS_INTERFACE, (NDR64_SYNTAX,)),
            ContextElement(2, KMS_INTERFACE, (btfn_syntax(3),)),
        ),
    )
    assert encode_pdu(pdu) == BIND_160


def test_annotated_bind_ack_rejects_ndr32_and_accepts_ndr64():
    pdu = decode_pdu(BIND_ACK_108)
    assert isinstance(pdu, BindAck)
    assert pdu.assoc_group_id == 0x6CCE2CD8
    assert pdu.secondary_address == secondary_address_bytes("1688")
    assert pdu.results == (
        ResultEntry(ContextResult.PROVIDER_REJECTION, 2, ZERO),
        ResultEntry(ContextResult.ACCEPTANCE, 0, NDR64_SYNTAX),
        ResultEntry(ContextResult.NEGOTIATE_ACK, 3, ZERO),
    )
    assert encode_pdu(pdu) == BIND_ACK_108


def test_alter_context_resp_keeps_uninitialised_pad_bytes():
    pdu = decode_pdu(ALTER_RESP_56)
    assert isinstance(pdu, AlterContextResp)
    assert pdu.pad == b"16"
    assert encode_pdu(pdu) == ALTER_RESP_56
    zeroed = encode_pdu(AlterContextResp(call_id=2, pfc_flags=3, assoc_group_id=0x6CCE2CD8, results=pdu.results))
    assert zeroed == ALTER_RESP_56[:26] + b"\0\0" + ALTER_RESP_56[28:]


def test_fixed_structs_have_the_spec_sizes():
    assert RpcHeader.sizeof() == 16
    assert RpcSyntaxId.sizeof() == 20
    assert RpcResultEntry.sizeof() == 24


@requires_vectors
def test_every_captured_pdu_reencodes_byte_identical():
    pdus = vector_pdus()
    assert len(pdus) > 300
    for item in pdus:
        pdu = decode_pdu(item.data)
        assert encode_pdu(pdu) == item.data, (item.capture, item.direction, item.index)


def test_encode_computes_frag_length_and_counts():
    data = encode_pdu(Bind(call_id=7, context_elements=(ContextElement(0, KMS_INTERFACE, (NDR32_SYNTAX,)),)))
    assert len(data) == 72 and frag_length_of(data) == 72
    assert data[24] == 1 and data[30] == 1


def test_request_with_object_uuid_round_trips():
    obj = uuid.UUID("11111111-2222-4333-8444-555555555555")
    pdu = Request(call_id=3, pfc_flags=0x83, alloc_hint=4, object=obj, stub_data=b"abcd")
    data = encode_pdu(pdu)
    assert len(data) == 44 and data[24:40] == obj.bytes_le
    assert decode_pdu(data) == pdu


def test_request_object_uuid_must_match_its_flag():
    with pytest.raises(UsageError):
        encode_pdu(Request(call_id=3, pfc_flags=0x03, object=uuid.UUID(int=1)))


def test_fault_is_32_bytes_and_round_trips():
    pdu = Fault(call_id=9, pfc_flags=0x23, alloc_hint=32, status=NCA_S_UNK_IF, cancel_count=0xAB, reserved=0xCD)
    data = encode_pdu(pdu)
    assert len(data) == 32 and data[24:28] == bytes.fromhex("0300011c")
    assert decode_pdu(data) == pdu


def test_bind_nak_round_trips():
    pdu = BindNak(call_id=1, provider_reject_reason=4, versions=((5, 0), (5, 1)))
    data = encode_pdu(pdu)
    assert data[2] == PType.BIND_NAK and len(data) == 23
    assert decode_pdu(data) == pdu


def test_bind_with_several_transfer_syntaxes_per_element_round_trips():
    pdu = AlterContext(call_id=2, context_elements=(ContextElement(5, KMS_INTERFACE, (NDR64_SYNTAX, NDR32_SYNTAX)),))
    data = encode_pdu(pdu)
    assert len(data) == 28 + 24 + 40
    assert decode_pdu(data) == pdu


def test_response_keeps_cancel_count_and_reserved():
    pdu = Response(call_id=2, alloc_hint=12, p_cont_id=1, cancel_count=1, reserved=2, stub_data=bytes(12))
    assert decode_pdu(encode_pdu(pdu)) == pdu


def test_btfn_bitmask_is_read_from_wire_bytes_8_to_15():
    assert btfn_bitmask(btfn_syntax(3)) == 3
    assert btfn_bitmask(NDR32_SYNTAX) is None
    assert btfn_syntax(3).uuid == uuid.UUID("6cb71c2c-9812-4540-0300-000000000000")


def test_unknown_ptype_is_named_in_the_error():
    data = bytearray(BIND_160)
    data[2] = 16
    for decode in (decode_pdu,):
        with pytest.raises(DecodeError, match="PTYPE 16") as info:
            decode(bytes(data))
        assert info.value.path == "header -> ptype"


def test_frag_length_disagreeing_with_buffer_is_rejected():
    for decode in (decode_pdu,):
        with pytest.raises(DecodeError, match="frag_length 160"):
            decode(BIND_160[:-1])
        with pytest.raises(DecodeError, match="frag_length"):
            decode(BIND_160 + b"\0")


def test_header_shorter_than_16_bytes_is_rejected():
    with pytest.raises(DecodeError, match="shorter than the 16-byte"):
        decode_pdu(BIND_160[:15])
    with pytest.raises(DecodeError):
        frag_length_of(b"\x05\x00")


def test_context_count_running_past_the_end_names_the_element():
    data = bytearray(BIND_160)
    data[24] = 4
    with pytest.raises(DecodeError, match="context_elements -> 3"):
        decode_pdu(bytes(data))


def test_unknown_context_result_is_rejected():
    data = bytearray(BIND_ACK_108)
    data[36] = 9
    for decode in (decode_pdu,):
        with pytest.raises(DecodeError, match="unknown context result 9"):
            decode(bytes(data))


def test_bind_ack_pad_of_wrong_length_is_a_usage_error():
    with pytest.raises(UsageError, match="pad must be 1 bytes"):
        encode_pdu(BindAck(call_id=2, secondary_address=b"1688\0", pad=b"\0\0"))


def test_flags_are_an_intflag():
    assert PfcFlag.FIRST_FRAG | PfcFlag.LAST_FRAG | PfcFlag.DID_NOT_EXECUTE == 0x23


def test_split_pdus_cuts_by_frag_length_and_returns_the_rest():
    from emu.wire.rpc import split_pdus

    one = bytes.fromhex("05000b03100000001000000002000000")  # a 16-byte, header-only PDU
    assert split_pdus(one + one + one[:7]) == ([one, one], one[:7])
    bad = one[:8] + (15).to_bytes(2, "little") + one[10:]  # frag_length below the header size
    assert split_pdus(one + bad) == ([one], bad)
    assert split_pdus(b"") == ([], b"")
