"""The KMS host on loopback: every captured client stream answered and verified, bad peers, limits, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from pathlib import Path

import pytest
from emu_testing import VECTORS_DIR, requires_vectors, vector_files, whole_pdus
from kms_host_peer import WAIT, kms_request, read_until_closed, running_host, session

from emu.errors import UsageError
from emu.kms.host import E_INVALID_DATA, E_KMS_ID_MISMATCH, default_kms_ids
from emu.kms.messages import open_request, verify_response
from emu.net.host_store import HostStore
from emu.net.kms_server import KmsServer, ServerConfig, parse_listen
from emu.pcap.reader import read_conversations
from emu.rng import seeded
from emu.rpc.association import Call, ServerAssociation, ServerRpcConfig
from emu.rpc.client import ClientAssociation, Reply
from emu.wire.ndr import TransferSyntax, decode_response_stub
from emu.wire.rpc import NCA_S_OP_RNG_ERROR, NCA_S_UNK_IF, NDR64_SYNTAX, BindAck, ContextResult, Response, decode_pdu


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


# --- every captured client stream, replayed into the real server -------------------------------------


def _captured_ndr64(server_stream: bytes) -> bool:
    """Whether the captured server accepted NDR64 (so the client's later PDUs assume it)."""
    for raw in whole_pdus(server_stream):
        if raw[2] == 12:
            ack = decode_pdu(raw)
            assert isinstance(ack, BindAck)
            return any(r.result == ContextResult.ACCEPTANCE and r.transfer_syntax == NDR64_SYNTAX for r in ack.results)
    return False


def _captured_hresults(server_stream: bytes, calls: list[Call]) -> list[int]:
    responses = [decode_pdu(raw) for raw in whole_pdus(server_stream) if raw[2] == 2]
    return [decode_response_stub(r.stub_data, c.syntax).hresult for r, c in zip(responses, calls)]  # type: ignore[union-attr]


async def _replay(addr: tuple[str, int], client_stream: bytes) -> list[bytes]:
    """Send the client's PDUs one at a time, reading the host's answer to each (requests and binds)."""
    reader, writer = await asyncio.open_connection(*addr)
    answers: list[bytes] = []
    try:
        for pdu in whole_pdus(client_stream):
            writer.write(pdu)
            buf = bytearray()
            while not whole_pdus(bytes(buf)):
                chunk = await asyncio.wait_for(reader.read(65536), WAIT)
                assert chunk, "the host closed the connection on a captured client's PDU"
                buf += chunk
            answers.extend(whole_pdus(bytes(buf)))
    finally:
        writer.close()
    return answers


@requires_vectors
@pytest.mark.parametrize("capture", [p.name for p in vector_files()])
def test_captured_client_stream_gets_answers_that_verify(capture):
    name = Path(capture).name
    from_vlmcsd = "-vlmcsd-" in name
    covered = default_kms_ids()
    for conv in read_conversations(VECTORS_DIR / capture):
        client_stream, server_stream = conv.client.data, conv.server.data
        ndr64 = _captured_ndr64(server_stream)
        local = ServerAssociation(ServerRpcConfig(ndr64=ndr64))
        calls = [a for a in local.receive_data(client_stream) if isinstance(a, Call)]
        if not calls:
            continue
        expected = _captured_hresults(server_stream, calls)

        async def go():
            async with running_host(ndr64=ndr64) as server:
                return await _replay(server.addresses[0], client_stream)

        responses = [decode_pdu(raw) for raw in run(go()) if raw[2] == 2]
        assert len(responses) == len(calls), f"{name}: {len(calls)} requests, {len(responses)} responses"
        for call, response, captured in zip(calls, responses, expected):
            assert isinstance(response, Response) and response.call_id == call.call_id
            stub = decode_response_stub(response.stub_data, call.syntax)
            if captured != 0 and from_vlmcsd:
                assert stub.hresult == captured, f"{name}: vlmcsd answered 0x{captured:08X}, we 0x{stub.hresult:08X}"
            elif "badversion" in name or "ncount1001" in name:
                assert stub.hresult == E_INVALID_DATA  # py-kms accepts these; the spec (8.4) says 0x8007000D
            elif open_request(call.kms_request).base.kms_id not in covered:
                assert stub.hresult == E_KMS_ID_MISMATCH  # e.g. vlmcs -G asks for China Government too
            else:
                assert stub.hresult == 0 and stub.kms_data is not None
                verified = verify_response(call.kms_request, stub.kms_data)
                assert verified.ok, f"{name}: {verified.failed}"


@requires_vectors
def test_the_captures_cover_v4_v5_v6_with_ndr32_and_ndr64():
    seen = set()
    for path in vector_files():
        for conv in read_conversations(path):
            local = ServerAssociation(ServerRpcConfig(ndr64=_captured_ndr64(conv.server.data)))
            for call in (a for a in local.receive_data(conv.client.data) if isinstance(a, Call)):
                seen.add((call.kms_request[2], call.syntax))
    assert {(m, s) for m in (4, 5, 6) for s in TransferSyntax} <= seen


# --- exchanges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("major", [4, 5, 6])
@pytest.mark.parametrize("ndr64", [False, True])
def test_several_requests_on_one_connection_count_up_and_verify(major, ndr64):
    rng = seeded(major)
    messages = [kms_request(rng, major=major) for _ in range(3)]

    async def go():
        async with running_host() as server:
            return await session(server.addresses[0], messages, ndr64=ndr64)

    replies = run(go())
    assert all(isinstance(r, Reply) and r.hresult == 0 for r in replies)
    counts = [verify_response(m, r.kms_response).count for m, r in zip(messages, replies)]  # type: ignore[union-attr]
    assert counts == [1, 2, 3]


def test_ndr64_and_btfn_can_be_switched_off():
    rng = seeded(3)

    async def go():
        async with running_host(ndr64=False, btfn=False) as server:
            return await session(server.addresses[0], [kms_request(rng), kms_request(rng)])

    replies = run(go())
    assert [r.syntax for r in replies] == [TransferSyntax.NDR32, TransferSyntax.NDR32]  # type: ignore[union-attr]


def test_uncovered_product_gets_C004F042_and_the_connection_stays_usable():
    rng = seeded(4)
    from emu.kms.host import HostConfig, resolve_kms_ids

    async def go():
        config = HostConfig(kms_ids=resolve_kms_ids(product_names=["win10ent"]))
        async with running_host(config) as server:
            return await session(server.addresses[0], [kms_request(rng, "Office 2019 ProPlus"), kms_request(rng)])

    refused, answered = run(go())
    assert refused.hresult == E_KMS_ID_MISMATCH and refused.kms_response is None  # type: ignore[union-attr]
    assert answered.hresult == 0  # type: ignore[union-attr]


def test_ipv6_loopback_is_served():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    rng = seeded(5)
    message = kms_request(rng)

    async def go():
        async with running_host(listen=(("::1", 0), ("127.0.0.1", 0))) as server:
            v6 = next(a for a in server.addresses if ":" in a[0])
            return await session(v6, [message])

    try:
        (reply,) = run(go())
    except UsageError as exc:
        pytest.skip(f"::1 not available: {exc}")
    assert verify_response(message, reply.kms_response).ok  # type: ignore[union-attr]


def test_the_table_change_is_committed_before_the_answer_is_sent():
    rng = seeded(6)
    store = HostStore()
    committed_at_answer: list[int] = []

    async def go():
        async with running_host(store=store) as server:
            await session(server.addresses[0], [kms_request(rng)])
            committed_at_answer.append(store.client_count())
            return server.stats

    stats = run(go())
    assert committed_at_answer == [1] and stats.commits >= 1


def test_a_failing_commit_sends_no_answer_and_the_host_keeps_serving():
    rng = seeded(7)

    class BrokenOnce(HostStore):
        broken = True

        def commit(self):
            if self.broken:
                self.broken = False
                raise OSError("disk full")
            super().commit()

    async def go():
        async with running_host(store=BrokenOnce()) as server:
            with pytest.raises(ConnectionError):
                await session(server.addresses[0], [kms_request(rng)])
            return await session(server.addresses[0], [kms_request(rng)])

    (reply,) = run(go())
    assert reply.hresult == 0  # type: ignore[union-attr]


def test_one_log_line_per_exchange_with_peer_product_cmid_count_result(caplog):
    rng = seeded(8)
    message = kms_request(rng)

    async def go(json_log):
        async with running_host(json_log=json_log, log_exchanges=True) as server:
            await session(server.addresses[0], [message])

    with caplog.at_level(logging.INFO, logger="emu.host"):
        run(go(False))
        run(go(True))
    lines = [r.getMessage() for r in caplog.records if "cmid" in r.getMessage()]
    assert len(lines) == 2
    assert all(
        word in lines[0] for word in ("peer=127.0.0.1:", "product=Windows 10", "count=1", "result=below-threshold")
    )
    record = json.loads(lines[1])
    assert record["event"] == "exchange" and record["count"] == 1 and record["peer"].startswith("127.0.0.1:")


def test_exchanges_are_not_logged_one_by_one_unless_asked(caplog):
    rng = seeded(8)

    async def go():
        async with running_host() as server:
            await session(server.addresses[0], [kms_request(rng)])

    with caplog.at_level(logging.DEBUG, logger="emu.host"):
        run(go())
    assert not [r for r in caplog.records if "cmid" in r.getMessage()]


# --- bad peers cost only their own connection -----------------------------------------------------------


def _bind_bytes() -> tuple[ClientAssociation, bytes]:
    client = ClientAssociation(offer_ndr64=False, offer_btfn=False)
    return client, client.bind()


def _request_pdu(stub: bytes, *, context: int = 0, opnum: int = 0, call_id: int = 2) -> bytes:
    """A request PDU by hand (so its fields can be wrong)."""
    header = struct.pack(
        "<BBBB4sHHIIHH", 5, 0, 0, 3, b"\x10\x00\x00\x00", 24 + len(stub), 0, call_id, len(stub), context, opnum
    )
    return header + stub


def _ndr32_stub(kms: bytes) -> bytes:
    from emu.wire.ndr import encode_request_stub

    return encode_request_stub(kms, TransferSyntax.NDR32)


async def _raw(addr, *chunks: bytes, read_replies: int = 0, close_expected: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection(*addr)
    try:
        for chunk in chunks:
            writer.write(chunk)
        if close_expected:
            return await read_until_closed(reader)
        data = bytearray()
        while len(whole_pdus(bytes(data))) < read_replies:
            chunk = await asyncio.wait_for(reader.read(65536), WAIT)
            assert chunk, "closed early"
            data += chunk
        return bytes(data)
    finally:
        writer.close()


BAD_STREAMS = {
    "garbage": b"GET / HTTP/1.1\r\nHost: kms\r\n\r\n",
    "oversized frag_length": struct.pack("<BBBB4sHHI", 5, 0, 11, 3, b"\x10\x00\x00\x00", 60000, 0, 2) + b"\x00" * 100,
    "frag_length below header": struct.pack("<BBBB4sHHI", 5, 0, 11, 3, b"\x10\x00\x00\x00", 8, 0, 2),
    "server PTYPE from a client": struct.pack("<BBBB4sHHI", 5, 0, 12, 3, b"\x10\x00\x00\x00", 16, 0, 2),
    "big-endian drep": struct.pack("<BBBB4sHHI", 5, 0, 11, 3, b"\x00\x00\x00\x00", 16, 0, 2),
}


@pytest.mark.parametrize("name", sorted(BAD_STREAMS))
def test_framing_violation_closes_only_that_connection(name):
    rng = seeded(9)

    async def go():
        async with running_host() as server:
            got = await _raw(server.addresses[0], BAD_STREAMS[name], close_expected=True)
            replies = await session(server.addresses[0], [kms_request(rng)])
            return got, replies, server.stats

    got, replies, stats = run(go())
    assert got == b"" and replies[0].hresult == 0  # type: ignore[union-attr]
    assert stats.closed_bad_input == 1


def test_truncated_pdu_then_peer_close_costs_nothing():
    rng = seeded(10)
    _, bind = _bind_bytes()

    async def go():
        async with running_host() as server:
            _reader, writer = await asyncio.open_connection(*server.addresses[0])
            writer.write(bind[:40])
            await writer.drain()
            writer.close()
            return await session(server.addresses[0], [kms_request(rng)])

    assert run(go())[0].hresult == 0  # type: ignore[union-attr]


def _fault_status(data: bytes) -> int:
    (pdu,) = whole_pdus(data)
    assert pdu[2] == 3, f"expected a fault, got PTYPE {pdu[2]}"
    return struct.unpack_from("<I", pdu, 24)[0]


def test_request_before_bind_gets_fault_unknown_interface():
    rng = seeded(11)

    async def go():
        async with running_host() as server:
            return await _raw(server.addresses[0], _request_pdu(_ndr32_stub(kms_request(rng))), read_replies=1)

    assert _fault_status(run(go())) == NCA_S_UNK_IF


@pytest.mark.parametrize(("context", "opnum", "status"), [(7, 0, NCA_S_UNK_IF), (0, 1, NCA_S_OP_RNG_ERROR)])
def test_unknown_context_or_wrong_opnum_gets_its_fault_and_the_connection_goes_on(context, opnum, status):
    rng = seeded(12)
    _, bind = _bind_bytes()
    stub = _ndr32_stub(kms_request(rng))

    async def go():
        async with running_host() as server:
            return await _raw(
                server.addresses[0],
                bind,
                _request_pdu(stub, context=context, opnum=opnum, call_id=3),
                _request_pdu(stub, call_id=4),
                read_replies=3,
            )

    ack, fault, response = whole_pdus(run(go()))
    assert ack[2] == 12 and _fault_status(fault) == status
    assert struct.unpack_from("<I", fault, 12)[0] == 3  # the fault carries the request's call_id
    assert response[2] == 2 and decode_response_stub(decode_pdu(response).stub_data, TransferSyntax.NDR32).hresult == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("bad version", E_INVALID_DATA),
        # seed 13's random bytes do not decrypt to a readable request
        ("undecryptable", E_INVALID_DATA),
        ("short stub", E_INVALID_DATA),
        ("N over 1000", E_INVALID_DATA),
    ],
)
def test_bad_kms_payload_gets_an_error_hresult_on_a_live_connection(kind, expected):
    rng = seeded(13)
    good = kms_request(rng, major=6)
    payload = {
        "bad version": struct.pack("<HH", 0, 7) + good[4:],
        "undecryptable": good[:4] + rng.bytes(len(good) - 4),
        "short stub": None,
        "N over 1000": kms_request(rng, required=1001),
    }[kind]
    stub = b"\x01\x00" if payload is None else _ndr32_stub(payload)
    _, bind = _bind_bytes()

    async def go():
        async with running_host() as server:
            return await _raw(
                server.addresses[0],
                bind,
                _request_pdu(stub, call_id=2),
                _request_pdu(_ndr32_stub(good), call_id=3),
                read_replies=3,
            )

    _, bad, ok = whole_pdus(run(go()))
    hresult = decode_response_stub(decode_pdu(bad).stub_data, TransferSyntax.NDR32).hresult  # type: ignore[union-attr]
    assert hresult == expected
    assert decode_response_stub(decode_pdu(ok).stub_data, TransferSyntax.NDR32).hresult == 0  # type: ignore[union-attr]


