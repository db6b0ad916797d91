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
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from emu.adba.client import AdbaResult, AdbaState
from emu.clock import ScaledClock, unix_to_filetime
from emu.errors import EmuError
from emu.kms.client import ClientState, Discover, Exchange, HostAddress
from emu.mak.client import ClientLicense
from emu.net.kms_client import ExchangeResult, RpcOptions, exchange
from emu.net.kms_lifecycle import LiveClient, Resolver
from emu.rng import Rng

__all__ = [
    "MAX_CONCURRENT",
    "POLL_CAP",
    "AdbaPath",
    "AdbaRecorder",
    "FleetClient",
    "LookupRecorder",
    "MakPath",
    "MakRecorder",
    "Recorder",
    "run_fleet",
]

log = logging.getLogger(__name__)

#: Clients of one fleet exchanging at the same moment (a bound, like every load loop in emu).
MAX_CONCURRENT = 32
#: Longest real sleep between two looks at the stop flag and the clients' deadlines.
POLL_CAP = 0.2
#: Actions one client may ask for at one instant (discover + every host), as in kms_lifecycle.
_MAX_ACTIONS = 1000


@dataclass
class AdbaPath:
    """A domain member's ADBA step before KMS (docs/adba.md "Order of the paths"): locate a DC of ``forest``
    through ``dns_server`` (``_ldap._tcp.dc._msdcs``), read the activation object for ``kms_id``; while
    that activation holds, the KMS life cycle waits. ``act_type``: ``any``, ``ad`` (never KMS) or ``kms``
    (never ADBA), as slmgr /act-type."""

    forest: str
    kms_id: uuid.UUID
    dns_server: tuple[str, int]
    rng: Rng
    act_type: str = "any"
    state: AdbaState = field(default_factory=AdbaState)
    last_ok: bool = False

    def uses_adba(self) -> bool:
        return self.act_type != "kms" and self.state.domain_member

    def allows_kms(self, now: float) -> bool:
        """KMS runs unless the last ADBA (re)activation succeeded and still holds: "if the object can't be read
        [at reactivation] it uses KMS" (documented, docs/adba.md)."""
        return self.act_type != "ad" and not (self.last_ok and self.state.activated(now))


@dataclass
class MakPath:
    """A MAK client: ``online`` (its product key is a MAK, so it never uses KMS) activates itself against the
    activation service at ``url`` and retries every ``retry`` seconds until it is activated; ``vamt`` waits
    for VAMT to deposit a CID (proxy activation, driven by the scenario's events); ``fallback`` is the
    documented last path: after ADBA and KMS failed to activate it, the client installs the MAK ``key``
    and activates online (then for good: MAK activation is permanent)."""

    url: str
    state: ClientLicense
    mode: str = "online"
    next_attempt: float = 0.0
    retry: float = 2 * 3600.0
    key: str | None = None

    def due(self, now: float) -> bool:
        return self.mode == "online" and not self.state.activated and now >= self.next_attempt


@dataclass
class FleetClient:
    """A :class:`LiveClient` with what a scenario adds: its group, a clock offset (``skew`` seconds
    added to the ClientTime it sends; a skew event changes it while the fleet runs) and, for a domain
    member, its ADBA step."""

    live: LiveClient
    group: str
    skew: float = 0.0
    adba: AdbaPath | None = None
    mak: MakPath | None = None

    def deadline(self, now: float) -> float | None:
        """When this client next has something to do (None: it waits on nothing)."""
        if self.mak is not None and (self.mak.mode != "fallback" or self.mak.state.activated):
            online = self.mak.mode == "online" and not self.mak.state.activated
            return self.mak.next_attempt if online else None
        times: list[float] = []
        adba = self.adba
        if adba is not None and adba.uses_adba():
            times.append(adba.state.next_attempt)
            until = adba.state.activated_until
            if until is not None and until > now:
                times.append(until)  # KMS takes over when the ADBA activation runs out
        if adba is None or adba.allows_kms(now):
            kms = self.live.lifecycle.next_deadline()
            if kms is not None:
                times.append(kms)
        return min(times) if times else None


#: ``record(client, virtual_time, result)`` after every exchange.
Recorder = Callable[[FleetClient, float, ExchangeResult], None]
#: ``record_lookup(client, virtual_time, domain, why)`` after a discovery that found no host.
LookupRecorder = Callable[[FleetClient, float, str, str], None]
#: ``record_adba(client, virtual_time, dc "host:port" or None, result)`` after every ADBA attempt.
AdbaRecorder = Callable[[FleetClient, float, str | None, AdbaResult], None]
#: ``record_mak(client, virtual_time, service URL, HRESULT (0: activated, -1: no answer), detail)`` after each
#: MAK attempt.
MakRecorder = Callable[[FleetClient, float, str, int, str], None]


def path_rng(path: MakPath) -> Rng:
    """The randomness of a MAK installation (its serial): seeded from the machine's hardware ID."""
    from emu.rng import seeded

    return seeded(int.from_bytes(path.state.hardware_id.encode()[-8:], "big"))


