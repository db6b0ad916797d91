"""``emu client activate`` in-process: output lines, -v checks, --json, exit codes, bad hosts, --capture."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from emu_testing import TSHARK_ENV, require_tool

from emu.cli import main
from emu.kms.host import HostConfig, KmsHost
from emu.kms.products import lookup
from emu.net.kms_server import KmsServer, ServerConfig
from emu.rng import seeded


class _LoopThread:
    """An asyncio loop in a thread, so servers run while ``main()`` runs its own loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[_LoopThread]:
    lt = _LoopThread()
    yield lt
    lt.close()


def _emu_host(loop_thread: _LoopThread, config: HostConfig | None = None, listen: str = "127.0.0.1") -> str:
    async def start() -> KmsServer:
        server = KmsServer(
            KmsHost(config or HostConfig(), seeded(1), time.time()), ServerConfig(listen=((listen, 0),)), rng=seeded(2)
        )
        await server.start()
        return server

    server = loop_thread.call(start())
    host, port = server.addresses[0]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _raw_host(loop_thread: _LoopThread, handler: Callable[..., Any]) -> str:
    async def start() -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        return int(server.sockets[0].getsockname()[1])

    return f"127.0.0.1:{loop_thread.call(start())}"


def activate(*argv: str) -> int:
    return main(["client", "activate", "--seed", "7", *argv])


FAMILIES = {
    "windows-client": "win10ent",
    "windows-server": "srv2019dc",
    "office-2010": "o2010",
    "office-2013+": "o2019",
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("btfn", ["--btfn", "--no-btfn"])
@pytest.mark.parametrize("ndr", ["--ndr64", "--no-ndr64"])
@pytest.mark.parametrize("protocol", ["4", "5", "6"])
def test_activate_prints_one_line_per_request_and_exits_0(
    loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str], protocol: str, ndr: str, btfn: str, family: str
) -> None:
    target = _emu_host(loop_thread)
    code = activate(target, "--product", FAMILIES[family], "--protocol", protocol, ndr, btfn, "-n", "2", "-r", "1")
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    second = "NDR64" if ndr == "--ndr64" else "NDR32"
    assert lines[0].startswith(f"{target} request 1 of 2 (KMS V{protocol}.0, NDR32): activated: count 1/1, ePID ")
    assert lines[1].startswith(f"{target} request 2 of 2 (KMS V{protocol}.0, {second}): activated: count 2/1, ePID ")
    assert ("HwId 3A1C049600B60076" in lines[0]) == (protocol == "6")
    assert all(line.endswith("activation 120 min, renewal 10080 min") for line in lines)


def test_without_count_it_sends_until_the_threshold_is_met(
    loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _emu_host(loop_thread)
    assert activate(target, "--product", "srv2019dc") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[1].split(",")[0] for line in lines] == [
        "below threshold: count 1/5",
        "below threshold: count 2/5",
        "below threshold: count 3/5",
        "below threshold: count 4/5",
        "activated: count 5/5",
    ]


