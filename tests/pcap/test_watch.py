"""``emu watch``: its EVE alerts on the labelled captures of pcaps/watch match the labels exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emu.pcap.watch import SIGNATURES, watch_capture

ROOT = Path(__file__).resolve().parents[2]
WATCH = ROOT / "pcaps" / "watch"
LABELS = json.loads((WATCH / "labels.json").read_text())["captures"]


def test_every_labelled_capture_exists_and_every_capture_is_labelled() -> None:
    assert sorted(LABELS) == sorted(p.name for p in WATCH.glob("*.pcap"))


@pytest.mark.parametrize("name", sorted(LABELS))
def test_alerts_match_the_labels_exactly(name: str) -> None:
    alerts = watch_capture(WATCH / name)
    got = sorted(
        (a["alert"]["signature_id"], f"{a['src_ip']}:{a['src_port']}", f"{a['dest_ip']}:{a['dest_port']}")
        for a in alerts
    )
    assert got == sorted(tuple(label) for label in LABELS[name])


def test_alerts_are_suricata_eve_records() -> None:
    (alert, *_rest) = watch_capture(WATCH / "kms-nonstandard-port.pcap")
    assert alert["event_type"] == "alert" and alert["proto"] == "TCP" and alert["app_proto"] == "dcerpc"
    assert alert["timestamp"].endswith("+0000") and isinstance(alert["flow_id"], int)
    rule = alert["alert"]
    assert set(rule) == {"action", "gid", "signature_id", "rev", "signature", "category", "severity"}
    assert rule["signature_id"] in {s.sid for s in SIGNATURES.values()}


def test_the_labelled_captures_are_reproducible(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make-watch-pcaps"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    for pcap in WATCH.glob("*.pcap"):
        assert (tmp_path / pcap.name).read_bytes() == pcap.read_bytes(), pcap.name


def test_the_command_appends_eve_lines_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, "-m", "emu", "watch", "--pcap", str(WATCH / "pykms-like.pcap"), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6 and {line["alert"]["signature_id"] for line in lines} == {8200001, 8200004}


def test_a_live_watch_needs_a_duration_and_a_capture_its_file() -> None:
    run = subprocess.run([sys.executable, "-m", "emu", "watch", "-i", "lo"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--duration" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "emu", "watch", "--pcap", "/nonexistent.pcap"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "no such file" in run.stderr


@pytest.mark.slow
@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="sniffing needs root (CI runs as root)")
def test_a_live_watch_on_loopback_raises_the_activation_alert(tmp_path: Path) -> None:
    import re
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = subprocess.Popen(
        [sys.executable, "-m", "emu", "host", "serve", "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING"],
        stderr=subprocess.PIPE,
    )
    try:
        assert host.stderr is not None
        line = host.stderr.readline().decode()
        assert re.search(r"serving KMS", line), line
        watch = subprocess.Popen(
            [sys.executable, "-m", "emu", "watch", "-i", "lo", "--kms-port", str(port), "--duration", "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watch.stderr is not None
        ready = watch.stderr.readline()  # bounded: the command gives up after 30 s
        assert "capturing on lo" in ready, ready
        subprocess.run(
            [sys.executable, "-m", "emu", "client", "activate", f"127.0.0.1:{port}", "-n", "1"],
            capture_output=True,
            timeout=30,
        )
        out, err = watch.communicate(timeout=60)
        err = ready + err
    finally:
        host.terminate()
        host.wait(10)
    assert watch.returncode == 0, err
    sids = [json.loads(line)["alert"]["signature_id"] for line in out.splitlines()]
    assert 8200001 in sids and 8200002 not in sids
