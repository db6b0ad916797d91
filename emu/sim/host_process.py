"""The demo's KMS host in a process of its own, on the demo's virtual clock (shared memory), so the host's work
and the clients' run on two cores while every exchange still crosses a real loopback TCP socket.

The demo's driver owns the clock: :class:`SharedVirtualClock` is a :class:`emu.clock.VirtualClock` that
also writes its present into eight bytes of a memory-mapped file whenever it moves; the host process
reads them (:class:`SharedClockReader`). The driver only moves the clock while no exchange is in flight, so the host
always sees the instant the request was sent at.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import select
import struct
import subprocess
import sys
import tempfile
import uuid

from emu.clock import VirtualClock
from emu.errors import ScenarioError

__all__ = ["HostProcess", "SharedClockReader", "SharedVirtualClock"]

#: Seconds the host process gets to start listening, and to finish at the end.
START_TIMEOUT = 30.0
_NOW = struct.Struct("d")


class SharedVirtualClock(VirtualClock):
    """A virtual clock whose present is also published in a small memory-mapped file (read by the host
    process; a file in /dev/shm when there is one, so it stays in memory)."""

    def __init__(self, epoch: float = VirtualClock.DEFAULT_EPOCH) -> None:
        super().__init__(epoch)
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, self.path = tempfile.mkstemp(prefix="emu-demo-clock-", dir=folder)
        os.write(fd, _NOW.pack(self.now()))
        self._map = mmap.mmap(fd, _NOW.size)
        os.close(fd)

    def advance_to(self, when: float) -> None:
        super().advance_to(when)
        _NOW.pack_into(self._map, 0, self.now())

    def close(self) -> None:
        self._map.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class SharedClockReader:
    """The host process's side: the driver's present, read from the mapped file."""

    def __init__(self, path: str, epoch: float) -> None:
        with open(path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), _NOW.size, access=mmap.ACCESS_READ)
        self.epoch = epoch

    def now(self) -> float:
        return float(_NOW.unpack_from(self._map, 0)[0])

    def wall(self) -> float:
        return self.epoch + self.now()

    def close(self) -> None:
        self._map.close()


def _serve(memory: str, epoch: float, seed: int, state: str | None) -> None:
    """The host process (``python -m emu.sim.host_process``): serve until "stop" on stdin.

    It says ``listening HOST PORT`` on stdout once it listens, answers ``count APP_ID`` with ``count N``
    (the table's count at the clock's present), and exits on ``stop`` or end of input.
    """
    import sys
    import uuid

    from emu.kms.host import HostConfig, KmsHost
    from emu.net.host_runner import loop_factory
    from emu.net.host_store import HostStore
    from emu.net.kms_server import KmsServer, ServerConfig
    from emu.rng import seeded

    clock = SharedClockReader(memory, epoch)
    store = HostStore(state)
    host = KmsHost(HostConfig(), seeded(seed + 2), clock.wall(), cache=store.load_cache(), epids=store.load_epids())

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def main() -> None:
        config = ServerConfig(listen=(("127.0.0.1", 0),))
        server = KmsServer(host, config, store=store, clock=clock, rng=seeded(seed + 3))
        await server.start()
        say(f"listening {server.addresses[0][0]} {server.addresses[0][1]}")
        loop = asyncio.get_running_loop()
        while True:
            words = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if words[:1] == ["count"] and len(words) == 2:
                say(f"count {host.cache.count(uuid.UUID(words[1]), clock.wall())}")
            elif not words or words[0] == "stop":
                break
        await server.stop()

    try:
        with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
            runner.run(main())
    finally:
        store.close()
        clock.close()


class HostProcess:
    """The host process of one demo run (a context manager; stopped and waited for at exit, by PID).

    Raises:
        ScenarioError: the process did not start listening (its error output is in the message).
    """

    def __init__(self, clock: SharedVirtualClock, *, seed: int, state: str | None) -> None:
        self._argv = [
            sys.executable,
            "-m",
            "emu.sim.host_process",
            clock.path,
            repr(clock.epoch),
            str(seed),
            state or "",
        ]
        self._proc: subprocess.Popen[str] | None = None
        self.address: tuple[str, int] = ("", 0)

    def __enter__(self) -> HostProcess:
        self._proc = subprocess.Popen(
            self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        words = self._read_line().split()
        if words[:1] != ["listening"] or len(words) != 3:
            self.__exit__()
            raise ScenarioError(f"the demo's KMS host process did not start: {self._error()}")
        self.address = (words[1], int(words[2]))
        return self

    def _read_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], START_TIMEOUT)
        return self._proc.stdout.readline() if ready else ""

    def _error(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None or proc.poll() is None:
            return "no answer"
        return proc.stderr.read().strip().splitlines()[-1:][0] if proc.stderr else "exited"

    def _send(self, line: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def count(self, app_id: uuid.UUID) -> int:
        """The host's count for ``app_id`` at the clock's present (-1: no answer)."""
        try:
            self._send(f"count {app_id}")
        except (BrokenPipeError, OSError):
            return -1
        words = self._read_line().split()
        return int(words[1]) if words[:1] == ["count"] else -1

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            self._send("stop")
        try:
            proc.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


if __name__ == "__main__":
    _serve(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] or None)
