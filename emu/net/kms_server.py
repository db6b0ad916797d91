"""The KMS host on real sockets: asyncio TCP, one sans-IO RPC association per connection.

Bytes from a peer go into :class:`emu.rpc.association.ServerAssociation`; activation calls go to
:class:`emu.kms.host.KmsHost`; the table changes the calls caused are committed to the
:class:`emu.net.host_store.HostStore` **before** their responses are written, so a kill -9 at any
moment loses no answered activation. A bad peer costs at most its own connection.

Connections are :class:`asyncio.Protocol` objects rather than streams: a KMS exchange is two small
PDUs each way, and the stream machinery (a task, a reader, ``wait_for`` per read) cost more than the
RPC layer itself. Commits are grouped: every answer produced in one turn of the event loop (all
the connections that became readable together) goes into one SQLite transaction, and only after it
commits are those answers written. Under load that turns many commits into one; a lone client
still gets its answer in the same loop turn.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import itertools
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emu.clock import Clock, WallClock
from emu.errors import UsageError
from emu.hresults import E_INVALID_DATA
from emu.kms.count_cache import Recorded
from emu.kms.host import HostAnswer, KmsHost
from emu.kms.profiles import PYKMS_ASSOC_GROUP, emu_assoc_group
from emu.net.host_store import ClientSeen, HostStore
from emu.net.kms_connection import Connection
from emu.net.server_settings import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PORT,
    SHUTDOWN_GRACE,
    SUMMARY_INTERVAL,
    ActivationHandler,
    ServerConfig,
    ServerStats,
    Service,
    Store,
    parse_listen,
)
from emu.rng import Rng, system_rng
from emu.rpc.association import Action, BadCall, Call, Close, Send, ServerRpcConfig

if TYPE_CHECKING:  # prometheus_client is imported only by a host that serves metrics
    from emu.net.metrics import HostMetrics

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "SHUTDOWN_GRACE",
    "KmsServer",
    "ServerConfig",
    "ServerStats",
    "Service",
    "parse_listen",
]

log = logging.getLogger("emu.host")


#: PTYPE of a fault PDU (docs/kms-wire-protocol.md 2.1), to count and log the faults the association sends.
_PTYPE_FAULT = 3
#: PTYPE of a bind_ack (fault injection closes after it).
_PTYPE_BIND_ACK = 12
#: The call_id vlmcsd puts in every fault (its process-wide counter after the bind), for ``--profile vlmcsd``.
_VLMCSD_FAULT_CALL_ID = (2).to_bytes(4, "little")


@dataclass
class KmsServer:
    """An asyncio KMS host.

    Args:
        host: the sans-IO host with its counting rules.
        config: sockets, timeouts, RPC negotiation.
        store: where table changes are committed (``None``: memory only).
        clock: time for the host's rules; the wall clock by default, a virtual one in scenarios.
        rng: picks the first association group id.
        on_exchange: called after each answered call with the :class:`HostAnswer` (scenarios, tests).
        services: started after the sockets listen, stopped before they close (DNS publishing).
    """

    host: ActivationHandler
    config: ServerConfig = field(default_factory=ServerConfig)
    store: Store | None = None
    clock: Clock = field(default_factory=WallClock)
    rng: Rng = field(default_factory=system_rng)
    on_exchange: Callable[[HostAnswer], None] | None = None
    services: list[Service] = field(default_factory=list)
    metrics: HostMetrics | None = None
    stats: ServerStats = field(default_factory=ServerStats)
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)
    _connections: set[Connection] = field(default_factory=set)
    _assoc_group: Any = None
    _rpc_configs: dict[int, ServerRpcConfig] = field(default_factory=dict)
    _pending_changes: list[Recorded] = field(default_factory=list)
    _pending_seen: list[ClientSeen] = field(default_factory=list)
    _deferring: list[Connection] = field(default_factory=list)
    _flush_scheduled: bool = False
    _loop: asyncio.AbstractEventLoop | None = None
    _started_services: list[Service] = field(default_factory=list)
    _summary_timer: asyncio.TimerHandle | None = None
    _summary_base: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        self._assoc_group = itertools.count(self.rng.randint(0x1000, 0x7FFF0000))
        self._profile = self.host.config.profile if isinstance(self.host, KmsHost) else "emu"

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listen address (port 0 picks a free port; see :attr:`addresses`), then start services.

        Raises:
            UsageError: an address cannot be bound (in use, not local, no permission).
        """
        self._loop = asyncio.get_running_loop()
        for host, port in self.config.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                server = await self._loop.create_server(
                    lambda: Connection(self),
                    host,
                    port,
                    family=family,
                    reuse_address=True,
                    reuse_port=self.config.reuse_port or None,
                    backlog=1024,
                )
            except OSError as exc:
                await self.stop()
                # asyncio's text repeats the address; a name lookup error (negative errno) has only its own text
                reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else (exc.strerror or str(exc))
                raise UsageError(f"cannot listen on {_fmt((host, port))}: {reason}") from exc
            self._servers.append(server)
        for addr in self.addresses:
            if addr[0] in ("0.0.0.0", "::"):
                log.warning("KMS host listening on %s: every interface, reachable from other machines", _fmt(addr))
            else:
                log.info("KMS host listening on %s", _fmt(addr))
        if not self.config.log_exchanges:
            self._summary_timer = self._loop.call_later(SUMMARY_INTERVAL, self._summarise)
        if self.metrics is not None and isinstance(self.host, KmsHost):
            from emu.net.metrics import table_snapshot

            self.metrics.watch_table(table_snapshot(self.host, self.clock.wall), self._loop)
        for service in self.services:
            await service.start()
            self._started_services.append(service)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs actually bound."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((name[0], name[1]))
        return out

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def stop(self) -> None:
        """Stop services, stop accepting, let open connections write what they hold, close them."""
        for service in reversed(self._started_services):
            try:
                await service.stop()
            except Exception:  # a failing publisher must not keep the host from stopping
                log.exception("stopping %r failed", service)
        self._started_services.clear()
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
        for server in self._servers:
            server.close()
        if self._flush_scheduled:
            self._flush()
        for conn in list(self._connections):
            conn.close()
        deadline = (self._loop.time() + SHUTDOWN_GRACE) if self._loop else 0.0
        while self._connections and self._loop and self._loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._connections):
            conn.abort()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), SHUTDOWN_GRACE)
            except Exception:  # pragma: no cover - best effort at shutdown
                pass
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

    # -- one connection's bytes ------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop :meth:`start` ran on (connections and timers exist only after it)."""
        if self._loop is None:
            raise RuntimeError("the KMS server is not started")
        return self._loop

    def _loop_time(self) -> float:
        return self._running_loop().time()

    def _rpc_config(self, local_port: int) -> ServerRpcConfig:
        # One frozen config per local port, with a fresh association group id per connection.
        base = self._rpc_configs.get(local_port)
        if base is None:
            profile = self._profile
            base = ServerRpcConfig(
                ndr64=self.config.ndr64 and profile != "py-kms",  # py-kms speaks NDR32 only
                btfn=self.config.btfn,
                secondary_address=str(local_port),
                check_opnum=profile == "emu",  # vlmcsd and py-kms answer any opnum
            )
            self._rpc_configs[local_port] = base
        n = next(self._assoc_group)
        if self._profile == "emu":
            group = emu_assoc_group(n)  # emu marks its bind_acks (docs/probe.md)
        elif self._profile == "py-kms":
            group = PYKMS_ASSOC_GROUP
        else:
            group = n & 0xFFFFFFFF  # vlmcsd: a random start, +1 per connection
        return ServerRpcConfig(
            ndr64=base.ndr64,
            btfn=base.btfn,
            secondary_address=base.secondary_address,
            assoc_group_id=group,
            check_opnum=base.check_opnum,
        )

    def _on_data(self, conn: Connection, data: bytes) -> None:
        assert conn.assoc is not None
        for action in conn.assoc.receive_data(data):
            if conn.deferred is None and not (isinstance(action, Call) and self.store is not None):
                if not self._act(conn, action):
                    return
                continue
            # An activation with a store waits for this loop turn's batch (see _flush); whatever the
            # connection does after it waits too, so its answers leave in order.
            if conn.deferred is None:
                conn.deferred = []
                conn.arrived = time.perf_counter()
                conn.calls = 0
                self._deferring.append(conn)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._running_loop().call_soon(self._flush)
            conn.deferred.append(action)
            conn.calls += isinstance(action, Call)
            if isinstance(action, Close):
                return

    def _act(self, conn: Connection, action: Action) -> bool:
        """Carry out one action of a connection's association; False once the connection is closing."""
        assert conn.assoc is not None
        peer = conn.peer
        if isinstance(action, Send):
            ptype = action.data[2]
            if ptype == _PTYPE_FAULT:
                if self._profile == "vlmcsd":  # vlmcsd's faults carry call_id 2 whatever the request's
                    action = Send(action.data[:12] + _VLMCSD_FAULT_CALL_ID + action.data[16:])
                self.stats.faults += 1
                status = int.from_bytes(action.data[24:28], "little") if len(action.data) >= 28 else 0
                log.warning("%s: fault 0x%08X sent (unknown context or operation)", peer, status)
            conn.write(action.data)
            if ptype == _PTYPE_BIND_ACK and isinstance(self.host, KmsHost) and self.host.faults:
                rule = self.host.faults.at_bind()
                if rule is not None:
                    log.warning("%s: fault injected (%s): closing after the bind_ack", peer, rule.text)
                    conn.close()
                    return False
        elif isinstance(action, Call):
            answer = self.host.handle_request(action.kms_request, self.clock.wall())
            if answer.change is not None and self.store is not None:
                self._pending_changes.append(answer.change)
                if answer.request is not None:
                    base = answer.request.base
                    self._pending_seen.append(
                        ClientSeen(
                            base.app_id,
                            base.cmid,
                            base.workstation_name,
                            base.sku_id,
                            answer.change.record.last_request,
                            answer.count,
                            answer.activated,
                        )
                    )
            if answer.injected:
                log.warning("%s: fault injected (%s)", peer, answer.injected)
            if answer.drop:
                self.stats.exchanges += 1
                self.stats.refusals += 1
                conn.close()
                return False
            if answer.delay > 0:
                data = conn.assoc.respond(action, answer.response, answer.hresult)
                close = self._profile == "py-kms"  # py-kms closes after its one answer
                self._running_loop().call_later(answer.delay, conn.send_late, data, close)
            elif answer.fault is not None:  # a recorded host's fault: the association builds the PDU
                self.stats.faults += 1
                log.warning("%s: fault 0x%08X sent (the host's answer)", peer, answer.fault)
                conn.write(conn.assoc.fault(action, answer.fault))
            else:
                conn.write(conn.assoc.respond(action, answer.response, answer.hresult))
            self.stats.exchanges += 1
            if not answer.ok:
                self.stats.refusals += 1
            if self.config.log_exchanges:
                self._log_exchange(peer, answer)
            if self.metrics is not None:
                self._count(conn, answer)
            if self.on_exchange is not None:
                self.on_exchange(answer)
            if self._profile == "py-kms":  # py-kms serves one request per connection
                if answer.delay <= 0:
                    conn.close()
                return False
        elif isinstance(action, BadCall):
            conn.write(conn.assoc.respond(action, None, E_INVALID_DATA))
            self.stats.exchanges += 1
            self.stats.refusals += 1
            log.warning("%s: unreadable activation request (%s): answered 0x%08X", peer, action.reason, E_INVALID_DATA)
        elif isinstance(action, Close):
            self.stats.closed_bad_input += 1
            log.warning("%s: closing connection: %s", peer, action.reason)
            conn.close()
            return False
        return True

    def _flush(self) -> None:
        """Answer this loop turn's activations as one batch: count, commit, then write.

        The batch holds the store's write lock from before the first count to the commit, so worker
        processes sharing the store count one batch after another; when another worker committed since
        this one's last batch, the table is reloaded first. Only after the commit are the answers
        written: a kill -9 at any moment loses no answered activation.
        """
        self._flush_scheduled = False
        conns, self._deferring = self._deferring, []
        store = self.store
        try:
            if store is not None and store.begin_batch():
                self._reload_table()
            for conn in conns:
                actions, conn.deferred = conn.deferred or [], None
                conn.held = bytearray()
                for action in actions:
                    if not self._act(conn, action):
                        break
            changes, self._pending_changes = self._pending_changes, []
            seen, self._pending_seen = self._pending_seen, []
            if store is not None:
                store.write_changes(changes, seen)
                store.commit()
                self.stats.commits += 1
                if self.metrics is not None:
                    self.metrics.commits.inc()
        except Exception:
            # Not committed, so not answered: those clients see their connection drop and retry.
            self.stats.internal_errors += 1
            self._pending_changes = []
            self._pending_seen = []
            log.exception("cannot commit this batch's table changes; dropping its %d connections", len(conns))
            if store is not None:
                try:
                    store.rollback()
                    self._reload_table(whole=True)  # the table in memory counted what was not committed
                except Exception:  # pragma: no cover - the store is gone; keep serving from memory
                    log.exception("cannot reload the client table from the store")
            for conn in conns:
                conn.deferred = None
                conn.abort()
            return
        for conn in conns:
            data, conn.held = conn.held, None
            if conn.transport is not None and not conn.closing:
                if data:
                    conn.transport.write(data)
                if conn.close_after_flush:
                    conn.close()
        if self.metrics is not None:
            done = time.perf_counter()
            for conn in conns:
                for _ in range(conn.calls):
                    self.metrics.latency.observe(done - conn.arrived)

    def _count(self, conn: Connection, answer: HostAnswer) -> None:
        """One exchange in the metrics (the latency of batched ones is observed once they are written)."""
        assert self.metrics is not None
        if answer.drop:
            result = "dropped"
        elif answer.fault is not None:
            result = "fault"
        elif not answer.ok:
            result = "refused"
        else:
            result = "activated" if answer.activated else "below-threshold"
        change = answer.change
        self.metrics.exchange(result, len(change.expired) if change else 0, len(change.evicted) if change else 0)
        if conn.deferred is None and conn.held is None:  # answered at once (no store): observe now
            self.metrics.latency.observe(time.perf_counter() - conn.arrived)

    def _reload_table(self, whole: bool = False) -> None:
        """Bring the host's client table to what is committed: another worker's batches (only what they
        changed, when the store can tell), or after a failed batch (``whole``: the table counted what
        was not committed)."""
        if (
            isinstance(self.host, KmsHost)
            and isinstance(self.store, HostStore)
            and (whole or not self.store.sync(self.host.cache))
        ):
            self.host.cache = self.store.load_cache(self.host.config.count_policy)

    def _summarise(self) -> None:
        """The periodic summary line that stands in for per-exchange lines (``log_exchanges`` off)."""
        stats = self.stats
        now = (stats.exchanges, stats.refusals, stats.faults)
        exchanges, refusals, faults = (a - b for a, b in zip(now, self._summary_base))
        self._summary_base = now
        if exchanges or faults:
            log.info(
                "%d exchanges in the last %.0f s (%d refused, %d faults); --log-exchanges logs each one",
                exchanges,
                SUMMARY_INTERVAL,
                refusals,
                faults,
            )
        if self._loop is not None and self._servers:
            self._summary_timer = self._loop.call_later(SUMMARY_INTERVAL, self._summarise)

    def _log_exchange(self, peer: str, answer: HostAnswer) -> None:
        if not self.config.log_exchanges or not log.isEnabledFor(logging.INFO):
            return
        record: dict[str, Any] = {"peer": peer, **answer.log_fields()}
        if self.config.worker is not None:
            record["worker"] = self.config.worker
        if self.config.json_log:
            stamp = _dt.datetime.fromtimestamp(self.clock.wall(), _dt.UTC).isoformat(timespec="milliseconds")
            log.info(json.dumps({"ts": stamp, "event": "exchange", **record}, sort_keys=True))
        else:
            log.info("exchange " + " ".join(f"{k}={v}" for k, v in record.items()))


def _fmt(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
