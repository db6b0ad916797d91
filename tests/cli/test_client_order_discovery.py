"""``emu client activate --domain-member`` with everything found through DNS, on loopback and in process:
emu's directory (emu.net.dc_runner) located by SRV ``_ldap._tcp.dc._msdcs.kms.test``, emu's KMS host by
``_vlmcs._tcp.kms.test``, both served by emu's DNS server. Every KMS connection passes a counting proxy, so
"ADBA activated and KMS was never asked" is checked on the wire."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from emu.cli import main

PRODUCT = ("-l", "win10ent", "-n", "1", "-r", "1", "--seed", "7", "--timeout", "2")


class _LoopThread:
    """An asyncio loop in a thread, so the servers run while ``main()`` runs its own loops."""

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


@dataclass
class Lab:
    dns: str
    dc: str
    kms_connections: list[int]

    def activate(self, *argv: str, forest: str = "kms.test") -> int:
        base = ["client", "activate", "--domain-member", "--forest", forest, "--dns-server", self.dns]
        return main([*base, *PRODUCT, *argv])


async def _start(seed_object: bool, kms_connections: list[int]) -> tuple[str, str, list[Any]]:
    from emu.dns.zone import load_master_file
    from emu.kms.host import HostConfig, KmsHost
    from emu.net.dc_runner import DcOptions, open_dsa, seed_activation_object
    from emu.net.dns_server import DnsServer
    from emu.net.kms_server import KmsServer, ServerConfig
    from emu.net.ldap_server import LdapServer
    from emu.rng import seeded

    dsa, _ = open_dsa(DcOptions(), rng=seeded(3))
    if seed_object:
        seed_activation_object(dsa, None, "Windows", rng=seeded(4))
    ldap = LdapServer(dsa, listen=[("127.0.0.1", 0)], store=None)
    await ldap.start()
    host = KmsHost(HostConfig(), seeded(1), time.time())
    kms = KmsServer(host, ServerConfig(listen=(("127.0.0.1", 0),)), rng=seeded(2))
    await kms.start()
    kms_port = kms.addresses[0][1]

    async def counting_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kms_connections.append(1)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", kms_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    proxy = await asyncio.start_server(counting_proxy, "127.0.0.1", 0)
    zone = load_master_file(
        "$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
        "dc1 IN A 127.0.0.1\nkms1 IN A 127.0.0.1\n"
        f"_ldap._tcp.dc._msdcs IN SRV 0 100 {ldap.addresses[0][1]} dc1\n"
        f"_vlmcs._tcp IN SRV 0 0 {proxy.sockets[0].getsockname()[1]} kms1\n",
        "kms.test",
    )
    dns = DnsServer([zone], listen=(("127.0.0.1", 0),))
    await dns.start()
    dns_host, dns_port = dns.addresses[0]
    return f"{dns_host}:{dns_port}", f"127.0.0.1:{ldap.addresses[0][1]}", [dns, ldap, kms, proxy]


async def _stop(servers: list[Any]) -> None:
    for server in servers:
        if isinstance(server, asyncio.Server):
            server.close()
            await server.wait_closed()
        else:
            await server.stop()


def _lab(seed_object: bool) -> Iterator[Lab]:
    lt = _LoopThread()
    connections: list[int] = []
    dns, dc, servers = lt.call(_start(seed_object, connections))
    yield Lab(dns, dc, connections)
    lt.call(_stop(servers))
    lt.close()


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A forest with an activation object for the Windows CSVLK group (win10ent's KMS counted ID)."""
    yield from _lab(True)


@pytest.fixture
def empty_lab() -> Iterator[Lab]:
    """A forest without activation objects."""
    yield from _lab(False)


def _json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def _paths(doc: dict[str, Any]) -> list[tuple[str, bool, str]]:
    return [(p["path"], p["activated"], p["hresult"]) for p in doc["paths"]]


