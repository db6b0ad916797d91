"""`emu client grab` (vlmcs -G): a host's ePID/HwId per CSVLK, written as vlmcsd ini or emu host TOML."""

from __future__ import annotations

import asyncio
import time
import tomllib

from emu.cli import main
from emu.kms.client import HostAddress
from emu.kms.epid import parse_hwid
from emu.kms.host import HostConfig, KmsHost
from emu.net.kms_grab import grab_host, grab_targets, to_ini, to_toml
from emu.net.kms_server import KmsServer, ServerConfig
from emu.rng import seeded

HWID = "0123456789ABCDEF"


async def _grab_from(config: HostConfig):
    host = KmsHost(config, seeded(7), time.time())
    async with KmsServer(host, ServerConfig(listen=(("127.0.0.1", 0),))) as server:
        addr = server.addresses[0]
        return host, await grab_host(HostAddress(addr[0], addr[1]), seeded(8))


def test_grab_asks_one_product_per_csvlk():
    names = [name for name, _ in grab_targets()]
    assert names[:4] == ["Windows", "Office2010", "Office2013", "Office2016"] and "Office2019" in names
    assert len(names) == len(set(names))


def test_grab_reads_every_covered_csvlk_and_falls_back_on_refusals():
    host, grabbed = asyncio.run(_grab_from(HostConfig(hwid=parse_hwid(HWID), lcid=1031)))
    by_name = {k.csvlk: k for k in grabbed}
    for name in ("Windows", "Office2010", "Office2013", "Office2016", "Office2019"):
        assert by_name[name].epid == host.epids[name]
        assert by_name[name].hwid == bytes.fromhex(HWID) and by_name[name].protocol == 6
    china = by_name["WinChinaGov"]  # not covered by emu's default key: refused, then v5 and v4 tried too
    assert china.epid is None and china.protocol == 4 and china.result.hresult == 0xC004F042


def test_grab_ini_is_vlmcsd_format_and_toml_makes_a_host_with_the_same_identity():
    host, grabbed = asyncio.run(_grab_from(HostConfig(hwid=parse_hwid(HWID))))
    ini = to_ini(grabbed).splitlines()
    assert ini[0] == f"Windows = {host.epids['Windows']} / 01 23 45 67 89 AB CD EF"
    settings = tomllib.loads(to_toml(grabbed))["host"]
    _twin, regrabbed = asyncio.run(_grab_from(HostConfig(hwid=parse_hwid(settings["hwid"]), epids=settings["epids"])))
    assert to_ini(regrabbed) == to_ini(grabbed)


def test_grab_cli_exit_7_when_the_host_is_unreachable(capsys):
    assert main(["client", "grab", "127.0.0.1:1", "--timeout", "1"]) == 7
    assert capsys.readouterr().out == ""
