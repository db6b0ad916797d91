"""``emu host serve --state``: a kill -9 under load loses no answered activation; a restart resumes counts.

Runs the real command as a subprocess on 127.0.0.1, loads it with concurrent clients (bounded in
count and time), SIGKILLs it mid-load, restarts it on the same state file and compares.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kms_host_peer import kms_request, session

from emu.kms.messages import verify_response
from emu.net.host_store import HostStore
from emu.rng import seeded
from emu.rpc.client import Reply

ROOT = Path(__file__).resolve().parents[2]
#: Clients send this threshold so the table (2 x N = 1000) holds every CMID of the run.
REQUIRED = 500
#: Answered exchanges before the kill is sent (the load goes on while it lands).
KILL_AFTER = 120
#: Hard bounds of the load.
MAX_EXCHANGES = 600
MAX_SECONDS = 20.0


def start_host(state: Path) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emu",
            "host",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state",
            str(state),
            "--log-level",
            "WARNING",
        ],
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # bounded wait for the ready line
        line = proc.stderr.readline().decode()
        match = re.search(r"serving KMS on 127\.0\.0\.1:(\d+)", line)
        if match:
            return proc, ("127.0.0.1", int(match[1]))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"emu host serve did not start (exit {proc.poll()})")


async def _load(
    addr: tuple[str, int], proc: subprocess.Popen[bytes], workers: int = 8
) -> tuple[set[uuid.UUID], set[str]]:
    """Concurrent one-request connections until the server dies; returns the answered CMIDs and ePIDs."""
    answered: set[uuid.UUID] = set()
    epids: set[str] = set()
    sent = 0
    killed = False
    started = time.monotonic()
    rng = seeded(99)

    async def worker() -> None:
        nonlocal sent, killed
        failures = 0
        while sent < MAX_EXCHANGES and time.monotonic() - started < MAX_SECONDS and failures < 3:
            sent += 1
            cmid = uuid.UUID(int=rng.randint(1, 2**128 - 1))
            message = kms_request(rng, cmid=cmid, required=REQUIRED)
            try:
                (reply,) = await session(addr, [message], ndr64=False, btfn=False)
            except (TimeoutError, OSError, ConnectionError):
                failures += 1
                continue
            assert isinstance(reply, Reply) and reply.hresult == 0
            verified = verify_response(message, reply.kms_response)  # type: ignore[arg-type]
            assert verified.ok
            answered.add(cmid)
            epids.add(verified.epid)  # type: ignore[arg-type]
            if len(answered) >= KILL_AFTER and not killed:
                killed = True
                os.kill(proc.pid, signal.SIGKILL)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return answered, epids


@pytest.mark.slow
def test_kill_9_mid_load_loses_no_answered_activation_and_restart_resumes_counts(tmp_path):
    state = tmp_path / "host.sqlite"
    proc, addr = start_host(state)
    try:
        answered, epids = asyncio.run(asyncio.wait_for(_load(addr, proc), MAX_SECONDS + 10))
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(answered) >= KILL_AFTER

    store = HostStore(state)
    stored = {uuid.UUID(cmid) for _, cmid in store.cmids()}
    store.close()
    assert answered <= stored  # committed ones that were never answered may be there too

    proc, addr = start_host(state)
    try:
        rng = seeded(7)
        message = kms_request(rng, required=REQUIRED)
        (reply,) = asyncio.run(asyncio.wait_for(session(addr, [message]), 10))
        verified = verify_response(message, reply.kms_response)  # type: ignore[union-attr]
        assert verified.count == len(stored) + 1  # the restarted host counts on exactly
        assert {verified.epid} == epids  # the host's lifetime is its state's lifetime
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0  # graceful shutdown on SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    out = subprocess.run(
        [sys.executable, "-m", "emu", "host", "status", "--state", str(state), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    (windows,) = [a for a in status["applications"] if a["application"] == "Windows"]
    assert windows["count"] == len(stored) + 1 and windows["capacity"] == 2 * REQUIRED
    assert windows["next_expiry"] is not None and "Windows" in status["epids"]
