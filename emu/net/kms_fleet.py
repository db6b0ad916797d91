"""Client life cycles on a shared scaled clock, in real time: what a lab scenario's clients run.

Where :func:`emu.net.kms_lifecycle.run_lifecycles` jumps a virtual clock from deadline to deadline
(one process, nothing else to wait for), a scenario's hosts and DNS servers are other processes on
the same :class:`emu.clock.ScaledClock`, so the clients must wait for real: each deadline is slept
to in real time (``virtual / scale`` seconds). Clients due at the same instant run concurrently (a
bounded number at a time), each exchange a real TCP connection and each discovery a real DNS query.

Every exchange is reported to ``record`` with its virtual time, so a scenario's timeline is made of
what the clients actually saw.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from emu.clock import ScaledClock, unix_to_filetime
from emu.errors import EmuError
from emu.kms.client import Discover, Exchange, HostAddress
from emu.net.kms_client import ExchangeResult, RpcOptions, exchange
from emu.net.kms_lifecycle import LiveClient, Resolver

__all__ = ["MAX_CONCURRENT", "POLL_CAP", "FleetClient", "LookupRecorder", "Recorder", "run_fleet"]

log = logging.getLogger(__name__)

#: Clients of one fleet exchanging at the same moment (a bound, like every load loop in emu).
MAX_CONCURRENT = 32
#: Longest real sleep between two looks at the stop flag and the clients' deadlines.
POLL_CAP = 0.2
#: Actions one client may ask for at one instant (discover + every host), as in kms_lifecycle.
_MAX_ACTIONS = 1000


@dataclass
class FleetClient:
    """A :class:`LiveClient` with what a scenario adds: its group and a clock offset (``skew`` seconds
    added to the ClientTime it sends; a skew event changes it while the fleet runs)."""

    live: LiveClient
    group: str
    skew: float = 0.0


#: ``record(client, virtual_time, result)`` after every exchange.
Recorder = Callable[[FleetClient, float, ExchangeResult], None]
#: ``record_lookup(client, virtual_time, domain, why)`` after a discovery that found no host.
LookupRecorder = Callable[[FleetClient, float, str, str], None]


async def _drive(
    client: FleetClient,
    clock: ScaledClock,
    resolver: Resolver | None,
    options: RpcOptions,
    record: Recorder,
    record_lookup: LookupRecorder | None,
) -> None:
    lifecycle = client.live.lifecycle
    now = clock.now()
    action = lifecycle.poll(now)
    for _ in range(_MAX_ACTIONS):
        if action is None:
            return
        if isinstance(action, Discover):
            hosts: list[HostAddress] = []
            why = "no resolver"
            at = clock.now()
            if resolver is not None:
                try:
                    hosts = list(await resolver(action.domain))
                    why = "no _vlmcs._tcp SRV record"
                except (EmuError, OSError) as exc:
                    why = str(exc)
                    log.info("%s: discovery of %s failed: %s", client.live.name, action.domain, exc)
            if not hosts and record_lookup is not None:
                record_lookup(client, at, action.domain, why)
            action = lifecycle.discovered(hosts, clock.now())
        else:
            assert isinstance(action, Exchange)
            at = clock.now()
            client_time = unix_to_filetime(clock.wall() + client.skew)
            base = lifecycle.request_base(client.live.template, client_time, at)
            result = await exchange(action.host, base, rng=client.live.rng, options=options)
            record(client, at, result)
            action = lifecycle.exchange_done(action.host, result.outcome, clock.now())
    log.warning(
        "%s asked for more than %d actions at one instant; it waits for its next deadline",
        client.live.name,
        _MAX_ACTIONS,
    )


async def run_fleet(
    clients: Sequence[FleetClient],
    clock: ScaledClock,
    until: float,
    *,
    record: Recorder,
    record_lookup: LookupRecorder | None = None,
    resolver: Resolver | None = None,
    options: RpcOptions | None = None,
    stop: threading.Event | None = None,
    concurrency: int = MAX_CONCURRENT,
) -> None:
    """Run ``clients`` until virtual time ``until`` (or until ``stop`` is set), sleeping in real time.

    A client whose deadline has passed runs at once; several due together run concurrently, at most
    ``concurrency`` at a time. Returns when the clock reaches ``until`` or ``stop`` is set; an exchange
    in flight then is finished first.
    """
    options = options or RpcOptions()
    stop = stop or threading.Event()
    gate = asyncio.Semaphore(concurrency)
    running: dict[int, asyncio.Task[Any]] = {}

    async def one(client: FleetClient) -> None:
        async with gate:
            try:
                await _drive(client, clock, resolver, options, record, record_lookup)
            except Exception:  # a bug in one client must not end the others' run
                log.exception("client %s failed", client.live.name)

    while not stop.is_set():
        now = clock.now()
        if now >= until:
            break
        for n, client in enumerate(clients):
            if n in running:
                continue
            deadline = client.live.lifecycle.next_deadline()
            if deadline is not None and deadline <= now:
                running[n] = asyncio.create_task(one(client))
        for n in [n for n, task in running.items() if task.done()]:
            del running[n]
        deadlines = [
            d for n, c in enumerate(clients) if n not in running and (d := c.live.lifecycle.next_deadline()) is not None
        ]
        wait = clock.real_delay(min(deadlines, default=until) - clock.now())
        if running:
            await asyncio.wait(
                list(running.values()), timeout=min(max(wait, 0.0), POLL_CAP), return_when=asyncio.FIRST_COMPLETED
            )
        else:
            await asyncio.sleep(min(max(wait, 0.0005), POLL_CAP))
    if running:
        await asyncio.gather(*running.values(), return_exceptions=True)
