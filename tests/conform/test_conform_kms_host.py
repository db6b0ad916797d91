"""``emu conform kms-host``: every case passes against emu's own host, and each broken variant of the
host fails exactly the cases naming the rule it breaks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from conform_testing import failed_ids, verdicts
from emu_testing import VECTORS_DIR, requires_vectors
from kms_host_peer import running_host

from emu.cli import main
from emu.conform import passive
from emu.conform.kms_host import KMS_HOST
from emu.conform.kms_probes import HostContext
from emu.conform.model import Result, run_suite, select
from emu.conform.recorder import Recorder
from emu.errors import UsageError
from emu.kms.host import HostConfig, KmsHost
from emu.net.kms_server import KmsServer, ServerConfig
from emu.rng import seeded
from emu.rpc import association
from emu.wire.rpc import Bind


def _suite_against(tweak: Callable[[KmsServer], None] | None = None, **server_kwargs: Any) -> list[Result]:
    async def go() -> list[Result]:
        async with running_host(**server_kwargs) as server:
            if tweak is not None:
                tweak(server)
            ctx = HostContext(server.addresses[0][:2], Recorder(), seeded(7), timeout=2.0)
            return await asyncio.wait_for(run_suite(KMS_HOST, list(KMS_HOST.cases), ctx), 60)

    return asyncio.run(go())


def test_every_case_names_a_known_probe_and_judge_and_a_source():
    KMS_HOST.validate()
    assert all(c.source and c.text for c in KMS_HOST.cases)


def test_emu_host_passes_every_case():
    results = _suite_against()
    assert failed_ids(results) == set()
    v = verdicts(results)
    # the default emu host does not check clock skew: the rule says so instead of failing
    assert v["behaviour.time_skew"] == "skip"
    assert [k for k, x in v.items() if x != "pass"] == ["behaviour.time_skew"]


def test_host_enforcing_time_skew_passes_the_skew_case():
    async def go() -> list[Result]:
        async with running_host(HostConfig(check_time_skew=True)) as server:
            ctx = HostContext(server.addresses[0][:2], Recorder(), seeded(3), timeout=2.0)
            cases, _ = select(KMS_HOST.cases, ["behaviour.time_skew"], [])
            return await run_suite(KMS_HOST, cases, ctx)

    assert verdicts(asyncio.run(go())) == {"behaviour.time_skew": "pass"}


def _cache_wrapper(server: KmsServer, count: Callable[[Any, int], int]) -> None:
    host = server.host if hasattr(server, "host") else server._host
    original = host.cache.record
    calls = [0]

    def record(*args: Any) -> Any:
        calls[0] += 1
        recorded = original(*args)
        return dataclasses.replace(recorded, count=count(recorded, calls[0]))

    host.cache.record = record


def test_host_answering_a_fixed_count_fails_the_counting_cases():
    results = _suite_against(lambda s: _cache_wrapper(s, lambda rec, n: 30))
    assert failed_ids(results) == {"count.distinct", "count.cumulative", "count.capacity"}
    v = verdicts(results)
    # 30 is above both thresholds from the start: the threshold rules say they cannot tell
    assert v["count.threshold.office"] == v["count.threshold.client"] == "inconclusive"


def test_host_recounting_repeated_cmids_fails_the_repeat_case():
    per_app: dict[Any, int] = {}

    def recount(rec: Any, n: int) -> int:
        app = rec.record.app_id
        per_app[app] = per_app.get(app, 0) + 1
        return min(per_app[app], rec.capacity)

    results = _suite_against(lambda s: _cache_wrapper(s, recount))
    assert failed_ids(results) == {"count.repeat"}


def test_host_without_ndr64_fails_the_ndr64_case_and_its_epid_claiming_a_build_that_has_it():
    results = _suite_against(ndr64=False)
    assert failed_ids(results) == {"rpc.bind.ndr64", "kms.epid.form"}
    (epid,) = [r for r in results if r.case.id == "kms.epid.form"]
    assert "NDR64" in epid.evidence


def _suite_on(config: HostConfig, **server_kwargs: Any) -> list[Result]:
    async def go() -> list[Result]:
        async with running_host(config, **server_kwargs) as server:
            ctx = HostContext(server.addresses[0][:2], Recorder(), seeded(7), timeout=2.0)
            return await asyncio.wait_for(run_suite(KMS_HOST, list(KMS_HOST.cases), ctx), 60)

    return asyncio.run(go())


def test_host_without_ndr64_on_a_build_before_ndr64_fails_only_the_ndr64_case():
    assert failed_ids(_suite_on(HostConfig(host_build=7601), ndr64=False)) == {"rpc.bind.ndr64"}


def test_bind_ack_one_byte_longer_than_its_frag_length_fails_only_that_case(monkeypatch):
    original = association.ServerAssociation._bind

    def long_bind(self: Any, pdu: Any) -> Any:
        action = original(self, pdu)
        return association.Send(action.data + b"\x00") if isinstance(pdu, Bind) else action

    monkeypatch.setattr(association.ServerAssociation, "_bind", long_bind)
    results = _suite_against()
    assert failed_ids(results) == {"rpc.bind_ack.frag_length"}


class _LoopThread:
    """A host on its own loop in a thread, so ``main()`` can run its own loop against it."""

    def __init__(self, **server_kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        host = KmsHost(HostConfig(), seeded(1), time.time())
        self.server = KmsServer(host, ServerConfig(listen=(("127.0.0.1", 0),), **server_kwargs), rng=seeded(2))
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        host, port = self.server.addresses[0][:2]
        self.address = f"{host}:{port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def no_ndr64_host():
    lt = _LoopThread(ndr64=False)
    yield lt.address
    lt.close()


def test_cli_writes_json_junit_and_a_capture_whose_frames_the_failures_name(no_ndr64_host, tmp_path, capsys):
    junit, pcap = tmp_path / "r.xml", tmp_path / "run.pcap"
    argv = ["conform", "kms-host", no_ndr64_host, "--only", "rpc.bind", "--json", "--junit", str(junit)]
    code = main([*argv, "--capture", str(pcap), "--seed", "1"])
    assert code == 1  # a case failed
    out = json.loads(capsys.readouterr().out)
    by_id = {c["id"]: c for c in out["cases"]}
    assert set(by_id) == {"rpc.bind.ndr32", "rpc.bind.ndr64", "rpc.bind.btfn", "rpc.bind.all"}
    assert by_id["rpc.bind.ndr64"]["verdict"] == "fail" and by_id["rpc.bind.ndr64"]["frames"]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "4"
    # the named frames hold the bind and the rejecting bind_ack
    from emu.pcap.reader import read_conversations

    first, last = (int(x) for x in by_id["rpc.bind.ndr64"]["frames"].split("-"))
    assert last > first and pcap.stat().st_size > 0
    assert len(read_conversations(pcap)) == 4


def test_cli_passes_against_emu_host_with_table_output(capsys):
    lt = _LoopThread()
    try:
        code = main(["conform", "kms-host", lt.address, "--skip", "count", "--skip", "robust"])
    finally:
        lt.close()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rpc.bind.ndr64" in out and " fail" not in out.split("cases:")[-1].replace("0 fail", "")


def test_list_prints_every_case_with_its_source(capsys):
    assert main(["conform", "kms-host", "--list"]) == 0
    out = capsys.readouterr().out
    for case in KMS_HOST.cases:
        assert case.id in out
    assert "source: docs/conformance.md Counting" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["conform"], "name a suite"),
        (["conform", "kms-host"], "give the KMS host"),
        (["conform", "kms-host", "127.0.0.1:1", "--only", "nosuch"], "matches no case"),
        (["conform", "kms-host", ".lab.test"], "needs --dns-server"),
        (["conform", "--pcap", "/nonexistent.pcap"], "no such file"),
    ],
)
def test_usage_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_pcap_judges_the_passive_rules_of_a_recorded_run(tmp_path, monkeypatch):
    pcap = tmp_path / "run.pcap"

    async def record() -> None:
        async with running_host() as server:
            ctx = HostContext(server.addresses[0][:2], Recorder(), seeded(9), timeout=2.0)
            await run_suite(KMS_HOST, [c for c in KMS_HOST.cases if c.passive], ctx)
            ctx.recorder.write(pcap)

    asyncio.run(record())
    results = passive.judge_capture(pcap)
    assert {r.case.id for r in results} == {c.id for c in KMS_HOST.cases if c.passive}
    assert failed_ids(results) == set()
    assert verdicts(results)["kms.v4.verifies"] == "pass"

    original = association.ServerAssociation._bind

    def long_bind(self: Any, pdu: Any) -> Any:
        action = original(self, pdu)
        return association.Send(action.data + b"\x00") if isinstance(pdu, Bind) else action

    monkeypatch.setattr(association.ServerAssociation, "_bind", long_bind)
    asyncio.run(record())
    assert failed_ids(passive.judge_capture(pcap)) == {"rpc.bind_ack.frag_length"}


def test_usage_error_for_bad_selector_raises_usage_error():
    with pytest.raises(UsageError):
        select(KMS_HOST.cases, ["nosuch"], [])


@requires_vectors
def test_pcap_rules_on_reference_captures_vlmcsd_conforms_pykms_regenerates_its_epid():
    vlmcsd = VECTORS_DIR / "edge-vlmcs-vlmcsd-v6-5req-1conn-win10ent.pcap"
    assert failed_ids(passive.judge_capture(vlmcsd)) == set()
    # py-kms makes up a new ePID per request: one CSVLK, several ePIDs
    pykms = VECTORS_DIR / "edge-vlmcs-pykms-v6-3req-newconn-each-T.pcap"
    assert failed_ids(passive.judge_capture(pykms)) == {"kms.epid.stable"}
    # a refused request is no evidence against the response rules
    refused = verdicts(passive.judge_capture(VECTORS_DIR / "edge-vlmcs-vlmcsd-k3-unknown-kmsid-C004F042.pcap"))
    assert refused["kms.v6.verifies"] == "skip"


def test_unreachable_host_exits_3_without_running_cases(capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        assert main(["conform", "kms-host", f"127.0.0.1:{port}", "--timeout", "1"]) == 3
    assert "cannot reach" in capsys.readouterr().err
