"""The DNS server's edge: asyncio UDP and TCP sockets (IPv4/IPv6) around :class:`Resolver`,
and the SQLite journal that makes every accepted update durable before it is answered.

Per datagram and per connection nothing can take the server down: the resolver never raises, a
TCP peer that stalls is closed after an idle timeout (RFC 7766 6.2.3), and several messages may
follow each other on one connection (RFC 7766 6.2.1). Use it in-process::

    async with DnsServer([zone], listen=[("127.0.0.1", 0)], keys=[key]) as server:
        host, port = server.addresses[0]
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emu.clock import Clock, WallClock
from emu.dns.aging import SrvAging
from emu.dns.policy import UpdatePolicy
from emu.dns.resolver import Peer, Resolver
from emu.dns.tsig import TsigKey
from emu.dns.zone import RRset, Zone, ZoneChange, apply_changes, rdata_from_wire, rdata_to_wire
from emu.errors import DecodeError, ScenarioError, UsageError
from emu.net.address import parse_host_port

if TYPE_CHECKING:  # prometheus_client is imported only by a server that serves metrics
    from emu.net.metrics import DnsMetrics

__all__ = ["DEFAULT_TCP_IDLE_TIMEOUT", "MAX_TCP_CONNECTIONS", "DnsServer", "SqliteJournal", "parse_address"]

log = logging.getLogger(__name__)

#: Seconds a TCP connection may sit idle between messages (RFC 7766 6.2.3 suggests seconds).
DEFAULT_TCP_IDLE_TIMEOUT = 10.0
#: Concurrent TCP connections served; more are closed at once (RFC 7766 6.2.2 resource limits).
MAX_TCP_CONNECTIONS = 256
#: Shortest wait of the aging timer, so that a failing journal cannot make it spin.
_MIN_TIMER_SLEEP = 1.0
#: Port tries when port 0 must give the same number for UDP and TCP.
_BIND_ATTEMPTS = 20


def parse_address(text: str, default_port: int = 53) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:5353"``, ``"::1"`` or ``"127.0.0.1"`` to (host, port).

    Raises:
        UsageError: no host, or a port that is not a number in 0..65535.
    """
    return parse_host_port(text, default_port)


