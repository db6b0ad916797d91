"""emu.net.kms_client over loopback: captured hosts replayed, emu's host, and hosts that misbehave."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import pytest
from emu_testing import requires_vectors, vector_files, whole_pdus

from emu.clock import unix_to_filetime
from emu.errors import DecodeError, KmsError
from emu.kms.client import Answered, HostAddress, HostError, RequestTemplate, Unreachable, VerificationFailed
from emu.kms.crypto import cbc_decrypt
from emu.kms.host import HostConfig, KmsHost
from emu.kms.messages import message_layout, open_request
from emu.kms.products import lookup
from emu.net.kms_client import ExchangeStatus, KmsClientSession, RpcOptions, exchange
from emu.net.kms_server import KmsServer, ServerConfig
from emu.pcap.reader import read_conversations
from emu.rng import seeded
from emu.rpc.association import Call, Send, ServerAssociation, ServerRpcConfig
from emu.wire.kms import Version, decode_request_base, decode_version
from emu.wire.ndr import TransferSyntax, decode_request_stub, decode_response_stub
from emu.wire.rpc import Bind, Fault, PfcFlag, Request, btfn_bitmask, decode_pdu, encode_pdu

NDR32, NDR64 = TransferSyntax.NDR32, TransferSyntax.NDR64
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def run(coro):  # type: ignore[no-untyped-def]
    """Run a test coroutine with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _serve(handler: Handler) -> tuple[asyncio.AbstractServer, HostAddress]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, HostAddress("127.0.0.1", port)


