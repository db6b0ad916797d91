"""``emu dns serve`` and ``emu dns dump``: the authoritative DNS server with RFC 2136 updates."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from emu.cli import CLOCK_HELP, clock_spec, positive_seconds, show_help
from emu.dns.policy import UpdatePolicy, parse_grant
from emu.dns.tsig import TsigKey, parse_key_file
from emu.dns.zone import Zone, dump_master_file, load_master_file
from emu.errors import UsageError

__all__ = ["load_keys", "load_zones", "register"]

log = logging.getLogger(__name__)


def load_zones(specs: list[str]) -> list[Zone]:
    """``NAME=FILE`` pairs to zones.

    Raises:
        UsageError: a malformed pair, an unreadable file, a bad master file.
    """
    zones = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--zone {spec!r}: expected NAME=FILE, e.g. kms.test=kms.test.zone")
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"--zone {name}: cannot read {path}: {exc.strerror}") from exc
        zones.append(load_master_file(text, name, source=path))
    return zones


def load_keys(paths: list[str]) -> list[TsigKey]:
    """Keys from BIND key files (``tsig-keygen`` output).

    Raises:
        UsageError: an unreadable or malformed file.
    """
    keys = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"--tsig-key: cannot read {path}: {exc.strerror}") from exc
        keys.extend(parse_key_file(text, source=path))
    return keys


def _policy(args: argparse.Namespace) -> UpdatePolicy:
    grants = tuple(parse_grant(text) for text in args.grant) if args.grant else None
    if args.allow_unsigned:
        return UpdatePolicy.with_nonsecure(args.allow_unsigned, grants)
    return UpdatePolicy(grants) if grants is not None else UpdatePolicy()


def _serve(args: argparse.Namespace) -> int:
    from emu.clock import WallClock
    from emu.net.clock_sleep import sleeper
    from emu.net.dns_server import DnsServer, parse_address

    if not args.zone:
        raise UsageError("emu dns serve needs at least one --zone NAME=FILE")
    zones = load_zones(args.zone)
    keys = load_keys(args.tsig_key)
    listen = [parse_address(text) for text in (args.listen or ["127.0.0.1:53"])]
    policy = _policy(args)
    metrics = None
    if args.metrics:
        from emu.net.metrics import DnsMetrics, serve_metrics

        metrics = DnsMetrics()
        where = serve_metrics(metrics.registry, parse_address(args.metrics, default_port=9153))
        print(f"emu dns: metrics on http://{where[0]}:{where[1]}/metrics", file=sys.stderr, flush=True)

    clock = args.clock or WallClock()

    async def main() -> None:
        server = DnsServer(
            zones,
            listen=listen,
            keys=keys,
            policy=policy,
            state=args.state,
            tcp_idle_timeout=args.tcp_idle_timeout,
            srv_max_age=args.srv_max_age,
            metrics=metrics,
            clock=clock,
            sleep=sleeper(clock),
        )
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        addresses = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in server.addresses)
        print(
            f"emu dns: serving {', '.join(z.origin for z in zones)} on {addresses} (UDP and TCP)",
            file=sys.stderr,
            flush=True,
        )
        try:
            await stop.wait()
        finally:
            await server.stop()

    asyncio.run(main())
    return 0


def _dump(args: argparse.Namespace) -> int:
    from emu.net.dns_server import SqliteJournal

    zones = load_zones(args.zone)
    if args.state:
        if not Path(args.state).exists():
            raise UsageError(f"--state {args.state}: no such journal")
        journal = SqliteJournal(args.state)
        try:
            zones = journal.replay(zones)
        finally:
            journal.close()
    wanted = {z.rstrip(".").lower() + "." for z in args.name} if args.name else None
    text = "".join(dump_master_file(z) for z in zones if wanted is None or z.origin in wanted)
    if args.output and args.output != "-":
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dns",
        help="authoritative DNS server with RFC 2136 dynamic update and TSIG",
        description="An authoritative DNS server for KMS publication: answers queries, accepts RFC 2136 "
        "updates signed with TSIG (hmac-sha256), journals every accepted change.",
    )
    commands = parser.add_subparsers(dest="dns_command", metavar="SUBCOMMAND")

    parser.set_defaults(func=show_help(parser))

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Serve zones over UDP and TCP. Updates need a TSIG key unless --allow-unsigned is given; "
        "any known key may change any name (restrict with --grant).",
        epilog="example: emu dns serve --listen 127.0.0.1:5300 --listen [::1]:5300 --zone kms.test=kms.test.zone "
        "--tsig-key kms1.key --state dns.sqlite",
    )
    serve.add_argument(
        "--listen",
        action="append",
        metavar="ADDR:PORT",
        help="address to serve on, UDP and TCP; repeatable; IPv6 as [::1]:5300 (default 127.0.0.1:53)",
    )
    serve.add_argument(
        "--zone",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a zone and its RFC 1035 master file; repeatable",
    )
    serve.add_argument(
        "--tsig-key",
        action="append",
        default=[],
        metavar="FILE",
        help="a BIND key file as written by tsig-keygen; repeatable",
    )
    serve.add_argument(
        "--state", metavar="PATH", help="SQLite journal of accepted updates, replayed at start (default: in memory)"
    )
    serve.add_argument(
        "--grant",
        action="append",
        default=[],
        metavar="KEY=NAME:TYPES[@TARGET,..]",
        help="allow KEY to change NAME (relative to the zone, '*' any, '*.x' below x) with TYPES (e.g. SRV,A,AAAA or ANY), SRV only towards TARGET; repeatable; replaces the default 'any key, anything'",
    )
    serve.add_argument(
        "--allow-unsigned",
        action="append",
        default=[],
        metavar="CIDR",
        help="accept unsigned updates of _vlmcs._tcp SRV and A/AAAA from these networks (a 'nonsecure' zone); repeatable",
    )
    serve.add_argument(
        "--srv-max-age",
        type=positive_seconds,
        metavar="SECONDS",
        help="remove a _vlmcs._tcp SRV record that no update has refreshed for this long (a KMS host that "
        "crashed without withdrawing); re-adding an unchanged record counts as a refresh; records of the "
        "zone files and all other records never age; journaled, serial bumped (default: off)",
    )
    serve.add_argument("--clock", type=clock_spec, metavar="SPEC", help=CLOCK_HELP)
    serve.add_argument(
        "--tcp-idle-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close TCP connections idle this long (default 10)",
    )
    serve.add_argument(
        "--metrics",
        metavar="ADDR[:PORT]",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (default port 9153): messages by opcode and "
        "RCODE, answer latency (docs/operations.md)",
    )
    serve.set_defaults(func=_serve)

    dump = commands.add_parser(
        "dump",
        help="write the current zones (files plus journal) as master files",
        description="Load the zone files, replay the journal and print the result as RFC 1035 master files.",
    )
    dump.add_argument(
        "--zone",
        action="append",
        default=[],
        required=True,
        metavar="NAME=FILE",
        help="a zone and its master file, as given to serve; repeatable",
    )
    dump.add_argument("--state", metavar="PATH", help="the journal written by emu dns serve --state")
    dump.add_argument("--name", action="append", default=[], metavar="ZONE", help="dump only this zone; repeatable")
    dump.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    dump.set_defaults(func=_dump)
