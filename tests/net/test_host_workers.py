"""``emu host serve --workers N``: N processes on one port sharing one state file count exactly as one host.

The real command runs as a subprocess on 127.0.0.1 with two workers. Distinct clients arrive on new
connections, many at a time (bounded in count and time), so the kernel spreads them over both workers;
the counts the host answers must be exactly 1, 2, ..., N in some order (no count given twice, none
skipped), the state file must hold every client, and a worker killed with SIGKILL is replaced while
the other keeps serving.
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
#: Clients ask for this threshold, so the table (2 x N) keeps every CMID of the test.
REQUIRED = 500
CLIENTS = 160
CONCURRENCY = 16


def _start(state: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "emu", "host", "serve", "--listen", "127.0.0.1:0", "--state", str(state)]
        + ["--workers", "2", "--log-exchanges", "--json-log"],
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # bounded wait for the ready line
        line = proc.stderr.readline().decode()
        match = re.search(r"serving KMS on 127\.0\.0\.1:(\d+) with 2 workers", line)
        if match:
            return proc, int(match[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("emu host serve --workers 2 did not start")


async def _load(port: int, cmids: list[uuid.UUID]) -> list[int]:
    rng = seeded(5)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(cmid: uuid.UUID) -> int:
        message = kms_request(rng, cmid=cmid, required=REQUIRED)
        async with gate:
            (reply,) = await session(("127.0.0.1", port), [message])
        assert isinstance(reply, Reply) and reply.hresult == 0
        verified = verify_response(message, reply.kms_response)
        assert verified.ok, verified.failed
        assert verified.message is not None
        return verified.message.base.count

    return await asyncio.wait_for(asyncio.gather(*(one(c) for c in cmids)), 60)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode()


@pytest.mark.slow
def test_two_workers_count_distinct_clients_exactly_once_each(tmp_path: Path) -> None:
    state = tmp_path / "host.sqlite"
    proc, port = _start(state)
    try:
        cmids = [uuid.UUID(int=i + 1) for i in range(CLIENTS)]
        counts = asyncio.run(_load(port, cmids))
    finally:
        log = _stop(proc)
    assert sorted(counts) == list(range(1, CLIENTS + 1))
    workers = {json.loads(line)["worker"] for line in log.splitlines() if '"event": "exchange"' in line}
    assert workers == {0, 1}, "the kernel gave every connection to one worker"
    store = HostStore(state)
    try:
        assert store.client_count() == CLIENTS
    finally:
        store.close()


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_counts_stay_exact(tmp_path: Path) -> None:
    state = tmp_path / "host.sqlite"
    proc, port = _start(state)
    try:
        first = asyncio.run(_load(port, [uuid.UUID(int=i + 1) for i in range(40)]))
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
        os.kill(int(children[0]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # bounded wait for the replacement
            now = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if len(now) == 2 and children[0] not in now:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the killed worker was not replaced")
        time.sleep(0.3)  # the replacement binds its socket
        second = asyncio.run(_load(port, [uuid.UUID(int=i + 1000) for i in range(40)]))
    finally:
        log = _stop(proc)
    assert sorted(first + second) == list(range(1, 81))
    assert "stopped unexpectedly" in log
