"""``emu conform``: judge someone else's KMS host, KMS client or DNS server rule by rule (docs/conformance.md)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

from emu.errors import UsageError

__all__ = ["register"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", action="append", default=[], metavar="ID|GROUP", help="run only these cases (repeatable)")
    p.add_argument("--skip", action="append", default=[], metavar="ID|GROUP", help="skip these cases (repeatable)")
    p.add_argument("--list", action="store_true", help="print every case with its rule and source, run nothing")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML to FILE")
    p.add_argument(
        "--capture",
        metavar="FILE.pcap",
        help="record the run (emu-side: the bytes emu sent and received, no root); failures name frames",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for any one answer (default 5)")
    p.add_argument("--seed", type=int, default=None, help="seed for CMIDs and IVs (default: random)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "conform",
        help="conformance suites: judge a KMS host, KMS client or DNS server per documented rule",
        description="Run a conformance suite against a target; exit 0 only when no case failed "
        "(1: a case failed, 2: usage error, 3: kms-host target unreachable).",
    )
    parser.add_argument("--pcap", metavar="FILE", help="judge a captured KMS conversation offline (passive rules)")
    parser.add_argument("--json", action="store_true", help="with --pcap: JSON output")
    parser.add_argument("--junit", metavar="FILE", help="with --pcap: also write JUnit XML")
    parser.add_argument("--list", action="store_true", help="with --pcap: list the passive cases")
    sub = parser.add_subparsers(dest="suite", metavar="SUITE")
    host = sub.add_parser("kms-host", help="emu plays clients against a KMS host")
    host.add_argument("target", metavar="TARGET", nargs="?", help="HOST[:PORT], or .DOMAIN to find hosts by SRV")
    host.add_argument("--dns-server", metavar="ADDR[:PORT]", help="DNS server for a .DOMAIN target")
    _common(host)
    client = sub.add_parser("kms-client", help="emu plays the KMS host and judges a client")
    client.add_argument("--listen", metavar="ADDR:PORT", default="127.0.0.1:0", help="where to listen")
    client.add_argument(
        "--run", metavar="COMMAND", help='start the client for each case: "COMMAND {host} {port}" (else wait for it)'
    )
    _common(client)
    dns = sub.add_parser("dns", help="judge a DNS server: queries, RFC 2136 updates, TSIG, KMS publishing")
    dns.add_argument("target", metavar="TARGET", nargs="?", help="ADDR[:PORT] of the DNS server")
    dns.add_argument("--zone", help="a zone the server is authoritative for (test names are added and removed)")
    dns.add_argument("--tsig-key", metavar="FILE", help="TSIG key file (BIND key syntax or NAME:ALG:SECRET)")
    _common(dns)
    parser.set_defaults(func=_run)


def _options(args: argparse.Namespace) -> Any:
    from emu.conform.runner import Options

    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout}: must be positive seconds")
    return Options(tuple(args.only), tuple(args.skip), args.json, args.junit, args.capture)


def _rng(args: argparse.Namespace) -> Any:
    from emu.rng import seeded, system_rng

    return seeded(args.seed) if args.seed is not None else system_rng()


def _run(args: argparse.Namespace) -> int:
    from emu.conform import report

    if args.pcap:
        if args.suite:
            raise UsageError("--pcap judges a capture: give no suite with it")
        from emu.conform.passive import PASSIVE, judge_capture
        from emu.conform.runner import Options, finish

        if args.list:
            print(report.listing(PASSIVE))
            return 0
        path = Path(args.pcap)
        if not path.is_file():
            raise UsageError(f"--pcap {path}: no such file")
        return finish("pcap", str(path), judge_capture(path), Options(json=args.json, junit=args.junit))
    if not args.suite:
        raise UsageError("name a suite: emu conform kms-host|kms-client|dns ... (or --pcap FILE)")
    if args.suite == "kms-host":
        return _kms_host(args)
    if args.suite == "kms-client":
        return _kms_client(args)
    return _dns(args)


def _kms_host(args: argparse.Namespace) -> int:
    from emu.conform import report
    from emu.conform.kms_host import KMS_HOST
    from emu.conform.kms_probes import HostContext
    from emu.conform.model import select
    from emu.conform.recorder import Recorder
    from emu.conform.runner import finish, run
    from emu.net.address import parse_host_port

    if args.list:
        print(report.listing(KMS_HOST.cases))
        return 0
    if not args.target:
        raise UsageError("give the KMS host: HOST[:PORT] or .DOMAIN (with --dns-server)")
    options = _options(args)
    rng = _rng(args)
    if args.target.startswith("."):
        if not args.dns_server:
            raise UsageError(f"{args.target}: a .DOMAIN target needs --dns-server ADDR[:PORT]")
        from emu.net.dns_discovery import discover_kms_hosts

        server = parse_host_port(args.dns_server, 53, min_port=1)
        hosts = asyncio.run(discover_kms_hosts(args.target.lstrip("."), server, rng, timeout=args.timeout))
        if not hosts:
            raise UsageError(f"no _vlmcs._tcp SRV target with an address under {args.target}")
        address = hosts[0]
    else:
        address = parse_host_port(args.target, 1688, min_port=1)
    select(KMS_HOST.cases, list(options.only), list(options.skip))  # a bad selector is a usage error first
    try:
        socket.create_connection(address, timeout=args.timeout).close()
    except OSError as exc:
        print(f"emu conform: cannot reach {address[0]}:{address[1]}: {exc.strerror or exc}", file=sys.stderr)
        return 3
    ctx = HostContext(address, Recorder(), rng, timeout=args.timeout)
    results = run(KMS_HOST, ctx, options)
    return finish("kms-host", f"{address[0]}:{address[1]}", results, options)


def _kms_client(args: argparse.Namespace) -> int:
    from emu.conform import report
    from emu.conform.kms_client import KMS_CLIENT, run_client_suite
    from emu.conform.runner import finish
    from emu.net.address import parse_host_port

    if args.list:
        print(report.listing(KMS_CLIENT.cases))
        return 0
    options = _options(args)
    listen = parse_host_port(args.listen, 0, default_host="127.0.0.1")
    results = run_client_suite(listen, args.run, options, _rng(args), args.timeout)
    return finish("kms-client", f"{listen[0]}:{listen[1]}", results, options)


def _dns(args: argparse.Namespace) -> int:
    from emu.conform import report
    from emu.conform.dns_suite import DNS, DnsContext, load_key
    from emu.conform.recorder import Recorder
    from emu.conform.runner import finish, run
    from emu.net.address import parse_host_port

    if args.list:
        print(report.listing(DNS.cases))
        return 0
    if not args.target or not args.zone:
        raise UsageError("give the DNS server ADDR[:PORT] and --zone NAME")
    options = _options(args)
    server = parse_host_port(args.target, 53, min_port=1)
    key = None
    if args.tsig_key:
        key = load_key(Path(args.tsig_key))
    ctx = DnsContext(server, args.zone.rstrip(".") + ".", key, Recorder(), _rng(args), args.timeout)
    results = run(DNS, ctx, options)
    return finish("dns", f"{server[0]}:{server[1]} zone {ctx.zone}", results, options)
