"""Benchmark of emu lab's namespaces and scenario start-up (run by ``scripts/bench lab``, as root): prints
figures, asserts nothing.

* topology setup and teardown: 50 and 200 namespaces (one per party, two segments and a router), each
  three times; median and worst (the issue's target: 50 namespaces under 3 s, setup plus teardown);
* a small scenario's start-up: namespaces, a DNS server and two hosts started on the shared clock until
  every SRV record is visible (``--scenario`` runs the bundled ``counting`` scenario in full instead).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emu.lab.topology import Topology, plan_topology
from emu.net import netns


def topology_round(parties: int) -> tuple[float, float]:
    segments = {"hq": ipaddress.IPv4Network("10.213.0.0/23"), "branch": ipaddress.IPv4Network("10.213.2.0/23")}
    keys = [(f"p{i}", "hq" if i % 3 else "branch") for i in range(parties)]
    topology = Topology(plan_topology(netns.random_name("lab"), segments, keys))
    began = time.perf_counter()
    topology.build()
    built = time.perf_counter() - began
    began = time.perf_counter()
    left = topology.remove()
    removed = time.perf_counter() - began
    if left:
        print(f"  left behind: {left}")
    return built, removed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenario", action="store_true", help="also run the bundled counting scenario in full")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("scripts/bench lab needs root (network namespaces)")
        return 2
    print("topology: namespaces built and removed with ip -batch (setup + teardown; target for 50: < 3 s)")
    for size in (50, 200):
        parties = size - 2  # the switch and the router are namespaces too
        rounds = [topology_round(parties) for _ in range(max(1, args.rounds))]
        total = [b + r for b, r in rounds]
        print(
            f"  {size:>3} namespaces: setup {statistics.median(b for b, _ in rounds):.2f} s, teardown "
            f"{statistics.median(r for _, r in rounds):.2f} s, both {statistics.median(total):.2f} s median, "
            f"{max(total):.2f} s worst of {len(rounds)}"
        )
    from emu.lab.scenario import load_scenario, parse_scenario
    from emu.lab.scenario_run import ScenarioRun

    text = (Path(__file__).resolve().parent.parent / "emu/data/scenarios/failover.toml").read_text()
    text = (
        text.split("[[event]]")[0]
        .replace('duration = "16d"', 'duration = "1d"')
        .replace("scale = 21600", "scale = 86400")
    )
    quick = parse_scenario(text)
    began = time.perf_counter()
    run = ScenarioRun(quick).run()
    print(
        f"scenario start-up: {run.scenario['namespaces']} namespaces, DNS server and 2 hosts until every SRV "
        f"record is visible: {run.summary['setup_seconds']:.2f} s; 1 virtual day at scale 86400 with "
        f"{run.summary['exchanges']} exchanges: {time.perf_counter() - began:.1f} s in all, teardown "
        f"{run.summary['teardown_seconds']:.2f} s"
    )
    if args.scenario:
        scenario = load_scenario("counting")
        began = time.perf_counter()
        run = ScenarioRun(scenario).run()
        passed = sum(1 for e in run.expectations if e["passed"])
        print(
            f"counting: {scenario.duration / 86400:g} virtual days, {run.summary['exchanges']} exchanges, "
            f"{passed}/{len(run.expectations)} expectations, {time.perf_counter() - began:.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
