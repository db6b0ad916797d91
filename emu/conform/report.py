"""Reports of a conformance run: a terminal table, JSON, JUnit XML (what CI systems read)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from emu.conform.model import Case, Result, Verdict

_WIDTH = 100


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(results: list[Result]) -> str:
    """One line per case: id, verdict, rule, evidence (and frames for failures), then a tally."""
    lines = []
    idw = max((len(r.case.id) for r in results), default=10)
    for r in results:
        evidence = r.evidence + (f" [frames {r.frames}]" if r.frames else "")
        lines.append(f"{r.case.id:<{idw}}  {r.verdict.value.upper():<12}  {_cut(r.case.text, 60)}")
        lines.append(f"{'':<{idw}}  {'':<12}  {_cut(evidence, _WIDTH)}")
    lines.append(summary(results))
    return "\n".join(lines)


def tally(results: list[Result]) -> dict[str, int]:
    return {v.value: sum(1 for r in results if r.verdict is v) for v in Verdict}


def summary(results: list[Result]) -> str:
    counts = tally(results)
    return f"{len(results)} cases: " + ", ".join(f"{n} {name}" for name, n in counts.items())


def to_json(suite: str, target: str, results: list[Result], capture: str | None = None) -> dict[str, Any]:
    return {
        "suite": suite,
        "target": target,
        "capture": capture,
        "summary": tally(results),
        "cases": [
            {
                "id": r.case.id,
                "group": r.case.group,
                "rule": r.case.text,
                "source": r.case.source,
                "verdict": r.verdict.value,
                "evidence": r.evidence,
                "frames": r.frames or None,
            }
            for r in results
        ],
    }


def write_junit(path: str | Path, suite: str, target: str, results: list[Result]) -> None:
    """JUnit XML: one testcase per case; fail → <failure>, skip and inconclusive → <skipped>."""
    counts = tally(results)
    root = ET.Element("testsuites")
    ts = ET.SubElement(
        root,
        "testsuite",
        name=f"emu conform {suite}",
        tests=str(len(results)),
        failures=str(counts["fail"]),
        errors="0",
        skipped=str(counts["skip"] + counts["inconclusive"]),
    )
    ET.SubElement(ET.SubElement(ts, "properties"), "property", name="target", value=target)
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=f"conform.{suite}.{r.case.group}", name=r.case.id)
        text = f"{r.case.text} ({r.case.source}): {r.evidence}" + (f" [frames {r.frames}]" if r.frames else "")
        if r.verdict is Verdict.FAIL:
            ET.SubElement(tc, "failure", message=_cut(r.evidence, 200)).text = text
        elif r.verdict in (Verdict.SKIP, Verdict.INCONCLUSIVE):
            ET.SubElement(tc, "skipped", message=f"{r.verdict.value}: {_cut(r.evidence, 200)}")
        else:
            ET.SubElement(tc, "system-out").text = text
    ET.indent(root)
    Path(path).write_text(ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n", encoding="utf-8")


def listing(cases: tuple[Case, ...]) -> str:
    """``--list``: every case with its rule, source and precondition."""
    lines = []
    for c in cases:
        extra = f"  (needs {c.needs})" if c.needs else ""
        flag = "  [passive]" if c.passive else ""
        lines.append(f"{c.id}  [{c.group}]{flag}\n    {c.text}{extra}\n    source: {c.source}")
    return "\n".join(lines)