# --- limits and life cycle --------------------------------------------------------------------------------


def test_idle_connection_is_closed_after_the_idle_timeout():
    async def go():
        async with running_host(idle_timeout=0.2) as server:
            reader, writer = await asyncio.open_connection(*server.addresses[0])
            started = asyncio.get_running_loop().time()
            data = await read_until_closed(reader, timeout=3)
            writer.close()
            return data, asyncio.get_running_loop().time() - started, server.stats.idle_closed

    data, waited, closed = run(go())
    assert data == b"" and 0.15 <= waited < 3 and closed == 1


def test_connections_over_the_cap_are_closed_and_others_are_served():
    rng = seeded(14)

    async def go():
        async with running_host(max_connections=2) as server:
            addr = server.addresses[0]
            held = [await asyncio.open_connection(*addr) for _ in range(2)]
            await asyncio.sleep(0.05)  # let the host accept both
            reader, writer = await asyncio.open_connection(*addr)
            refused = await read_until_closed(reader, timeout=3)
            writer.close()
            for _, w in held:
                w.close()
            for _ in range(100):  # bounded wait for the host to see the two closes
                if server.open_connections == 0:
                    break
                await asyncio.sleep(0.01)
            replies = await session(addr, [kms_request(rng)])
            return refused, replies, server.stats.refused_connections

    refused, replies, count = run(go())
    assert refused == b"" and count == 1 and replies[0].hresult == 0  # type: ignore[union-attr]


