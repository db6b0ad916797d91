"""``emu vamt``: VAMT-style proxy activation of emu MAK clients.

VAMT reaches Windows machines over WMI; emu's management channel is emu-defined: a directory of emu
MAK client state files (``--clients DIR``, one ``NAME.json`` per machine, the files ``emu client mak
--state`` uses). The collected data lives in an emu-cil file (``--cil``), which can be carried to a
connected machine for ``acquire`` (BatchActivation, one call per batch) and brought back for ``apply``.
See docs/mak.md "Proxy activation".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emu.cli import positive_seconds, show_help
from emu.cli.client_mak import gvlk_product, load_state, save_state
from emu.errors import EmuError, ProtocolError, UsageError
from emu.mak import batch, cil
from emu.mak import client as mak
from emu.mak.errors import ActivationError
from emu.mak.keys import extended_pid
from emu.rng import system_rng

__all__ = ["register"]


def _clients(args: argparse.Namespace) -> list[Path]:
    folder = Path(args.clients)
    if not folder.is_dir():
        raise UsageError(f"--clients {folder}: not a directory of emu client state files")
    chosen = sorted(folder.glob("*.json"))
    if args.only:
        chosen = [p for p in chosen if p.stem in set(args.only)]
    return chosen


def _read_cil(path: str) -> list[cil.CilEntry]:
    try:
        return cil.parse_cil(Path(path).read_bytes())
    except OSError as exc:
        raise UsageError(f"--cil {path}: {exc}") from None
    except ProtocolError as exc:
        raise UsageError(f"--cil {path}: {exc}") from None


def _write_cil(path: str, entries: list[cil.CilEntry]) -> None:
    Path(path).write_bytes(cil.write_cil(entries))


def _discover(args: argparse.Namespace) -> int:
    for path in _clients(args):
        state = load_state(path)
        key = f"{state.key[-5:]} ({state.kind})" if state.key else "-"
        print(f"{path.stem}  {state.status}  key={key}  hw={state.hardware_id}")
    return 0


def _install(args: argparse.Namespace) -> int:
    for path in _clients(args):
        state = mak.install_key(load_state(path), args.key, system_rng(), gvlk_product)
        save_state(path, state)
        print(f"{path.stem}: installed {state.kind} key ending {args.key[-5:]}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    entries = []
    for path in _clients(args):
        state = load_state(path)
        if state.key is None or state.activated:
            continue
        try:
            iid = mak.current_iid(state)
        except ActivationError as exc:
            print(f"{path.stem}: skipped: {exc}", file=sys.stderr)
            continue
        entries.append(cil.CilEntry(state.hardware_id, path.stem, extended_pid(state.key), state.key[-5:], iid))
    _write_cil(args.cil, entries)
    print(f"collected {len(entries)} installation IDs into {args.cil}")
    return 0


def _export(args: argparse.Namespace) -> int:
    entries = _read_cil(args.cil)
    _write_cil(args.out, cil.proxy_data_only(entries) if args.proxy_data_only else entries)
    print(f"exported {len(entries)} entries to {args.out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    merged = cil.merge_cids(_read_cil(args.cil), _read_cil(args.file))
    _write_cil(args.cil, merged)
    print(f"imported: {sum(1 for e in merged if e.cid)} of {len(merged)} entries have a confirmation ID")
    return 0


def _call(args: argparse.Namespace, request: batch.BatchRequest) -> tuple[batch.BatchResult, ...]:
    """One BatchActivate call to ``--actsvc``; a fault or an unreachable service is one line, exit 2."""
    from emu.cli.actsvc import parse_digest_key
    from emu.net.actsvc_client import batch_call

    cafile = Path(args.cafile) if args.cafile else None
    try:
        return batch_call(
            args.actsvc, request, digest_key=parse_digest_key(args.digest_key), cafile=cafile, timeout=args.timeout
        )
    except (batch.BatchFault, EmuError) as exc:
        raise UsageError(f"{args.actsvc}: {exc}") from None


def _remaining(args: argparse.Namespace) -> int:
    pids = sorted({extended_pid(args.key)} if args.key else {e.pid for e in _read_cil(args.cil or "")})
    if not pids:
        raise UsageError("remaining needs --key KEY or --cil FILE with entries")
    results = _call(args, batch.BatchRequest(2, tuple(batch.BatchItem(p) for p in pids)))
    for r in results:
        print(f"{r.pid}  remaining={r.remaining}" if r.error is None else f"{r.pid}  error 0x{r.error:X} -> {_hr(r)}")
    return 0


def _hr(result: batch.BatchResult) -> str:
    from emu.hresults import describe

    return describe(result.hresult or 0)


def _acquire(args: argparse.Namespace) -> int:
    entries = _read_cil(args.cil)
    todo = [e for e in entries if not e.cid]
    if not todo:
        print("nothing to acquire")
        return 0
    items = tuple(batch.BatchItem(e.pid, e.iid) for e in todo)
    results = _call(args, batch.BatchRequest(1, items))
    if len(results) != len(todo):
        raise UsageError(f"acquire: {len(todo)} requests but {len(results)} answers")
    done = {
        e.computer_id: cil.CilEntry(
            e.computer_id, e.name, e.pid, e.partial_key, e.iid, r.cid, None if r.cid else _hr(r)
        )
        for e, r in zip(todo, results, strict=True)
    }
    merged = [done.get(e.computer_id, e) for e in entries]
    _write_cil(args.cil, merged)
    failed = [e for e in done.values() if not e.cid]
    for e in failed:
        print(f"{e.name or e.computer_id}: {e.error}", file=sys.stderr)
    print(f"acquired {len(done) - len(failed)} confirmation IDs in one batch; {len(failed)} refused")
    return 1 if failed else 0


def _apply(args: argparse.Namespace) -> int:
    entries = {e.computer_id: e for e in _read_cil(args.cil) if e.cid}
    bad = 0
    for path in _clients(args):
        state = load_state(path)
        entry = entries.get(state.hardware_id)
        if entry is None or state.activated:
            continue
        try:
            save_state(path, mak.apply_cid(state, entry.cid or ""))
            print(f"{path.stem}: activated (permanent)")
        except ActivationError as exc:
            bad += 1
            print(f"{path.stem}: {exc}", file=sys.stderr)
    return 1 if bad else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top = subparsers.add_parser("vamt", help="VAMT-style proxy MAK activation of emu clients (emu channel)")
    top.set_defaults(func=show_help(top))
    sub = top.add_subparsers(metavar="ACTION")

    def with_clients(p: argparse.ArgumentParser) -> None:
        p.add_argument("--clients", required=True, help="directory of emu MAK client state files (NAME.json)")
        p.add_argument("--only", nargs="+", metavar="NAME", help="only these clients")

    def with_service(p: argparse.ArgumentParser) -> None:
        p.add_argument("--actsvc", required=True, help="activation service URL")
        p.add_argument("--cafile", help="lab CA for an https URL")
        p.add_argument("--digest-key", help="BatchActivation HMAC key in hex (default emu's lab key)")
        p.add_argument(
            "--timeout",
            type=positive_seconds,
            default=30.0,
            metavar="SECONDS",
            help="wait this long for the service (default 30)",
        )

    p = sub.add_parser("discover", help="list the clients the management channel reaches")
    with_clients(p)
    p.set_defaults(func=_discover)
    p = sub.add_parser("install-mak", help="install a MAK on the clients")
    p.add_argument("key")
    with_clients(p)
    p.set_defaults(func=_install)
    p = sub.add_parser("collect", help="read the unactivated clients' installation IDs into an emu-cil file")
    with_clients(p)
    p.add_argument("--cil", required=True)
    p.set_defaults(func=_collect)
    p = sub.add_parser("remaining", help="ask the remaining activations of a MAK (BatchActivation type 2)")
    p.add_argument("--key", help="the MAK (or use --cil)")
    p.add_argument("--cil")
    with_service(p)
    p.set_defaults(func=_remaining)
    p = sub.add_parser("acquire", help="get CIDs for an emu-cil file in one BatchActivation call")
    p.add_argument("--cil", required=True)
    with_service(p)
    p.set_defaults(func=_acquire)
    p = sub.add_parser("apply", help="deposit the emu-cil file's CIDs on the clients")
    p.add_argument("--cil", required=True)
    with_clients(p)
    p.set_defaults(func=_apply)
    p = sub.add_parser("export", help="write a copy of an emu-cil file (for a connected machine)")
    p.add_argument("--cil", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--proxy-data-only", action="store_true", help="leave out computer names")
    p.set_defaults(func=_export)
    p = sub.add_parser("import", help="merge the CIDs of an acquired emu-cil file into --cil")
    p.add_argument("file")
    p.add_argument("--cil", required=True)
    p.set_defaults(func=_import)
