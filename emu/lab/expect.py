"""A scenario's expectations, checked against what the run recorded (:class:`emu.lab.timeline.RunLog`).

Each kind is one function of the records; a failure carries the records that show it (up to
:data:`MAX_EVIDENCE`), so a red JUnit case says which exchanges broke the rule. docs/scenarios.md
describes each kind and its keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emu.durations import parse_duration
from emu.errors import UsageError
from emu.lab.timeline import RunLog, day_text

__all__ = ["MAX_EVIDENCE", "ExpectationResult", "check_options", "evaluate"]

#: Records attached to one failure.
MAX_EVIDENCE = 10
_DAY = 86400.0
#: The host's client table forgets a client this long after its last request (docs/kms-host.md).
RECORD_LIFETIME = 30 * _DAY
_ANSWERED = ("activated", "below-threshold")

#: Keys each kind takes (beyond kind and name); the first group is required.
_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "activated-by": ({"at"}, {"group", "fraction", "max_fraction", "path"}),
    "never-below-threshold": (set(), {"group"}),
    "tables-match": (set(), {"hosts"}),
    "failover-within": ({"host"}, {"within", "group"}),
    "srv-withdrawn-within": ({"host", "within"}, set()),
    "count": ({"host", "at"}, {"min", "max", "app"}),
    "all-answered": (set(), {"group", "from", "until", "fraction"}),
    "error-seen": ({"hresult"}, {"group", "host", "min", "max"}),
}


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation's verdict."""

    name: str
    kind: str
    passed: bool
    message: str
    evidence: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "passed": self.passed,
            "message": self.message,
            "evidence": self.evidence,
        }


def check_options(expectation: Any, source: str) -> None:
    """Refuse unknown or missing keys and bad values of one ``[[expect]]`` (at load time).

    Raises:
        UsageError: naming the expectation and the key.
    """
    required, optional = _KEYS[expectation.kind]
    given = set(expectation.options)
    where = f"{source}: [[expect]] {expectation.name}"
    if required - given:
        raise UsageError(f"{where}: {expectation.kind} needs {', '.join(sorted(required - given))}")
    if given - required - optional:
        raise UsageError(f"{where}: {expectation.kind} takes no {', '.join(sorted(given - required - optional))}")
    if expectation.options.get("path", "kms") not in ("kms", "adba", "mak"):
        raise UsageError(f"{where}: path must be kms, adba or mak")
    if "hresult" in given:
        try:
            value = expectation.options["hresult"]
            int(str(value), 16) if isinstance(value, str) else int(value)
        except ValueError:
            raise UsageError(f'{where}: hresult must be a code such as "0xC004C020"') from None
    for key in ("at", "within", "from", "until"):
        if key in given:
            parse_duration(expectation.options[key], f"{where}: {key}")
    for key, low in (("fraction", 0.0), ("max_fraction", -1e-9)):
        value = expectation.options.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= 1:
            raise UsageError(f"{where}: {key} must be a number in {'(0' if key == 'fraction' else '[0'}, 1]")


def _seconds(options: dict[str, Any], key: str, default: float) -> float:
    return parse_duration(options[key], key) if key in options else default


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    keep = ("type", "at", "client", "host", "address", "status", "count", "threshold", "detail", "action", "target")
    out = {k: record[k] for k in keep if k in record}
    out["when"] = day_text(float(record["at"]))
    return out


def _activated_by(run: RunLog, o: dict[str, Any]) -> tuple[bool, str, list[dict[str, Any]]]:
    at = _seconds(o, "at", 0.0)
    path = o.get("path")
    clients = {c["name"] for c in run.clients(o.get("group"))}
    done = {
        r["client"]
        for r in run.exchanges
        if r["at"] <= at and r["status"] == "activated" and (path is None or r.get("path", "kms") == path)
    }
    late = sorted(clients - done)
    share = (len(clients) - len(late)) / len(clients) if clients else 1.0
    if "max_fraction" in o:
        most = float(o["max_fraction"])
        early = [r for r in run.exchanges if r["client"] in clients and r["at"] <= at and r["status"] == "activated"]
        message = f"{len(clients) - len(late)}/{len(clients)} activated by {day_text(at)} (wanted at most {most:.0%})"
        return share <= most, message, [_brief(r) for r in early[:MAX_EVIDENCE]]
    wanted = float(o.get("fraction", 1.0))
    evidence = [_brief(r) for r in run.exchanges if r["client"] in set(late[:MAX_EVIDENCE]) and r["at"] <= at]
    message = f"{len(clients) - len(late)}/{len(clients)} activated by {day_text(at)} (wanted {wanted:.0%})"
    if late and share < wanted:
        message += f"; not: {', '.join(late[:MAX_EVIDENCE])}" + (" ..." if len(late) > MAX_EVIDENCE else "")
    return share >= wanted, message, evidence[-MAX_EVIDENCE:]


