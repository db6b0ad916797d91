"""``emu lab run SCENARIO``, ``emu lab list``, ``emu lab show`` and ``emu lab report``: scenario files run over
months of scaled time in network namespaces (docs/scenarios.md)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

__all__ = ["EXIT_FAILED", "EXIT_PASSED", "register_scenario_commands", "run_scenario"]

#: Exit status: every expectation held.
EXIT_PASSED = 0
#: Exit status: at least one did not (2: usage or environment error; 130: interrupted, torn down).
EXIT_FAILED = 1


class _Terminate(KeyboardInterrupt):
    """SIGTERM/SIGHUP turned into an exception so the run tears everything down."""


def _raise_terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminate(f"signal {signum}")


def _progress_printer(enabled: bool) -> Callable[[str], None]:
    """The live progress line: rewritten in place on a terminal, one line every few seconds otherwise."""
    if not enabled:
        return lambda line: None
    tty = sys.stderr.isatty()
    state = {"n": 0}

    def show(line: str) -> None:
        if tty:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        else:
            state["n"] += 1
            if state["n"] % 10 == 1:
                print(line, file=sys.stderr, flush=True)

    return show


def run_scenario(args: argparse.Namespace) -> int:
    """``emu lab run SCENARIO``: 0 when every expectation holds, 1 when one fails."""
    from emu.lab.report import summary_lines, write_junit, write_plot
    from emu.lab.scenario import load_scenario
    from emu.lab.scenario_run import ScenarioRun

    scenario = load_scenario(args.scenario)
    if args.scale is not None:
        import dataclasses

        scenario = dataclasses.replace(scenario, scale=args.scale)
    progress = _progress_printer(not args.quiet)
    tty = sys.stderr.isatty() and not args.quiet

    def say(line: str) -> None:
        if tty:
            sys.stderr.write("\r\033[K")
        print(line, flush=True)

    previous = {sig: signal.signal(sig, _raise_terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        run = ScenarioRun(
            scenario,
            seed=args.seed,
            capture=Path(args.capture) if args.capture else None,
            on_line=say,
            on_progress=progress,
        ).run()
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc or 'Ctrl-C'}): every namespace, process and file of the run removed")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if tty:
        sys.stderr.write("\r\033[K")
    say("")
    for line in summary_lines(run):
        say(line)
    summary = run.summary
    say(
        f"{summary.get('exchanges', 0)} exchanges; setup {summary.get('setup_seconds', 0):.1f} s, teardown "
        f"{summary.get('teardown_seconds', 0):.2f} s, {summary.get('wall_seconds', 0):.0f} s in all"
    )
    if args.json:
        run.save(args.json)
        say(f"run saved to {args.json} (emu lab report {args.json})")
    if args.plot:
        write_plot(run, args.plot)
        say(f"plot written to {args.plot}")
    if args.junit:
        write_junit(run, args.junit)
        say(f"expectations written to {args.junit} (JUnit XML)")
    if args.capture:
        say(f"captures in {args.capture}/ (one pcap per segment; emu decode reads them)")
    failed = [e for e in run.expectations if not e["passed"]]
    say(f"{len(run.expectations) - len(failed)}/{len(run.expectations)} expectations hold")
    return EXIT_FAILED if failed else EXIT_PASSED


def _list(args: argparse.Namespace) -> int:
    from emu.lab.bundled import bundled_names
    from emu.lab.scenario import load_scenario

    for name in bundled_names():
        s = load_scenario(name)
        minutes = s.duration / s.scale / 60
        print(f"{name:<14} {s.title}")
        print(
            f"{'':<14} {len(s.hosts)} host(s), {s.clients} client(s), {s.duration / 86400:g} days in ~{minutes:.1f} min"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    from emu.lab.bundled import bundled_text

    sys.stdout.write(bundled_text(args.name))
    return 0


def _report(args: argparse.Namespace) -> int:
    from emu.lab.expect import evaluate
    from emu.lab.report import summary_lines, write_junit, write_plot
    from emu.lab.timeline import load_run

    run = load_run(args.run)
    if args.recheck:
        run.expectations = [r.to_json() for r in evaluate(run, run.scenario.get("expectations", []))]
    for line in summary_lines(run):
        print(line)
    if args.plot:
        write_plot(run, args.plot)
        print(f"plot written to {args.plot}")
    if args.junit:
        write_junit(run, args.junit)
        print(f"expectations written to {args.junit}")
    return EXIT_FAILED if any(not e["passed"] for e in run.expectations) else EXIT_PASSED


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """The scenario flags of ``emu lab run`` (the shorthand flags stay in emu.cli.lab)."""
    a = run.add_argument
    a(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="a scenario file (.toml) or the name of a bundled one (emu lab list); without it, the flags below "
        "describe a one-segment lab run in real time",
    )
    a("--json", metavar="RUN.json", help="save the run: every exchange, DNS change, event, table and verdict")
    a("--plot", metavar="FILE.png", help="draw each host's count and the activated clients over time, events marked")
    a("--junit", metavar="FILE.xml", help="write the expectations as JUnit XML (a failure lists its exchanges)")
    a("--scale", type=float, metavar="N", help="override the scenario's clock: N virtual seconds per real second")
    a("--quiet", action="store_true", help="no live progress line")


def register_scenario_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emu lab list``, ``show`` and ``report``."""
    listing = commands.add_parser(
        "list", help="the bundled scenarios", description="The scenarios shipped with emu, runnable by name."
    )
    listing.set_defaults(func=_list)
    show = commands.add_parser(
        "show",
        help="print a bundled scenario's file (a start for your own)",
        description="Print the TOML of a bundled scenario; docs/scenarios.md explains every key.",
    )
    show.add_argument("name", metavar="NAME", help="a bundled scenario (emu lab list)")
    show.set_defaults(func=_show)
    report = commands.add_parser(
        "report",
        help="redraw the table, plot and JUnit file of a saved run",
        description="Read a run saved by emu lab run --json and print its table; --plot and --junit redraw those.",
    )
    report.add_argument("run", metavar="RUN.json", help="saved by emu lab run --json")
    report.add_argument("--plot", metavar="FILE.png", help="draw the plot again")
    report.add_argument("--junit", metavar="FILE.xml", help="write the JUnit XML again")
    report.add_argument("--recheck", action="store_true", help="check the expectations again from the records")
    report.set_defaults(func=_report)
