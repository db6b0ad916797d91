"""Benchmark of the loopback simulator (run by ``scripts/bench sim``): ``emu demo`` with 1,000 clients over 365
virtual days, every exchange a real TCP connection to the KMS host (in its own process, on the demo's
virtual clock) and every discovery a real DNS query. Prints figures, asserts nothing.

Figures: wall seconds (the issue's target: under 60 s), exchanges, exchanges/s, virtual days per real
second, peak RSS of the driver and of the host process; then the same story served strictly one client
at a time (``--window 0``) for comparison, unless ``--quick``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(clients: int, hours: float, window: float | None) -> None:
    from emu.net.host_runner import loop_factory
    from emu.sim.demo import DemoSettings, run_demo

    settings = DemoSettings(clients=clients, hours=hours, window=window)
    began = time.perf_counter()
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        report = runner.run(run_demo(settings, out=lambda line: None))
    seconds = time.perf_counter() - began
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  {clients} clients x {hours / 24:g} days, window {settings.batch_window:g} s: {seconds:.1f} s, "
        f"{report.exchanges} exchanges ({report.exchanges / seconds:.0f}/s), "
        f"{report.virtual_seconds / 86400 / seconds:.1f} virtual days/s, {report.activated}/{report.clients} activated; "
        f"peak RSS driver {own:.0f} MB, host process {children:.0f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the 1,000-client year, with the default window")
    args = parser.parse_args()
    print("emu demo: loopback simulator, every exchange on a real TCP socket")
    run(1000, 365 * 24, None)
    if not args.quick:
        run(1000, 365 * 24, 0.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
