"""One TCP connection of the KMS host: bytes in, through the connection's RPC association, answers out.

The connection keeps what it must for the server's batches (the actions waiting for the loop turn's
commit and the answers held until it), its idle timer, and its peer's name for log lines; the decisions
are the server's (:class:`emu.net.kms_server.KmsServer`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from emu.net.server_settings import DEFAULT_PORT
from emu.rpc.association import Action, ServerAssociation

if TYPE_CHECKING:
    from emu.net.kms_server import KmsServer

__all__ = ["Connection", "peer_text"]

log = logging.getLogger("emu.host")


class Connection(asyncio.Protocol):
    """One TCP connection: bytes → association → host → bytes (see the module docstring)."""

    __slots__ = (
        "arrived",
        "assoc",
        "calls",
        "close_after_flush",
        "closing",
        "deferred",
        "held",
        "last_seen",
        "peer",
        "server",
        "timer",
        "transport",
    )

    def __init__(self, server: KmsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.assoc: ServerAssociation | None = None
        self.last_seen = 0.0
        self.timer: asyncio.TimerHandle | None = None
        #: answers waiting for the group commit, in connection order (None: nothing waiting).
        self.held: bytearray | None = None
        self.closing = False
        #: close() was asked while answers were held: close once they are written.
        self.close_after_flush = False
        #: actions waiting for the loop turn's batch, in order (None: nothing waiting).
        self.deferred: list[Action] | None = None
        #: when the bytes of the waiting actions arrived, and how many calls they hold (metrics).
        self.arrived = 0.0
        self.calls = 0

    # -- asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses, hence the cast, not an isinstance).
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        self.peer = peer_text(transport.get_extra_info("peername"))
        if len(server._connections) >= server.config.max_connections:
            server.stats.refused_connections += 1
            log.warning(
                "%s: refused: %d connections open (cap %d)",
                self.peer,
                len(server._connections),
                server.config.max_connections,
            )
            self.transport.abort()
            return
        server._connections.add(self)
        server.stats.connections += 1
        if server.metrics is not None:
            server.metrics.connections.inc()
            server.metrics.open_connections.inc()
        sock = transport.get_extra_info("sockname")
        self.assoc = ServerAssociation(server._rpc_config(sock[1] if sock else DEFAULT_PORT))
        timeout = server.config.idle_timeout
        if timeout > 0:
            self.last_seen = server._loop_time()
            self.timer = server._running_loop().call_later(timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.closing or self.assoc is None:
            return
        if self.timer is not None:
            self.last_seen = self.server._loop_time()
        if self.deferred is None:
            self.arrived = time.perf_counter()
        try:
            self.server._on_data(self, data)
        except Exception:  # the ladder's last rung: log it, lose only this connection
            self.server.stats.internal_errors += 1
            log.exception("%s: internal error; connection closed", self.peer)
            self.abort()

    def eof_received(self) -> bool | None:
        # Half-close from the peer: answer what is held, then close (a KMS client never half-closes on purpose).
        self.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self in self.server._connections and self.server.metrics is not None:
            self.server.metrics.open_connections.dec()
        self.server._connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # -- helpers ------------------------------------------------------------------------------------

    def _check_idle(self) -> None:
        if self.closing:
            return
        server = self.server
        timeout = server.config.idle_timeout
        idle = server._loop_time() - self.last_seen
        if idle >= timeout and self.held is None and self.deferred is None:
            server.stats.idle_closed += 1
            log.debug("%s: idle for %.1f s; closing", self.peer, idle)
            self.close()
        else:
            self.timer = server._running_loop().call_later(max(timeout - idle, 0.01), self._check_idle)

    def write(self, data: bytes | bytearray) -> None:
        if self.held is not None:
            self.held += data
        elif self.transport is not None and not self.closing:
            self.transport.write(data)

    def send_late(self, data: bytes, close: bool = False) -> None:
        """Write a delayed answer (fault injection, a profile's V4 delay), if the connection is still open."""
        if self.transport is not None and not self.closing:
            self.transport.write(data)
            if close:
                self.close()

    def close(self) -> None:
        """Close after the held answers (if any) are written by the group commit."""
        if self.held is not None or self.deferred is not None:
            self.close_after_flush = True
            return
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self.held = None
        self.deferred = None
        if self.transport is not None:
            self.transport.abort()


def peer_text(peer: Any) -> str:
    if not peer:
        return "?"
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
