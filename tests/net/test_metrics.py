"""``--metrics``: Prometheus endpoints of ``emu host serve`` and ``emu dns serve``, read with curl.

The real commands run as subprocesses on 127.0.0.1 (port 0 for both the service and the metrics);
after a bounded number of exchanges, curl fetches /metrics and the figures must match what was sent.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from emu_testing import require_tool
from kms_host_peer import kms_request, session

from emu.rng import seeded

ROOT = Path(__file__).resolve().parents[2]
ZONE = """$ORIGIN kms.test.
$TTL 3600
@            IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
@            NS   ns1
ns1          A    127.0.0.1
_vlmcs._tcp  600 IN SRV 0 0 1688 kms1
kms1         A    10.0.0.1
"""


def _start(argv: list[str], patterns: list[str]) -> tuple[subprocess.Popen[bytes], list[str]]:
    """Start an emu command; wait (bounded) until each regex matched a stderr line; return their groups."""
    proc = subprocess.Popen([sys.executable, "-m", "emu", *argv], stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stderr is not None
    found: list[str | None] = [None] * len(patterns)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and None in found:
        line = proc.stderr.readline().decode()
        if not line and proc.poll() is not None:
            break
        for i, pattern in enumerate(patterns):
            if found[i] is None and (m := re.search(pattern, line)):
                found[i] = m[1]
    if None in found:
        proc.kill()
        raise AssertionError(f"emu {' '.join(argv)} did not start")
    return proc, [str(f) for f in found]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _scrape(port: str) -> str:
    curl = require_tool("curl")
    return subprocess.run(
        [curl, "-sf", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True, timeout=10, check=True
    ).stdout


def _value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in the metrics"
    return float(match[1])


@pytest.mark.interop
def test_host_metrics_count_exchanges_by_result_and_show_the_table(tmp_path: Path) -> None:
    proc, (port, metrics) = _start(
        ["host", "serve", "--listen", "127.0.0.1:0", "--state", str(tmp_path / "h.sqlite"), "--metrics", "127.0.0.1:0"],
        [r"serving KMS on 127\.0\.0\.1:(\d+)", r"metrics on http://127\.0\.0\.1:(\d+)/metrics"],
    )
    try:
        rng = seeded(21)
        asyncio.run(session(("127.0.0.1", int(port)), [kms_request(rng, "Office 2019 ProPlus") for _ in range(5)]))
        text = _scrape(metrics)
    finally:
        _stop(proc)
    assert _value(text, 'emu_kms_exchanges_total{result="below-threshold"}') == 4
    assert _value(text, 'emu_kms_exchanges_total{result="activated"}') == 1
    assert _value(text, 'emu_kms_client_count{application="Office 2013+"}') == 5
    assert _value(text, 'emu_kms_table_capacity{application="Office 2013+"}') == 10
    assert _value(text, "emu_kms_exchange_seconds_count") == 5
    assert _value(text, "emu_kms_connections_total") == 1


@pytest.mark.interop
def test_dns_metrics_count_messages_by_opcode_and_rcode(tmp_path: Path) -> None:
    zone = tmp_path / "kms.zone"
    zone.write_text(ZONE)
    proc, (port, metrics) = _start(
        ["dns", "serve", "--zone", f"kms.test={zone}", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        [r"serving kms\.test\. on 127\.0\.0\.1:(\d+) \(UDP", r"metrics on http://127\.0\.0\.1:(\d+)/metrics"],
    )
    try:
        dig = require_tool("dig")
        for name in ("_vlmcs._tcp.kms.test", "nothing.kms.test"):
            subprocess.run(
                [dig, "+short", "+tries=1", "+time=2", "-p", port, "@127.0.0.1", name, "SRV"],
                capture_output=True,
                timeout=10,
                check=True,
            )
        text = _scrape(metrics)
    finally:
        _stop(proc)
    assert _value(text, 'emu_dns_messages_total{opcode="query",rcode="NOERROR"}') == 1
    assert _value(text, 'emu_dns_messages_total{opcode="query",rcode="NXDOMAIN"}') == 1
    assert _value(text, "emu_dns_answer_seconds_count") == 2


def test_a_metrics_address_in_use_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "emu", "host", "serve", "--listen", "127.0.0.1:0", "--metrics", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
    assert run.returncode == 2
    assert "--metrics 127.0.0.1:" in run.stderr and "cannot listen" in run.stderr
