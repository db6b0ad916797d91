"""``emu load``: many emulated KMS clients against a host, on Locust's engine (local or distributed).

emu does not build its own distributed load system: Locust's master/worker mode is the engine, and
emu supplies the user class (:mod:`emu.load.kms_user`: one user = one client machine with a stable
CMID, its product, the real protocol, optional life-cycle timers). This command turns emu-style
options into a Locust command line and runs it; Locust's statistics, CSV files, HTML report and web
UI are Locust's own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from emu.cli import positive_int
from emu.errors import UsageError

__all__ = ["locust_argv", "register"]

#: Seconds a headless run lasts when --run-time is not given: every load is bounded.
DEFAULT_HEADLESS_RUN_TIME = "60s"


def locust_argv(args: argparse.Namespace) -> list[str]:
    """The Locust command line for ``args`` (tests check it; :func:`_run` executes it).

    Raises:
        UsageError: contradictory or missing options.
    """
    import emu.load

    locustfile = Path(emu.load.__file__).with_name("locustfile.py")
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--loglevel", args.loglevel]
    if args.master and args.worker:
        raise UsageError("--master and --worker: a process is one or the other")
    if args.worker:
        if args.target:
            raise UsageError("--worker takes the target from the master: give TARGET to the master only")
        argv += ["--worker", "--master-host", args.master_host, "--master-port", str(args.master_port)]
        return argv
    if not args.target:
        raise UsageError("give the KMS host to load: emu load HOST[:PORT] (the master's TARGET in distributed runs)")
    from emu.kms import products
    from emu.net.address import parse_host_port

    host, port = parse_host_port(args.target, 1688)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    names = [n.strip() for n in args.products.split(",") if n.strip()]
    if not names:
        raise UsageError("--products: give at least one product name")
    for name in names:
        products.lookup(name)  # an unknown or ambiguous name is a usage error now, not in every user
    argv += ["--host", target, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate)]
    argv += ["--kms-products", ",".join(names), "--kms-time-scale", str(args.time_scale)]
    if args.life_cycle:
        argv.append("--kms-life-cycle")
    if args.new_connection:
        argv.append("--kms-new-connection")
    if args.no_ndr64:
        argv.append("--kms-no-ndr64")
    run_time = args.run_time or (DEFAULT_HEADLESS_RUN_TIME if args.headless else None)
    if run_time:
        argv += ["--run-time", run_time]
    if args.headless:
        argv += ["--headless", "--only-summary"]
    else:
        argv += ["--web-host", args.web_host, "--web-port", str(args.web_port)]
    if args.csv:
        argv += ["--csv", args.csv]
    if args.html:
        argv += ["--html", args.html]
    if args.master:
        argv += ["--master", "--master-bind-host", args.master_bind_host, "--master-bind-port", str(args.master_port)]
        if args.expect_workers:
            argv += ["--expect-workers", str(args.expect_workers)]
    return argv


def _run(args: argparse.Namespace) -> int:
    argv = locust_argv(args)
    try:
        import locust  # noqa: F401  (only to say clearly when the extra is missing)
    except ImportError:
        raise UsageError("emu load needs Locust: pip install 'emu[load]'") from None
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return subprocess.run(argv, env=env, check=False).returncode
    except KeyboardInterrupt:
        return 130


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "load",
        help="load a KMS host with many emulated clients (Locust; local or distributed)",
        description="Run emu's KMS client as a Locust user class: each user is one client machine with a stable "
        "CMID and its own product. Outcomes (activated, below-threshold, hresult, fault, timeout, ...) and "
        "latencies go to Locust's statistics and web UI. Distributed: one --master and any number of --worker "
        "processes, exactly as Locust runs them. See docs/load.md.",
        epilog="examples: emu load 127.0.0.1:1688 --users 200 --spawn-rate 50 --headless --run-time 30s --csv run\n"
        "  emu load 10.0.0.5 --master --expect-workers 2 --headless --users 10000 --spawn-rate 500\n"
        "  emu load --worker --master-host 10.0.0.9",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = parser.add_argument
    a("target", nargs="?", metavar="HOST[:PORT]", help="the KMS host (default port 1688); not with --worker")
    a("--users", type=positive_int, default=10, help="emulated clients (default 10)")
    a("--spawn-rate", type=float, default=10.0, help="clients started per second (default 10)")
    a(
        "--run-time",
        metavar="TIME",
        help=f"stop after this long, e.g. 30s, 5m (default: {DEFAULT_HEADLESS_RUN_TIME} headless)",
    )
    a("--products", default="win10ent", metavar="NAMES", help="comma-separated products users take in turn")
    a("--life-cycle", action="store_true", help="follow the renewal and retry timers on a scaled clock")
    a("--time-scale", type=float, default=3600.0, help="virtual seconds per real second (default 3600)")
    a("--new-connection", action="store_true", help="one TCP connection per exchange (vlmcs -T)")
    a("--no-ndr64", action="store_true", help="offer NDR32 only, no bind-time feature negotiation")
    a("--headless", action="store_true", help="no web UI; start at once; print a summary at the end")
    a("--csv", metavar="PREFIX", help="write Locust's CSV statistics to PREFIX_*.csv")
    a("--html", metavar="FILE", help="write Locust's HTML report")
    a("--web-host", default="127.0.0.1", help="web UI address (default 127.0.0.1: this machine only)")
    a("--web-port", type=positive_int, default=8089, help="web UI port (default 8089)")
    a("--master", action="store_true", help="run as Locust master: workers generate the load")
    a("--worker", action="store_true", help="run as Locust worker of --master-host")
    a("--master-host", default="127.0.0.1", help="the master's address (workers; default 127.0.0.1)")
    a("--master-bind-host", default="127.0.0.1", help="address the master listens on for workers (default 127.0.0.1)")
    a("--master-port", type=positive_int, default=5557, help="master's port for workers (default 5557)")
    a("--expect-workers", type=positive_int, help="headless master: wait for this many workers before starting")
    a("--loglevel", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="Locust's log level")
    parser.set_defaults(func=_run)
