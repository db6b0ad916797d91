"""What a lab run is checked against, and what it reports: its hosts, each client's outcome, each host's table, and
:class:`LabRules`, the prediction of the documented rules (docs/howto-run-a-lab.md): a client is answered by a
live host of the lowest priority group, failing over from stopped hosts; each host counts the distinct clients
that reached it, up to its table's capacity; a client is activated exactly when that count has reached its
threshold.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.errors import UsageError
from emu.kms.count_cache import CAPACITY_FACTOR
from emu.rng import seeded

__all__ = [
    "ClientOutcome",
    "HostTable",
    "LabHost",
    "LabRules",
    "address_in",
    "client_cmid",
    "outcome_of_report",
    "prefix_of",
]


# --- results ------------------------------------------------------------------------------------


def client_cmid(seed: int, index: int) -> uuid.UUID:
    """The fixed CMID of client ``index`` (1-based) of a lab seeded with ``seed``: each client is one machine."""
    return uuid.UUID(bytes=seeded(seed * 100_003 + index).bytes(16), version=4)


def address_in(subnet: str, host: int) -> str:
    import ipaddress

    return str(ipaddress.ip_network(subnet)[host])


def prefix_of(subnet: str) -> int:
    import ipaddress

    return ipaddress.ip_network(subnet).prefixlen


@dataclass(frozen=True, slots=True)
class LabHost:
    """One KMS host of the lab.

    Attributes:
        index: 1-based; the host is ``kms<index>.kms.test``.
        name: its SRV target name.
        namespace: its network namespace.
        address, address6: where it listens (TCP ``port``).
        priority, weight: what it publishes in its SRV record.
        state: its SQLite client table.
    """

    index: int
    name: str
    namespace: str
    address: str
    address6: str | None
    port: int
    priority: int
    weight: int
    state: Path


@dataclass(frozen=True, slots=True)
class ClientOutcome:
    """What one client's ``emu client activate`` ended with.

    Attributes:
        index: 1-based client number.
        cmid: its client machine ID.
        host: SRV target name of the host that answered (None: none did).
        count: the count that host returned.
        threshold: the product's required count.
        status: ``activated``, ``waiting`` (answered, below threshold), ``unreachable`` or ``error``.
        failed_over_from: hosts tried first that did not answer, in order.
        exit_code: the client's exit status (0 activated, 3 below threshold, 7 unreachable, ...).
        detail: the client's last detail text (errors).
        seconds: wall time the client took.
    """

    index: int
    cmid: uuid.UUID
    host: str | None
    count: int | None
    threshold: int
    status: str
    failed_over_from: tuple[str, ...] = ()
    exit_code: int = 0
    detail: str = ""
    seconds: float = 0.0

    @property
    def failover(self) -> bool:
        """Whether the client reached its host only after another did not answer."""
        return bool(self.failed_over_from) and self.host is not None


@dataclass(frozen=True, slots=True)
class HostTable:
    """A host's client table as ``emu host status --json`` prints it.

    Attributes:
        host: SRV target name.
        applications: one dict per application (application, app_id, count, capacity, ...).
        epids: ePID per CSVLK.
    """

    host: str
    applications: tuple[dict[str, Any], ...]
    epids: dict[str, str] = field(default_factory=dict)

    def count(self, app_id: uuid.UUID) -> int:
        """Live clients of ``app_id`` (0 when the host has none)."""
        return next((int(a["count"]) for a in self.applications if a.get("app_id") == str(app_id)), 0)


# --- the prediction -------------------------------------------------------------------------------


class LabRules:
    """What the rules of docs/kms-host.md predict for a lab run; checks each outcome as it comes.

    Sans-IO: it is told which hosts exist and which were stopped, and returns the problems an
    outcome shows (an empty list when it matches).

    Args:
        hosts: the lab's hosts (name, priority).
        threshold: the product's activation threshold N.
        capacity_factor: table size as a multiple of N (emu.kms.count_cache.CAPACITY_FACTOR, 2).
    """

    def __init__(self, hosts: list[tuple[str, int]], threshold: int, capacity_factor: int = CAPACITY_FACTOR) -> None:
        if not hosts:
            raise UsageError("a lab needs at least one KMS host")
        self.priority = dict(hosts)
        self.threshold = threshold
        self.capacity = capacity_factor * threshold
        self.stopped: set[str] = set()
        self.clients: dict[str, set[uuid.UUID]] = {name: set() for name, _ in hosts}

    def stop(self, host: str) -> None:
        """``host`` no longer answers (its SRV record stays: it was killed, it did not withdraw)."""
        self.stopped.add(host)

    def expected_count(self, host: str) -> int:
        """The count ``host`` holds now (distinct clients, capped at the table size)."""
        return min(len(self.clients[host]), self.capacity)

    def check(self, outcome: ClientOutcome) -> list[str]:
        """Record ``outcome`` and return how it departs from the rules (empty: it matches)."""
        alive = [name for name in self.priority if name not in self.stopped]
        problems: list[str] = []
        if not alive:
            if outcome.status != "unreachable":
                problems.append(f"every host is stopped, yet the client got {outcome.status!r}")
            return problems
        best = min(self.priority[name] for name in alive)
        allowed = sorted(name for name in alive if self.priority[name] == best)
        if outcome.host is None:
            why = outcome.detail or f"exit {outcome.exit_code}"
            return [f"no host answered ({outcome.status}: {why}); expected one of {', '.join(allowed)}"]
        if outcome.host not in allowed:
            problems.append(
                f"answered by {outcome.host} (priority {self.priority.get(outcome.host)}); "
                f"the rules choose among {', '.join(allowed)} (priority {best})"
            )
        for name in outcome.failed_over_from:
            if name not in self.stopped:
                problems.append(f"{name} is running but did not answer")
        must_skip = sorted(n for n in self.stopped if self.priority[n] < self.priority.get(outcome.host, best))
        missing = [n for n in must_skip if n not in outcome.failed_over_from]
        if missing:
            problems.append(f"did not try {', '.join(missing)} first (lower priority, stopped): no failover seen")
        if outcome.host in self.clients:
            self.clients[outcome.host].add(outcome.cmid)
            want = self.expected_count(outcome.host)
            if outcome.count != want:
                problems.append(f"{outcome.host} returned count {outcome.count}; the rules give {want}")
            status = "activated" if want >= self.threshold else "waiting"
            if outcome.status != status:
                problems.append(
                    f"status {outcome.status} with count {outcome.count}/{self.threshold}; expected {status}"
                )
        return problems

    def check_table(self, table: HostTable, app_id: uuid.UUID) -> list[str]:
        """How ``table`` (from ``emu host status``) departs from the clients counted on its host."""
        want = self.expected_count(table.host) if table.host in self.clients else 0
        got = table.count(app_id)
        return [] if got == want else [f"{table.host} table holds {got} clients; the rules give {want}"]


def outcome_of_report(
    index: int,
    cmid: uuid.UUID,
    report: dict[str, Any],
    threshold: int,
    returncode: int,
    seconds: float,
    host_by_address: Callable[[str], str | None],
) -> ClientOutcome:
    """One client's outcome from the JSON report of ``emu client activate --json``: the host that answered
    (by SRV failover order), the count, and the hosts it failed over from."""
    results = report.get("results", [])
    failed = tuple(
        name
        for r in results[:-1]
        if r.get("status") == "unreachable"
        for name in [host_by_address(r.get("host", ""))]
        if name
    )
    failed = tuple(dict.fromkeys(failed))  # a host tried on v4 and v6 once
    last = results[-1] if results else None
    status = {"activated": "activated", "below-threshold": "waiting", "unreachable": "unreachable"}.get(
        report.get("status", ""), "error"
    )
    host = host_by_address(last["host"]) if last is not None and status in ("activated", "waiting") else None
    count = last.get("response", {}).get("count") if last is not None else None
    if status == "unreachable":
        failed = tuple(dict.fromkeys(n for r in results for n in [host_by_address(r.get("host", ""))] if n))
    return ClientOutcome(
        index,
        cmid,
        host,
        count,
        threshold,
        status,
        failed,
        returncode,
        str(report.get("detail") or ""),
        seconds,
    )
