"""Helpers for the conformance tests: run a suite in-process against a server the test started."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "net"))

from emu.conform.model import Result, Verdict


def failed_ids(results: list[Result]) -> set[str]:
    return {r.case.id for r in results if r.verdict is Verdict.FAIL}


def verdicts(results: list[Result]) -> dict[str, str]:
    return {r.case.id: r.verdict.value for r in results}