async def _read_pdu(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(16)
    return head + await reader.readexactly(int.from_bytes(head[8:10], "little") - 16)


def _template(sku_name: str = "win10ent", major: int | None = None, required: int | None = None) -> RequestTemplate:
    sku = lookup(sku_name)
    return RequestTemplate(
        Version(major or sku.protocol), sku.app_id, sku.id, sku.kms_id, required or sku.threshold, "client1.lab.test"
    )


def _base(template: RequestTemplate, cmid: uuid.UUID | None = None):  # type: ignore[no-untyped-def]
    return template.base(cmid or uuid.uuid4(), unix_to_filetime(time.time()))


# --- replaying captured hosts ---------------------------------------------------------------------


def _kms_offset(pdu: bytes) -> tuple[int, int] | None:
    """(offset, length) of the KMS response inside a captured response PDU."""
    stub = pdu[24:]
    for syntax in (NDR32, NDR64):
        try:
            decoded = decode_response_stub(stub, syntax)
        except DecodeError:
            continue
        if decoded.kms_data:
            return 24 + stub.find(decoded.kms_data), len(decoded.kms_data)
    return None


def _replay_cases() -> list[tuple[str, int]]:
    cases = []
    for path in vector_files():
        if "vlmcs-" not in path.name or path.name.startswith("pykms-"):
            continue
        for conv in read_conversations(path):
            client, server = whole_pdus(conv.client.data), whole_pdus(conv.server.data)
            requests = [p for p in client if p[2] == 0]
            answers = [p for p in server if p[2] in (2, 3)]
            if requests and len(requests) == len(answers) and len(client) == len(server):
                cases.append((path.name, conv.index))
    return cases


def _captured(name: str, index: int) -> tuple[list[bytes], list[bytes]]:
    path = next(p for p in vector_files() if p.name == name)
    conv = next(c for c in read_conversations(path) if c.index == index)
    return whole_pdus(conv.client.data), whole_pdus(conv.server.data)


def _options_of(bind_pdu: bytes) -> RpcOptions:
    bind = decode_pdu(bind_pdu)
    assert isinstance(bind, Bind)
    syntaxes = [e.transfer_syntaxes[0] for e in bind.context_elements]
    return RpcOptions(
        offer_ndr64=NDR64.syntax_id in syntaxes,
        offer_btfn=any(btfn_bitmask(s) is not None for s in syntaxes),
        multiplex=bool(bind.pfc_flags & PfcFlag.CONC_MPX),
        reply_timeout=5,
        first_call_id=bind.call_id,
    )


def _captured_requests(client: list[bytes]):  # type: ignore[no-untyped-def]
    """What the captured client asked, in order: the opened request, or for a protocol version no host
    opens (vlmcs -K3.0 / -K7.0) its base and IV read in the layout vlmcs sent it in."""
    out = []
    for pdu in client:
        if pdu[2] != 0:
            continue
        req = decode_pdu(pdu)
        assert isinstance(req, Request)
        stubs = []
        for syntax in (NDR32, NDR64):
            try:
                stubs.append(decode_request_stub(req.stub_data, syntax).kms_data)
            except DecodeError:
                continue
        kms = max(stubs, key=len)  # the other syntax reads an NDR64 stub as an empty NDR32 one
        try:
            out.append(open_request(kms))
        except KmsError:
            out.append(_unopenable(kms))
    return out


def _unopenable(kms: bytes) -> SimpleNamespace:
    """A request of an unsupported version, as vlmcs builds it: the v4 layout below 5, the v6 one above."""
    version = decode_version(kms)
    if message_layout(version.major) == 4:
        return SimpleNamespace(base=decode_request_base(kms[:-16]), iv=None, version=version)
    iv = kms[4:20]
    plain = cbc_decrypt(6, iv, kms[20:])
    return SimpleNamespace(base=decode_request_base(plain[: -plain[-1]]), iv=iv, version=version)


def _replayer(server_pdus: list[bytes], tamper: Callable[[bytes], bytes] | None = None) -> Handler:
    """A host that answers the i-th client PDU with the i-th captured server PDU."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for pdu in server_pdus:
                await _read_pdu(reader)
                writer.write(tamper(pdu) if tamper is not None and pdu[2] == 2 else pdu)
                await writer.drain()
            await reader.read()  # until the client closes
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


async def _replay(name: str, index: int, tamper: Callable[[bytes], bytes] | None = None):  # type: ignore[no-untyped-def]
    client, server_pdus = _captured(name, index)
    opened = _captured_requests(client)
    server, host = await _serve(_replayer(server_pdus, tamper))
    results = []
    async with server, KmsClientSession(host, _options_of(client[0])) as session:
        for req in opened:
            results.append(await session.request(req.base, seeded(0), iv=req.iv))
    return client, server_pdus, opened, results


REPLAY_CASES = _replay_cases()
#: Every vlmcs conversation of the reference captures whose requests were all answered (none dropped).
EXPECTED_REPLAY_CASES = 52


@requires_vectors
def test_every_answered_vlmcs_conversation_of_the_captures_is_a_replay_case() -> None:
    assert len(REPLAY_CASES) == EXPECTED_REPLAY_CASES
    for name, index in REPLAY_CASES:
        assert _captured_requests(_captured(name, index)[0])  # each one readable, none silently left out


@requires_vectors
@pytest.mark.parametrize("name,index", REPLAY_CASES, ids=[f"{n}#{i}" for n, i in REPLAY_CASES])
def test_client_reproduces_the_captured_vlmcs_stream_and_accepts_the_captured_answers(name: str, index: int) -> None:
    client, server_pdus, opened, results = run(_replay(name, index))
    assert b"".join(r.sent for r in results) == b"".join(client)  # byte for byte what vlmcs sent
    answers = [p for p in server_pdus if p[2] in (2, 3)]
    for req, answer, result in zip(opened, answers, results):
        if _kms_offset(answer) is None:
            assert result.status is ExchangeStatus.HOST_ERROR
            assert result.hresult == int.from_bytes(answer[-4:], "little")
            assert isinstance(result.outcome, HostError)
        else:
            assert result.verified is not None and result.verified.ok, result.verified.failed
            expected = (
                ExchangeStatus.ACTIVATED
                if (result.count or 0) >= req.base.required_client_count
                else ExchangeStatus.BELOW_THRESHOLD
            )
            assert result.status is expected
            assert isinstance(result.outcome, Answered)


def _tamper_case(major: int) -> tuple[str, int]:
    for name, index in REPLAY_CASES:
        client, server = _captured(name, index)
        opened = _captured_requests(client)
        if opened[0].version.major == major and all(_kms_offset(p) for p in server if p[2] == 2):
            return name, index
    pytest.skip(f"no v{major} capture with answered requests")


#: Which byte of the KMS response is flipped, and the check that must then fail.
TAMPERS = {
    4: (-1, "mac_ok"),  # the last byte of the V4-MAC
    5: (4, "ivs_ok"),  # the response IV must equal the request IV
    6: (4, "hmac_ok"),  # the response IV is covered by the HMAC
}


@requires_vectors
@pytest.mark.parametrize("major", [4, 5, 6])
def test_client_names_the_failed_check_of_a_tampered_captured_answer(major: int) -> None:
    name, index = _tamper_case(major)
    where, check = TAMPERS[major]

    def tamper(pdu: bytes) -> bytes:
        span = _kms_offset(pdu)
        assert span is not None
        offset, length = span
        at = offset + (where % length)
        return pdu[:at] + bytes([pdu[at] ^ 0x01]) + pdu[at + 1 :]

    _, _, _, results = run(_replay(name, index, tamper))
    result = results[0]
    assert result.status is ExchangeStatus.VERIFICATION_FAILED
    assert result.verified is not None and check in result.verified.failed
    assert check in result.detail
    assert isinstance(result.outcome, VerificationFailed) and check in result.outcome.failed_checks


# --- emu's own host -------------------------------------------------------------------------------------

FAMILIES = {
    "windows-client": "win10ent",
    "windows-server": "srv2019dc",
    "office-2010": "o2010",
    "office-2013+": "o2019",
}


async def _against_emu_host(sku_name: str, major: int, ndr64: bool, btfn: bool):  # type: ignore[no-untyped-def]
    host = KmsHost(HostConfig(), seeded(5), time.time())
    async with KmsServer(host, ServerConfig(listen=(("127.0.0.1", 0),)), rng=seeded(6)) as server:
        address = HostAddress(*server.addresses[0])
        template = _template(sku_name, major, required=1)
        async with KmsClientSession(address, RpcOptions(offer_ndr64=ndr64, offer_btfn=btfn)) as session:
            return [await session.request(_base(template), seeded(n)) for n in range(2)], host


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("btfn", [False, True], ids=["btfn-off", "btfn-on"])
@pytest.mark.parametrize("ndr64", [False, True], ids=["ndr32", "ndr64"])
@pytest.mark.parametrize("major", [4, 5, 6])
def test_client_activates_against_emus_host(major: int, ndr64: bool, btfn: bool, family: str) -> None:
    results, host = run(_against_emu_host(FAMILIES[family], major, ndr64, btfn))
    # vlmcs's order: the first request on a connection in NDR32, later ones in NDR64 when negotiated
    assert [r.syntax for r in results] == [NDR32, NDR64 if ndr64 else NDR32]
    assert [r.new_connection for r in results] == [True, False]
    bind_size = {(False, False): 72, (False, True): 116, (True, False): 116, (True, True): 160}[(ndr64, btfn)]
    assert int.from_bytes(results[0].sent[8:10], "little") == bind_size
    for n, result in enumerate(results, start=1):
        assert result.status is ExchangeStatus.ACTIVATED, result.detail
        assert result.verified is not None and result.verified.failed == ()
        assert result.warnings == ()
        assert result.count == n
        assert result.verified.epid == host.epid_for(lookup(FAMILIES[family]).kms_id)
        assert (result.verified.hwid == HostConfig().hwid) if major == 6 else result.verified.hwid is None


def test_exchange_below_threshold_reports_the_count_and_the_lifecycle_outcome() -> None:
    async def go():  # type: ignore[no-untyped-def]
        async with KmsServer(
            KmsHost(HostConfig(), seeded(1), time.time()), ServerConfig(listen=(("127.0.0.1", 0),))
        ) as s:
            return await exchange(HostAddress(*s.addresses[0]), _base(_template("srv2019dc")), rng=seeded(2))

    result = run(go())
    assert result.status is ExchangeStatus.BELOW_THRESHOLD
    assert result.detail == "count 1 is below the required 5"
    assert result.outcome == Answered(1, 120, 10080, result.verified.epid)  # type: ignore[union-attr]


def test_exchange_reports_the_hosts_hresult_for_an_uncovered_product() -> None:
    async def go():  # type: ignore[no-untyped-def]
        config = HostConfig(kms_ids=frozenset({lookup("o2019").kms_id}))
        async with KmsServer(KmsHost(config, seeded(1), time.time()), ServerConfig(listen=(("127.0.0.1", 0),))) as s:
            return await exchange(HostAddress(*s.addresses[0]), _base(_template("win10ent")), rng=seeded(2))

    result = run(go())
    assert result.status is ExchangeStatus.HOST_ERROR
    assert result.hresult == 0xC004F042
    assert "0xC004F042 (SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH)" in result.detail
    assert result.outcome == HostError(0xC004F042, "SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH")


def test_session_reconnects_when_the_host_closed_between_requests() -> None:
    async def go():  # type: ignore[no-untyped-def]
        host = KmsHost(HostConfig(), seeded(1), time.time())
        async with KmsServer(host, ServerConfig(listen=(("127.0.0.1", 0),), idle_timeout=0.05)) as s:  # noqa: SIM117
            async with KmsClientSession(HostAddress(*s.addresses[0]), RpcOptions()) as session:
                first = await session.request(_base(_template(required=1)), seeded(1))
                for _ in range(500):  # bounded: until the host's idle timeout closed the connection
                    if session.peer_closed:
                        break
                    await asyncio.sleep(0.01)
                second = await session.request(_base(_template(required=1)), seeded(2))
                return first, second

    first, second = run(go())
    assert first.activated and second.activated
    assert second.new_connection and second.syntax is NDR32


# --- hosts that misbehave ----------------------------------------------------------------------------


def _bind_then(reply: Callable[[Call, ServerAssociation], bytes | None]) -> Handler:
    """A host that binds properly, then answers the first request with ``reply(call)`` (None: silence)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assoc = ServerAssociation(ServerRpcConfig())
        try:
            while True:
                pdu = await _read_pdu(reader)
                for action in assoc.receive_data(pdu):
                    if isinstance(action, Send):
                        writer.write(action.data)
                    elif isinstance(action, Call):
                        data = reply(action, assoc)
                        if data is None:
                            await reader.read()
                            return
                        writer.write(data)
                        await writer.drain()
                        if len(data) < 16 or int.from_bytes(data[8:10], "little") != len(data):
                            return  # a truncated or oversized PDU: close after it
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


async def _against(handler: Handler, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    server, host = await _serve(handler)
    async with server:
        return await exchange(
            host, _base(_template(required=1)), rng=seeded(1), options=RpcOptions(reply_timeout=timeout)
        )


def _fault(call: Call, assoc: ServerAssociation) -> bytes:
    return encode_pdu(
        Fault(
            call_id=call.call_id,
            pfc_flags=PfcFlag.FIRST_FRAG | PfcFlag.LAST_FRAG,
            alloc_hint=0,
            p_cont_id=call.context_id,
            cancel_count=0,
            status=0x1C010002,
        )
    )


def test_a_fault_is_reported_as_host_error_with_its_status() -> None:
    result = run(_against(_bind_then(_fault)))
    assert result.status is ExchangeStatus.FAULT
    assert result.fault_status == 0x1C010002
    assert result.detail == "the host answered with a DCE/RPC fault, status 0x1C010002 (nca_s_op_rng_error)"
    assert result.outcome == HostError(0x1C010002, "DCE/RPC fault")


def test_an_hresult_is_reported_by_name() -> None:
    result = run(_against(_bind_then(lambda call, assoc: assoc.respond(call, None, 0xC004F06C))))
    assert result.status is ExchangeStatus.HOST_ERROR
    assert result.detail == "the host refused the request with HRESULT 0xC004F06C (SL_E_VL_INVALID_TIMESTAMP)"


def test_garbage_instead_of_a_bind_ack_is_a_protocol_error_naming_the_check() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_pdu(reader)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    result = run(_against(garbage))
    assert result.status is ExchangeStatus.PROTOCOL_ERROR
    assert result.rpc_check == "frag_length"
    assert "frag_length 13344 outside 16..5840"  # bytes 8-9 are " 4" in result.detail
    assert isinstance(result.outcome, Unreachable)


def test_a_well_framed_pdu_of_the_wrong_type_is_a_ptype_error() -> None:
    def request_back(call: Call, assoc: ServerAssociation) -> bytes:
        return call.request and encode_pdu(call.request)  # echo the request: a request PDU instead of a response

    result = run(_against(_bind_then(request_back)))
    assert result.status is ExchangeStatus.PROTOCOL_ERROR
    assert result.rpc_check == "ptype"
    assert "got Request, expected Response or Fault" in result.detail


def test_a_truncated_response_followed_by_close_is_reported_with_its_sizes() -> None:
    result = run(_against(_bind_then(lambda call, assoc: assoc.respond(call, b"\0" * 40, 0)[:30])))
    assert result.status is ExchangeStatus.PROTOCOL_ERROR
    assert result.rpc_check == "truncated"
    assert "closed the connection after 30 of" in result.detail and "bytes of the response" in result.detail


def test_an_oversized_frag_length_is_refused_before_reading_it() -> None:
    def oversized(call: Call, assoc: ServerAssociation) -> bytes:
        pdu = bytearray(assoc.respond(call, None, 0x8007000D))
        pdu[8:10] = (0xFFFF).to_bytes(2, "little")
        return bytes(pdu)

    result = run(_against(_bind_then(oversized)))
    assert result.status is ExchangeStatus.PROTOCOL_ERROR
    assert result.rpc_check == "frag_length"
    assert "frag_length 65535 outside 16..5840" in result.detail


def test_silence_after_the_request_is_a_timeout() -> None:
    result = run(_against(_bind_then(lambda call, assoc: None), timeout=0.2))
    assert result.status is ExchangeStatus.UNREACHABLE
    assert result.detail.endswith("waited 0.2 s for the response")


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(exchange(HostAddress("127.0.0.1", port), _base(_template()), rng=seeded(1)))
    assert result.status is ExchangeStatus.UNREACHABLE
    assert result.detail.startswith(f"cannot connect to 127.0.0.1:{port}")
    assert result.sent == b"" and result.local is None


def test_a_host_that_closes_without_answering_is_unreachable() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_pdu(reader)
        writer.close()

    result = run(_against(hang_up))
    assert result.status is ExchangeStatus.UNREACHABLE
    assert result.detail.endswith("closed the connection without sending the bind_ack")
