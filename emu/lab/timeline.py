"""What a scenario run saw, record by record: every exchange, DNS change, event and host table, on virtual time.

A run is saved as one JSON document (``emu lab run --json RUN.json``; read back by ``emu lab report``)::

    {"format": "emu-lab-run/1", "scenario": {...}, "records": [...], "expectations": [...], "summary": {...}}

Each record has ``type`` (``exchange``, ``lookup`` (a discovery that found no host), ``dns``, ``event``, ``table``) and ``at``: virtual seconds since the
clients started (the scenario's clock; pcap timestamps of a ``--capture`` stay real).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emu.errors import UsageError

__all__ = ["RUN_FORMAT", "RunLog", "day_text", "load_run"]

#: The ``format`` of a saved run.
RUN_FORMAT = "emu-lab-run/1"
_DAY = 86400.0


def day_text(at: float) -> str:
    """``day 3 14:05`` for virtual second ``at`` (day 0 is the first day)."""
    sign = "-" if at < 0 else ""
    days, rest = divmod(int(abs(at)), 86400)
    return f"{sign}day {days} {rest // 3600:02d}:{rest % 3600 // 60:02d}"


@dataclass
class RunLog:
    """The records of one run and what describes it (hosts, groups, thresholds, clock)."""

    scenario: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    expectations: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    # -- recording ---------------------------------------------------------------------------------

    def exchange(self, **fields: Any) -> None:
        self.records.append({"type": "exchange", **fields})

    def event(self, at: float, action: str, target: str, detail: str) -> None:
        self.records.append({"type": "event", "at": at, "action": action, "target": target, "detail": detail})

    def dns(self, at: float, zone: str, targets: list[str]) -> None:
        self.records.append({"type": "dns", "at": at, "zone": zone, "targets": sorted(targets)})

    def table(self, at: float, host: str, applications: list[dict[str, Any]]) -> None:
        self.records.append({"type": "table", "at": at, "host": host, "applications": applications})

    # -- reading -----------------------------------------------------------------------------------

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Records of one type, in time order."""
        return sorted((r for r in self.records if r["type"] == kind), key=lambda r: float(r["at"]))

    @property
    def exchanges(self) -> list[dict[str, Any]]:
        return self.of_type("exchange")

    @property
    def duration(self) -> float:
        return float(self.scenario.get("duration", 0.0))

    def clients(self, group: str | None = None) -> list[dict[str, Any]]:
        """The scenario's clients (name, group, cmid, product, threshold), optionally of one group."""
        found = self.scenario.get("clients", [])
        return [c for c in found if group is None or c["group"] == group]

    def activated_over_time(self, step: float | None = None) -> list[tuple[float, int]]:
        """(virtual time, clients activated at that time), one point per ``step`` (default: an hour, or the run
        divided into 2,000 steps when that is coarser). A client counts from an answer that activated it
        until its validity (from the scenario, 180 days) runs out without another."""
        validity = float(self.scenario.get("validity", 180 * _DAY))
        end = self.duration
        step = step or max(3600.0, end / 2000)
        spans: dict[str, list[tuple[float, float]]] = {}
        for r in self.exchanges:
            if r.get("status") == "activated":
                spans.setdefault(r["client"], []).append((float(r["at"]), float(r["at"]) + validity))
        points = []
        t = 0.0
        while t <= end + 1e-9:
            points.append((t, sum(1 for s in spans.values() if any(a <= t < b for a, b in s))))
            t += step
        return points

    def host_counts(self) -> dict[str, list[tuple[float, int]]]:
        """Per host (and application, when a host counts more than one): the count in each of its answers."""
        series: dict[str, list[tuple[float, int]]] = {}
        apps = {r.get("app") for r in self.exchanges if r.get("count") is not None}
        for r in self.exchanges:
            if r.get("count") is None or not r.get("host"):
                continue
            label = r["host"] if len(apps) <= 1 else f"{r['host']} {r.get('app')}"
            series.setdefault(label, []).append((float(r["at"]), int(r["count"])))
        return series

    # -- saving ------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"format": RUN_FORMAT, **asdict(self)}

    def save(self, path: Path | str) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n")


def load_run(path: Path | str) -> RunLog:
    """A run saved by ``emu lab run --json``.

    Raises:
        UsageError: unreadable, not JSON, or not a saved run.
    """
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise UsageError(f"{path}: not a run saved by emu lab run --json (format {RUN_FORMAT})")
    try:
        return RunLog(
            scenario=dict(data["scenario"]),
            records=list(data["records"]),
            expectations=list(data.get("expectations", [])),
            summary=dict(data.get("summary", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: a damaged run file ({exc})") from None
