"""emu replay --as-server: clients get a recorded host's answers, rebuilt for their own requests."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import pytest
from emu_testing import ROOT, VECTORS_DIR

from emu.cli import main
from emu.kms import products
from emu.kms.client import HostAddress
from emu.net.kms_client import ExchangeStatus, exchange
from emu.pcap.replay_server import CapturedHost, load_captured_answers, replay_server
from emu.rng import seeded
from emu.wire.kms import LicenseStatus, RequestBase, Version

_FT_EPOCH = 116444736000000000

#: vector -> (KMS protocol the client speaks, captured ePID, captured count, captured HRESULT)
VECTORS = {
    "vlmcs-vlmcsd-v6-ndr64-win10ent.pcap": (6, "05426-00206-555-072633-03-7194-9200.0000-3332025", 50, 0),
    "pykms-pykms-v5-windows8.pcap": (5, None, None, 0),
    "vlmcs-vlmcsd-v4-ndr32-win10ent.pcap": (4, None, None, 0),
    "edge-vlmcs-vlmcsd-k3-unknown-kmsid-C004F042.pcap": (6, None, None, 0xC004F042),
}


def _vector(name: str):
    path = VECTORS_DIR / name
    if not path.is_file():
        pytest.skip(f"reference capture {name} missing (set EMU_VECTORS)")
    return path


def _base(major: int, rng) -> RequestBase:
    sku = products.lookup("Windows 10 Enterprise")
    return RequestBase(
        version=Version(major),
        vm_info=0,
        license_status=LicenseStatus.OOB_GRACE,
        binding_expiration=43200,
        app_id=sku.app_id,
        sku_id=sku.id,
        kms_id=sku.kms_id,
        cmid=uuid.UUID(bytes=rng.bytes(16), version=4),
        required_client_count=sku.threshold,
        client_time=_FT_EPOCH + int(time.time() * 10_000_000),
        previous_cmid=uuid.UUID(int=0),
        workstation_name="replay-test",
    )


def _captured(name: str):
    """The ePID/count/HRESULT the capture's first answer holds (cross-checked with VECTORS)."""
    first = load_captured_answers(_vector(name))[0]
    _major, epid, count, hresult = VECTORS[name]
    assert first.hresult == hresult
    if epid is not None:
        assert (first.epid, first.count) == (epid, count)
    return first


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_driver_gets_the_captured_answer_with_every_check_passing(name: str):
    captured = _captured(name)
    major = VECTORS[name][0]

    async def run():
        rng = seeded(11)
        async with replay_server(_vector(name), ("127.0.0.1", 0), seeded(3)) as srv:
            host = HostAddress(*srv.addresses[0])
            return [await exchange(host, _base(major, rng), rng=rng) for _ in range(2)]

    for result in asyncio.run(run()):
        if captured.hresult:
            assert result.status is ExchangeStatus.HOST_ERROR and result.hresult == captured.hresult
            continue
        assert result.verified is not None and result.verified.ok, result.verified.failed
        assert result.verified.version == Version(major)
        assert (result.verified.epid, result.verified.count) == (captured.epid, captured.count)
        assert result.verified.activation_interval == captured.activation_interval
        if major == 6:
            assert result.verified.hwid == captured.hwid


def test_v5_answer_uses_the_new_requests_iv_and_v6_a_different_one():
    async def run(name: str, major: int):
        rng = seeded(12)
        async with replay_server(_vector(name), ("127.0.0.1", 0), seeded(4)) as srv:
            return await exchange(HostAddress(*srv.addresses[0]), _base(major, rng), rng=rng)

    v5 = asyncio.run(run("pykms-pykms-v5-windows8.pcap", 5))
    assert v5.kms_response[4:20] == v5.kms_request[4:20]
    v6 = asyncio.run(run("vlmcs-vlmcsd-v6-ndr64-win10ent.pcap", 6))
    assert v6.kms_response[4:20] != v6.kms_request[4:20]
    assert v6.verified.check("hmac_ok").passed


def test_captured_answers_are_used_in_turn_for_the_same_kind_of_request():
    answers = load_captured_answers(_vector("edge-vlmcs-vlmcsd-v6-5req-1conn-win10ent.pcap"))
    assert len(answers) == 5
    host = CapturedHost(answers, seeded(1))
    chosen = [host.choose(6, answers[0].kms_id) for _ in range(6)]
    assert chosen[:5] == answers and chosen[5] == answers[0]


def test_an_unreadable_request_gets_the_hresult_the_captured_host_gave_one():
    answers = load_captured_answers(_vector("edge-vlmcs-vlmcsd-badversion-K7.0-8007000D.pcap"))
    host = CapturedHost(answers, seeded(1))
    answer = host.handle_request(b"\x00\x00\x07\x00" + bytes(100), 0.0)
    assert (answer.response, answer.hresult) == (None, 0x8007000D)


def test_a_capture_without_kms_answers_is_a_usage_error(tmp_path):
    from emu.errors import UsageError
    from emu.pcap.writer import TcpFlow, write_pcap

    path = write_pcap(
        tmp_path / "empty.pcap", TcpFlow(("10.0.0.1", 5000), ("10.0.0.2", 1688)).handshake().close().frames
    )
    with pytest.raises(UsageError, match="no answered KMS request"):
        replay_server(path, ("127.0.0.1", 0))


