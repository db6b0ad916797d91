"""Client life cycles over real sockets: each emulated client's sans-IO state machine
(:class:`emu.kms.client.ClientLifecycle`) driven on a wall or virtual clock, every exchange a real TCP
connection to a host and every discovery a real DNS lookup (the demo, labs and tests use it).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from emu.clock import Clock, VirtualClock, unix_to_filetime
from emu.errors import EmuError, ScenarioError
from emu.kms.client import ClientLifecycle, Discover, Exchange, HostAddress, RequestTemplate
from emu.net.kms_client import DEFAULT_CONNECT_TIMEOUT, ExchangeResult, RpcOptions, exchange
from emu.rng import Rng

__all__ = ["MAX_LIFECYCLE_STEPS", "LiveClient", "Resolver", "dns_resolver", "run_lifecycles", "static_resolver"]

log = logging.getLogger(__name__)

#: Upper bound on the deadline jumps of one :func:`run_lifecycles` call (every loop is bounded).
MAX_LIFECYCLE_STEPS = 100_000
#: Upper bound on the actions one client may ask for at a single instant (discover + every host).
_MAX_ACTIONS_PER_INSTANT = 1000

# --- life cycles over real sockets -----------------------------------------------------------

#: ``async resolver(domain) -> hosts in RFC 2782 order`` (empty: none found).
Resolver = Callable[[str], Awaitable[list[HostAddress]]]


def static_resolver(table: dict[str, Sequence[HostAddress]]) -> Resolver:
    """A resolver answering from a dict (tests and scenarios without a DNS server).

    The dict is read at each lookup, so a test can change it between discoveries.
    """

    async def resolve(domain: str) -> list[HostAddress]:
        return list(table.get(domain.strip(".").lower(), ()))

    return resolve


def dns_resolver(dns_server: tuple[str, int], rng: Rng, *, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Resolver:
    """A resolver asking ``dns_server`` for ``_vlmcs._tcp.<domain>`` (RFC 2782 order, :mod:`emu.net.dns_discovery`)."""
    from emu.net.dns_discovery import discover_kms_hosts

    async def resolve(domain: str) -> list[HostAddress]:
        return [
            HostAddress(host, port) for host, port in await discover_kms_hosts(domain, dns_server, rng, timeout=timeout)
        ]

    return resolve


@dataclass
class LiveClient:
    """One emulated client driven by :func:`run_lifecycles`.

    Attributes:
        lifecycle: the sans-IO state machine (its CMID goes into every request).
        template: what the client is (product, version, workstation name).
        rng: the client's randomness (request IVs).
        results: every exchange it made, oldest first.
        name: a label for logs.
    """

    lifecycle: ClientLifecycle
    template: RequestTemplate
    rng: Rng
    name: str = ""
    results: list[ExchangeResult] = field(default_factory=list)
    keep_results: bool = True
    exchanges: int = 0


async def _drive(client: LiveClient, clock: Clock, resolver: Resolver | None, options: RpcOptions) -> None:
    """Perform every action ``client`` wants at the clock's current instant."""
    now = clock.now()
    lifecycle = client.lifecycle
    action = lifecycle.poll(now)
    for _ in range(_MAX_ACTIONS_PER_INSTANT):
        if action is None:
            return
        if isinstance(action, Discover):
            hosts: list[HostAddress] = []
            if resolver is None:
                log.warning("%s: no resolver to discover %s", client.name, action.domain)
            else:
                try:
                    hosts = list(await resolver(action.domain))
                except (EmuError, OSError) as exc:
                    log.warning("%s: discovery of %s failed: %s", client.name, action.domain, exc)
            action = lifecycle.discovered(hosts, now)
        else:
            assert isinstance(action, Exchange)
            base = lifecycle.request_base(client.template, unix_to_filetime(clock.wall()), now)
            result = await exchange(action.host, base, rng=client.rng, options=options)
            client.exchanges += 1
            if client.keep_results:
                client.results.append(result)
            log.debug("%s: %s -> %s", client.name, action.host, result.detail)
            action = lifecycle.exchange_done(action.host, result.outcome, now)
    raise ScenarioError(f"client {client.name} asked for more than {_MAX_ACTIONS_PER_INSTANT} actions at one instant")


async def run_lifecycles(
    clients: Sequence[LiveClient],
    clock: VirtualClock,
    until: float,
    *,
    resolver: Resolver | None = None,
    options: RpcOptions | None = None,
    max_steps: int = MAX_LIFECYCLE_STEPS,
    window: float = 0.0,
    concurrency: int = 64,
) -> int:
    """Run ``clients`` from the clock's present to ``until`` (clock seconds) over real sockets.

    At each instant every due client performs its actions (one after another, each exchange
    awaited to the end); then the clock jumps to the earliest deadline of any client or any timer
    scheduled on ``clock`` (a test may stop a host that way), never past ``until``. Hosts should
    share ``clock`` so that their notion of time matches the clients'. Returns the number of jumps.

    With ``window`` > 0, every client due within ``window`` seconds of the earliest deadline is served at
    the latest of those deadlines, concurrently (at most ``concurrency`` at a time): a client may act up
    to ``window`` late, and the host sees those requests in the order they arrive, not strictly in
    deadline order. With 0 (the default) clients act exactly at their deadlines, one after another.

    Raises:
        ScenarioError: more than ``max_steps`` jumps (a livelock), or a client asking for
            unbounded actions at one instant.
    """
    options = options or RpcOptions()
    # A heap of (deadline, index): each step drives only the clients that are due, so a step costs
    # O(due x log n), not O(n) - 1,000 clients over a year are 50,000 steps.
    heap: list[tuple[float, int]] = []
    current: dict[int, float] = {}

    def schedule(index: int) -> None:
        deadline = clients[index].lifecycle.next_deadline()
        if deadline is None:
            current.pop(index, None)
            return
        current[index] = deadline
        heapq.heappush(heap, (deadline, index))

    now = clock.now()
    for index in range(len(clients)):
        schedule(index)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def drive_one(index: int) -> None:
        async with gate:
            await _drive(clients[index], clock, resolver, options)

    for step in range(max_steps + 1):
        now = clock.now()
        limit = now + window if window > 0 and now + window <= until else now
        due: set[int] = set()
        latest = now
        while heap and heap[0][0] <= limit:
            deadline, index = heapq.heappop(heap)
            if current.get(index) == deadline:
                due.add(index)
                latest = max(latest, deadline)
        if window > 0 and due:
            clock.advance_to(latest)
            await asyncio.gather(*(drive_one(index) for index in sorted(due)))
        else:
            for index in sorted(due):
                await _drive(clients[index], clock, resolver, options)
        for index in sorted(due):
            schedule(index)
        while heap and current.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale entries
        upcoming = heap[0][0] if heap else None
        if upcoming is None or upcoming > until:
            clock.advance_to(max(until, clock.now()))
            for client in clients:  # no deadline is due by now, so this only settles the state
                client.lifecycle.poll(clock.now())
            return step
        clock.advance_to(max(upcoming, clock.now()))
    raise ScenarioError(f"the life cycles needed more than {max_steps} clock jumps before {until}")
