"""Prometheus metrics of the KMS host and the DNS server (``--metrics ADDR:PORT``), with prometheus_client.

Each server gets its own registry and an HTTP endpoint serving ``/metrics`` from a thread that
prometheus_client starts. Counters and histograms are updated on the event loop as things happen (an
increment is cheap); the host's table figures (count and capacity per application) are read at scrape
time by asking the event loop for a snapshot, so the scraping thread never walks the table while the
loop changes it.

KMS host (``emu_kms_*``): exchanges by result, table removals by reason (expired after 30 days, evicted
from a full table), connections, commits, the count and capacity per application, and a histogram of the
time from a request's arrival to its answer being written. DNS server (``emu_dns_*``): messages by opcode
and RCODE, and a histogram of the time to answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from emu.errors import UsageError

__all__ = ["DnsMetrics", "HostMetrics", "serve_metrics"]

log = logging.getLogger(__name__)

#: Latency buckets (seconds): a loopback exchange takes well under a millisecond, a loaded host tens.
_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Seconds a scrape waits for the event loop's snapshot of the table.
_SNAPSHOT_TIMEOUT = 2.0


def serve_metrics(registry: CollectorRegistry, address: tuple[str, int]) -> tuple[str, int]:
    """Serve ``registry`` on ``http://ADDR:PORT/metrics`` from a daemon thread; returns the bound address.

    Raises:
        UsageError: the address cannot be bound.
    """
    host, port = address
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise UsageError(f"--metrics {where}: cannot listen: {exc.strerror or exc}") from exc
    bound = server.server_address
    return str(bound[0]), int(bound[1])


class _TableCollector(Collector):
    """Count and capacity per application, read on the event loop at scrape time."""

    def __init__(self, snapshot: Callable[[], dict[str, tuple[int, int]]], loop: asyncio.AbstractEventLoop) -> None:
        self._snapshot = snapshot
        self._loop = loop

    def collect(self) -> Iterator[GaugeMetricFamily]:
        count = GaugeMetricFamily("emu_kms_client_count", "Distinct clients in the table", labels=["application"])
        capacity = GaugeMetricFamily("emu_kms_table_capacity", "Size of the client table", labels=["application"])
        try:
            future: concurrent.futures.Future[dict[str, tuple[int, int]]] = concurrent.futures.Future()

            def take() -> None:
                try:
                    future.set_result(self._snapshot())
                except Exception as exc:  # handed to the scraping thread
                    future.set_exception(exc)

            self._loop.call_soon_threadsafe(take)
            table = future.result(_SNAPSHOT_TIMEOUT)
        except Exception:
            log.warning("metrics: no snapshot of the client table (the event loop is busy or stopped)")
            table = {}
        for application, (n, cap) in sorted(table.items()):
            count.add_metric([application], n)
            capacity.add_metric([application], cap)
        yield count
        yield capacity


class HostMetrics:
    """The KMS host's metrics (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.exchanges = Counter(
            "emu_kms_exchanges", "Activation exchanges answered, by result", ["result"], registry=r
        )
        self.removals = Counter(
            "emu_kms_table_removals", "Clients removed from the table, by reason", ["reason"], registry=r
        )
        self.connections = Counter("emu_kms_connections", "TCP connections accepted", registry=r)
        self.open_connections = Gauge("emu_kms_open_connections", "TCP connections open now", registry=r)
        self.commits = Counter("emu_kms_commits", "Batches committed to the state file", registry=r)
        self.latency = Histogram(
            "emu_kms_exchange_seconds", "From a request's arrival to its answer's write", buckets=_BUCKETS, registry=r
        )

    def watch_table(self, snapshot: Callable[[], dict[str, tuple[int, int]]], loop: asyncio.AbstractEventLoop) -> None:
        """Report ``snapshot()`` (application -> (count, capacity)), taken on ``loop`` at each scrape."""
        self.registry.register(_TableCollector(snapshot, loop))

    def exchange(self, result: str, expired: int = 0, evicted: int = 0) -> None:
        self.exchanges.labels(result).inc()
        if expired:
            self.removals.labels("expired").inc(expired)
        if evicted:
            self.removals.labels("evicted").inc(evicted)


class DnsMetrics:
    """The DNS server's metrics (see the module docstring)."""

    _OPCODES = {0: "query", 4: "notify", 5: "update"}
    _RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
    _RCODES.update({6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"})

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "emu_dns_messages", "DNS messages answered, by opcode and RCODE", ["opcode", "rcode"], registry=r
        )
        self.latency = Histogram("emu_dns_answer_seconds", "Time to answer a DNS message", buckets=_BUCKETS, registry=r)

    def observe(self, response: bytes | None, seconds: float) -> None:
        """Count one answered message from its response header (nothing for a dropped one)."""
        if response is None or len(response) < 4:
            return
        opcode = (response[2] >> 3) & 0xF
        rcode = response[3] & 0xF
        self.messages.labels(self._OPCODES.get(opcode, str(opcode)), self._RCODES.get(rcode, str(rcode))).inc()
        self.latency.observe(seconds)


def table_snapshot(host: Any, now: Callable[[], float]) -> Callable[[], dict[str, tuple[int, int]]]:
    """A snapshot function for :meth:`HostMetrics.watch_table` over a :class:`emu.kms.host.KmsHost`."""
    from emu.kms import products

    def snapshot() -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for app_id, status in host.cache.status(now()).items():
            try:
                name = products.application(app_id).name
            except UsageError:
                name = str(app_id)
            out[name] = (status.count, status.capacity)
        return out

    return snapshot
