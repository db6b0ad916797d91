"""``emu client activate --domain-member``: ADBA first, KMS when no object can be read, MAK last; the policy
(slmgr /act-type) decides which paths run. Real processes on loopback: emu dc serve and emu host serve."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adba.dc_process import DcProcess, free_port

EMU = [sys.executable, "-m", "emu"]
PRODUCT = ["--product", "Windows Server 2022 Standard", "-r", "1"]  # one client is enough to activate


@pytest.fixture
def kms_host(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [*EMU, "host", "serve", "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _dc(tmp_path: Path, with_object: bool) -> DcProcess:
    return DcProcess(tmp_path / "dc.sqlite", *(["--seed-group", "Windows"] if with_object else []))


def _order(target: str, dc: DcProcess, *extra: str) -> tuple[int, dict]:
    done = subprocess.run(
        [
            *EMU,
            "client",
            "activate",
            target,
            "--domain-member",
            "--forest",
            "kms.test",
            "--dc",
            f"127.0.0.1:{dc.port}",
            *PRODUCT,
            "--json",
            "--timeout",
            "2",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_a_domain_member_with_an_object_is_activated_by_adba_and_never_asks_kms(tmp_path):
    dc = _dc(tmp_path, with_object=True)
    try:
        closed = f"127.0.0.1:{free_port()}"  # a KMS attempt would be unreachable here
        code, doc = _order(closed, dc)
    finally:
        dc.stop()
    assert code == 0
    assert [p["path"] for p in doc["paths"]] == ["adba"] and doc["activated_by"] == "adba"
    assert "kms" not in doc


def test_without_an_object_the_member_falls_back_to_kms(tmp_path, kms_host):
    dc = _dc(tmp_path, with_object=False)
    try:
        code, doc = _order(kms_host, dc)
    finally:
        dc.stop()
    assert code == 0
    assert [(p["path"], p["activated"]) for p in doc["paths"]] == [("adba", False), ("kms", True)]
    assert doc["activated_by"] == "kms" and doc["paths"][0]["hresult"] == "0xC004F081"
    assert doc["kms"]["results"][-1]["status"] == "activated"


def test_policy_ad_only_does_not_fall_back_to_kms(tmp_path, kms_host):
    dc = _dc(tmp_path, with_object=False)
    try:
        code, doc = _order(kms_host, dc, "--act-type", "ad")
    finally:
        dc.stop()
    assert code == 1 and [p["path"] for p in doc["paths"]] == ["adba"] and doc["activated_by"] is None


def test_policy_kms_only_skips_adba(tmp_path, kms_host):
    dc = _dc(tmp_path, with_object=True)
    try:
        code, doc = _order(kms_host, dc, "--act-type", "kms")
    finally:
        dc.stop()
    assert code == 0 and [p["path"] for p in doc["paths"]] == ["kms"] and "adba" not in doc


def test_a_bad_policy_or_a_mak_without_service_is_a_usage_error(tmp_path):
    for extra, words in ((["--act-type", "sometimes"], "--act-type"), (["--mak-state", "x.json"], "--actsvc")):
        done = subprocess.run(
            [*EMU, "client", "activate", ".kms.test", "--domain-member", *extra],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr
