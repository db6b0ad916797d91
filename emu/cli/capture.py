"""``emu capture -i IFACE -w OUT.pcap``: record KMS (and DNS) traffic with a live line per exchange."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

__all__ = ["register"]

EPILOG = """\
Frames are written as they arrive. On lo duplicates are dropped and checksums filled in; elsewhere
frames are written as seen (turn checksum offload off, as emu's namespaces do, or the pcap carries
partial checksums). --netns NAME sniffs IFACE inside that namespace. Without --count or --duration
it runs until Ctrl-C or SIGTERM. Needs root.
Exit status: 0 captured; 2 usage or environment error (not root, no such interface or namespace).

examples:
  emu capture -i lo -w kms.pcap --duration 30
  emu capture --netns lab-host -i veth0 -w host.pcap --dns --count 200
"""


def _run(args: argparse.Namespace) -> int:
    from emu.pcap.live import CaptureOptions, capture

    options = CaptureOptions(
        interface=args.interface,
        output=Path(args.write),
        port=args.port,
        dns=args.dns,
        dns_port=args.dns_port,
        count=args.count,
        duration=args.duration,
        netns=args.netns,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    started = threading.Event()
    where = f"{args.interface}" + (f" in namespace {args.netns}" if args.netns else "")

    def announce() -> None:
        if started.wait(10):
            print(f"capturing on {where} into {args.write}", file=sys.stderr, flush=True)

    threading.Thread(target=announce, daemon=True).start()
    result = capture(options, on_line=lambda line: print(line, flush=True), stop=stop, started=started)
    dup = f", {result.duplicates_dropped} loopback duplicates dropped" if result.duplicates_dropped else ""
    print(f"{result.output}: {result.frames} frames, {result.exchanges} exchanges{dup}", file=sys.stderr, flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emu capture`` to the command line."""
    parser = subparsers.add_parser(
        "capture",
        help="record KMS (and DNS) traffic into a pcap with a live summary per exchange",
        description="Sniff KMS traffic (TCP port 1688 by default) on an interface, write it to a pcap and print one "
        "line per exchange, decoded as emu decode does.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-i", "--interface", required=True, help="interface to sniff (lo, veth0, ...)")
    parser.add_argument("-w", "--write", required=True, metavar="OUT.pcap", help="pcap file to write")
    parser.add_argument("--port", type=int, default=1688, help="KMS TCP port (default 1688)")
    parser.add_argument("--dns", action="store_true", help="also capture DNS (UDP and TCP, --dns-port)")
    parser.add_argument("--dns-port", type=int, default=53, help="DNS port (default 53)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--count", type=int, help="stop after N frames")
    stop.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument("--netns", metavar="NAME", help="sniff inside this network namespace")
    parser.set_defaults(func=_run)