class SqliteJournal:
    """Append-only journal of RRset changes in SQLite; one transaction per accepted update.

    Each row is one RRset as it is after the update (no RDATA: deleted). Replaying the rows in
    order over the zone files gives the state before the restart.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, zone TEXT NOT NULL, "
                "name TEXT NOT NULL, rtype INTEGER NOT NULL, ttl INTEGER, rdatas BLOB)"
            )
        except sqlite3.Error as exc:
            raise UsageError(f"cannot open the journal {self.path}: {exc}") from exc

    def append(self, changes: Sequence[ZoneChange]) -> None:
        """Write one update's changes and commit (fsync) before returning."""
        rows: list[tuple[str, str, int, int | None, bytes | None]] = []
        for change in changes:
            if change.rrset is None:
                rows.append((change.zone, change.name, change.rtype, None, None))
            else:
                blob = b"".join(struct.pack("!H", len(w)) + w for w in (rdata_to_wire(r) for r in change.rrset.rdatas))
                rows.append((change.zone, change.name, change.rtype, change.rrset.ttl, blob))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT INTO changes (zone, name, rtype, ttl, rdatas) VALUES (?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def replay(self, zones: Iterable[Zone]) -> list[Zone]:
        """The zones with every journaled change applied, in order.

        Raises:
            UsageError: a journal row that cannot be decoded (the file is damaged).
        """
        by_origin = {zone.origin: zone for zone in zones}
        pending: dict[str, list[ZoneChange]] = {origin: [] for origin in by_origin}
        skipped = 0
        for seq, zone, name, rtype, ttl, blob in self._db.execute(
            "SELECT seq, zone, name, rtype, ttl, rdatas FROM changes ORDER BY seq"
        ):
            if zone not in pending:
                skipped += 1
                continue
            try:
                rrset = (
                    None
                    if blob is None
                    else RRset(int(ttl), tuple(rdata_from_wire(rtype, w) for w in _split(bytes(blob))))
                )
            except DecodeError as exc:
                raise UsageError(f"journal {self.path}, row {seq}: {exc}") from exc
            pending[zone].append(ZoneChange(zone, name, rtype, rrset))
        if skipped:
            log.warning("journal %s: %d change(s) for zones not loaded now were skipped", self.path, skipped)
        return [
            apply_changes(by_origin[origin], pending[origin]) if pending[origin] else by_origin[origin]
            for origin in by_origin
        ]

    def close(self) -> None:
        self._db.close()


def _split(blob: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(blob):
        if offset + 2 > len(blob):
            raise DecodeError("journal RDATA list is cut short", offset=offset)
        length = struct.unpack_from("!H", blob, offset)[0]
        out.append(blob[offset + 2 : offset + 2 + length])
        offset += 2 + length
    return out


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            response = self.server.answer(data, Peer(addr[0], addr[1], "udp"))
            if response is not None and self.transport is not None:
                self.transport.sendto(response, addr)
        except Exception:  # the resolver never raises; this guards the socket call itself
            log.exception("UDP datagram from %s dropped", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP socket error: %s", exc)


class DnsServer:
    """An authoritative DNS server with RFC 2136 updates over UDP and TCP.

    Args:
        zones: zones as loaded from master files (the journal, if any, is replayed over them).
        listen: (host, port) pairs; port 0 picks a free port, the same for UDP and TCP.
        keys: TSIG keys.
        policy: the update policy (default: updates need a known key).
        state: path of the SQLite journal; None keeps changes in memory only.
        clock: time source (``wall()`` feeds TSIG checks and aging).
        tcp_idle_timeout: seconds before an idle TCP connection is closed.
        srv_max_age: remove a ``_vlmcs._tcp`` SRV RR not refreshed by an update for this many
            seconds (:mod:`emu.dns.aging`); None: never.
        sleep: how the aging timer waits (inject a fake that advances a virtual clock in tests).
        metrics: Prometheus metrics to update (``emu dns serve --metrics``); None: none.
    """

    def __init__(
        self,
        zones: Iterable[Zone],
        *,
        listen: Sequence[tuple[str, int]] = (("127.0.0.1", 0),),
        keys: Iterable[TsigKey] = (),
        policy: UpdatePolicy | None = None,
        state: str | Path | None = None,
        clock: Clock | None = None,
        tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
        srv_max_age: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: DnsMetrics | None = None,
    ) -> None:
        if not listen:
            raise UsageError("give at least one address to listen on")
        self.clock: Clock = clock or WallClock()
        self.journal = SqliteJournal(state) if state is not None else None
        static = list(zones)
        zone_list = self.journal.replay(static) if self.journal is not None else static
        aging = SrvAging(srv_max_age, zone_list, static, self.clock.wall()) if srv_max_age is not None else None
        self.resolver = Resolver(zone_list, keys, policy, self.journal.append if self.journal else None, aging=aging)
        self._sleep = sleep
        self.metrics = metrics
        self._timer: asyncio.Task[None] | None = None
        self._listen = list(listen)
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_tcp_connections = max_tcp_connections
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.base_events.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self.addresses: list[tuple[str, int]] = []

    def answer(self, data: bytes, peer: Peer) -> bytes | None:
        """The resolver's answer to one message (None: dropped), counted in the metrics."""
        if self.metrics is None:
            return self.resolver.handle(data, peer, self.clock.wall())
        started = time.perf_counter()
        response = self.resolver.handle(data, peer, self.clock.wall())
        self.metrics.observe(response, time.perf_counter() - started)
        return response

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind every listen address for UDP and TCP.

        Raises:
            ScenarioError: an address cannot be bound (in use, not local, no permission).
        """
        try:
            for host, port in self._listen:
                self.addresses.append(await self._bind(host, port))
        except BaseException:
            await self.stop()
            raise
        if self.resolver.aging is not None:
            self._timer = asyncio.create_task(self._run_timer(self.resolver.aging.max_age))
        log.info(
            "DNS server listening on %s (UDP and TCP), zones %s",
            ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.addresses),
            ", ".join(self.resolver.zones),
        )

    async def _bind(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        attempts = _BIND_ATTEMPTS if port == 0 else 1
        last: OSError | None = None
        for _ in range(attempts):
            try:
                tcp = await asyncio.start_server(self._serve_tcp, host, port, reuse_address=True)
            except OSError as exc:
                raise ScenarioError(f"cannot listen on TCP {host} port {port}: {exc.strerror or exc}") from exc
            bound = tcp.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), local_addr=(host, bound))
            except OSError as exc:
                tcp.close()
                await tcp.wait_closed()
                last = exc
                if port == 0 and exc.errno == errno.EADDRINUSE:
                    continue
                raise ScenarioError(f"cannot listen on UDP {host} port {bound}: {exc.strerror or exc}") from exc
            self._tcp.append(tcp)
            self._udp.append(udp)
            return host, bound
        raise ScenarioError(f"no free port on {host} for both UDP and TCP: {last}")

    async def _run_timer(self, max_age: float) -> None:
        """Call the resolver's timer at each deadline it gives (aging), for the server's life."""
        while True:
            now = self.clock.wall()
            try:
                self.resolver.on_timer(now)
            except Exception:
                log.exception("aging failed; trying again in %g s", _MIN_TIMER_SLEEP)
            deadline = self.resolver.next_deadline()
            delay = max_age if deadline is None else deadline - now
            await self._sleep(min(max(delay, _MIN_TIMER_SLEEP), max_age))

    async def stop(self) -> None:
        """Close every socket and connection, and the journal. Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            try:
                await self._timer
            except asyncio.CancelledError:
                pass
            self._timer = None
        for udp in self._udp:
            udp.close()
        for tcp in self._tcp:
            tcp.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        for tcp in self._tcp:
            await tcp.wait_closed()
        self._udp.clear()
        self._tcp.clear()
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername") or ("?", 0)
        if len(self._connections) >= self.max_tcp_connections:
            log.warning("TCP connection from %s refused: %d connections open", peername[0], len(self._connections))
            writer.close()
            return
        self._connections.add(task)
        peer = Peer(peername[0], peername[1], "tcp")
        try:
            while True:
                try:
                    prefix = await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout)
                    length = struct.unpack("!H", prefix)[0]
                    data = await asyncio.wait_for(reader.readexactly(length), self.tcp_idle_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                response = self.answer(data, peer)
                if response is not None:
                    writer.write(struct.pack("!H", len(response)) + response)
                    await writer.drain()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("TCP connection from %s closed after an internal error", peername[0])
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
