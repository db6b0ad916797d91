"""``emu lab run``: a whole emulated activation network in Linux network namespaces (root).

The topology and orchestration are :mod:`emu.lab.network`; this module parses the options, runs the
clients one after another, prints the timeline and the hosts' tables, and turns the comparison
with the rules into the exit status.
"""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from emu.cli import positive_int, show_help
from emu.cli.lab_scenario import add_run_arguments, register_scenario_commands
from emu.errors import UsageError

__all__ = ["EXIT_DIFFERS", "EXIT_MATCHES", "parse_numbers", "register"]

#: Exit status: every client and table matched the rules.
EXIT_MATCHES = 0
#: Exit status: some client or table did not (2 is a usage or environment error, 130 Ctrl-C).
EXIT_DIFFERS = 1

_EPILOG = """\
topology (all inside namespaces emu-lab-<6 hex>-*, nothing in the root namespace):
  sw     the bridge br0 every other namespace is joined to by a veth pair
  dns    emu dns serve, authoritative for kms.test, updates signed with a fresh TSIG key (10.213.0.2)
  kmsN   emu host serve --publish kms.test,PRIO,WEIGHT, SRV target kmsN.kms.test (10.213.0.1N)
  cl     the clients: emu client activate .kms.test -n 1 with a fixed CMID each (10.213.0.200)
  IPv6 fd00:213::/64 alongside unless --no-ipv6. Offloads are off, so a capture has valid checksums.

the rules each client is checked against (docs/kms-host.md):
  the answering host is a running host of the lowest SRV priority (weights choose inside it);
  stopped hosts of lower priority were tried first (failover); each host counts the distinct
  clients that reached it (up to 2 x threshold) and a client is activated exactly when that count
  has reached the threshold; afterwards each host's table (emu host status) holds that count.

exit status:
  0  every client and table matched the rules
  1  something did not (each difference is printed)
  2  usage or environment error (not root, no ip, a process that did not start)
  130 interrupted; everything is torn down all the same

examples:
  emu lab list
  emu lab run failover --plot failover.png --junit failover.xml --json failover.json
  emu lab run my-network.toml --capture captures/
  emu lab report failover.json --plot again.png
  emu lab run
  emu lab run --product "Windows Server 2019 Standard" --clients 8 --stop-host 1 --at-client 4 --capture lab.pcap
  emu lab run --hosts 3 --priorities 0,0,10 --weights 100,50,100 --clients 40
"""


def parse_numbers(text: str, name: str, count: int) -> list[int]:
    """``"0,10"`` to ``[0, 10]``: exactly ``count`` numbers in 0..65535.

    Raises:
        UsageError: not that many, not numbers, or out of range.
    """
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{name} {text!r}: expected comma-separated numbers, e.g. 0,10") from None
    if len(numbers) != count:
        raise UsageError(f"{name} {text!r}: give one number per host ({count})")
    if any(not 0 <= n <= 0xFFFF for n in numbers):
        raise UsageError(f"{name} {text!r}: SRV priorities and weights are 0..65535")
    return numbers


def _settings(args: argparse.Namespace) -> tuple[list[int], list[int]]:
    from emu.lab.network import MAX_CLIENTS, MAX_HOSTS

    if args.hosts > MAX_HOSTS:
        raise UsageError(f"--hosts {args.hosts}: at most {MAX_HOSTS}")
    if args.clients > MAX_CLIENTS:
        raise UsageError(f"--clients {args.clients}: at most {MAX_CLIENTS}")
    priorities = (
        parse_numbers(args.priorities, "--priorities", args.hosts)
        if args.priorities
        else [10 * i for i in range(args.hosts)]
    )
    weights = parse_numbers(args.weights, "--weights", args.hosts) if args.weights else [100] + [50] * (args.hosts - 1)
    if (args.stop_host is None) != (args.at_client is None):
        raise UsageError("--stop-host K and --at-client M go together (kill host K before client M)")
    if args.stop_host is not None and args.stop_host > args.hosts:
        raise UsageError(f"--stop-host {args.stop_host}: the lab has hosts 1..{args.hosts}")
    if args.at_client is not None and args.at_client > args.clients:
        raise UsageError(f"--at-client {args.at_client}: the lab has clients 1..{args.clients}")
    return priorities, weights


def _short(name: str | None) -> str:
    return name.split(".")[0] if name else "-"


def _outcome_line(outcome: Any) -> str:
    count = f"{outcome.count}/{outcome.threshold}" if outcome.count is not None else f"-/{outcome.threshold}"
    text = (
        f"client {outcome.index:3d}  cmid {str(outcome.cmid)[:8]}  {_short(outcome.host):<6} count {count:>6}  "
        f"{outcome.status:<9}"
    ).rstrip()
    if outcome.failover:
        text += f"  failover from {', '.join(_short(n) for n in outcome.failed_over_from)}"
    elif outcome.status not in ("activated", "waiting"):
        text += f"  {outcome.detail}"
    return text