def _never_below_threshold(run: RunLog, o: dict[str, Any]) -> tuple[bool, str, list[dict[str, Any]]]:
    group = o.get("group")
    bad = [
        r
        for r in run.exchanges
        if r["status"] == "activated"
        and r.get("path", "kms") == "kms"
        and (group is None or r["group"] == group)
        and (r.get("count") is None or r["count"] < r["threshold"])
    ]
    total = sum(1 for r in run.exchanges if r["status"] == "activated" and r.get("path", "kms") == "kms")
    return (
        not bad,
        f"{len(bad)} of {total} activations with a count below the client's threshold",
        [_brief(r) for r in bad[:MAX_EVIDENCE]],
    )


def _tables_match(run: RunLog, o: dict[str, Any]) -> tuple[bool, str, list[dict[str, Any]]]:
    """Each host's table at the end = distinct clients it answered in the last 30 days, capped at capacity.

    Clients whose last request is within ``slack`` of the 30-day boundary may be either side of it
    (the table was read a moment after the run's end): they are not held against the host.
    """
    wanted_hosts = o.get("hosts")
    slack = float(run.scenario.get("slack", 0.0))
    problems: list[str] = []
    evidence: list[dict[str, Any]] = []
    tables = {r["host"]: r for r in run.of_type("table")}
    for host, table in sorted(tables.items()):
        if wanted_hosts is not None and host not in wanted_hosts:
            continue
        now = float(table["at"])
        for app in table["applications"]:
            last: dict[str, float] = {}
            for r in run.exchanges:
                if r.get("host") == host and r["status"] in _ANSWERED and r.get("app") == app["application"]:
                    last[r["cmid"]] = max(last.get(r["cmid"], -1e18), float(r["at"]))
            sure = sum(1 for t in last.values() if t > now - RECORD_LIFETIME + slack)
            maybe = sum(1 for t in last.values() if now - RECORD_LIFETIME - slack < t <= now - RECORD_LIFETIME + slack)
            low, high = min(sure, app["capacity"]), min(sure + maybe, app["capacity"])
            if not low <= app["count"] <= high:
                expected = str(low) if low == high else f"{low}..{high}"
                problems.append(f"{host} {app['application']}: table holds {app['count']}, expected {expected}")
                evidence.append(_brief(table) | {"applications": table["applications"]})
    if not tables:
        return False, "no host table was read at the end of the run", []
    message = "; ".join(problems) or f"{len(tables)} host table(s) equal their last 30 days of distinct clients"
    return not problems, message, evidence[:MAX_EVIDENCE]


def _loss_of(run: RunLog, host: str) -> float | None:
    """When ``host`` was first stopped or killed (None: never)."""
    times = [float(r["at"]) for r in run.of_type("event") if r["target"] == host and r["action"] in ("stop", "kill")]
    return min(times) if times else None


def _failover_within(run: RunLog, o: dict[str, Any]) -> tuple[bool, str, list[dict[str, Any]]]:
    host = str(o["host"])
    within = _seconds(o, "within", 2 * 3600.0)
    lost = _loss_of(run, host)
    if lost is None:
        return False, f"{host} was never stopped or killed in this run", []
    group = o.get("group")
    late: list[dict[str, Any]] = []
    checked = 0
    by_client: dict[str, list[dict[str, Any]]] = {}
    for r in run.exchanges:
        if r["at"] >= lost and (group is None or r["group"] == group):
            by_client.setdefault(r["client"], []).append(r)
    for records in by_client.values():
        first = records[0]
        checked += 1
        answered = [r for r in records if r["status"] in _ANSWERED and r.get("host") != host]
        if not answered or answered[0]["at"] - first["at"] > within:
            late.append(first)
    message = (
        f"{checked - len(late)}/{checked} clients that asked after {host} went down at {day_text(lost)} "
        f"reached another host within {within / 3600:g} h of their first try"
    )
    return not late and checked > 0, message, [_brief(r) for r in late[:MAX_EVIDENCE]]


