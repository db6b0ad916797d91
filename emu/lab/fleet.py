"""A scenario's clients: one thread per client namespace, each running its clients' life cycles on the shared clock.

A client is a machine: its own namespace (or its group's, with ``shared_namespace``), a fixed CMID
derived from the run's seed, a workstation name, a product from its group's mix. Each namespace's
thread enters the namespace and runs :func:`emu.net.kms_fleet.run_fleet` on an event loop of its own,
so every socket a client opens (DNS lookups, KMS connections) belongs to its namespace and crosses
the lab's bridge and router like a separate machine's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from emu.clock import ScaledClock
from emu.kms import products
from emu.kms.client import ClientLifecycle, ClientPolicy, HostAddress, RequestTemplate
from emu.lab.rules import client_cmid
from emu.lab.scenario import ClientGroup
from emu.net import netns
from emu.net.kms_client import ExchangeResult, RpcOptions
from emu.net.kms_fleet import AdbaPath, AdbaRecorder, FleetClient, LookupRecorder, MakRecorder, run_fleet
from emu.net.kms_lifecycle import LiveClient, dns_resolver
from emu.rng import seeded

__all__ = ["CONNECT_TIMEOUT", "REPLY_TIMEOUT", "Fleet", "FleetNode"]

log = logging.getLogger(__name__)

#: Real seconds a lab client waits for a TCP connection and for each reply. Timeouts are real time, not
#: virtual: a dropped SYN costs this long of real time, which is ``scale`` times as much virtual time.
CONNECT_TIMEOUT = 1.0
REPLY_TIMEOUT = 2.0
#: Real seconds a lab client waits for a DNS answer.
DNS_TIMEOUT = 0.5


@dataclass
class FleetNode:
    """The clients of one namespace."""

    namespace: str
    clients: list[FleetClient]
    dns_server: tuple[str, int] | None
    thread: threading.Thread | None = None


@dataclass
class Fleet:
    """Every client of a run, by namespace, and what they record."""

    clock: ScaledClock
    until: float
    seed: int
    record: Callable[[FleetClient, float, ExchangeResult], None]
    record_lookup: LookupRecorder | None = None
    record_adba: AdbaRecorder | None = None
    record_mak: MakRecorder | None = None
    nodes: list[FleetNode] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def add_group(
        self,
        group: ClientGroup,
        namespaces: list[str],
        *,
        dns_server: tuple[str, int] | None,
        static_host: HostAddress | None,
        first_index: int,
    ) -> list[FleetClient]:
        """Make ``group``'s clients; ``namespaces`` has one entry (shared) or one per client."""
        made = []
        spacing = group.arrive_over / group.count if group.count else 0.0
        policy_args = {}
        if group.retry_interval is not None:
            policy_args["retry_interval"] = group.retry_interval
        if group.renewal_interval is not None:
            policy_args["renewal_interval"] = group.renewal_interval
        policy = ClientPolicy(obey_host_intervals=not policy_args, **policy_args)  # type: ignore[arg-type]
        by_namespace: dict[str, list[FleetClient]] = {}
        for i in range(group.count):
            index = first_index + i
            sku = group.product_of(i)
            name = f"{group.name}-{i + 1:03d}"
            lifecycle = ClientLifecycle(
                threshold=sku.threshold,
                now=group.start + i * spacing,
                cmid=client_cmid(self.seed, index),
                policy=policy,
                static_host=static_host,
                domain=group.domain,
            )
            template = RequestTemplate.of(sku, f"{name}.{group.domain or 'lab.test'}")
            if group.vm:
                import dataclasses

                template = dataclasses.replace(template, vm=True)
            client = FleetClient(
                LiveClient(lifecycle, template, seeded(self.seed * 7919 + index), name=name), group.name
            )
            if group.domain_member and group.domain and dns_server:
                client.adba = AdbaPath(
                    group.domain, sku.kms_id, dns_server, seeded(self.seed * 31 + index), act_type=group.act_type
                )
                client.adba.state.next_attempt = lifecycle.now
            namespace = namespaces[0] if len(namespaces) == 1 else namespaces[i]
            by_namespace.setdefault(namespace, []).append(client)
            made.append(client)
        for namespace, clients in by_namespace.items():
            self.nodes.append(FleetNode(namespace, clients, dns_server))
        return made

    @property
    def clients(self) -> list[FleetClient]:
        return [c for n in self.nodes for c in n.clients]

    def start(self) -> None:
        """Start one thread per namespace."""
        options = RpcOptions(connect_timeout=CONNECT_TIMEOUT, reply_timeout=REPLY_TIMEOUT)
        for n, node in enumerate(self.nodes):

            def run(node: FleetNode = node, n: int = n) -> None:
                resolver = (
                    dns_resolver(node.dns_server, seeded(self.seed * 104_729 + n), timeout=DNS_TIMEOUT)
                    if node.dns_server
                    else None
                )
                try:
                    asyncio.run(
                        run_fleet(
                            node.clients,
                            self.clock,
                            self.until,
                            record=self.record,
                            record_lookup=self.record_lookup,
                            record_adba=self.record_adba,
                            record_mak=self.record_mak,
                            resolver=resolver,
                            options=options,
                            stop=self.stop,
                            concurrency=min(32, len(node.clients)),
                        )
                    )
                except Exception:
                    log.exception("the clients of %s stopped", node.namespace)

            node.thread = netns.thread_in(node.namespace, run, name=f"clients-{n}")

    def join(self, timeout: float = 10.0) -> None:
        """Stop the clients (an exchange in flight finishes) and wait for their threads."""
        self.stop.set()
        for node in self.nodes:
            if node.thread is not None:
                node.thread.join(timeout)

    def skew(self, group: str, seconds: float) -> int:
        """Set the clock offset of ``group``'s clients; returns how many."""
        found = [c for c in self.clients if c.group == group]
        for client in found:
            client.skew = seconds
        return len(found)


def application_name(template: RequestTemplate) -> str:
    """The application (Windows, Office 2016, ...) whose count a request of ``template`` asks for."""
    try:
        return products.application(template.app_id).name
    except Exception:
        return str(template.app_id)