@pytest.mark.parametrize(
    "name", ["vlmcs-vlmcsd-v6-ndr64-win10ent.pcap", "edge-vlmcs-vlmcsd-k3-unknown-kmsid-C004F042.pcap"]
)
def test_emu_client_activate_against_emu_replay_as_server(name: str, capsys):
    captured = _captured(name)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emu",
            "replay",
            "--as-server",
            str(_vector(name)),
            "--listen",
            "127.0.0.1:0",
            "--max-duration",
            "30",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        code = main(
            ["client", "activate", f"127.0.0.1:{port}", "-l", "Windows 10 Enterprise", "--count", "2", "--json"]
        )
        report = json.loads(capsys.readouterr().out)
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=10)
    if captured.hresult:
        assert code == 4 and report["status"] == "host-error"
        assert {r["hresult"] for r in report["results"]} == {captured.hresult}
    else:
        assert code == 0 and report["status"] == "activated"
        for result in report["results"]:
            assert all(c["passed"] for c in result["checks"]), result["checks"]
            assert result["response"]["epid"] == captured.epid and result["response"]["count"] == captured.count
    assert f"answered {len(report['results'])} requests" in out  # a refused client stops asking


def _faulting_capture(path):
    """A vlmcsd-style conversation (no such vector exists): bind accepted on context 0, then a
    Windows 10 Enterprise v6 request on context 1, never negotiated, answered with the 32-byte
    fault vlmcsd sends (spec 2.8: flags 0x23, alloc_hint 32, status nca_s_unk_if, call_id 2 from
    vlmcsd's own counter although the request's call_id is 3, quirk Q1). Real PDUs: emu's client
    bind, emu's server bind_ack, an encoded request PDU and fault PDU."""
    from emu.kms.messages import build_request
    from emu.pcap.writer import TcpFlow, write_pcap
    from emu.rpc.association import Send, ServerAssociation, ServerRpcConfig
    from emu.rpc.client import ClientAssociation
    from emu.wire.ndr import TransferSyntax, encode_request_stub
    from emu.wire.rpc import NCA_S_UNK_IF, Fault, Request, encode_pdu

    rng = seeded(21)
    bind = ClientAssociation(offer_ndr64=False, offer_btfn=False).bind()
    (ack,) = ServerAssociation(ServerRpcConfig(ndr64=False, btfn=False, assoc_group_id=0x1234)).receive_data(bind)
    assert isinstance(ack, Send)
    stub = encode_request_stub(build_request(_base(6, rng), rng), TransferSyntax.NDR32)
    request = encode_pdu(Request(call_id=3, alloc_hint=len(stub), p_cont_id=1, opnum=0, stub_data=stub))
    fault = encode_pdu(Fault(call_id=2, pfc_flags=0x23, alloc_hint=32, status=NCA_S_UNK_IF))
    assert len(fault) == 32
    flow = TcpFlow(("10.0.0.10", 49200), ("10.0.0.1", 1688)).handshake()
    flow.send(True, bind).send(False, ack.data).send(True, request).send(False, fault).close()
    return write_pcap(path, flow.frames)


def test_a_captured_fault_is_loaded_with_its_request_paired_in_order(tmp_path):
    from emu.wire.rpc import NCA_S_UNK_IF

    (answer,) = load_captured_answers(_faulting_capture(tmp_path / "fault.pcap"))
    sku = products.lookup("Windows 10 Enterprise")
    assert (answer.major, answer.kms_id, answer.hresult, answer.fault) == (6, sku.kms_id, 0, NCA_S_UNK_IF)
    host = CapturedHost([answer], seeded(1))
    rng = seeded(22)
    from emu.kms.messages import build_request

    reply = host.handle_request(build_request(_base(6, rng), rng), 0.0)
    assert (reply.response, reply.hresult, reply.fault, reply.ok) == (None, 0, NCA_S_UNK_IF, False)
    assert reply.log_fields()["result"] == "fault 0x1C010003"


def test_the_replay_server_answers_with_the_captured_fault(tmp_path):
    from emu.wire.rpc import NCA_S_UNK_IF

    path = _faulting_capture(tmp_path / "fault.pcap")

    async def run():
        rng = seeded(23)
        async with replay_server(path, ("127.0.0.1", 0), seeded(5)) as srv:
            result = await exchange(HostAddress(*srv.addresses[0]), _base(6, rng), rng=rng)
            return result, srv.stats

    result, stats = asyncio.run(run())
    assert result.status is ExchangeStatus.FAULT and result.fault_status == NCA_S_UNK_IF
    fault = result.received[-32:]
    assert len(result.received) > 32 and fault[2] == 3 and fault[3] == 0x23  # PTYPE fault, vlmcsd's flags
    assert int.from_bytes(fault[8:10], "little") == 32 and int.from_bytes(fault[24:28], "little") == NCA_S_UNK_IF
    assert (stats.faults, stats.exchanges, stats.refusals) == (1, 1, 1)


def test_emu_client_activate_reports_the_captured_fault(tmp_path, capsys):
    path = _faulting_capture(tmp_path / "fault.pcap")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emu",
            "replay",
            "--as-server",
            str(path),
            "--listen",
            "127.0.0.1:0",
            "--max-duration",
            "30",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        code = main(["client", "activate", f"127.0.0.1:{port}", "-l", "Windows 10 Enterprise", "--json"])
        report = json.loads(capsys.readouterr().out)
        human = main(["client", "activate", f"127.0.0.1:{port}", "-l", "Windows 10 Enterprise"])
        text = capsys.readouterr()
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=10)
    assert code == human == 4 and report["status"] == "fault"
    (result,) = report["results"]
    assert result["fault_status"] == 0x1C010003 and result["hresult"] == 0
    assert "DCE/RPC fault, status 0x1C010003 (nca_s_unk_if)" in text.out + text.err
    assert "answered 2 requests" in out
