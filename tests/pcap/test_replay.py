"""emu replay: captured conversations re-sent to a live emu host, answers compared with verdicts."""

from __future__ import annotations

import asyncio
import json
import socket
import time

from emu_testing import ROOT

from emu.cli import main
from emu.kms.host import HostConfig, KmsHost
from emu.net.kms_server import KmsServer, ServerConfig
from emu.pcap.replay import ReplayOptions, replay_capture
from emu.rng import seeded

PCAPS = ROOT / "pcaps"


async def _replay(name: str, **kw) -> object:
    async with KmsServer(
        KmsHost(HostConfig(), seeded(5), time.time()), ServerConfig(listen=(("127.0.0.1", 0),))
    ) as srv:
        options = ReplayOptions(target=srv.addresses[0], timeout=3.0, **kw)
        return await replay_capture(PCAPS / name, options, seeded(9))


def test_replay_of_a_below_threshold_exchange_against_a_fresh_host_is_same():
    report = asyncio.run(_replay("emu-v6-below-threshold.pcap", renew_cmid=True))
    assert [(v.ptype, v.verdict) for v in report.verdicts] == [("bind", "same"), ("request", "same")]
    assert report.ok


def test_replay_of_an_hresult_refusal_is_same():
    report = asyncio.run(_replay("emu-v6-hresult-C004F042.pcap"))
    assert report.ok, report.to_json()


def test_replay_names_the_count_when_the_host_counts_differently():
    report = asyncio.run(_replay("emu-v6-ndr64-windows10.pcap", rewrite_time=True, renew_cmid=True))
    verdicts = {(v.ptype, v.index): v for v in report.verdicts}
    assert verdicts[("bind", 0)].verdict == "same" and verdicts[("alter_context", 1)].verdict == "same"
    request = verdicts[("request", 2)]
    assert request.verdict == "differs"
    assert [d.split(":")[0] for d in request.differences] == ["count"], request.differences
    assert not report.ok


def test_replay_against_a_closed_port_is_an_error_verdict():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    report = asyncio.run(
        replay_capture(PCAPS / "emu-v4-ndr32-windows7.pcap", ReplayOptions(target=("127.0.0.1", port), timeout=1.0))
    )
    assert [v.verdict for v in report.verdicts] == ["error"]
    assert "cannot connect" in report.verdicts[0].error


def test_replay_as_load_is_bounded_by_repeat_and_concurrency():
    report = asyncio.run(_replay("emu-v6-below-threshold.pcap", renew_cmid=False, repeat=6, concurrency=3, rate=200))
    assert len(report.verdicts) == 12
    assert {v.round for v in report.verdicts} == set(range(6))


def test_cli_replay_json_and_exit_code(capsys):
    async def serve_and_run() -> int:
        async with KmsServer(
            KmsHost(HostConfig(), seeded(5), time.time()), ServerConfig(listen=(("127.0.0.1", 0),))
        ) as srv:
            host, port = srv.addresses[0][:2]
            return await asyncio.to_thread(
                main, ["replay", str(PCAPS / "emu-v6-hresult-C004F042.pcap"), "--target", f"{host}:{port}", "--json"]
            )

    assert asyncio.run(serve_and_run()) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["counts"]["same"] == 2


def test_cli_replay_of_a_file_without_kms_reports_it(tmp_path, capsys):
    from emu.pcap.writer import TcpFlow, write_pcap

    flow = TcpFlow(("10.0.0.1", 5000), ("10.0.0.2", 80)).handshake().send(True, b"GET / HTTP/1.0\r\n\r\n").close()
    path = write_pcap(tmp_path / "http.pcap", flow.frames)
    assert main(["replay", str(path), "--target", "127.0.0.1:9"]) == 1
    assert "no KMS conversation" in capsys.readouterr().out


def test_cli_replay_of_a_missing_file_is_a_usage_error(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nope.pcap"), "--target", "127.0.0.1:1688"]) == 2
    assert "no such capture" in capsys.readouterr().err
