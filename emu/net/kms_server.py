"""The KMS host on real sockets: asyncio TCP, one sans-IO RPC association per connection.

Bytes from a peer go into :class:`emu.rpc.association.ServerAssociation`; activation calls go to
:class:`emu.kms.host.KmsHost`; the table change the call caused is committed to the
:class:`emu.net.host_store.HostStore` **before** the response is written, so a kill -9 at any
moment loses no answered activation. A bad peer costs at most its own connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from emu.clock import Clock, WallClock
from emu.errors import UsageError
from emu.kms.host import HostAnswer, KmsHost
from emu.rpc.association import BadCall, Call, Close, Send, ServerAssociation, ServerRpcConfig
from emu.rng import Rng, system_rng

__all__ = ["ServerConfig", "KmsServer", "parse_listen", "DEFAULT_PORT", "DEFAULT_IDLE_TIMEOUT", "DEFAULT_MAX_CONNECTIONS"]

log = logging.getLogger("emu.host")

#: TCP port of KMS (kms-wire-protocol.md 1.1).
DEFAULT_PORT = 1688
#: Seconds a connection may stay silent before the host closes it (vlmcsd's default, spec 1.3).
DEFAULT_IDLE_TIMEOUT = 30.0
#: Connections served at once; further ones are accepted and closed at once (logged).
DEFAULT_MAX_CONNECTIONS = 1024
#: Bytes read from a socket at a time.
READ_SIZE = 65536
#: HRESULT for a request the host cannot read (spec 8.4).
E_INVALID_DATA = 0x8007000D


def parse_listen(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT``, ``[V6]:PORT``, ``:PORT`` or a bare V6 address → (host, port).

    Raises:
        UsageError: the text is not an address and port.
    """
    text = text.strip()
    if not text:
        raise UsageError("empty listen address")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise UsageError(f"{text!r}: missing ']' after an IPv6 address")
        port_text = rest[1:] if rest.startswith(":") else (rest or str(default_port))
    elif text.count(":") > 1:
        host, port_text = text, str(default_port)
    elif ":" in text:
        host, port_text = text.rsplit(":", 1)
    else:
        host, port_text = text, str(default_port)
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"{text!r}: port {port} is out of range")
    return host or "0.0.0.0", port


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Socket-level settings of the host (the KMS rules are in :class:`emu.kms.host.HostConfig`)."""

    listen: tuple[tuple[str, int], ...] = (("0.0.0.0", DEFAULT_PORT),)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    ndr64: bool = True
    btfn: bool = True
    json_log: bool = False


@dataclass
class _Stats:
    connections: int = 0
    exchanges: int = 0
    faults: int = 0
    closed_bad_input: int = 0
    refused_connections: int = 0


@dataclass
class KmsServer:
    """An asyncio KMS host.

    Args:
        host: the sans-IO host with its counting rules.
        config: sockets, timeouts, RPC negotiation.
        store: where table changes are committed (``None``: memory only).
        clock: time for the host's rules; the wall clock by default, a virtual one in scenarios.
        on_exchange: called after each answered call with the :class:`HostAnswer` (scenarios, tests).
    """

    host: KmsHost
    config: ServerConfig = field(default_factory=ServerConfig)
    store: Any = None
    clock: Clock = field(default_factory=WallClock)
    rng: Rng = field(default_factory=system_rng)
    on_exchange: Callable[[HostAnswer], None] | None = None
    stats: _Stats = field(default_factory=_Stats)
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _assoc_group: Any = None

    def __post_init__(self) -> None:
        self._assoc_group = itertools.count(self.rng.randint(0x1000, 0x7FFF0000))

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listen address (port 0 picks a free port; see :attr:`addresses`)."""
        for host, port in self.config.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                server = await asyncio.start_server(self._serve_connection, host, port, family=family, reuse_address=True)
            except OSError as exc:
                await self.stop()
                raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
            self._servers.append(server)
        for addr in self.addresses:
            log.info("KMS host listening on %s", _fmt(addr))

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs actually bound."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1]))
        return out

    async def stop(self) -> None:
        """Stop accepting, close open connections, wait for them to finish."""
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            try:
                await server.wait_closed()
            except Exception:  # pragma: no cover - best effort at shutdown
                pass
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers.clear()

    async def serve_until_signal(self) -> None:
        """Run until SIGINT or SIGTERM, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread
                pass
        await stop.wait()
        log.info("shutting down")
        await self.stop()

    async def __aenter__(self) -> KmsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- one connection ------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = _peer_text(writer.get_extra_info("peername"))
        try:
            if len(self._tasks) > self.config.max_connections:
                self.stats.refused_connections += 1
                log.warning("%s: refused: %d connections open (cap %d)", peer, len(self._tasks) - 1, self.config.max_connections)
                return
            self.stats.connections += 1
            sock = writer.get_extra_info("sockname")
            local_port = sock[1] if sock else DEFAULT_PORT
            assoc = ServerAssociation(
                ServerRpcConfig(
                    ndr64=self.config.ndr64,
                    btfn=self.config.btfn,
                    secondary_address=str(local_port),
                    assoc_group_id=next(self._assoc_group) & 0xFFFFFFFF,
                )
            )
            await self._converse(assoc, reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # the ladder's last rung: log it, lose only this connection
            log.exception("%s: internal error; connection closed", peer)
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass

    async def _converse(self, assoc: ServerAssociation, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        timeout = self.config.idle_timeout
        while True:
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), timeout) if timeout > 0 else await reader.read(READ_SIZE)
            except asyncio.TimeoutError:
                log.debug("%s: idle for %.0f s; closing", peer, timeout)
                return
            if not data:
                return
            out = bytearray()
            for action in assoc.receive_data(data):
                if isinstance(action, Send):
                    if action.data[2:3] == b"\x03":
                        self.stats.faults += 1
                        log.warning("%s: fault sent: %s", peer, getattr(action, "reason", "") or "protocol violation")
                    out += action.data
                elif isinstance(action, Call):
                    answer = self.host.handle_request(action.kms_request, self.clock.wall())
                    if self.store is not None and answer.change is not None:
                        self.store.apply(answer.change)  # committed before the answer leaves
                    out += assoc.respond(action, answer.response, answer.hresult)
                    self.stats.exchanges += 1
                    self._log_exchange(peer, answer)
                    if self.on_exchange is not None:
                        self.on_exchange(answer)
                elif isinstance(action, BadCall):
                    out += assoc.respond(action, None, E_INVALID_DATA)
                    self.stats.exchanges += 1
                    log.warning("%s: unreadable activation request (%s): answered 0x%08X", peer, action.reason, E_INVALID_DATA)
                elif isinstance(action, Close):
                    self.stats.closed_bad_input += 1
                    if out:
                        writer.write(bytes(out))
                    log.warning("%s: closing connection: %s", peer, action.reason)
                    return
            if out:
                writer.write(bytes(out))
                await writer.drain()

    def _log_exchange(self, peer: str, answer: HostAnswer) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        record = {"peer": peer, **answer.log_fields()}
        if self.config.json_log:
            log.info(json.dumps(record, sort_keys=True))
        else:
            log.info(" ".join(f"{k}={v}" for k, v in record.items()))


def _peer_text(peer: Any) -> str:
    if not peer:
        return "?"
    return _fmt((peer[0], peer[1]))


def _fmt(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
