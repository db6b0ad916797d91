"""``emu replay``: re-send captured conversations to a target and compare the answers, or
(``--as-server``) answer live clients with a capture's responses."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

from emu.errors import UsageError

if TYPE_CHECKING:
    from emu.pcap.replay import ReplayReport

__all__ = ["register"]

EPILOG = """\
Verdict per exchange: same, differs (with the fields) or error. Ignored when comparing: the
association group id, the secondary address, IVs and salts, and (unless --same-host) the ePID and
HwId. Exit status: 0 every exchange is "same"; 1 some differ or failed; 2 usage error.

--dns re-sends each captured DNS query and update to --target over the transport it was captured
on (--tcp: always TCP) and compares the answers: rcode, flags, every section; ignoring the ID,
TTLs and the TSIG MAC and time. Captured signatures are stale: --tsig-key FILE re-signs them.

--as-server FILE --listen ADDR:PORT answers KMS clients with the capture's responses, rebuilt for
each new request (ePID, count, intervals and v6 HwId as captured; CMID, time, IVs, MAC/HMAC new)
and echoes captured HRESULT errors and DCE/RPC faults. It prints "listening on ADDR:PORT" and serves until
SIGINT/SIGTERM (or --max-duration seconds).
"""


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _serve(args: argparse.Namespace) -> int:
    from emu.pcap.replay_server import CapturedHost, replay_server

    server = replay_server(args.file, args.listen)
    await server.start()
    for host, port in server.addresses:
        print(f"listening on {'[' + host + ']' if ':' in host else host}:{port}", flush=True)
    try:
        await asyncio.wait_for(server.serve_until_signal(), args.max_duration)  # None: until a signal
    except TimeoutError:
        await server.stop()
    recorded = server.host
    assert isinstance(recorded, CapturedHost)
    print(f"answered {recorded.served} requests", flush=True)
    return 0


def _listen(text: str) -> tuple[str, int]:
    from emu.net.kms_server import parse_listen

    try:
        return parse_listen(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    from emu.pcap.replay import ReplayOptions, replay_capture

    if args.as_server:
        if args.listen is None:
            raise UsageError("--as-server needs --listen ADDR:PORT (where clients connect)")
        if args.target is not None:
            raise UsageError("--as-server answers clients; --target is for replaying against a host: use one")
        return asyncio.run(_serve(args))
    if args.target is None:
        raise UsageError(
            "--target HOST:PORT is required (the KMS host, or with --dns the DNS server, to replay against)"
        )
    if args.dns:
        return _print(_replay_dns(args), args)
    options = ReplayOptions(
        target=args.target,
        same_host=args.same_host,
        rewrite_time=args.rewrite_time,
        renew_cmid=args.renew_cmid,
        timeout=args.timeout,
        concurrency=args.concurrency,
        rate=args.rate,
        repeat=args.repeat,
        max_duration=300.0 if args.max_duration is None else args.max_duration,
    )
    return _print(asyncio.run(replay_capture(args.file, options)), args)


def _replay_dns(args: argparse.Namespace) -> ReplayReport:
    from emu.dns.tsig import parse_key_file
    from emu.pcap.replay import DnsReplayOptions, replay_dns

    key = None
    if args.tsig_key:
        try:
            text = Path(args.tsig_key).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--tsig-key {args.tsig_key}: {exc.strerror or exc}") from exc
        keys = parse_key_file(text, args.tsig_key)
        if len(keys) != 1:
            raise UsageError(f"--tsig-key {args.tsig_key}: holds {len(keys)} keys; give a file with exactly one")
        key = keys[0]
    options = DnsReplayOptions(target=args.target, key=key, tcp=args.tcp, timeout=args.timeout, port=args.dns_port)
    return asyncio.run(replay_dns(args.file, options))


def _print(report: ReplayReport, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        for v in report.verdicts:
            extra = "; ".join(v.differences) if v.differences else v.error
            print(f"conv {v.conversation} #{v.index} {v.ptype:<18} {v.verdict}{': ' + extra if extra else ''}")
        for problem in report.problems:
            print(f"note: {problem}")
        c = report.counts()
        print(
            f"{report.capture}: {c['same']} same, {c['differs']} differ, {c['error']} errors in {report.elapsed:.2f} s"
        )
    return 0 if report.ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emu replay`` to the command line."""
    parser = subparsers.add_parser(
        "replay",
        help="replay captured conversations against a host, or answer clients as the captured host",
        description="Application-level replay: every KMS conversation of the capture is re-sent over a fresh "
        "TCP connection and each answer is compared field by field with the captured one.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="capture (pcap or pcapng)")
    parser.add_argument("--target", type=_target, help="KMS host under test, HOST:PORT")
    parser.add_argument("--as-server", action="store_true", help="answer KMS clients with the capture's responses")
    parser.add_argument(
        "--listen", type=_listen, help="with --as-server: ADDR:PORT to listen on (port 0: any free port)"
    )
    parser.add_argument(
        "--dns",
        action="store_true",
        help="replay the capture's DNS queries and updates to --target (a DNS server) instead of KMS",
    )
    parser.add_argument(
        "--tsig-key", metavar="FILE", help="with --dns: re-sign captured TSIG-signed messages with this key"
    )
    parser.add_argument("--tcp", action="store_true", help="with --dns: send every message over TCP")
    parser.add_argument("--dns-port", type=int, default=53, help="with --dns: the DNS port in the capture (default 53)")
    parser.add_argument(
        "--same-host", action="store_true", help="the target is the captured host: compare ePID and HwId too"
    )
    parser.add_argument(
        "--rewrite-time",
        action="store_true",
        help="set each request's client time to now (hosts refuse stale requests)",
    )
    parser.add_argument("--renew-cmid", action="store_true", help="use a new CMID per replayed conversation")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer (default 5)")
    parser.add_argument("--concurrency", type=int, default=1, help="conversations at once (default 1)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="conversations started per second at most (default: no limit)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="replay the capture this many times (default 1)")
    parser.add_argument(
        "--max-duration",
        type=float,
        default=None,
        help="start no conversation after this many seconds (default 300); --as-server: stop serving after it",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object with every verdict")
    parser.set_defaults(func=_run)
