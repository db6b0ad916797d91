"""``emu diagnose`` names the step and the Windows error of each failure a lab can stage.

Everything runs on loopback in one event loop: emu's DNS server with a zone made for the case, emu's KMS
host (with fault injection or a narrow key where the case needs it), and the diagnosis walking them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from emu.dns.zone import load_master_file
from emu.kms import products
from emu.kms.faults import parse_fault
from emu.kms.host import HostConfig, KmsHost
from emu.net.diagnose import STEPS, DiagnoseConfig, Diagnosis, diagnose
from emu.net.dns_server import DnsServer
from emu.net.kms_server import KmsServer, ServerConfig
from emu.rng import seeded

ZONE_HEAD = """$ORIGIN kms.test.
$TTL 60
@   IN SOA ns1 hostmaster ( 1 3600 600 86400 60 )
@   NS ns1
ns1 A 127.0.0.1
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _network(
    host_config: HostConfig | None, srv_port: int | None, *, address: bool = True
) -> AsyncIterator[tuple[str, int]]:
    """A KMS host (None: none listening) and a DNS zone whose SRV points at it; yields the DNS server."""
    server = None
    if host_config is not None:
        server = KmsServer(KmsHost(host_config, seeded(2), 1_750_000_000.0), ServerConfig(listen=(("127.0.0.1", 0),)))
        await server.start()
        srv_port = server.addresses[0][1]
    zone = ZONE_HEAD
    if srv_port is not None:
        zone += f"_vlmcs._tcp SRV 0 0 {srv_port} kms1\n"
        if address:
            zone += "kms1 A 127.0.0.1\n"
    dns = DnsServer([load_master_file(zone, "kms.test")], listen=(("127.0.0.1", 0),))
    await dns.start()
    try:
        yield dns.addresses[0]
    finally:
        await dns.stop()
        if server is not None:
            await server.stop()


def _walk(host_config: HostConfig | None, srv_port: int | None = None, *, address: bool = True, **kw) -> Diagnosis:  # type: ignore[no-untyped-def]
    async def go() -> Diagnosis:
        async with _network(host_config, srv_port, address=address) as dns:
            config = DiagnoseConfig(domains=("kms.test",), dns_server=dns, timeout=2.0, **kw)
            return await diagnose(config, seeded(3))

    return asyncio.run(go())


def _failed(result: Diagnosis) -> tuple[str | None, str | None]:
    return result.failed_step, None if result.code is None else f"0x{result.code:08X}"


def test_a_working_network_passes_every_step_once_the_count_reaches_the_threshold() -> None:
    async def go() -> list[Diagnosis]:
        async with _network(HostConfig(), None) as dns:
            config = DiagnoseConfig(
                product="Windows Server 2022 Datacenter", domains=("kms.test",), dns_server=dns, timeout=2.0
            )
            return [await diagnose(config, seeded(10 + i)) for i in range(5)]  # threshold 5: distinct clients

    results = asyncio.run(go())
    assert [_failed(r) for r in results[:4]] == [("threshold", "0xC004F038")] * 4
    last = results[-1]
    assert last.ok and last.exit_code == 0 and last.code is None
    assert [s.name for s in last.steps] == list(STEPS) and all(s.ok and not s.skipped for s in last.steps)


def test_no_srv_record_is_0x8007232B_at_srv_lookup() -> None:
    assert _failed(_walk(None, None)) == ("srv-lookup", "0x8007232B")


def test_a_target_without_an_address_is_0x8007251D_at_address() -> None:
    assert _failed(_walk(None, 1688, address=False)) == ("address", "0x8007251D")


def test_a_host_that_is_down_is_0xC004F074_at_tcp_connect() -> None:
    assert _failed(_walk(None, _free_port())) == ("tcp-connect", "0xC004F074")


def test_a_key_that_does_not_cover_the_product_is_0xC004F042_at_the_request() -> None:
    office_only = HostConfig(kms_ids=frozenset({products.lookup("Office 2019 ProPlus").kms_id}))
    assert _failed(_walk(office_only)) == ("activation-request", "0xC004F042")


def test_below_threshold_is_0xC004F038_at_threshold() -> None:
    result = _walk(HostConfig())
    assert _failed(result) == ("threshold", "0xC004F038")
    assert result.steps[-1].data == {"count": 1, "threshold": 25}


def test_a_skewed_client_clock_is_0xC004F06C_at_clock_skew() -> None:
    strict = HostConfig(check_time_skew=True)
    assert _failed(_walk(strict, time_offset=5 * 3600)) == ("clock-skew", "0xC004F06C")


def test_a_host_refusing_with_an_hresult_is_named_with_that_code() -> None:
    refusing = HostConfig(faults=(parse_fault("refuse=0xC004F041"),))
    assert _failed(_walk(refusing)) == ("activation-request", "0xC004F041")


def test_the_command_prints_json_and_exits_with_the_failing_steps_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = _free_port()
    run = subprocess.run(
        [sys.executable, "-m", "emu", "diagnose", f"127.0.0.1:{port}", "--json", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == STEPS["tcp-connect"], run.stderr
    report = json.loads(run.stdout)
    assert report["failed_step"] == "tcp-connect" and report["symbol"] == "SL_E_VL_BINDING_SERVICE_UNAVAILABLE"
    assert [s["name"] for s in report["steps"] if s["skipped"]] == [
        "dns-suffixes",
        "srv-lookup",
        "srv-order",
        "address",
    ]


def test_an_unknown_product_is_a_usage_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "emu", "diagnose", "127.0.0.1", "--product", "no such product"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "no such product" in run.stderr


@pytest.mark.parametrize("offset", ["5h", "-5h"])
def test_time_offset_accepts_a_signed_duration(offset: str) -> None:
    from emu.cli import build_parser
    from emu.cli.diagnose import _config

    args = build_parser(["diagnose"]).parse_args(["diagnose", "127.0.0.1", f"--time-offset={offset}"])
    config = _config(args)
    assert abs(config.time_offset) == 5 * 3600  # type: ignore[attr-defined]