class _Terminate(KeyboardInterrupt):
    """SIGTERM/SIGHUP turned into an exception, so the ``with Lab`` block tears everything down."""


def _raise_terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminate(f"signal {signum}")


def _say(line: str) -> None:
    print(line, flush=True)  # line by line also into a pipe (tee, a supervising test)


#: The flags of the quick lab (without a scenario file); a scenario refuses them.
_SHORTHAND = ("hosts", "clients", "product", "priorities", "weights", "stop_host", "at_client", "keep_going", "no_ipv6")


def _run(args: argparse.Namespace, out: Callable[[str], None] = _say) -> int:
    if args.scenario is not None:
        from emu.cli.lab_scenario import run_scenario

        shorthand = [f for f in _SHORTHAND if getattr(args, f) not in (None, False)]
        if shorthand:
            raise UsageError(
                f"--{shorthand[0].replace('_', '-')} describes the quick lab, not a scenario; put it in the scenario file"
            )
        return run_scenario(args)
    args.hosts = 2 if args.hosts is None else args.hosts
    args.clients = 30 if args.clients is None else args.clients
    args.product = args.product or "Windows 10/11 Enterprise"
    from emu.lab.network import LAB_DOMAIN, SUBNET4, SUBNET6, Lab, LabRules

    priorities, weights = _settings(args)
    previous = {sig: signal.signal(sig, _raise_terminate) for sig in (signal.SIGTERM, signal.SIGHUP)}
    began = time.monotonic()
    problems: list[str] = []
    try:
        with Lab(args.product, seed=args.seed, capture=args.capture, ipv6=not args.no_ipv6) as lab:
            for priority, weight in zip(priorities, weights):
                lab.add_host(priority, weight)
            nets = SUBNET4 + ("" if args.no_ipv6 else f", {SUBNET6}")
            out(
                f"emu lab {lab.id}: {len(lab.hosts)} KMS host(s), a DNS server and {args.clients} client(s) "
                f"in network namespaces on a bridge ({nets})"
            )
            lab.start()
            out(
                f"  dns      {lab.dns_ns:<24} {lab.dns_address:<12} emu dns serve, zone {LAB_DOMAIN}, TSIG-signed updates"
            )
            for host in lab.hosts:
                out(
                    f"  kms{host.index:<5} {host.namespace:<24} {host.address:<12} SRV {host.priority} {host.weight} "
                    f"{host.port} {host.name}."
                )
            out(f"  clients  {lab.clients_ns:<24} {lab.clients_address:<12} emu client activate .{LAB_DOMAIN}")
            out(
                f"  every SRV record visible after {lab.srv_visible_after or 0:.1f} s; product {lab.sku.name} "
                f"(threshold {lab.threshold})"
            )
            out("")
            rules = LabRules([(h.name, h.priority) for h in lab.hosts], lab.threshold)
            ran = 0
            for index in range(1, args.clients + 1):
                if index == args.at_client:
                    host = lab.host(args.stop_host)
                    lab.stop_host(host.index)
                    rules.stop(host.name)
                    out(f"---- {_short(host.name)} killed (SIGKILL; its SRV record stays) before client {index} ----")
                outcome = lab.activate(index)
                ran += 1
                differs = rules.check(outcome)
                out(_outcome_line(outcome))
                for text in differs:
                    out(f"    differs from the rules: {text}")
                problems += [f"client {index}: {t}" for t in differs]
                if differs and not args.keep_going:
                    out(f"stopping after client {index} (--keep-going runs the rest)")
                    break
            out("")
            out("host tables (emu host status --json):")
            for host in lab.hosts:
                table = lab.host_table(host.index)
                rows = (
                    "; ".join(
                        f"{a['application']} {a['count']} client(s), capacity {a['capacity']}"
                        for a in table.applications
                    )
                    or "no client counted"
                )
                state = "killed" if host.index == args.stop_host and (args.at_client or 0) <= ran else "running"
                out(f"  {_short(host.name):<6} ({state}) {rows}")
                differs = rules.check_table(table, lab.sku.app_id)
                for text in differs:
                    out(f"    differs from the rules: {text}")
                problems += differs
            if args.capture:
                frames = lab.finish_capture()
                kms = sum(1 for line in lab.capture_lines if " KMS " in line)
                dns = sum(1 for line in lab.capture_lines if " DNS " in line)
                out(
                    f"capture: {args.capture}: {frames} frames on the bridge, {kms} KMS exchanges, {dns} DNS messages "
                    f"(emu decode {args.capture})"
                )
            namespaces = lab.namespaces
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: the with block has torn everything down
        out(f"interrupted ({exc or 'Ctrl-C'}): every namespace, process and file of the lab removed")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out(f"torn down: {len(namespaces)} namespaces, their processes and files ({time.monotonic() - began:.1f} s in all)")
    if problems:
        out(f"{len(problems)} difference(s) from the rules")
        return EXIT_DIFFERS
    out(f"all {ran} client(s) and {len(priorities)} table(s) match the rules")
    return EXIT_MATCHES


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emu lab`` and its ``run`` subcommand."""
    parser = subparsers.add_parser(
        "lab",
        help="run a whole activation network in network namespaces (root)",
        description="KMS hosts, a DNS server and clients, each in its own Linux network namespace, "
        "running the real emu commands and speaking the real protocols across a bridge.",
    )
    commands = parser.add_subparsers(dest="lab_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=show_help(parser))
    run = commands.add_parser(
        "run",
        help="run a scenario (a file or a bundled name) over scaled time, or a quick lab from flags; tear down",
        description="With SCENARIO (a .toml file or a bundled name, see emu lab list): build its network, one "
        "namespace per party, run every server on the scenario's shared scaled clock and the clients' life "
        "cycles over months of virtual time, play its events, check its expectations (exit 1 when one "
        "fails), tear everything down (docs/scenarios.md). Without SCENARIO: build a one-segment lab from the "
        "flags, run the clients one after another in real time, print a timeline (host, count/threshold, "
        "activated or waiting, failover) and each host's table, compare all of it with the rules.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = run.add_argument
    a("--hosts", type=positive_int, metavar="N", help="KMS hosts (default 2)")
    a("--clients", type=positive_int, metavar="N", help="clients, run one after another (default 30)")
    a(
        "--product",
        metavar="NAME",
        help="the clients' product (default 'Windows 10/11 Enterprise', threshold 25; see emu client products)",
    )
    a("--priorities", metavar="P1,P2,..", help="SRV priority per host (default 0,10,20,..)")
    a("--weights", metavar="W1,W2,..", help="SRV weight per host (default 100,50,50,..)")
    a("--stop-host", type=positive_int, metavar="K", help="kill host K (SIGKILL) ...")
    a("--at-client", type=positive_int, metavar="M", help="... just before client M")
    a(
        "--capture",
        metavar="PATH",
        help="record the traffic: without SCENARIO the bridge's DNS and KMS traffic to this pcap; with one, "
        "a pcap per segment (SEGMENT.pcap) in this directory (emu decode reads them)",
    )
    a("--keep-going", action="store_true", help="run every client even after one differs from the rules")
    a("--seed", type=int, default=2026, help="seed of the clients' CMIDs, names and IVs (default 2026)")
    a("--no-ipv6", action="store_true", help="IPv4 only")
    add_run_arguments(run)
    run.set_defaults(func=_run)
    register_scenario_commands(commands)
    clean = commands.add_parser(
        "clean",
        help="delete labs left behind by a killed emu lab run (namespaces emu-lab-*)",
        description="A lab is always torn down, except when emu lab run itself is killed with SIGKILL. "
        "This deletes every network namespace whose name starts with emu-lab- and stops the processes "
        "inside them, except those of a lab whose emu lab run is still alive (its PID is in /run/emu-lab/). "
        "Only emu's own lab namespaces are touched.",
    )
    clean.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    clean.add_argument(
        "--force", action="store_true", help="also delete labs whose emu lab run is still running (it will fail)"
    )
    clean.set_defaults(func=_clean)


#: Prefix of every namespace a lab creates (emu.lab.network); nothing else is ever deleted by clean.
LAB_NAMESPACE_PREFIX = "emu-lab-"


def _clean(args: argparse.Namespace) -> int:
    """``emu lab clean``: 0 when nothing of a lab remains afterwards."""
    import subprocess

    from emu.net import netns

    netns.require_netns_support()
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    names = sorted({line.split()[0] for line in listing.splitlines() if line.startswith(LAB_NAMESPACE_PREFIX)})
    if not names:
        print("no lab namespaces (emu-lab-*) found")
        return 0
    from emu.lab.owner import lab_of, owner

    for name in names:
        running = None if args.force else owner(lab_of(name))
        if running is not None:
            print(f"keeping {name}: its emu lab run (pid {running}) is still running (--force deletes it anyway)")
            continue
        print(("would delete " if args.dry_run else "deleting ") + name)
        if not args.dry_run:
            netns.delete(name)
    return 0
