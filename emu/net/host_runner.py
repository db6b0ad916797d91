"""Running the KMS host process: which event loop it runs on, and worker processes sharing one port.

* Event loop: uvloop when it is installed (the ``fast`` extra; ``scripts/`` install it) and asyncio's
  own loop otherwise; ``--event-loop asyncio|uvloop`` forces one.
* Workers (``emu host serve --workers N``): N processes, each with its own listening socket on the same
  address and port (``SO_REUSEPORT``: the kernel spreads new connections over them) and its own
  connection to the one SQLite state file, through which their counts stay exact
  (:mod:`emu.net.host_store`). The parent reserves the ports first, so ``:0`` resolves to one port
  for all workers; it forwards SIGINT/SIGTERM to the workers, restarts a worker that dies (at most
  :data:`RESTART_LIMIT` times a minute), and exits when they have all stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from emu.errors import UsageError

__all__ = ["EVENT_LOOPS", "RESTART_LIMIT", "loop_factory", "reserve_ports", "run_loop", "run_workers"]

log = logging.getLogger("emu.host")

#: Values of ``--event-loop``.
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
#: Worker restarts allowed in any 60 seconds before the host gives up and stops.
RESTART_LIMIT = 10


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``--event-loop NAME`` (None: asyncio's default loop).

    Raises:
        UsageError: an unknown name, or ``uvloop`` asked for but not installed.
    """
    if name not in EVENT_LOOPS:
        raise UsageError(f"--event-loop {name!r}: use one of {', '.join(EVENT_LOOPS)}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise UsageError("--event-loop uvloop: uvloop is not installed (pip install 'emu[fast]')") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_loop(main: Callable[[], Coroutine[Any, Any, None]], event_loop: str = "auto") -> None:
    """Run ``main()`` to completion on the chosen event loop."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        runner.run(main())


def reserve_ports(listen: tuple[tuple[str, int], ...]) -> tuple[list[socket.socket], tuple[tuple[str, int], ...]]:
    """Bind (without listening) one ``SO_REUSEPORT`` socket per address; port 0 becomes a real port.

    The caller keeps the sockets open until every worker listens, so no other program takes the port in
    between, then closes them (a socket that does not listen gets no connections).

    Raises:
        UsageError: an address cannot be bound.
    """
    reserved: list[socket.socket] = []
    resolved: list[tuple[str, int]] = []
    for host, port in listen:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            for other in reserved:
                other.close()
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise UsageError(
                f"cannot listen on {where}: {os.strerror(exc.errno) if exc.errno and exc.errno > 0 else (exc.strerror or exc)}"
            ) from exc
        reserved.append(sock)
        resolved.append((host, sock.getsockname()[1]))
    return reserved, tuple(resolved)


def run_workers(count: int, serve_one: Callable[[int, int], int], on_ready: Callable[[], None]) -> int:
    """Fork ``count`` workers running ``serve_one(index, ready_fd)``; return once all have stopped.

    Each worker writes one byte to ``ready_fd`` once it listens (a restarted one gets -1: nothing to write); when all have, ``on_ready()`` runs in the
    parent (it prints the "serving" line). SIGINT/SIGTERM to the parent are passed to every worker. A worker
    that exits while the host is not stopping is logged and started again.

    Returns:
        0 after a requested stop, 1 when workers kept dying (more than :data:`RESTART_LIMIT` a minute) or
        did not come up.
    """
    read_fd, write_fd = os.pipe()
    workers: dict[int, int] = {}  # pid -> index
    stopping = False
    restarts: list[float] = []

    def start(index: int, ready: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(read_fd)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                code = serve_one(index, ready)
            except BaseException:  # the worker's last words; the parent restarts it
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        workers[pid] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(count):
            start(index, write_fd)
        os.close(write_fd)
        ready = 0
        while ready < count:
            chunk = os.read(read_fd, count - ready)
            if not chunk:  # every worker closed its end without saying it listens
                log.error("the workers did not start")
                forward(signal.SIGTERM, None)
                break
            ready += len(chunk)
        else:
            on_ready()
        status = 0 if ready == count else 1
        while workers:
            try:
                pid, code = os.wait()
            except ChildProcessError:  # pragma: no cover - nothing left to wait for
                break
            index = workers.pop(pid, -1)
            if stopping or index < 0:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            log.error("worker %d (pid %d) stopped unexpectedly (status %d)", index, pid, code)
            if len(restarts) > RESTART_LIMIT:
                log.error("workers keep stopping (%d restarts in a minute): stopping the host", len(restarts))
                forward(signal.SIGTERM, None)
                status = 1
                continue
            start(index, -1)  # a restarted worker has no one to tell that it listens
        return status
    finally:
        os.close(read_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
