"""The main job: an emulated activation network on loopback, on a virtual clock.

One process runs emu's DNS server for a test zone and N Windows clients that discover the KMS host
through the ``_vlmcs._tcp`` SRV record and activate; the KMS host runs in a second process on the
same virtual clock (:mod:`emu.sim.host_process`, so the two sides use two cores) and publishes itself
with a TSIG-signed RFC 2136 update. Clients below the threshold come back
every 2 hours (the host's activation interval) on the virtual clock, so the whole story takes
seconds while every exchange crosses a real TCP socket and every lookup a real UDP one.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from emu.dns.tsig import TsigKey
from emu.dns.zone import load_master_file
from emu.errors import UsageError
from emu.kms import products
from emu.kms.client import Activated, BelowThreshold, ClientLifecycle, ClientState, HostAddress, RequestTemplate
from emu.net.dns_client import query
from emu.net.dns_discovery import discover_kms_hosts
from emu.net.dns_publisher import PublishDomain, Publisher
from emu.net.dns_server import DnsServer
from emu.net.kms_lifecycle import LiveClient, run_lifecycles
from emu.rng import seeded
from emu.sim.host_process import HostProcess, SharedVirtualClock
from emu.wire.kms import Version

__all__ = ["DEMO_KEY_NAME", "DEMO_ZONE", "DemoReport", "DemoSettings", "run_demo"]

#: The zone the demo's DNS server is authoritative for.
DEMO_ZONE = "kms.test"
#: The TSIG key the host signs its update with (a lab key made from a fixed seed).
DEMO_KEY_NAME = "kms-host-key."
#: The KMS host's name in the zone (the SRV target).
DEMO_HOST_NAME = "kms1.kms.test"

_ZONE_TEXT = """$ORIGIN kms.test.
$TTL 3600
@    IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
@    NS  ns1
ns1  A   127.0.0.1
"""


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """What the demo runs. Every field has a ``emu demo`` flag.

    Attributes:
        clients: how many clients.
        product: the clients' product (a name ``emu.kms.products.lookup`` understands).
        arrival: virtual seconds between two clients' first requests.
        hours: how long (virtual hours) to run.
        seed: seeds every random choice (CMIDs, IVs, ePIDs, SRV selection).
        state: SQLite file for the host's table (None: in memory).
        window: serve clients due within this many virtual seconds together (None: see batch_window).
    """

    clients: int = 30
    product: str = "Windows 10 Enterprise"
    arrival: float = 60.0
    hours: float = 4.0
    seed: int = 2026
    state: str | None = None
    window: float | None = None

    @property
    def batch_window(self) -> float:
        """Virtual seconds within which due clients are served together (:func:`run_lifecycles`'s ``window``):
        as given, else none up to 100 clients (every client acts exactly at its deadline) and ten arrival
        gaps, at most 15 minutes, above (docs/performance.md)."""
        if self.window is not None:
            return self.window
        return 0.0 if self.clients <= 100 else min(900.0, 10 * self.arrival)

    def __post_init__(self) -> None:
        if not 1 <= self.clients <= 1000:
            raise UsageError(f"--clients must be between 1 and 1000, got {self.clients}")
        if self.arrival < 0 or self.hours <= 0:
            raise UsageError("--arrival must be >= 0 and --hours > 0")


@dataclass
class DemoReport:
    """What happened, for the printout and for tests."""

    dns_address: tuple[str, int] = ("", 0)
    kms_address: tuple[str, int] = ("", 0)
    publish_result: str = ""
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # (time, client, text)
    first_activation_by_threshold: float | None = None
    activated: int = 0
    clients: int = 0
    exchanges: int = 0
    wall_seconds: float = 0.0
    virtual_seconds: float = 0.0
    threshold: int = 0
    host_count: int = 0
    srv_records_after_stop: int = -1


def _clock_text(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"day {days} {hours:02d}:{minutes:02d}:{secs:02d}"


async def run_demo(settings: DemoSettings, out: Callable[[str], None] = print) -> DemoReport:
    """Run the scenario; ``out`` receives the lines to show (print by default)."""
    started = time.perf_counter()
    report = DemoReport(clients=settings.clients)
    rng = seeded(settings.seed)
    sku = products.lookup(settings.product)  # before the clock's file exists: a bad product leaves nothing behind
    report.threshold = sku.threshold
    secret = seeded(settings.seed + 1).bytes(32)
    key = TsigKey.make(DEMO_KEY_NAME, secret)
    zone = load_master_file(_ZONE_TEXT, DEMO_ZONE)

    clock = SharedVirtualClock()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(clock.close)
        dns = await stack.enter_async_context(DnsServer([zone], listen=(("127.0.0.1", 0),), keys=[key], clock=clock))
        kms = stack.enter_context(HostProcess(clock, seed=settings.seed, state=settings.state))
        report.dns_address = dns.addresses[0]
        report.kms_address = kms.address
        out(
            f"emu demo: a lab activation network on loopback (virtual clock starts {time.strftime('%Y-%m-%d', time.gmtime(clock.wall()))} UTC)"
        )
        out(
            f"  DNS server  {report.dns_address[0]}:{report.dns_address[1]}  authoritative for {DEMO_ZONE}, updates need TSIG key {DEMO_KEY_NAME.rstrip('.')}"
        )
        out(
            f"  KMS host    {report.kms_address[0]}:{report.kms_address[1]}  ({DEMO_HOST_NAME}; counts clients by CMID, threshold rules of docs/kms-host.md)"
        )
        publisher = Publisher(
            DEMO_HOST_NAME,
            [PublishDomain(DEMO_ZONE, priority=0, weight=100)],
            dns_server=report.dns_address,
            key=key,
            addresses=[report.kms_address[0]],
            port=report.kms_address[1],
            ttl=600,
            clock=clock,
            rng=seeded(settings.seed + 4),
        )
        await publisher.start()
        report.publish_result = (
            f"_vlmcs._tcp.{DEMO_ZONE} SRV 0 100 {report.kms_address[1]} {DEMO_HOST_NAME}. + A {report.kms_address[0]}"
        )
        out(f"  published   {report.publish_result}  (RFC 2136 update, TSIG hmac-sha256: NOERROR)")
        out(
            f"  clients     {settings.clients} x {sku.name} (protocol v{sku.protocol}, threshold {sku.threshold}), one every {settings.arrival:g} s, each discovers the host through SRV"
        )
        out("")

        discovery_rng = seeded(settings.seed + 5)

        async def resolve(domain: str) -> list[HostAddress]:
            return [
                HostAddress(addr, port)
                for addr, port in await discover_kms_hosts(domain, report.dns_address, discovery_rng)
            ]

        template_version = Version(sku.protocol)
        clients = []
        for i in range(settings.clients):
            name = f"WS{i + 1:03d}.{DEMO_ZONE}"
            lifecycle = ClientLifecycle(
                threshold=sku.threshold,
                now=clock.now() + i * settings.arrival,
                cmid=uuid.UUID(bytes=rng.bytes(16), version=4),
                domain=DEMO_ZONE,
            )
            template = RequestTemplate.of(sku, name, version=template_version)
            clients.append(
                LiveClient(lifecycle, template, seeded(settings.seed + 100 + i), name=name, keep_results=False)
            )

        await run_lifecycles(clients, clock, settings.hours * 3600, resolver=resolve, window=settings.batch_window)
        await publisher.stop()
        left = await query(f"_vlmcs._tcp.{DEMO_ZONE}", "SRV", report.dns_address, rng=seeded(settings.seed + 6))
        report.srv_records_after_stop = len(left.answers)

        for client in clients:
            for event in client.lifecycle.events:
                if isinstance(event, Activated):
                    text = f"count {event.count:3d}/{event.threshold}  ACTIVATED until {_clock_text(event.valid_until)}"
                    if report.first_activation_by_threshold is None or event.at < report.first_activation_by_threshold:
                        report.first_activation_by_threshold = event.at
                elif isinstance(event, BelowThreshold):
                    text = f"count {event.count:3d}/{event.threshold}  waiting (below threshold; retry at {_clock_text(event.retry_at)})"
                else:
                    continue
                report.timeline.append((event.at, client.name, text))
        report.timeline.sort(key=lambda item: (item[0], item[1]))
        report.exchanges = sum(c.exchanges for c in clients)
        report.activated = sum(1 for c in clients if c.lifecycle.state is ClientState.ACTIVATED)
        report.host_count = kms.count(sku.app_id)

    report.virtual_seconds = clock.now()
    report.wall_seconds = time.perf_counter() - started

    turning_point = report.first_activation_by_threshold
    announced = False
    for at, name, text in report.timeline:
        if turning_point is not None and at >= turning_point and not announced:
            out(
                f"---- {_clock_text(at)}: the count reaches the threshold ({sku.threshold}): from now on every client that asks is activated ----"
            )
            announced = True
        out(f"{_clock_text(at)}  {name:<16} {text}")
    out("")
    out(
        f"{report.activated}/{report.clients} clients activated; host table holds {report.host_count} Windows clients; "
        f"{report.exchanges} exchanges over TCP in {report.virtual_seconds / 3600:.1f} virtual hours, {report.wall_seconds:.1f} s of real time."
    )
    if report.srv_records_after_stop == 0:
        out("The host withdrew its SRV and A records on shutdown: _vlmcs._tcp.kms.test now has no SRV record.")
    else:
        out(f"The zone still holds {report.srv_records_after_stop} SRV record(s) after the host stopped.")
    return report
