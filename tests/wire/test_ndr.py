"""emu.wire.ndr: RequestActivation stubs in NDR32 and NDR64 (spec 3), lossless on every capture."""

from __future__ import annotations

import pytest
from emu_testing import requires_vectors, vector_pdus

from emu.errors import DecodeError
from emu.wire.ndr import (
    Placement,
    RequestStub,
    ResponseStub,
    TransferSyntax,
    decode_request_stub,
    decode_response_stub,
    encode_request_stub,
    encode_response_stub,
    reencode_stub,
)
from emu.wire.rpc import AlterContext, AlterContextResp, Bind, BindAck, ContextResult, Request, Response, decode_pdu

NDR32, NDR64 = TransferSyntax.NDR32, TransferSyntax.NDR64


def captured_stubs() -> list[tuple[str, str, TransferSyntax, bytes]]:
    """(capture, kind, syntax, stub) for every request and response, the syntax taken from the
    bind/alter results of its conversation and the request's context id."""
    convs: dict[tuple[str, int], dict[str, list]] = {}
    for item in vector_pdus():
        convs.setdefault((item.capture, item.conversation), {"C->S": [], "S->C": []})[item.direction].append(
            decode_pdu(item.data)
        )
    out = []
    for (capture, _), sides in convs.items():
        offers = [p for p in sides["C->S"] if isinstance(p, (Bind, AlterContext))]
        answers = [p for p in sides["S->C"] if isinstance(p, (BindAck, AlterContextResp))]
        contexts: dict[int, TransferSyntax] = {}
        for offer, answer in zip(offers, answers):
            for elem, result in zip(offer.context_elements, answer.results):
                if result.result == ContextResult.ACCEPTANCE:
                    syntax = TransferSyntax.of(result.transfer_syntax)
                    assert syntax is not None
                    contexts[elem.p_cont_id] = syntax
        requests = [p for p in sides["C->S"] if isinstance(p, Request)]
        responses = [p for p in sides["S->C"] if isinstance(p, Response)]
        for request in requests:
            out.append((capture, "request", contexts[request.p_cont_id], request.stub_data))
        for request, response in zip(requests, responses):
            assert response.p_cont_id == request.p_cont_id
            out.append((capture, "response", contexts[request.p_cont_id], response.stub_data))
    return out


@requires_vectors
def test_every_captured_stub_reencodes_byte_identical():
    stubs = captured_stubs()
    kinds = {(kind, syntax) for _, kind, syntax, _ in stubs}
    assert kinds == {("request", NDR32), ("request", NDR64), ("response", NDR32), ("response", NDR64)}
    for capture, kind, syntax, raw in stubs:
        decode = decode_request_stub if kind == "request" else decode_response_stub
        stub = decode(raw, syntax)
        assert reencode_stub(stub) == raw, (capture, kind)
        if kind == "request":
            assert len(stub.kms_data) in (252, 260)
            assert stub.request_size == stub.max_count
        else:
            assert stub.response_size == (stub.max_count or 0)


@requires_vectors
def test_pykms_client_v4_request_keeps_its_four_extra_pad_bytes():
    v4 = [
        decode_request_stub(raw, syntax)
        for capture, kind, syntax, raw in captured_stubs()
        if kind == "request" and capture.startswith("pykms-") and "-v4-" in capture
    ]
    assert v4 and all(s.trailer == bytes(4) and len(s.kms_data) == 252 for s in v4)
    assert all(encode_request_stub(s.kms_data, s.syntax, trailer=s.trailer) == reencode_stub(s) for s in v4)


@requires_vectors
def test_ndr64_error_stub_from_the_reject_capture_is_20_bytes():
    errors = [
        (syntax, raw)
        for capture, kind, syntax, raw in captured_stubs()
        if capture == "edge-vlmcs-vlmcsd-v6-reject-ncount1001-ndr64-8007000D.pcap" and kind == "response"
    ]
    assert sorted(len(raw) for _, raw in errors) == [12, 20]
    for syntax, raw in errors:
        stub = decode_response_stub(raw, syntax)
        assert stub.is_error and stub.hresult == 0x8007000D
        assert encode_response_stub(None, 0x8007000D, syntax) == raw


def test_ndr32_request_stub_layout():
    kms = bytes(range(252))
    raw = encode_request_stub(kms, NDR32)
    assert raw[:8] == bytes.fromhex("fc000000 fc000000") and len(raw) == 260
    assert decode_request_stub(raw, NDR32) == RequestStub(NDR32, kms, 252, 252)


def test_ndr64_request_stub_layout():
    raw = encode_request_stub(bytes(260), NDR64)
    assert raw[:16] == bytes.fromhex("0401000000000000 0401000000000000") and len(raw) == 276


def test_ndr32_success_response_pads_before_the_hresult():
    raw = encode_response_stub(b"\xaa" * 158, 0, NDR32)
    assert len(raw) == 176  # spec 3.4: v4 response alloc_hint 176
    assert raw[:12] == bytes.fromhex("9e000000 00000200 9e000000")
    assert raw[-6:] == bytes(6)


def test_ndr64_success_response_layout():
    raw = encode_response_stub(b"\xbb" * 260, 0, NDR64)
    assert len(raw) == 288  # spec 3.4: v6 NDR64 alloc_hint 288
    assert raw[8:16] == bytes.fromhex("0000020000000000")


def test_error_stubs_are_12_and_20_bytes():
    assert encode_response_stub(None, 0x8007000D, NDR32) == bytes.fromhex("00000000 00000000 0d000780")
    assert encode_response_stub(None, 0xC004F042, NDR64) == bytes(16) + bytes.fromhex("42f004c0")


def test_server_placement_of_a_nonzero_hresult_is_recognised():
    # Q10: HRESULT written right after 2 bytes of data, then the 2 pad bytes.
    raw = bytes.fromhex("02000000 00000200 02000000 abcd 05000080 0000")
    stub = decode_response_stub(raw, NDR32)
    assert stub == ResponseStub(NDR32, b"\xab\xcd", 0x80000005, 2, 0x20000, 2, b"\0\0", Placement.SERVER)
    assert reencode_stub(stub) == raw


def test_ndr_placement_of_a_nonzero_hresult_is_recognised():
    raw = bytes.fromhex("02000000 00000200 02000000 abcd 0000 05000080")
    stub = decode_response_stub(raw, NDR32)
    assert stub.placement is Placement.NDR and stub.hresult == 0x80000005
    assert reencode_stub(stub) == raw


@pytest.mark.parametrize("syntax", [NDR32, NDR64])
def test_request_max_count_past_the_end_is_a_decode_error(syntax):
    raw = encode_request_stub(bytes(10), syntax)[:-1]
    with pytest.raises(DecodeError, match="max_count 10 runs past"):
        decode_request_stub(raw, syntax)


@pytest.mark.parametrize("syntax", [NDR32, NDR64])
def test_short_stubs_are_decode_errors(syntax):
    with pytest.raises(DecodeError):
        decode_request_stub(bytes(2 * syntax.word - 1), syntax)
    with pytest.raises(DecodeError):
        decode_response_stub(bytes(2 * syntax.word + 3), syntax)
    with pytest.raises(DecodeError, match="runs past"):
        decode_response_stub(encode_response_stub(bytes(8), 0, syntax)[:-1], syntax)
