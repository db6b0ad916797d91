"""``emu load``: emu's client as a Locust user, headless and distributed, against emu's own host.

Each run is bounded (Locust's --run-time, a subprocess timeout); the host's table is then compared
with the number of distinct clients (users) that were sent: one user is one machine, one CMID.
"""

from __future__ import annotations

import csv
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emu.cli import build_parser
from emu.cli.load import locust_argv
from emu.errors import UsageError
from emu.net.host_store import HostStore

ROOT = Path(__file__).resolve().parents[2]
EMU = [sys.executable, "-m", "emu"]


def _host(state: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [*EMU, "host", "serve", "--listen", "127.0.0.1:0", "--state", str(state), "--log-level", "WARNING"],
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if m := re.search(r"serving KMS on 127\.0\.0\.1:(\d+)", line):
            return proc, int(m[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the host did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _table(state: Path) -> int:
    store = HostStore(state)
    try:
        return store.client_count()
    finally:
        store.close()


def _stats(prefix: Path) -> dict[str, int]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(f)}


def _args(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser(["load", *argv]).parse_args(["load", *argv])


def test_the_locust_command_line_carries_emu_options_and_bounds_a_headless_run() -> None:
    argv = locust_argv(_args("127.0.0.1:17000", "--users", "5", "--headless", "--life-cycle", "--products", "win11ent"))
    assert argv[argv.index("--host") + 1] == "127.0.0.1:17000"
    assert argv[argv.index("--run-time") + 1] == "60s"
    assert "--kms-life-cycle" in argv and argv[argv.index("--kms-products") + 1] == "win11ent"
    assert argv[argv.index("-f") + 1].endswith("emu/load/locustfile.py")


@pytest.mark.parametrize(
    "argv,words",
    [
        (["127.0.0.1", "--worker"], "--worker takes the target"),
        (["--master", "--worker"], "one or the other"),
        ([], "give the KMS host"),
        (["127.0.0.1", "--products", "no such product"], "no such product"),
    ],
)
def test_contradictory_or_unknown_options_are_usage_errors(argv: list[str], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        locust_argv(_args(*argv))


@pytest.mark.slow
def test_headless_run_counts_every_user_as_one_distinct_client(tmp_path: Path) -> None:
    host, port = _host(tmp_path / "host.sqlite")
    try:
        run = subprocess.run(
            [*EMU, "load", f"127.0.0.1:{port}", "--users", "30", "--spawn-rate", "30", "--run-time", "3s"]
            + ["--headless", "--csv", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        _stop(host)
    assert run.returncode == 0, run.stdout + run.stderr
    stats = _stats(tmp_path / "run")
    assert stats["activated"] > 0 and stats["below-threshold"] >= 24  # clients 1..24 wait for the 25th
    assert _table(tmp_path / "host.sqlite") == 30


@pytest.mark.slow
def test_life_cycle_users_pace_themselves_by_the_hosts_intervals(tmp_path: Path) -> None:
    host, port = _host(tmp_path / "host.sqlite")
    try:
        # 5 clients never reach 25: each retries after the 120-minute activation interval, 0.5 s at this scale.
        run = subprocess.run(
            [*EMU, "load", f"127.0.0.1:{port}", "--users", "5", "--spawn-rate", "5", "--run-time", "3s"]
            + ["--life-cycle", "--time-scale", "14400", "--headless", "--csv", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        _stop(host)
    assert run.returncode == 0, run.stdout + run.stderr
    stats = _stats(tmp_path / "run")
    assert set(stats) == {"below-threshold", "Aggregated"}
    assert 10 <= stats["below-threshold"] <= 45  # about 7 each, not thousands
    assert _table(tmp_path / "host.sqlite") == 5


@pytest.mark.slow
def test_a_master_with_two_local_workers_counts_every_user_once(tmp_path: Path) -> None:
    host, port = _host(tmp_path / "host.sqlite")
    master_port = _free_port()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        master = subprocess.Popen(
            [*EMU, "load", f"127.0.0.1:{port}", "--master", "--master-port", str(master_port)]
            + ["--expect-workers", "2", "--users", "40", "--spawn-rate", "40", "--run-time", "3s"]
            + ["--headless", "--csv", str(tmp_path / "run")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        for _ in range(2):
            workers.append(
                subprocess.Popen(
                    [*EMU, "load", "--worker", "--master-port", str(master_port)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=tmp_path,
                )
            )
        out, _ = master.communicate(timeout=90)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()
        _stop(host)
    assert master.returncode == 0, out.decode()
    assert _stats(tmp_path / "run")["activated"] > 0
    assert _table(tmp_path / "host.sqlite") == 40
