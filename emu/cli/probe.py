"""``emu probe``: which KMS implementation does a host behave like (Windows, vlmcsd, py-kms, emu)?"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from emu.errors import UsageError

__all__ = ["register"]


def _print(report: Any, source: str) -> None:
    from emu.kms.profiles import IMPLEMENTATIONS

    verdict = report.verdict
    obs = report.observations
    if verdict.behaves_like == "unknown":
        why = f": the evidence fits {verdict.candidates} equally" if verdict.candidates else ": not enough evidence"
        print(f"{source}: behaves like an unknown implementation{why}")
    else:
        print(f"{source}: behaves like {verdict.behaves_like} (confidence {verdict.confidence:.2f})")
    print("  scores: " + ", ".join(f"{name} {score:+.0f}" for name, score in verdict.scores.items()))
    for trait, evidence in obs.evidence.items():
        agree = [name for name, ok in verdict.matches.items() if trait in ok]
        fits = f"  [fits {', '.join(agree)}]" if agree else ""
        print(f"  {trait:18} {evidence}{fits}")
    unknown = [name for name in IMPLEMENTATIONS if name not in verdict.scores]
    if unknown:  # pragma: no cover - every implementation is scored
        print("  not scored: " + ", ".join(unknown))


def _run(args: argparse.Namespace) -> int:
    if args.pcap and args.target:
        raise UsageError("give a TARGET to probe or --pcap FILE to judge, not both")
    if args.pcap:
        from emu.pcap.probe_pcap import probe_capture

        path = Path(args.pcap)
        if not path.is_file():
            raise UsageError(f"--pcap {path}: no such file")
        report = probe_capture(path)
        source = str(path)
    else:
        if not args.target:
            raise UsageError("give the KMS host to probe (HOST[:PORT]) or --pcap FILE")
        if args.timeout <= 0:
            raise UsageError(f"--timeout {args.timeout}: must be positive seconds")
        from emu.net.address import parse_host_port
        from emu.net.probe import probe_host

        target = parse_host_port(args.target, 1688)
        try:
            report = asyncio.run(probe_host(target, timeout=args.timeout))
        except (OSError, TimeoutError) as exc:
            print(f"emu probe: cannot reach {args.target}: {getattr(exc, 'strerror', None) or exc or 'timed out'}")
            return 3
        source = args.target
    if args.json:
        print(json.dumps({"source": source, **report.as_dict()}, indent=2, sort_keys=True))
    else:
        _print(report, source)
    return 0 if report.verdict.behaves_like != "unknown" else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "probe",
        help="tell which KMS implementation a host behaves like (Windows, vlmcsd, py-kms, emu), live or from a capture",
        description="Observe a KMS host (a few short conversations: bind negotiation, counting over new and repeated "
        "client IDs, ePID stability, an unknown operation, an unknown protocol version, a large threshold, V4 timing) "
        "or judge a capture's passive evidence, and compare with the known implementations' traits. Prints the "
        "verdict, a confidence and the evidence for each trait (docs/probe.md). A live probe is counted by the host "
        "like any client.",
        epilog="exit status: 0 a verdict, 1 the evidence fits no implementation clearly, 2 usage error, "
        "3 the host cannot be reached",
    )
    parser.add_argument("target", nargs="?", metavar="HOST[:PORT]", help="the KMS host to probe (default port 1688)")
    parser.add_argument("--pcap", metavar="FILE", help="judge the KMS conversations of this capture instead")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds for each connection and reply (default 3)")
    parser.add_argument("--json", action="store_true", help="print the verdict, scores and observations as JSON")
    parser.set_defaults(func=_run)
