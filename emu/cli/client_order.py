"""``emu client activate --domain-member``: the documented order in one run. A domain member asks a domain
controller for an activation object first (ADBA); failing that it activates through KMS (the target: a
host or ``.DOMAIN`` for SRV discovery); failing that, with ``--mak-state``, through its MAK (online
against ``--actsvc``). ``--act-type`` is slmgr's policy: ``any`` (all paths in order), ``ad`` (ADBA only),
``kms`` (KMS only). The report lists every path tried, in order, and which one activated
(docs/adba.md "Order of the paths").
"""

from __future__ import annotations

import argparse
import contextlib
import io
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


def run_in_order(args: argparse.Namespace, kms_activate: Any) -> int:
    """Run the paths; ``kms_activate(args) -> exit code`` is the plain KMS attempt (it prints its own report)."""
    try:
        policy = parse_activation_type(args.act_type)
    except ValueError as exc:
        raise UsageError(f"--act-type: {exc}") from None
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
        if not quiet:
            print("KMS:")
        out = io.StringIO()
        with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
            code = kms_activate(args)
        kms_code.append(code)
        if quiet:
            try:
                documents["kms"] = json.loads(out.getvalue())
            except ValueError:
                documents["kms"] = {"output": out.getvalue()}
        return PathOutcome("kms", code == 0, 0, f"emu client activate exit status {code}")

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
    if quiet:
        print(
            json.dumps(
                {
                    "policy": policy.name.lower(),
                    "forest": forest,
                    "paths": attempts,
                    "activated_by": outcome.activated_by,
                    **documents,
                },
                indent=2,
            )
        )
    else:
        tried = " -> ".join(f"{a.path} ({'activated' if a.activated else 'not activated'})" for a in outcome.attempts)
        print(f"order ({policy.name.lower()}): {tried or 'no path allowed'}")
        print(f"activated by {outcome.activated_by}" if outcome.activated_by else "not activated by any path")
    if outcome.activated_by is not None:
        return 0
    last = outcome.attempts[-1].path if outcome.attempts else None
    return kms_code[-1] if last == "kms" and kms_code else EXIT_NOT_ACTIVATED
