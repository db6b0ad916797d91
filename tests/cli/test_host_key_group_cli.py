"""`emu host serve --host-key-group` / `host_key_group` in TOML: the flag and the config key reach the host."""

from __future__ import annotations

import pytest

from emu.cli import build_parser, main
from emu.cli.host_settings import build_host_config, load_settings
from emu.kms import products
from emu.kms.host import KmsHost
from emu.rng import seeded


def _host(*argv: str) -> KmsHost:
    args = build_parser().parse_args(["host", "serve", *argv])
    return KmsHost(build_host_config(load_settings(args)), seeded(1), 1_750_000_000.0)


def test_the_flag_limits_the_host_to_the_group() -> None:
    host = _host("--host-key-group", "Windows Server 2019")
    assert products.lookup("Windows Server 2019 Standard").kms_id in host.kms_ids
    assert products.lookup("Windows Server 2022 Standard").kms_id not in host.kms_ids
    assert host.host_build == 17763


def test_the_toml_key_takes_one_group_or_a_list(tmp_path) -> None:
    config = tmp_path / "host.toml"
    config.write_text('host_key_group = ["Windows 10", "Office 2019"]\nhost_os = "Windows 8.1"\nunpatched = true\n')
    host = _host("--config", str(config))
    assert products.lookup("Windows 8.1 Pro").kms_id in host.kms_ids
    assert products.lookup("Word 2019").kms_id in host.kms_ids
    assert products.lookup("Windows 10 Enterprise").kms_id not in host.kms_ids  # KB3172614 missing
    assert host.host_build == 9600
    config.write_text('host_key_group = "Windows Server 2016"\n')
    assert products.lookup("Windows Server 2019 Standard").kms_id not in _host("--config", str(config)).kms_ids


def test_a_bad_group_or_host_os_is_one_line_and_exit_2(capsys) -> None:
    assert main(["host", "serve", "--host-key-group", "Windows Server 2003"]) == 2
    assert "unknown host key group" in capsys.readouterr().err
    assert main(["host", "serve", "--host-key-group", "Windows Server 2025", "--host-os", "Windows 7"]) == 2
    assert "cannot be hosted on Windows 7" in capsys.readouterr().err


def test_help_says_the_default_activates_everything(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["host", "serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the host activates every volume product emu knows" in out


def test_over_the_wire_a_2019_host_refuses_a_server_2022_client_with_0xC004F042(capsys) -> None:
    """A real exchange on loopback: emu client activate against a host holding the 2019 key."""
    import asyncio
    import threading
    import time

    from emu.kms.host import HostConfig
    from emu.net.kms_server import KmsServer, ServerConfig

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:

        async def start() -> KmsServer:
            host = KmsHost(HostConfig(host_key_groups=("Windows Server 2019",)), seeded(1), time.time())
            server = KmsServer(host, ServerConfig(listen=(("127.0.0.1", 0),)), rng=seeded(2))
            await server.start()
            return server

        server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        target = "{}:{}".format(*server.addresses[0])
        assert main(["client", "activate", "--seed", "7", target, "--product", "Windows Server 2022 Standard"]) == 4
        assert "0xC004F042" in capsys.readouterr().out
        assert main(["client", "activate", "--seed", "7", target, "--product", "srv2019std", "--count", "1"]) == 3
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
