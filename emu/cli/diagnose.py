"""``emu diagnose``: why does (or would) a KMS client fail to activate here? One step at a time."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from emu.errors import UsageError

__all__ = ["register"]

_EXIT_CODES = """exit status:
  0   every step passed: a client of this product would activate
  2   usage error
  10  dns-suffixes        no DNS domain or server to ask
  11  srv-lookup          no _vlmcs._tcp SRV record (0x8007232B / 0x8007251D)
  13  address             SRV targets without A/AAAA records (0x8007251D)
  14  tcp-connect         no host accepted a TCP connection (0xC004F074)
  15  rpc-bind            the DCE/RPC bind failed (0xC004F074)
  16  activation-request  the host refused (its HRESULT, e.g. 0xC004F042) or sent an RPC fault
  17  verification        the response fails a client check (0xC004F074)
  18  threshold           the count is below the product's threshold (0xC004F038)
  19  clock-skew          the host refused the client's time (0xC004F06C)
"""


def _config(args: argparse.Namespace) -> object:
    from emu.cli.resolv_conf import RESOLV_CONF, search_domains
    from emu.net.address import parse_host_port
    from emu.net.diagnose import DiagnoseConfig
    from emu.net.kms_server import DEFAULT_PORT

    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout}: must be positive seconds")
    from emu.cli.host import parse_minutes

    offset = 0.0
    if args.time_offset:
        text = args.time_offset.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        offset = sign * parse_minutes(text.lstrip("+-"), "--time-offset") * 60.0
    target = args.target
    static = None
    domains: tuple[str, ...] = tuple(d.strip(".") for d in args.domain if d.strip("."))
    if target and target.startswith(".") and len(target) > 1:
        domains = (target.strip("."), *domains)
    elif target and target != "-":
        static = parse_host_port(target, DEFAULT_PORT)
    elif not domains:
        domains = tuple(search_domains(args.resolv_conf or RESOLV_CONF))
    dns_server = None
    if static is None:
        if args.dns_server:
            dns_server = parse_host_port(args.dns_server, 53)
        else:
            from emu.cli.resolv_conf import system_dns_server as _system_dns_server

            dns_server = _system_dns_server(args.resolv_conf or RESOLV_CONF)
    return DiagnoseConfig(
        product=args.product,
        static=static,
        domains=domains,
        dns_server=dns_server,
        timeout=args.timeout,
        time_offset=offset,
    )


def _run(args: argparse.Namespace) -> int:
    from emu.hresults import lookup
    from emu.kms import products
    from emu.net.diagnose import DiagnoseConfig, diagnose

    products.lookup(args.product)  # an unknown product is a usage error before anything is sent
    config = _config(args)
    assert isinstance(config, DiagnoseConfig)
    result = asyncio.run(diagnose(config))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return result.exit_code
    for number, step in enumerate(result.steps, 1):
        mark = "skip" if step.skipped else ("ok" if step.ok else "FAIL")
        print(f"[{mark:>4}] {number:2} {step.name:19} {step.ms:8.1f} ms  {step.detail}")
    if result.ok:
        print(f"a {config.product} client would activate here")
        return 0
    assert result.code is not None
    entry = lookup(result.code)
    print()
    print(f"stopped at {result.failed_step}: a Windows client would report 0x{result.code:08X}", end="")
    print(f" ({entry.symbol})" if entry else "")
    if entry is not None:
        print(f"  meaning: {entry.meaning}")
        for check in entry.checks:
            print(f"  check:   {check}")
    sys.stdout.flush()
    return result.exit_code


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "diagnose",
        help="walk a KMS client's steps (DNS, SRV, TCP, RPC, request, checks, count, clock) and name the failing one",
        description="Do what a KMS client does, one step at a time: the DNS domains to search, the _vlmcs._tcp SRV "
        "lookup, the RFC 2782 order, A/AAAA, TCP connect, RPC bind, the activation request, the response checks, "
        "the count against the threshold and the clock. Each step prints what it saw and its time; the walk stops at "
        "the first failing step and names the error a Windows client would report there and what to check "
        "(docs/diagnose.md).",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = parser.add_argument
    a(
        "target",
        nargs="?",
        metavar="TARGET",
        help="HOST[:PORT] (no DNS), .DOMAIN (SRV in that domain), or - / nothing (the resolv.conf search list)",
    )
    a("--product", default="win10ent", help="the client's product (default win10ent; see emu client products)")
    a("--domain", action="append", default=[], metavar="DOMAIN", help="a DNS domain to search; repeatable")
    a("--dns-server", metavar="ADDR[:PORT]", help="DNS server to ask (default: the first nameserver of resolv.conf)")
    a("--resolv-conf", metavar="FILE", help="resolver configuration to read (default /etc/resolv.conf)")
    a("--timeout", type=float, default=3.0, help="seconds for each query, connection and reply (default 3)")
    a(
        "--time-offset",
        metavar="DURATION",
        help="shift the client's clock, e.g. 5h, or --time-offset=-5h for a clock behind (stages a skewed client)",
    )
    a("--json", action="store_true", help="print the steps and the verdict as JSON")
    parser.set_defaults(func=_run)
