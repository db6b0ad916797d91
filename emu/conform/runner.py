"""Run a suite's selected cases, record them, and write the reports (shared by all suites and the CLI)."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from emu.conform import report
from emu.conform.model import Result, Suite, Verdict, run_suite, select
from emu.conform.recorder import Recorder, frame_text


@dataclass(frozen=True, slots=True)
class Options:
    """What the user asked for besides the target: selection and outputs."""

    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    json: bool = False
    junit: str | None = None
    capture: str | None = None


def run(suite: Suite, ctx: Any, options: Options) -> list[Result]:
    """Run the selected cases of ``suite`` against ``ctx`` (which carries a ``recorder``); write the capture."""
    cases, _ = select(suite.cases, list(options.only), list(options.skip))
    results = asyncio.run(run_suite(suite, cases, ctx))
    return attach_frames(results, ctx.recorder, options.capture)


def attach_frames(results: list[Result], recorder: Recorder, capture: str | None) -> list[Result]:
    if capture is None:
        return results
    ranges = recorder.write(capture)
    return [replace(r, frames=frame_text(r.conns, ranges)) for r in results]


def finish(suite: str, target: str, results: list[Result], options: Options) -> int:
    """Print the table or JSON, write JUnit; exit status 0 only when no case failed (1 otherwise)."""
    if options.json:
        json.dump(report.to_json(suite, target, results, options.capture), sys.stdout, indent=2)
        print()
    else:
        print(f"emu conform {suite} {target}")
        print(report.table(results))
        if options.capture:
            print(f"capture: {options.capture} (emu-side recording of the bytes sent and received)")
    if options.junit:
        report.write_junit(Path(options.junit), suite, target, results)
    return 1 if any(r.verdict is Verdict.FAIL for r in results) else 0
