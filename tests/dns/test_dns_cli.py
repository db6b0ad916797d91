"""``emu dns`` command line: argument errors are UsageErrors, dump replays the journal."""

from __future__ import annotations

import argparse
import asyncio

import dns.asyncquery
import pytest
from dns_testing import ZONE_TEXT, key_file_text, make_update

from emu.cli.dns import load_keys, load_zones, register
from emu.errors import UsageError


def parse(argv):
    parser = argparse.ArgumentParser(prog="emu")
    register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_bad_zone_argument_names_the_expected_form():
    with pytest.raises(UsageError, match="NAME=FILE"):
        load_zones(["kms.test"])


def test_missing_key_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        load_keys([str(tmp_path / "nope.key")])


def test_dump_writes_zone_with_journaled_changes(tmp_path, key, keyring, capsys):
    from emu.net.dns_server import DnsServer

    zone_file = tmp_path / "kms.zone"
    zone_file.write_text(ZONE_TEXT)
    state = tmp_path / "state.sqlite"

    async def update():
        zones = load_zones([f"kms.test={zone_file}"])
        async with DnsServer(zones, keys=[key], state=state) as server:
            message = make_update(keyring)
            message.add("kms5.kms.test.", 60, "A", "10.0.0.5")
            host, port = server.addresses[0]
            await dns.asyncquery.udp(message, host, port=port, timeout=3)

    asyncio.run(asyncio.wait_for(update(), 20))
    args = parse(["dns", "dump", "--zone", f"kms.test={zone_file}", "--state", str(state)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "kms5.kms.test." in out and "hostmaster.kms.test. 2 " in out


def test_serve_without_zone_is_a_usage_error(tmp_path):
    (tmp_path / "k.key").write_text(key_file_text())
    args = parse(["dns", "serve", "--tsig-key", str(tmp_path / "k.key")])
    with pytest.raises(UsageError, match="--zone"):
        args.func(args)
