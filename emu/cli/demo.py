"""``emu demo``: the main job — an emulated activation network on loopback (see emu.sim.demo)."""

from __future__ import annotations

import argparse
import asyncio

from emu.sim.demo import DemoSettings, run_demo

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = DemoSettings()
    parser = subparsers.add_parser(
        "demo",
        help="run an emulated activation network: DNS server, a publishing KMS host, N clients",
        description="On loopback: emu's DNS server for the zone kms.test, a KMS host (in a second process on the "
        "same virtual clock) that "
        "publishes itself there (RFC 2136 update signed with TSIG), and N clients that discover it "
        "through the _vlmcs._tcp SRV record and activate. Waiting clients retry every 2 hours on a "
        "virtual clock, so months of behaviour take seconds; every exchange crosses a real socket.",
    )
    parser.add_argument(
        "--clients", type=int, default=defaults.clients, help=f"number of clients (default {defaults.clients})"
    )
    parser.add_argument(
        "--product",
        default=defaults.product,
        help=f"the clients' product (default {defaults.product!r}; see emu.kms.products)",
    )
    parser.add_argument(
        "--arrival",
        type=float,
        default=defaults.arrival,
        help=f"virtual seconds between two clients' first requests (default {defaults.arrival:g})",
    )
    parser.add_argument(
        "--hours", type=float, default=defaults.hours, help=f"virtual hours to run (default {defaults.hours:g})"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of every random choice (default %(default)s)"
    )
    parser.add_argument("--state", default=None, help="SQLite file for the host's client table (default: in memory)")
    parser.add_argument(
        "--window",
        type=_window,
        default=None,
        metavar="DURATION",
        help="serve clients due within this virtual time together, concurrently (default: 0 up to 100 clients, "
        "else ten arrival gaps, at most 15m; 0: every client exactly at its deadline, one after another)",
    )
    parser.set_defaults(func=_run)


def _window(text: str) -> float:
    from emu.durations import parse_duration
    from emu.errors import EmuError

    try:
        return parse_duration(text, "--window")
    except EmuError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--window: ")) from None


def _run(args: argparse.Namespace) -> int:
    settings = DemoSettings(
        clients=args.clients,
        product=args.product,
        arrival=args.arrival,
        hours=args.hours,
        seed=args.seed,
        state=args.state,
        window=args.window,
    )
    from emu.net.host_runner import loop_factory

    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:  # uvloop when installed
        report = runner.run(run_demo(settings))
    return 0 if report.activated == report.clients else 1
