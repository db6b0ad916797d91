"""``emu conform dns``: every case passes against emu's DNS server and BIND named; a server that
applies half an update fails the atomicity case, and only it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from conform_testing import failed_ids, verdicts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "dns"))
from dns_testing import KEY_NAME, SECRET, ZONE_TEXT, key_file_text
from test_dns_named import named  # noqa: F401  (the named fixture: its own config dir, stopped by PID)

from emu.cli import main
from emu.conform.dns_suite import DNS, DnsContext
from emu.conform.model import Result, run_suite
from emu.conform.recorder import Recorder
from emu.dns import resolver as resolver_module
from emu.dns.tsig import TsigKey
from emu.dns.update import UpdateOutcome, _apply, _prescan, evaluate_update
from emu.dns.zone import load_master_file
from emu.net.dns_server import DnsServer
from emu.rng import seeded
from emu.wire.dns import Rcode, canonical_name

KEY = TsigKey.make(KEY_NAME, SECRET)


def _run(address: tuple[str, int], key: TsigKey | None = KEY) -> list[Result]:
    ctx = DnsContext(address, "kms.test.", key, Recorder(), seeded(11), timeout=2.0)
    return asyncio.run(asyncio.wait_for(run_suite(DNS, list(DNS.cases), ctx), 60))


def _against_emu(key: TsigKey | None = KEY) -> list[Result]:
    async def go() -> list[Result]:
        zone = load_master_file(ZONE_TEXT, "kms.test.")
        async with DnsServer([zone], keys=[KEY]) as server:
            ctx = DnsContext(server.addresses[0][:2], "kms.test.", key, Recorder(), seeded(11), timeout=2.0)
            return await asyncio.wait_for(run_suite(DNS, list(DNS.cases), ctx), 60)

    return asyncio.run(go())


def test_every_dns_case_names_a_known_probe_and_judge():
    DNS.validate()


def test_emu_dns_server_passes_every_case():
    results = _against_emu()
    assert failed_ids(results) == set(), [(r.case.id, r.evidence) for r in results if r.verdict.value == "fail"]
    assert set(verdicts(results).values()) == {"pass"}


def test_without_a_key_the_tsig_cases_skip_and_updates_are_inconclusive():
    v = verdicts(_against_emu(key=None))
    assert {v[k] for k in v if k.startswith("tsig.")} == {"skip"}
    assert v["update.add"] == "inconclusive" and v["query.soa"] == "pass"
    assert "fail" not in v.values()


def test_server_applying_half_an_update_fails_only_the_atomicity_case(monkeypatch):
    def half(zones: Any, message: Any, authorize: Any) -> UpdateOutcome:
        outcome = evaluate_update(zones, message, authorize)
        if outcome.rcode != Rcode.NOTZONE or message.answers or not message.questions:
            return outcome  # only an update section with an RR outside the zone is half applied
        zone = zones.get(canonical_name(message.questions[0].qname))
        if zone is None:
            return outcome
        editor = zone.edit()
        for rr in message.authority:  # applies the RRs before the bad one, then reports the error
            if _prescan(zone, rr) is not None:
                break
            _apply(editor, zone, rr)
        if not editor.changes:
            return outcome
        return UpdateOutcome(outcome.rcode, outcome.reason, zone.origin, editor.commit(), tuple(editor.changes))

    monkeypatch.setattr(resolver_module, "evaluate_update", half)
    results = _against_emu()
    assert failed_ids(results) == {"update.atomic"}


@pytest.mark.interop
def test_bind_named_passes_every_case(named):  # noqa: F811
    results = _run(named)
    assert failed_ids(results) == set(), [(r.case.id, r.evidence) for r in results if r.verdict.value == "fail"]


def test_cli_dns_suite_with_key_file_and_junit(tmp_path, capsys):
    key_file = tmp_path / "key.conf"
    key_file.write_text(key_file_text())

    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = DnsServer([load_master_file(ZONE_TEXT, "kms.test.")], keys=[KEY])
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        host, port = server.addresses[0][:2]
        code = main(
            [
                "conform",
                "dns",
                f"{host}:{port}",
                "--zone",
                "kms.test",
                "--tsig-key",
                str(key_file),
                "--junit",
                str(tmp_path / "j.xml"),
                "--only",
                "query",
                "--only",
                "tsig",
            ]
        )
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tsig.badsig" in out and (tmp_path / "j.xml").read_text().count("<testcase") == 10


def test_kms_host_target_found_by_srv_and_dns_capture_written(tmp_path, capsys):
    """``emu conform kms-host .kms.test --dns-server`` uses the SRV target; the dns run's capture holds UDP and TCP."""
    import json
    import threading
    import time

    from emu.kms.host import HostConfig, KmsHost
    from emu.net.kms_server import KmsServer, ServerConfig
    from emu.pcap.reader import read_conversations

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    kms = KmsServer(KmsHost(HostConfig(), seeded(1), time.time()), ServerConfig(listen=(("127.0.0.1", 0),)))
    asyncio.run_coroutine_threadsafe(kms.start(), loop).result(10)
    kms_port = kms.addresses[0][1]
    zone_text = ZONE_TEXT.replace(
        "_vlmcs._tcp  600 IN SRV 0 0 1688 kms1", f"_vlmcs._tcp  600 IN SRV 0 0 {kms_port} kms1"
    ).replace("kms1         A    10.0.0.1", "kms1         A    127.0.0.1")
    dns = DnsServer([load_master_file(zone_text, "kms.test.")], keys=[KEY])
    asyncio.run_coroutine_threadsafe(dns.start(), loop).result(10)
    try:
        host, port = dns.addresses[0][:2]
        code = main(["conform", "kms-host", ".kms.test", "--dns-server", f"{host}:{port}", "--only", "rpc.bind.ndr32"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"127.0.0.1:{kms_port}" in out and "rpc.bind.ndr32" in out
        pcap = tmp_path / "dns.pcap"
        key_file = tmp_path / "key.conf"
        key_file.write_text(key_file_text())
        argv = ["conform", "dns", f"{host}:{port}", "--zone", "kms.test", "--tsig-key", str(key_file)]
        assert main([*argv, "--only", "query.truncation", "--capture", str(pcap), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)["cases"][0]
        assert result["verdict"] == "pass" and result["frames"]
        assert read_conversations(pcap)  # the TCP query is a conversation of its own
    finally:
        for server in (dns, kms):
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
