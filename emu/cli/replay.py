"""``emu replay FILE --target HOST:PORT``: re-send captured KMS conversations and compare the answers."""

from __future__ import annotations

import argparse
import asyncio
import json

from emu.errors import UsageError

__all__ = ["register"]

EPILOG = """\
Verdict per exchange: same, differs (with the fields) or error. Ignored when comparing: the
association group id, the secondary address, IVs and salts, and (unless --same-host) the ePID and
HwId. Exit status: 0 every exchange is "same"; 1 some differ or failed; 2 usage error.
"""


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _run(args: argparse.Namespace) -> int:
    from emu.net.replay import ReplayOptions, replay_capture

    if args.target is None:
        raise UsageError("--target HOST:PORT is required (the KMS host to replay against)")
    options = ReplayOptions(
        target=args.target, same_host=args.same_host, rewrite_time=args.rewrite_time, renew_cmid=args.renew_cmid,
        timeout=args.timeout, concurrency=args.concurrency, rate=args.rate, repeat=args.repeat,
        max_duration=args.max_duration,
    )
    report = asyncio.run(replay_capture(args.file, options))
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        for v in report.verdicts:
            extra = "; ".join(v.differences) if v.differences else v.error
            print(f"conv {v.conversation} #{v.index} {v.ptype:<18} {v.verdict}{': ' + extra if extra else ''}")
        for problem in report.problems:
            print(f"note: {problem}")
        c = report.counts()
        print(f"{report.capture}: {c['same']} same, {c['differs']} differ, {c['error']} errors in {report.elapsed:.2f} s")
    return 0 if report.ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``emu replay`` to the command line."""
    parser = subparsers.add_parser(
        "replay", help="replay captured KMS conversations against a host and compare the answers",
        description="Application-level replay: every KMS conversation of the capture is re-sent over a fresh "
        "TCP connection and each answer is compared field by field with the captured one.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="capture (pcap or pcapng)")
    parser.add_argument("--target", type=_target, help="KMS host under test, HOST:PORT")
    parser.add_argument("--same-host", action="store_true", help="the target is the captured host: compare ePID and HwId too")
    parser.add_argument("--rewrite-time", action="store_true", help="set each request's client time to now (hosts refuse stale requests)")
    parser.add_argument("--renew-cmid", action="store_true", help="use a new CMID per replayed conversation")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)")
    parser.add_argument("--concurrency", type=int, default=1, help="conversations at once (default 1)")
    parser.add_argument("--rate", type=float, default=0.0, help="conversations started per second at most (default: no limit)")
    parser.add_argument("--repeat", type=int, default=1, help="replay the capture this many times (default 1)")
    parser.add_argument("--max-duration", type=float, default=300.0, help="start no conversation after this many seconds")
    parser.add_argument("--json", action="store_true", help="one JSON object with every verdict")
    parser.set_defaults(func=_run)
