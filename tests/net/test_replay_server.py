"""emu replay --as-server: clients get a recorded host's answers, rebuilt for their own requests."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import pytest

from emu.cli import main
from emu.kms import products
from emu.kms.client import HostAddress
from emu.net.kms_client import ExchangeStatus, exchange
from emu.net.replay_server import CapturedHost, load_captured_answers, replay_server
from emu.rng import seeded
from emu.wire.kms import LicenseStatus, RequestBase, Version
from emu_testing import ROOT, VECTORS_DIR

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
        version=Version(major), vm_info=0, license_status=LicenseStatus.OOB_GRACE, binding_expiration=43200,
        app_id=sku.app_id, sku_id=sku.id, kms_id=sku.kms_id, cmid=uuid.UUID(bytes=rng.bytes(16), version=4),
        required_client_count=sku.threshold, client_time=_FT_EPOCH + int(time.time() * 10_000_000),
        previous_cmid=uuid.UUID(int=0), workstation_name="replay-test",
    )


def _captured(name: str):
    """The ePID/count/HRESULT the capture's first answer holds (cross-checked with VECTORS)."""
    first = load_captured_answers(_vector(name))[0]
    major, epid, count, hresult = VECTORS[name]
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
    from emu.net.pcap_write import TcpFlow, write_pcap

    path = write_pcap(tmp_path / "empty.pcap", TcpFlow(("10.0.0.1", 5000), ("10.0.0.2", 1688)).handshake().close().frames)
    with pytest.raises(UsageError, match="no answered KMS request"):
        replay_server(path, ("127.0.0.1", 0))


@pytest.mark.parametrize("name", ["vlmcs-vlmcsd-v6-ndr64-win10ent.pcap", "edge-vlmcs-vlmcsd-k3-unknown-kmsid-C004F042.pcap"])
def test_emu_client_activate_against_emu_replay_as_server(name: str, capsys):
    captured = _captured(name)
    server = subprocess.Popen(
        [sys.executable, "-m", "emu", "replay", "--as-server", str(_vector(name)), "--listen", "127.0.0.1:0",
         "--max-duration", "30"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        code = main(["client", "activate", f"127.0.0.1:{port}", "-l", "Windows 10 Enterprise", "--count", "2", "--json"])
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
