"""Client life cycles over real sockets: each emulated client's sans-IO state machine
(:class:`emu.kms.client.ClientLifecycle`) driven on a wall or virtual clock, every exchange a real TCP
connection to a host and every discovery a real DNS lookup (the demo, labs and tests use it).
"""

from __future__ import annotations

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
            client.results.append(result)
            log.info("%s: %s -> %s", client.name, action.host, result.detail)
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
) -> int:
    """Run ``clients`` from the clock's present to ``until`` (clock seconds) over real sockets.

    At each instant every due client performs its actions (one after another, each exchange
    awaited to the end); then the clock jumps to the earliest deadline of any client or any timer
    scheduled on ``clock`` (a test may stop a host that way), never past ``until``. Hosts should
    share ``clock`` so that their notion of time matches the clients'. Returns the number of jumps.

    Raises:
        ScenarioError: more than ``max_steps`` jumps (a livelock), or a client asking for
            unbounded actions at one instant.
    """
    options = options or RpcOptions()
    for step in range(max_steps + 1):
        for client in clients:
            await _drive(client, clock, resolver, options)
        deadlines = [d for c in clients if (d := c.lifecycle.next_deadline()) is not None]
        upcoming = min(deadlines) if deadlines else None
        if upcoming is None or upcoming > until:
            clock.advance_to(max(until, clock.now()))
            for client in clients:  # no deadline is due by now, so this only settles the state
                client.lifecycle.poll(clock.now())
            return step
        clock.advance_to(max(upcoming, clock.now()))
    raise ScenarioError(f"the life cycles needed more than {max_steps} clock jumps before {until}")
