"""What a scenario run shows a person: the summary table, the plot, and the expectations as JUnit XML.

All three are drawn from a :class:`emu.lab.timeline.RunLog` only, so ``emu lab report RUN.json`` redraws
them from a saved run exactly as ``emu lab run`` did.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from emu.lab.timeline import RunLog, day_text

__all__ = ["summary_lines", "write_junit", "write_plot"]

_DAY = 86400.0


def summary_lines(run: RunLog) -> list[str]:
    """The run's table: per host its answers and final table, per group its clients, then each expectation."""
    s = run.scenario
    lines = [f"scenario {s.get('name')}: {s.get('title', '')}"]
    exchanges = run.exchanges
    tables = {r["host"]: r for r in run.of_type("table")}
    lines.append(f"  {'host':<10} {'answers':>8} {'activated':>10} {'unreachable':>12}  table at the end")
    for host in s.get("hosts", []):
        name = host["name"]
        mine = [r for r in exchanges if r.get("host") == name]
        table = tables.get(name)
        text = (
            "; ".join(f"{a['application']} {a['count']}/{a['capacity']}" for a in table["applications"]) or "empty"
            if table
            else "-"
        )
        answered = sum(1 for r in mine if r["status"] in ("activated", "below-threshold"))
        activated = sum(1 for r in mine if r["status"] == "activated")
        unreachable = sum(1 for r in mine if r["status"] == "unreachable")
        lines.append(f"  {name:<10} {answered:>8} {activated:>10} {unreachable:>12}  {text}")
    lines.append(f"  {'group':<10} {'clients':>8} {'activated':>10} {'exchanges':>12} {'no host found':>14}")
    lookups = run.of_type("lookup")
    for group in s.get("groups", []):
        mine = [r for r in exchanges if r["group"] == group["name"]]
        activated = len({r["client"] for r in mine if r["status"] == "activated"})
        failed = sum(1 for r in lookups if r["group"] == group["name"])
        lines.append(f"  {group['name']:<10} {group['count']:>8} {activated:>10} {len(mine):>12} {failed:>14}")
    for item in run.expectations:
        mark = "PASS" if item["passed"] else "FAIL"
        lines.append(f"  {mark}  {item['name']}: {item['message']}")
        if not item["passed"]:
            for record in item.get("evidence", [])[:5]:
                lines.append("        " + _evidence_text(record))
    return lines


def _evidence_text(record: dict[str, object]) -> str:
    when = record.get("when") or day_text(float(str(record.get("at", 0))))
    if record.get("type") == "exchange":
        count = record.get("count")
        return (
            f"{when}  {record.get('client')} -> {record.get('host') or record.get('address')}: {record.get('status')}"
            + (f" count {count}/{record.get('threshold')}" if count is not None else "")
            + f" ({record.get('detail')})"
        )
    if record.get("type") == "dns":
        return f"{when}  dns: {', '.join(str(t) for t in record.get('targets', []))}"  # type: ignore[attr-defined]
    return f"{when}  {record}"


def write_plot(run: RunLog, path: Path | str) -> None:
    """Per host the count in its answers over time, activated clients over time, events as vertical marks (PNG).

    Readable for 1,000 clients over a year: counts are step lines of at most one point per answer and
    host, activated clients a sampled line, the x axis in days.

    Raises:
        UsageError: matplotlib is missing.
    """
    from emu.errors import UsageError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover (a dependency)
        raise UsageError(f"--plot needs matplotlib: {exc}") from None
    s = run.scenario
    figure, (counts, active) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, constrained_layout=True)
    gap = max(_DAY, run.duration / 60)  # no line across a time nobody was answered (a dead or unasked host)
    for label, points in sorted(run.host_counts().items()):
        xs: list[float] = []
        ys: list[float] = []
        for n, (t, c) in enumerate(points):
            if n and t - points[n - 1][0] > gap:
                xs.append(float("nan"))
                ys.append(float("nan"))
            xs.append(t / _DAY)
            ys.append(c)
        counts.step(xs, ys, where="post", label=label, linewidth=1.2, marker=".", markersize=2)
    capacity = max((a["capacity"] for r in run.of_type("table") for a in r["applications"]), default=None)
    if capacity:
        counts.axhline(capacity, color="grey", linestyle=":", linewidth=0.8, label=f"table capacity ({capacity})")
    thresholds = sorted({c["threshold"] for c in run.clients()})
    for threshold in thresholds:
        counts.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8, label=f"threshold {threshold}")
    counts.set_ylabel("count the host reports")
    counts.set_title(f"{s.get('name')}: {s.get('title', '')}", fontsize=10)
    counts.legend(loc="lower right", fontsize=8, ncol=3, framealpha=0.9)
    series = run.activated_over_time()
    active.plot([t / _DAY for t, _ in series], [n for _, n in series], color="tab:green", linewidth=1.4)
    total = len(run.clients())
    active.axhline(total, color="grey", linestyle=":", linewidth=0.8)
    active.set_ylim(0, max(total, 1) * 1.08)
    active.set_ylabel(f"activated clients (of {total})")
    active.set_xlabel("virtual days")
    for axis in (counts, active):
        axis.grid(alpha=0.3)
        for event in run.of_type("event"):
            axis.axvline(float(event["at"]) / _DAY, color="tab:purple", alpha=0.5, linewidth=1)
    top = counts.get_ylim()[1]
    for event in run.of_type("event"):
        counts.text(
            float(event["at"]) / _DAY,
            top,
            f" {event['action']} {event['target']}",
            rotation=90,
            va="top",
            fontsize=7,
            color="tab:purple",
        )
    figure.savefig(str(path), dpi=110)
    plt.close(figure)


def write_junit(run: RunLog, path: Path | str) -> None:
    """One test case per expectation; a failure's text lists the records that show it."""
    s = run.scenario
    failures = sum(1 for e in run.expectations if not e["passed"])
    suite = ET.Element(
        "testsuite",
        name=f"emu lab {s.get('name')}",
        tests=str(len(run.expectations)),
        failures=str(failures),
        errors="0",
        time=str(run.summary.get("wall_seconds", 0)),
    )
    for item in run.expectations:
        case = ET.SubElement(suite, "testcase", classname=f"scenario.{s.get('name')}", name=item["name"])
        if not item["passed"]:
            failure = ET.SubElement(case, "failure", message=item["message"], type=item["kind"])
            failure.text = "\n".join(_evidence_text(r) for r in item.get("evidence", [])) or item["message"]
        else:
            ET.SubElement(case, "system-out").text = item["message"]
    ET.indent(suite)
    Path(path).write_text(ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n")
