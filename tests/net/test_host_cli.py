"""``emu host`` command line: settings from TOML and flags, durations, one-line errors, status."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from emu.cli import build_parser, main
from emu.cli.host_settings import build_host_config, build_server_config, load_settings, parse_minutes
from emu.errors import UsageError
from emu.kms import products

ROOT = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["host", "serve", *argv])


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        (120, 120),
        ("120", 120),
        ("90m", 90),
        ("2h", 120),
        ("7d", 10080),
        ("1w", 10080),
        ("3600s", 60),
    ],
)
def test_durations_accept_minutes_and_units(text, minutes):
    assert parse_minutes(text, "--renewal-interval") == minutes


@pytest.mark.parametrize("text", ["", "soon", "0", "30s", "1.5", "-5", True])
def test_bad_durations_name_the_setting(text):
    with pytest.raises(UsageError, match="--activation-interval"):
        parse_minutes(text, "--activation-interval")


def test_flags_override_the_config_file(tmp_path):
    config = tmp_path / "host.toml"
    config.write_text(
        'listen = ["127.0.0.1:1700", "[::1]:1700"]\nidle_timeout = 5\nrenewal_interval = "1d"\nactivation_interval = 60\n'
        'products = ["win10ent"]\nndr64 = false\nlcid = 1031\n[epids]\nWindows = "03612-00206-556-123727-03-1031-26100.0000-0012025"\n'
    )
    settings = load_settings(
        _args(
            "--config",
            str(config),
            "--idle-timeout",
            "9",
            "--activation-interval",
            "2h",
            "--epid",
            "office2019=03612-00206-684-137669-03-1033-17763.0000-2972018",
        )
    )
    server = build_server_config(settings)
    host = build_host_config(settings)
    assert server.listen == (("127.0.0.1", 1700), ("::1", 1700)) and server.idle_timeout == 9.0 and not server.ndr64
    assert (host.activation_interval, host.renewal_interval, host.lcid) == (120, 1440, 1031)
    assert host.kms_ids == {products.lookup("win10ent").kms_id}
    assert set(host.epids) == {"Windows", "Office2019"}


def test_defaults_without_config():
    settings = load_settings(_args())
    server, host = build_server_config(settings), build_host_config(settings)
    assert server.listen == (("127.0.0.1", 1688),) and server.idle_timeout == 30.0 and server.max_connections == 1024
    assert (host.activation_interval, host.renewal_interval, host.kms_ids) == (120, 10080, None)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--listen", "127.0.0.1:99999"], "out of range"),
        (["--max-connections", "lots"], "--max-connections"),
        (["--hwid", "xyz"], "--hwid"),
        (["--host-build", "1234"], "unknown host build"),
        (["--product", "no such product at all"], ""),
        (["--epid", "Windows"], "CSVLK=EPID"),
        (["--kms-id", "nope"], "not a GUID"),
        (["--log-level", "LOUD"], "--log-level"),
    ],
)
def test_bad_values_are_one_line_and_exit_2(argv, words, capsys):
    assert main(["host", "serve", "--listen", "127.0.0.1:0", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emu: error:") and words in err[0]


def test_unknown_config_key_is_refused(tmp_path):
    config = tmp_path / "host.toml"
    config.write_text("colour = 'blue'\n")
    with pytest.raises(UsageError, match="unknown setting 'colour'"):
        load_settings(_args("--config", str(config)))


def test_port_in_use_is_one_line_exit_2():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "emu", "host", "serve", "--listen", f"127.0.0.1:{port}", "--log-level", "ERROR"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"emu: error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_status_of_a_missing_state_file_is_a_usage_error(tmp_path, capsys):
    assert main(["host", "status", "--state", str(tmp_path / "none.sqlite")]) == 2
    assert "no such state file" in capsys.readouterr().err


def test_status_of_an_empty_state_says_so(tmp_path, capsys):
    from emu.net.host_store import HostStore

    HostStore(tmp_path / "s.sqlite").close()
    assert main(["host", "status", "--state", str(tmp_path / "s.sqlite")]) == 0
    assert "no client has been counted yet" in capsys.readouterr().out


def test_publish_without_a_dns_server_is_one_line_exit_2(capsys):
    assert main(["host", "serve", "--listen", "127.0.0.1:0", "--publish", "kms.test", "--log-level", "ERROR"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "emu: error: --publish needs --dns-server ADDR:PORT (the primary that accepts updates)"


def test_status_lists_each_client_with_workstation_product_count_and_activation(tmp_path, capsys):
    import asyncio
    import json

    from kms_host_peer import kms_request, running_host, session

    from emu.net.host_store import HostStore
    from emu.rng import seeded

    state = tmp_path / "inv.sqlite"
    store = HostStore(state)
    rng = seeded(11)

    async def go():
        async with running_host(store=store) as server:
            await session(server.addresses[0], [kms_request(rng, "Office 2019 ProPlus") for _ in range(5)])

    asyncio.run(go())
    store.close()
    assert main(["host", "status", "--state", str(state), "--format", "json"]) == 0
    (app,) = json.loads(capsys.readouterr().out)["applications"]
    assert app["count"] == 5 and len(app["clients"]) == 5
    assert [c["last_count"] for c in app["clients"]] == [1, 2, 3, 4, 5]
    assert [c["activated"] for c in app["clients"]] == [False] * 4 + [True]
    assert {c["workstation"] for c in app["clients"]} == {"peer.lab.test"}
    assert {c["product"] for c in app["clients"]} == {"Office Professional Plus 2019"}
    assert main(["host", "status", "--state", str(state), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("application,count,capacity,cmid,") and len(lines) == 6
    assert main(["host", "status", "--state", str(state)]) == 0
    assert "Office Professional Plus 2019" in capsys.readouterr().out


def test_a_state_file_of_schema_1_is_migrated_and_keeps_its_clients(tmp_path):
    import sqlite3

    from emu.net.host_store import SCHEMA_VERSION, HostStore

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE clients (app_id TEXT NOT NULL, cmid TEXT NOT NULL, last_request REAL NOT NULL,"
        " PRIMARY KEY (app_id, cmid));"
        "CREATE TABLE capacities (app_id TEXT PRIMARY KEY, capacity INTEGER NOT NULL);"
        "CREATE TABLE epids (csvlk TEXT PRIMARY KEY, epid TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "INSERT INTO clients VALUES ('55c92734-d682-4d71-983e-d6ec3f16059f', '00000000-0000-0000-0000-000000000001', 1e9);"
        "INSERT INTO capacities VALUES ('55c92734-d682-4d71-983e-d6ec3f16059f', 50);"
    )
    db.close()
    store = HostStore(path)
    try:
        (row,) = store.inventory()
        assert row.last_request == 1e9 and row.workstation is None and store.client_count() == 1
        assert store._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)
    finally:
        store.close()


def test_every_host_setting_has_a_toml_type():
    from emu.cli.host_settings import SETTING_KINDS, SETTING_NAMES

    assert set(SETTING_KINDS) == set(SETTING_NAMES)


@pytest.mark.parametrize(
    "line,words",
    [
        ('check_time_skew = "false"', "check_time_skew must be true or false"),
        ("durable = 1", "durable must be true or false"),
        ('max_connections = "many"', "max_connections must be a whole number"),
        ("max_connections = true", "max_connections must be a whole number"),
        ('idle_timeout = "soon"', "idle_timeout must be a number"),
        ("listen = 1688", "listen must be a string or a list of strings"),
        ("activation_interval = true", "activation_interval must be a number of minutes"),
        ("host_name = 5", "host_name must be a string"),
        ('epids = "x"', "epids must be a table"),
    ],
)
def test_a_config_value_of_the_wrong_type_is_a_usage_error_naming_the_key(tmp_path, capsys, line, words):
    config = tmp_path / "host.toml"
    config.write_text(line + "\n")
    assert main(["host", "serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_the_host_listens_on_loopback_unless_told_otherwise():
    from emu.cli import build_parser
    from emu.cli.host_settings import build_server_config, load_settings

    args = build_parser(["host"]).parse_args(["host", "serve"])
    assert build_server_config(load_settings(args)).listen == (("127.0.0.1", 1688),)


def test_an_unknown_log_level_is_refused(capsys):
    assert main(["--log-level", "FOO", "host", "status", "--state", "x"]) == 2
    assert "--log-level 'FOO'" in capsys.readouterr().err