def test_stop_closes_open_connections():
    async def go():
        async with running_host() as server:
            reader, writer = await asyncio.open_connection(*server.addresses[0])
            await asyncio.sleep(0.05)
            stop = asyncio.create_task(server.stop())
            data = await read_until_closed(reader, timeout=3)
            await stop
            writer.close()
            return data, server.open_connections

    assert run(go()) == (b"", 0)


def test_port_in_use_is_a_usage_error():
    from emu.kms.host import HostConfig, KmsHost

    async def go():
        async with running_host() as first:
            host = KmsHost(HostConfig(), seeded(1), 0.0)
            second = KmsServer(host, ServerConfig(listen=(first.addresses[0],)))
            with pytest.raises(UsageError, match=r"cannot listen on 127\.0\.0\.1"):
                await second.start()

    run(go())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1", ("127.0.0.1", 1688)),
        ("127.0.0.1:17688", ("127.0.0.1", 17688)),
        ("[::1]:1689", ("::1", 1689)),
        ("::1", ("::1", 1688)),
        (":1700", ("0.0.0.0", 1700)),
        ("[::]", ("::", 1688)),
    ],
)
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "host:port", "1.2.3.4:70000", "[::1", "[::1]x"])
def test_parse_listen_refuses_bad_text(text):
    with pytest.raises(UsageError):
        parse_listen(text)