def test_the_dc_found_by_srv_activates_the_member_and_no_kms_connection_is_made(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab.activate("--json") == 0
    doc = _json(capsys)
    assert _paths(doc) == [("adba", True, "0x00000000")] and doc["activated_by"] == "adba"
    assert doc["exit_code"] == 0 and doc["hresult"] == "0x00000000" and "kms" not in doc
    located = doc["adba"]["checks"][0]
    assert located["name"] == "dc-located" and located["detail"].endswith(f"-> {lab.dc}")
    assert doc["adba"]["object"].startswith("CN=Windows (emu lab),CN=Activation Objects")
    assert lab.kms_connections == []


def test_once_the_object_is_deleted_the_same_command_falls_back_to_kms_found_by_srv(
    lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lab.activate() == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ADBA (forest kms.test):" and out[-2:] == ["order (any): adba (activated)", "activated by adba"]
    assert main(["adba", "delete", "Windows (emu lab)", "--server", lab.dc]) == 0
    capsys.readouterr()
    assert lab.activate("--json") == 0
    doc = _json(capsys)
    assert _paths(doc) == [("adba", False, "0xC004F081"), ("kms", True, "0x00000000")]
    assert doc["activated_by"] == "kms" and doc["paths"][0]["detail"].startswith("object: no activation object")
    assert doc["kms"]["target"] == ".kms.test" and doc["kms"]["status"] == "activated"
    assert len(lab.kms_connections) == 1


def test_the_text_report_shows_each_path_in_order(empty_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert empty_lab.activate() == 0
    lines = capsys.readouterr().out.splitlines()
    kms = lines.index("KMS (.kms.test):")
    assert lines[0] == "ADBA (forest kms.test):" and kms > 0
    assert lines[kms - 1].startswith("not activated by ADBA (0xC004F081)")
    assert "request 1 of 1 (KMS V6.0, NDR32): activated" in lines[kms + 1]
    assert lines[-2:] == ["order (any): adba (not activated, 0xC004F081) -> kms (activated)", "activated by kms"]


def test_act_type_ad_without_an_object_fails_and_never_connects_to_kms(
    empty_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert empty_lab.activate("--act-type", "ad", "--json") == 1
    doc = _json(capsys)
    assert _paths(doc) == [("adba", False, "0xC004F081")] and doc["activated_by"] is None
    assert doc["exit_code"] == 1 and doc["hresult"] == "0xC004F081"
    assert empty_lab.kms_connections == []


def test_act_type_kms_skips_adba_even_when_an_object_exists(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab.activate("--act-type", "2", "--json") == 0
    doc = _json(capsys)
    assert _paths(doc) == [("kms", True, "0x00000000")] and "adba" not in doc
    assert len(lab.kms_connections) == 1


def test_no_dc_and_no_kms_host_give_their_hresults_and_the_kms_exit_code(
    empty_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    # another.test is not served here: no DC record (0x8007054B), then no _vlmcs._tcp record (exit 7)
    assert empty_lab.activate("--json", forest="another.test") == 7
    doc = _json(capsys)
    assert _paths(doc) == [("adba", False, "0x8007054B"), ("kms", False, "0x8007232B")]
    assert doc["exit_code"] == 7 and doc["hresult"] == "0x8007232B" and doc["kms"]["status"] == "unreachable"


def test_a_kms_host_below_its_threshold_keeps_exit_3_and_reports_0xc004f038(
    empty_lab: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    assert empty_lab.activate("--json", "-r", "25") == 3
    assert _paths(_json(capsys))[-1] == ("kms", False, "0xC004F038")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--domain-member", "--forest", "kms.test", "--act-type", "3"], "--act-type: activation type '3'"),
        (["--act-type", "ad"], "are for a domain member: add --domain-member"),
        (["--forest", "kms.test"], "are for a domain member: add --domain-member"),
        (["--domain-member", "--forest", "kms.test", "--capture", "x.pcap"], "--capture records one path"),
        (["--domain-member", "--forest", "kms.test", "--json", "-v"], "--json already carries every field"),
        (["--domain-member", "--forest", "kms.test", "--adba", "kms.test"], "--adba is one ADBA attempt alone"),
    ],
)
def test_bad_combinations_are_one_line_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["client", "activate", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
