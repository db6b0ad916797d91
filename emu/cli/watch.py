"""``emu watch``: passive detection of KMS activation traffic and KMS emulators, as Suricata EVE JSON alerts."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from emu.cli import positive_int
from emu.errors import UsageError

__all__ = ["register"]


def _emit(alerts: list[dict[str, Any]], output: str | None) -> None:
    lines = "".join(json.dumps(a, sort_keys=True) + "\n" for a in alerts)
    if output:
        try:
            with open(output, "a", encoding="utf-8") as handle:  # EVE files are appended to, as Suricata does
                handle.write(lines)
        except OSError as exc:
            raise UsageError(f"-o {output}: {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(lines)


def _run(args: argparse.Namespace) -> int:
    from emu.pcap.watch import watch_capture

    if bool(args.pcap) == bool(args.interface):
        raise UsageError("give --pcap FILE to judge a capture, or -i IFACE --duration SECONDS to watch an interface")
    if args.pcap:
        path = Path(args.pcap)
        if not path.is_file():
            raise UsageError(f"--pcap {path}: no such file")
        alerts = watch_capture(path, kms_port=args.kms_port)
    else:
        if not args.duration:
            raise UsageError("-i IFACE needs --duration SECONDS: a live watch runs for a bounded time")
        from emu.pcap.live import CaptureOptions, capture

        with tempfile.TemporaryDirectory(prefix="emu-watch-") as tmp:
            window = Path(tmp) / "window.pcap"
            options = CaptureOptions(
                interface=args.interface, output=window, port=args.kms_port, duration=args.duration, netns=args.netns
            )
            listening = threading.Event()

            def say_when_listening() -> None:
                if listening.wait(30):
                    print(
                        f"emu watch: capturing on {args.interface} for {args.duration:g} s", file=sys.stderr, flush=True
                    )

            threading.Thread(target=say_when_listening, daemon=True).start()
            capture(options, on_line=lambda line: None, started=listening)
            alerts = watch_capture(window, kms_port=args.kms_port) if window.exists() else []
    _emit(alerts, args.output)
    print(f"emu watch: {len(alerts)} alert(s)", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="detect KMS activation traffic, KMS hosts on odd ports and KMS emulators; Suricata EVE JSON alerts",
        description="Passive detection, from a capture or an interface: KMS activations (a DCE/RPC bind to the KMS "
        "interface, found by content on any port), KMS hosts on ports other than 1688, and hosts whose answers carry "
        "the traits of vlmcsd, py-kms or emu (as emu probe --pcap judges them). One Suricata EVE JSON alert per line "
        "(docs/watch.md).",
        epilog="examples: emu watch --pcap office.pcap -o eve.json\n  emu watch -i eth0 --duration 300 >> eve.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = parser.add_argument
    a("--pcap", metavar="FILE", help="judge this capture (pcap or pcapng)")
    a("-i", "--interface", metavar="IFACE", help="capture on this interface (root), then judge what was seen")
    a("--duration", type=float, help="seconds to capture with -i (required: a live watch is bounded)")
    a("--netns", metavar="NAME", help="with -i: the network namespace of the interface")
    a("--kms-port", type=positive_int, default=1688, help="the standard KMS port (default 1688); -i captures this port")
    a("-o", "--output", metavar="FILE", help="append the alerts to this EVE file instead of printing them")
    parser.set_defaults(func=_run)
