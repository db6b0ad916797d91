"""``emu client activate --domain-member``: the documented order in one run. A domain member asks a domain
controller for an activation object first (ADBA); failing that it activates through KMS (the target: a
host or ``.DOMAIN`` for SRV discovery; without a target, SRV ``_vlmcs._tcp.FOREST``); failing that, with ``--mak-state``, through its MAK (online
against ``--actsvc``). ``--act-type`` is slmgr's policy: ``any`` (all paths in order), ``ad`` (ADBA only),
``kms`` (KMS only). The report lists every path tried, in order, and which one activated
(docs/adba.md "Order of the paths").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from emu.activation.order import PathOutcome, parse_activation_type, run_paths
from emu.errors import UsageError

__all__ = ["run_in_order"]

#: Exit status when no path activated and the last one tried was not KMS (KMS keeps its own codes).
EXIT_NOT_ACTIVATED = 1


def _forest(args: argparse.Namespace) -> str:
    if args.forest:
        return str(args.forest).strip(".").lower()
    target = (args.target or "").strip()
    if target.startswith(".") and len(target) > 1:
        return target.strip(".").lower()
    raise UsageError("--domain-member needs --forest FOREST, or a .DOMAIN target whose forest it is")


def run_in_order(args: argparse.Namespace) -> int:
    """Run the paths the policy allows, report them (text or ``--json``), return the exit code."""
    try:
        policy = parse_activation_type(args.act_type or "any")
    except ValueError as exc:
        raise UsageError(f"--act-type: {exc}") from None
    if args.capture:
        raise UsageError("--capture records one path: use it with --adba or a plain KMS run, not --domain-member")
    if args.json and args.verbose:
        raise UsageError("--json already carries every field; drop -v")
    if args.mak_state and not args.actsvc:
        raise UsageError("--mak-state needs --actsvc URL (the activation service to activate the MAK at)")
    forest = _forest(args)
    quiet = bool(args.json)
    documents: dict[str, Any] = {}
    kms_code: list[int] = []

    def adba() -> PathOutcome:
        from emu.cli.client_adba import adba_once, report_adba

        result = adba_once(args, forest)
        if quiet:
            documents["adba"] = {**result.as_dict(), "domain": forest}
        else:
            print(f"ADBA (forest {forest}):")
            report_adba(args, result, forest)
        failed = next((c for c in result.checks if not c.ok), None)
        detail = f"{failed.name}: {failed.detail}" if failed else "activation object found and verified"
        return PathOutcome("adba", result.activated, result.hresult, detail)

    def kms() -> PathOutcome:
        from emu.cli.client import kms_attempt

        target = args.target or f".{forest}"  # a member without a named KMS host looks in its own domain
        if not quiet:
            print(f"KMS ({target}):")
        run = kms_attempt(args, target)
        kms_code.append(run.exit_code)
        if quiet:
            documents["kms"] = run.document()
        else:
            run.report()
        detail = str(run.document()["detail"])
        return PathOutcome("kms", run.exit_code == 0, run.hresult, detail)

    def mak_path() -> PathOutcome:
        from emu.activation.mak_step import MakStep
        from emu.net.actsvc_client import ServiceUnreachable, online_activate
        from emu.net.mak_state import load_state, save_state

        path = Path(args.mak_state)
        state = load_state(path)
        if state.key is None:
            raise UsageError(f"--mak-state {path}: no product key installed (emu client mak install KEY --state ...)")

        def obtain(key: str, iid: str) -> str:
            return online_activate(args.actsvc, key, iid, timeout=args.timeout)

        step = MakStep(state, obtain)
        try:
            outcome = step()
        except ServiceUnreachable as exc:  # no answer at all: no HRESULT from the service
            outcome = PathOutcome("mak", False, 0, str(exc))
        save_state(path, step.state)
        if not quiet:
            print(f"MAK: {'activated (permanent)' if outcome.activated else outcome.detail}")
        return outcome

    later = (("mak", mak_path),) if args.mak_state else ()
    outcome = run_paths(policy, domain_member=True, adba=adba, kms=kms, later=later)
    attempts = [
        {"path": a.path, "activated": a.activated, "hresult": f"0x{a.hresult:08X}", "detail": a.detail}
        for a in outcome.attempts
    ]
    if outcome.activated_by is not None:
        code = 0
    else:
        last = outcome.attempts[-1].path if outcome.attempts else None
        code = kms_code[-1] if last == "kms" and kms_code else EXIT_NOT_ACTIVATED
    if quiet:
        doc: dict[str, Any] = {"policy": policy.name.lower(), "forest": forest, "paths": attempts}
        doc |= {"activated_by": outcome.activated_by, "hresult": f"0x{outcome.hresult:08X}", "exit_code": code}
        print(json.dumps({**doc, **documents}, indent=2))
    else:
        tried = " -> ".join(
            f"{a.path} ({'activated' if a.activated else f'not activated, 0x{a.hresult:08X}'})"
            for a in outcome.attempts
        )
        print(f"order ({policy.name.lower()}): {tried or 'no path allowed'}")
        print(f"activated by {outcome.activated_by}" if outcome.activated_by else "not activated by any path")
    return code