async def _mak_attempt(path: MakPath) -> tuple[int, str]:
    """Online MAK activation (``slmgr /ato``): IID to the service, CID deposited; (HRESULT, detail)."""
    from emu.mak import client as mak
    from emu.mak.errors import ActivationError
    from emu.net.actsvc_client import online_activate

    try:
        if path.state.key is None and path.key is not None:
            path.state = mak.install_key(path.state, path.key, path_rng(path))
        iid = mak.current_iid(path.state)
        cid = await asyncio.to_thread(online_activate, path.url, path.state.key or "", iid, timeout=2.0)
        path.state = mak.apply_cid(path.state, cid)
    except ActivationError as exc:
        return exc.code, str(exc)
    except EmuError as exc:
        return -1, str(exc)  # the service unreachable: no HRESULT came back
    return 0, "activated online (permanent)"


async def _adba_attempt(path: AdbaPath, now: float) -> tuple[str | None, AdbaResult]:
    """One ADBA attempt: locate a DC by SRV, then bind, search and verify (blocking LDAP, in a worker thread
    that inherits the caller's network namespace)."""
    from emu.adba.client import DC_NOT_FOUND, Check, adba_attempt
    from emu.adba.forest import DEFAULT_ADMIN_PASSWORD, Forest
    from emu.net.dc_runner import LDAP_SERVICE
    from emu.net.dns_discovery import discover_kms_hosts
    from emu.net.ldap_client import LdapClient

    try:
        dcs = await discover_kms_hosts(path.forest, path.dns_server, path.rng, timeout=0.5, service=LDAP_SERVICE)
    except (EmuError, OSError) as exc:
        return None, AdbaResult(False, (Check("dc-located", False, str(exc)),), DC_NOT_FOUND)
    if not dcs:
        return None, AdbaResult(False, (Check("dc-located", False, "no DC SRV record"),), DC_NOT_FOUND)
    host, port = dcs[0]

    def attempt() -> AdbaResult:
        with LdapClient(host, port, timeout=2.0) as client:
            return adba_attempt(
                client,
                kms_id=path.kms_id,
                forest=path.forest,
                now=now,
                bind_name=Forest(path.forest).admin_dn,
                password=DEFAULT_ADMIN_PASSWORD,
            )

    try:
        return f"{host}:{port}", await asyncio.to_thread(attempt)
    except (EmuError, OSError) as exc:
        return f"{host}:{port}", AdbaResult(False, (Check("connect", False, str(exc)),), DC_NOT_FOUND)


async def _drive(
    client: FleetClient,
    clock: ScaledClock,
    resolver: Resolver | None,
    options: RpcOptions,
    record: Recorder,
    record_lookup: LookupRecorder | None,
    record_adba: AdbaRecorder | None = None,
    record_mak: MakRecorder | None = None,
) -> None:
    lifecycle = client.live.lifecycle
    now = clock.now()
    if client.mak is not None and (client.mak.mode != "fallback" or client.mak.state.activated):
        if client.mak.due(now):
            code, detail = await _mak_attempt(client.mak)
            client.mak.next_attempt = clock.now() + client.mak.retry
            if record_mak is not None:
                record_mak(client, now, client.mak.url, code, detail)
        return
    adba = client.adba
    if adba is not None and adba.uses_adba() and adba.state.due(now):
        where, adba_result = await _adba_attempt(adba, now)
        adba.state.record(adba_result, now)
        adba.last_ok = adba_result.activated
        if record_adba is not None:
            record_adba(client, now, where, adba_result)
        now = clock.now()
    if adba is not None and not adba.allows_kms(now):
        return
    action = lifecycle.poll(now)
    tried_kms = False
    for _ in range(_MAX_ACTIONS):
        if action is None:
            break
        tried_kms = True
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
    else:
        log.warning(
            "%s asked for more than %d actions at one instant; it waits for its next deadline",
            client.live.name,
            _MAX_ACTIONS,
        )
    fallback = client.mak
    if tried_kms and fallback is not None and lifecycle.state is not ClientState.ACTIVATED:
        code, detail = await _mak_attempt(fallback)  # the last path: ADBA and KMS did not activate
        if record_mak is not None:
            record_mak(client, clock.now(), fallback.url, code, detail)


async def run_fleet(
    clients: Sequence[FleetClient],
    clock: ScaledClock,
    until: float,
    *,
    record: Recorder,
    record_lookup: LookupRecorder | None = None,
    record_adba: AdbaRecorder | None = None,
    record_mak: MakRecorder | None = None,
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
                await _drive(client, clock, resolver, options, record, record_lookup, record_adba, record_mak)
            except Exception:  # a bug in one client must not end the others' run
                log.exception("client %s failed", client.live.name)

    while not stop.is_set():
        now = clock.now()
        if now >= until:
            break
        for n, client in enumerate(clients):
            if n in running:
                continue
            deadline = client.deadline(now)
            if deadline is not None and deadline <= now:
                running[n] = asyncio.create_task(one(client))
        for n in [n for n, task in running.items() if task.done()]:
            del running[n]
        deadlines = [d for n, c in enumerate(clients) if n not in running and (d := c.deadline(now)) is not None]
        wait = clock.real_delay(min(deadlines, default=until) - clock.now())
        if running:
            await asyncio.wait(
                list(running.values()), timeout=min(max(wait, 0.0), POLL_CAP), return_when=asyncio.FIRST_COMPLETED
            )
        else:
            await asyncio.sleep(min(max(wait, 0.0005), POLL_CAP))
    if running:
        await asyncio.gather(*running.values(), return_exceptions=True)
