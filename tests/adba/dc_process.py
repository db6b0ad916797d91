"""Start ``emu dc serve`` as a process for tests; stop it by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ADMIN = "CN=Administrator,CN=Users,DC=kms,DC=test"
PASSWORD = "emu-lab-Passw0rd"
CONTAINER = "CN=Activation Objects,CN=Microsoft SPP,CN=Services,CN=Configuration,DC=kms,DC=test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DcProcess:
    def __init__(self, state: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.state = state
        self.log = state.with_suffix(".log")
        cmd = [
            sys.executable,
            "-m",
            "emu",
            "dc",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state",
            str(state),
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emu dc serve exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("emu dc serve did not start within 15 s")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