def _srv_withdrawn_within(run: RunLog, o: dict[str, Any]) -> tuple[bool, str, list[dict[str, Any]]]:
    """The host's SRV target disappears from its zone within ``within`` of the host going down (unless it came
    back first). The DNS server's records are sampled by the run (``dns`` records: one per change)."""
    host = str(o["host"])
    within = _seconds(o, "within", 0.0)
    lost = _loss_of(run, host)
    if lost is None:
        return False, f"{host} was never stopped or killed in this run", []
    back = min(
        (
            float(r["at"])
            for r in run.of_type("event")
            if r["target"] == host and r["action"] == "start" and r["at"] > lost
        ),
        default=None,
    )
    listed = [(float(r["at"]), any(t.split(".")[0] == host for t in r["targets"]), r) for r in run.of_type("dns")]
    gone = next((at for at, has, _ in listed if at >= lost and not has), None)
    before = [has for at, has, _ in listed if at < lost]
    if before and not before[-1]:
        gone = lost  # it was not listed when it went down
    evidence = [_brief(r) | {"targets": r["targets"]} for at, _, r in listed if at >= lost - within][:MAX_EVIDENCE]
    if gone is None or (back is not None and gone > back):
        if back is not None and back - lost <= within:
            return (
                True,
                f"{host} came back {(back - lost) / 3600:.1f} h after it went down, before its record aged",
                evidence,
            )
        return False, f"{host}'s SRV record was never withdrawn after it went down at {day_text(lost)}", evidence
    delay = gone - lost
    message = (
        f"{host}'s SRV record was gone {delay / 3600:.1f} h after it went down at {day_text(lost)} "
        f"(allowed {within / 3600:g} h)"
    )
    return delay <= within, message, evidence


def _count(run: RunLog, o: dict[str, Any]) -> tuple[bool, str, list[dict[str, Any]]]:
    host = str(o["host"])
    at = _seconds(o, "at", 0.0)
    answers = [
        r
        for r in run.exchanges
        if r.get("host") == host
        and r.get("count") is not None
        and r["at"] <= at
        and r.get("app", o.get("app")) == o.get("app", r.get("app"))
    ]
    if not answers:
        return False, f"{host} answered nobody by {day_text(at)}", []
    last = answers[-1]
    low, high = o.get("min"), o.get("max")
    passed = (low is None or last["count"] >= low) and (high is None or last["count"] <= high)
    bounds = " and ".join(
        t for t in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "") if t
    )
    return (
        passed,
        f"{host}'s count at {day_text(last['at'])} was {last['count']} (wanted {bounds or 'any'})",
        [_brief(last)],
    )


def _all_answered(run: RunLog, o: dict[str, Any]) -> tuple[bool, str, list[dict[str, Any]]]:
    start, end = _seconds(o, "from", 0.0), _seconds(o, "until", run.duration)
    group = o.get("group")
    window = [r for r in run.exchanges if start <= r["at"] <= end and (group is None or r["group"] == group)]
    unanswered = [r for r in window if r["status"] not in _ANSWERED]
    wanted = float(o.get("fraction", 1.0))
    share = 1 - len(unanswered) / len(window) if window else 0.0
    message = f"{len(window) - len(unanswered)}/{len(window)} exchanges answered (wanted {wanted:.0%})"
    return bool(window) and share >= wanted, message, [_brief(r) for r in unanswered[:MAX_EVIDENCE]]


def _error_seen(run: RunLog, o: dict[str, Any]) -> tuple[bool, str, list[dict[str, Any]]]:
    """How many records carry HRESULT ``hresult`` (of a group, or naming a host or service): at least ``min``
    (default 1), at most ``max``."""
    code = int(str(o["hresult"]), 16) if isinstance(o["hresult"], str) else int(o["hresult"])
    group, host = o.get("group"), o.get("host")
    seen = [
        r
        for r in run.exchanges
        if r.get("hresult") == code
        and (group is None or r["group"] == group)
        and (host is None or r.get("host") == host)
    ]
    low, high = int(o.get("min", 1)), o.get("max")
    passed = len(seen) >= low and (high is None or len(seen) <= int(high))
    where = " ".join(t for t in (f"group {group}" if group else "", f"host {host}" if host else "") if t)
    bounds = f">= {low}" + (f" and <= {high}" if high is not None else "")
    message = f"0x{code:08X} seen {len(seen)} time(s){' for ' + where if where else ''} (wanted {bounds})"
    return passed, message, [_brief(r) for r in seen[:MAX_EVIDENCE]]


_CHECKS: dict[str, Callable[[RunLog, dict[str, Any]], tuple[bool, str, list[dict[str, Any]]]]] = {
    "activated-by": _activated_by,
    "never-below-threshold": _never_below_threshold,
    "tables-match": _tables_match,
    "failover-within": _failover_within,
    "srv-withdrawn-within": _srv_withdrawn_within,
    "count": _count,
    "all-answered": _all_answered,
    "error-seen": _error_seen,
}


def evaluate(run: RunLog, expectations: list[dict[str, Any]]) -> list[ExpectationResult]:
    """Check each expectation (``{"kind", "name", **options}``) against ``run``."""
    results = []
    for item in expectations:
        options = {k: v for k, v in item.items() if k not in ("kind", "name")}
        passed, message, evidence = _CHECKS[item["kind"]](run, options)
        results.append(ExpectationResult(item["name"], item["kind"], passed, message, evidence))
    return results