def test_below_threshold_exits_3(loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert activate(_emu_host(loop_thread), "--product", "win10ent", "-n", "1") == 3
    assert "below threshold: count 1/25" in capsys.readouterr().out


def test_fixed_cmid_sends_one_request_and_verbose_names_every_check(
    loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    cmid = "11111111-2222-4333-8444-555555555555"
    assert activate(_emu_host(loop_thread), "-v", "--protocol", "6", "-c", cmid, "-r", "1", "-w", "pc1", "-m") == 0
    out = capsys.readouterr().out
    assert out.count(" request 1 of 1 ") == 1
    for text in (
        f"Client machine ID           : {cmid}",
        "Workstation name            : pc1",
        "Client is a virtual machine : yes",
        "KMS host HwId               : 3A1C049600B60076",
    ):
        assert text in out
    for check in (
        "decode_ok",
        "decrypt_success",
        "hash_ok",
        "ivs_ok",
        "iv_not_suspicious",
        "hmac_ok",
        "version_ok",
        "cmid_ok",
        "client_time_ok",
        "pid_length_ok",
        "size_ok",
    ):
        assert f"  {check:<28}: ok" in out


def test_json_carries_every_field_and_the_exit_code(
    loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    sku = lookup("o2013")
    assert activate(_emu_host(loop_thread), "--json", "--product", "o2013", "-n", "1", "-r", "1") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "activated" and doc["exit_code"] == 0
    result = doc["results"][0]
    assert result["request"]["sku_id"] == str(sku.id) and result["request"]["version"] == "5.0"
    assert result["response"]["count"] == 1 and result["response"]["hwid"] is None
    assert {c["name"] for c in result["checks"]} >= {"decode_ok", "hash_ok", "ivs_ok", "cmid_ok"}
    assert all(c["passed"] for c in result["checks"])


def test_guids_override_the_product_and_an_uncovered_kms_id_exits_4(
    loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    config = HostConfig(kms_ids=frozenset({lookup("o2019").kms_id}))
    code = activate(
        _emu_host(loop_thread, config),
        "--product",
        "o2019",
        "--kms-id",
        str(lookup("win10ent").kms_id),
        "--app-id",
        str(lookup("win10ent").app_id),
    )
    assert code == 4
    assert "host-error: the host refused the request with HRESULT 0xC004F042" in capsys.readouterr().out


def test_ipv6_target(loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    target = _emu_host(loop_thread, listen="::1")
    assert activate(target, "--ip", "6", "-n", "1", "-r", "1") == 0
    assert capsys.readouterr().out.startswith(f"{target} request 1 of 1")


def test_new_connection_per_request(loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert activate(_emu_host(loop_thread), "-T", "-n", "3", "-r", "1", "--json") == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["new_connection"] for r in results] == [True, True, True]
    assert [r["syntax"] for r in results] == ["NDR32"] * 3


# --- hosts that misbehave: exact report and exit code ------------------------------------------------


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1000)
    writer.write(b"\x05\x00\x0c\x03\x10\x00\x00\x00\x20\x00\x00\x00\x02\x00\x00\x00" + b"\xff" * 16)
    await writer.drain()
    writer.close()


async def _truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1000)
    writer.write(b"\x05\x00\x0c\x03\x10\x00\x00\x00\x54\x00\x00\x00\x02\x00\x00\x00" + b"\x00" * 4)
    await writer.drain()
    writer.close()


async def _oversized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1000)
    writer.write(b"\x05\x00\x0c\x03\x10\x00\x00\x00\xff\xff\x00\x00\x02\x00\x00\x00")
    await writer.drain()
    await reader.read()
    writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()
    writer.close()


@pytest.mark.parametrize(
    "handler,code,report",
    [
        (_garbage, 6, "protocol-error: {host} broke the RPC protocol while we waited for the bind_ack: [decode]"),
        (
            _truncated,
            6,
            "protocol-error: truncated PDU: {host} closed the connection after 20 of 84 bytes of the bind_ack",
        ),
        (
            _oversized,
            6,
            "protocol-error: {host} broke the RPC protocol while we waited for the bind_ack: [frag_length] "
            "frag_length 65535 outside 16..5840",
        ),
        (_silent, 7, "unreachable: no answer from {host}: waited 0.2 s for the bind_ack"),
    ],
    ids=["garbage", "truncated", "oversized", "nothing"],
)
def test_bad_hosts_get_an_exact_report_and_exit_code(
    loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str], handler: Callable[..., Any], code: int, report: str
) -> None:
    target = _raw_host(loop_thread, handler)
    assert activate(target, "--timeout", "0.2") == code
    out, err = capsys.readouterr()
    assert report.format(host=target) in out
    assert "Traceback" not in out + err


def test_no_host_reachable_exits_7(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert activate(f"127.0.0.1:{port}") == 7
    assert f"unreachable: cannot connect to 127.0.0.1:{port}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--product", "no such thing"], "no such thing"),
        (["999.1.1.1:notaport"], "is not a number"),
        (["-w", "x" * 64], "at most 63"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert activate(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["client", "activate", "--help"])
    out = capsys.readouterr().out
    for line in (
        "0  activated",
        "3  below threshold",
        "4  host error",
        "5  verification failed",
        "6  RPC protocol error",
        "7  no host reachable",
    ):
        assert line in out


# --- .domain targets through emu's DNS server ---------------------------------------------------------


def test_domain_target_fails_over_in_srv_order(loop_thread: _LoopThread, capsys: pytest.CaptureFixture[str]) -> None:
    from emu.dns.zone import load_master_file
    from emu.net.dns_server import DnsServer

    live = _emu_host(loop_thread)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    zone = load_master_file(
        "$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
        "a IN A 127.0.0.1\nb IN A 127.0.0.1\n"
        f"_vlmcs._tcp IN SRV 0 0 {dead} a\n_vlmcs._tcp IN SRV 10 0 {live.rsplit(':', 1)[1]} b\n",
        "kms.test",
    )

    async def start() -> DnsServer:
        server = DnsServer([zone], listen=(("127.0.0.1", 0),))
        await server.start()
        return server

    dns = loop_thread.call(start())
    host, port = dns.addresses[0]
    assert activate(".kms.test", "--dns-server", f"{host}:{port}", "-n", "1", "-r", "1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"127.0.0.1:{dead} request 1 of 1 (KMS V6.0): unreachable: cannot connect to "
        f"127.0.0.1:{dead}: Connect call failed ('127.0.0.1', {dead})"
    )
    assert lines[1].startswith(f"{live} request 1 of 1 (KMS V6.0, NDR32): activated")


def test_a_silent_dns_server_means_no_host_reachable(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # bound, never answers
        port = s.getsockname()[1]
        assert activate(".kms.test", "--dns-server", f"127.0.0.1:{port}", "--timeout", "0.3") == 7
    err = capsys.readouterr().err
    assert err.startswith("no KMS host found: ") and "Traceback" not in err


# --- --capture ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="sniffing needs root")
def test_capture_writes_a_pcap_that_tshark_reads(
    loop_thread: _LoopThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = _emu_host(loop_thread)
    pcap = tmp_path / "out.pcap"
    assert activate(target, "-n", "2", "-r", "1", "--capture", str(pcap)) == 0
    assert "wrote " in capsys.readouterr().out
    from emu.pcap.reader import read_conversations

    conversations = read_conversations(pcap)
    assert len(conversations) == 1
    assert conversations[0].server_addr[1] == int(target.rsplit(":", 1)[1])
    tshark = require_tool("tshark")
    port = target.rsplit(":", 1)[1]
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-d", f"tcp.port=={port},dcerpc", "-Y", "dcerpc"],
        capture_output=True,
        env=TSHARK_ENV,
        text=True,
        timeout=60,
    ).stdout
    assert out.count("Request: call_id") == 2 and out.count("Response: call_id") == 2
    assert "Bind: call_id: 2" in out


def test_capture_without_root_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert activate("127.0.0.1:1", "--capture", "x.pcap") == 2
    assert "--capture sniffs packets and needs root" in capsys.readouterr().err


# --- the - target: _vlmcs._tcp in the resolver's search list (vlmcs -) ----------------------------------


def test_dash_target_tries_each_search_domain_in_order(
    loop_thread: _LoopThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emu.dns.zone import load_master_file
    from emu.net.dns_server import DnsServer

    live = _emu_host(loop_thread)
    soa = "$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
    empty = load_master_file(soa, "empty.test")  # served, but no _vlmcs._tcp: NXDOMAIN, next domain
    kms = load_master_file(soa + f"b IN A 127.0.0.1\n_vlmcs._tcp IN SRV 0 0 {live.rsplit(':', 1)[1]} b\n", "kms.test")

    async def start() -> DnsServer:
        server = DnsServer([empty, kms], listen=(("127.0.0.1", 0),))
        await server.start()
        return server

    dns = loop_thread.call(start())
    host, port = dns.addresses[0]
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# test\nnameserver 127.0.0.1\nsearch empty.test. unknown.test kms.test\noptions ndots:1\n")
    assert activate("-", "--resolv-conf", str(resolv), "--dns-server", f"{host}:{port}", "-n", "1", "-r", "1") == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{live} request 1 of 1 (KMS V6.0, NDR32): activated")
    resolv.write_text("nameserver 127.0.0.1\nsearch kms.test\ndomain empty.test\n")  # the last line wins
    assert activate("-", "--resolv-conf", str(resolv), "--dns-server", f"{host}:{port}", "-n", "1", "-r", "1") == 7
    assert capsys.readouterr().err == "no KMS host found: no _vlmcs._tcp SRV records for empty.test\n"


@pytest.mark.parametrize(
    "text", ["nameserver 127.0.0.1\n", "nameserver 127.0.0.1\nsearch .\n", None], ids=["none", "root", "missing"]
)
def test_dash_target_without_a_domain_is_a_clear_usage_error(
    tmp_path: Path, text: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    resolv = tmp_path / "resolv.conf"
    if text is not None:
        resolv.write_text(text)
    assert activate("-", "--resolv-conf", str(resolv), "--dns-server", "127.0.0.1:9") == 2
    err = capsys.readouterr().err
    assert f"target -: no search or domain line in {resolv}" in err and "Traceback" not in err


def test_search_domains_reads_resolv_conf_like_the_resolver(tmp_path: Path) -> None:
    from emu.cli.client import search_domains

    resolv = tmp_path / "resolv.conf"
    resolv.write_text("domain a.test\n; comment\nsearch b.test c.test. b.test\n")
    assert search_domains(str(resolv)) == ["b.test", "c.test"]
    resolv.write_text("search b.test\ndomain a.test extra\n")
    assert search_domains(str(resolv)) == ["a.test"]


def test_help_documents_the_dash_target(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["client", "activate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "or - (SRV _vlmcs._tcp in each domain of the search/domain line of resolv.conf" in out
    assert "--resolv-conf FILE" in out
