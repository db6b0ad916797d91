"""``emu client mak``: a MAK client's licensing state (slmgr /ipk, /ato, /dti, /atp, /rearm, /dli).

The state lives in a small JSON file (``--state``), written atomically. Keys, IIDs and CIDs are emu's
lab formats (docs/mak.md); errors carry the HRESULT and text of emu's error table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from emu.cli import show_help
from emu.errors import EmuError, UsageError
from emu.kms.products import sku_by_gvlk
from emu.mak import client as mak
from emu.mak.errors import ActivationError
from emu.net.mak_state import load_state, save_state
from emu.rng import system_rng

__all__ = ["gvlk_product", "load_state", "register", "save_state"]


def gvlk_product(key: str) -> str | None:
    """The product a published GVLK sets up, from emu's product data."""
    sku = sku_by_gvlk(key)
    return sku.name if sku is not None else None


def _run(args: argparse.Namespace) -> int:
    path = Path(args.state)
    state = load_state(path, getattr(args, "hardware_id", None), getattr(args, "generation", None))
    try:
        new_state, output = _step(args, state)
    except ActivationError as exc:
        print(f"emu: error: {exc}", file=sys.stderr)
        return 1
    if new_state is not state:
        save_state(path, new_state)
    if output:
        print(output)
    return 0


def _step(args: argparse.Namespace, state: mak.ClientLicense) -> tuple[mak.ClientLicense, str]:
    action = args.mak_action
    if action == "install":
        new = mak.install_key(state, args.key, system_rng(), gvlk_product)
        return new, f"installed product key {(new.key or '')[-5:]} ({new.kind})"
    if action == "iid":
        return state, mak.current_iid(state)
    if action == "apply-cid":
        new = mak.apply_cid(state, args.cid)
        return new, "confirmation ID deposited: activated (permanent)"
    if action == "activate":
        from emu.net.actsvc_client import online_activate

        iid = mak.current_iid(state)
        try:
            cid = online_activate(args.actsvc, state.key or "", iid, cafile=Path(args.cafile) if args.cafile else None)
        except EmuError as exc:
            if isinstance(exc, ActivationError):
                raise
            raise UsageError(str(exc)) from None
        new = mak.apply_cid(state, cid)
        return new, "activated online (permanent)"
    if action == "rearm":
        new = mak.rearm(state, system_rng())
        return new, f"rearmed: {new.rearms_left} rearms left; restart and activate again"
    if args.json:
        return state, json.dumps({**asdict(state), "status": state.status, "rearms_left": state.rearms_left}, indent=2)
    key = f"{state.key[-5:]} ({state.kind})" if state.key else "none"
    return state, (
        f"status: {state.status}\npartial product key: {key}\nhardware ID: {state.hardware_id}\n"
        f"rearms left: {state.rearms_left}"
    )


def register(client_sub: Any) -> None:
    """Add ``mak`` under the ``emu client`` group."""
    top = client_sub.add_parser("mak", help="MAK client: install a key, activate online or by phone, rearm")
    top.set_defaults(func=show_help(top))
    sub = top.add_subparsers(dest="mak_action", metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--state", required=True, help="the client's state file (JSON; created by install)")
        p.set_defaults(func=_run)
        return p

    p = action("install", "install a product key (slmgr /ipk): an emu lab key or a published GVLK")
    p.add_argument("key")
    p.add_argument("--hardware-id", help="this machine's hardware ID (new state files only; default random)")
    p.add_argument("--generation", choices=tuple(mak.REARMS), help="OS generation: rearm limit 3 (win7) or 1001")
    p = action("activate", "activate online against an emu activation service (slmgr /ato)")
    p.add_argument("--actsvc", required=True, help="service URL, for example http://127.0.0.1:8080")
    p.add_argument("--cafile", help="the lab CA for an https URL")
    action("iid", "show the installation ID (slmgr /dti)")
    p = action("apply-cid", "deposit a confirmation ID (slmgr /atp)")
    p.add_argument("cid")
    action("rearm", "rearm (slmgr /rearm): reset the licensing state, use one rearm")
    p = action("status", "licensing status (slmgr /dli)")
    p.add_argument("--json", action="store_true")
