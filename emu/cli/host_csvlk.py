"""``emu host serve --csvlk KEY``: a KMS host that activates its own host key before it answers.

With ``--actsvc URL`` the host activates online against the lab activation service (purpose ``host``;
the service counts it against the key's 6 hosts x 10 activations). Without it, or when the service
refuses, the host logs its installation ID for phone activation (``emu actsvc phone IID``; then restart
with ``--csvlk-cid CID``) and serves unactivated: every client gets 0xC004F041. The activation is kept
next to ``--state`` (``STATE.csvlk.json``) and is permanent. Without ``--csvlk`` nothing changes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emu.cli.client_mak import load_state, save_state
from emu.errors import EmuError, UsageError
from emu.mak import client as mak
from emu.mak.errors import ActivationError
from emu.mak.keys import KeyKind, parse_lab_key
from emu.rng import system_rng

__all__ = ["activate_host", "add_arguments", "host_hardware_id"]

log = logging.getLogger("emu.cli.host")


def add_arguments(a: Callable[..., Any]) -> None:
    """The ``host serve`` flags of host key activation."""
    a("--csvlk", metavar="KEY", help="an emu lab KMS host key (EMUK1-...): activate it before answering (docs/mak.md)")
    a("--actsvc", metavar="URL", help="activation service for --csvlk (emu actsvc serve)")
    a("--actsvc-cafile", metavar="FILE", help="lab CA of an https --actsvc")
    a("--csvlk-cid", metavar="CID", help="confirmation ID from phone activation (emu actsvc phone IID)")


def host_hardware_id(hwid: bytes) -> str:
    """The host identity the activation service counts: derived from the host's HwId."""
    return f"kms-host:{hwid.hex()}"


def activate_host(settings: Any, config: Any) -> Any:
    """``config`` with ``key_activated`` set by the host key's activation (unchanged without --csvlk)."""
    key_text = settings["csvlk"]
    if not key_text:
        return config
    try:
        key = parse_lab_key(str(key_text))
    except ActivationError as exc:
        raise UsageError(f"--csvlk: {exc}") from None
    if key.kind is not KeyKind.CSVLK:
        raise UsageError(f"--csvlk: {key.text} is a {key.kind.value}; a KMS host needs a KMS host key (EMUK1-...)")
    hardware = host_hardware_id(config.hwid)
    path = Path(str(settings["state"]) + ".csvlk.json") if settings["state"] else None
    state = load_state(path) if path is not None and path.exists() else mak.new_license(hardware)
    if state.hardware_id != hardware or state.key != key.text:
        state = mak.install_key(mak.new_license(hardware), key.text, system_rng())
    if not state.activated:
        state = _activate(settings, state)
    if path is not None:
        save_state(path, state)
    if not state.activated:
        log.warning(
            "KMS host key %s is not activated: every client gets 0xC004F041. Phone activation: "
            "emu actsvc phone %s, then --csvlk-cid CID",
            key.partial,
            mak.current_iid(state),
        )
    else:
        log.info("KMS host key ...%s is activated", key.partial)
    return dataclasses.replace(config, key_activated=state.activated)


def _activate(settings: Any, state: mak.ClientLicense) -> mak.ClientLicense:
    try:
        if settings["csvlk_cid"]:
            return mak.apply_cid(state, str(settings["csvlk_cid"]))
        if settings["actsvc"]:
            from emu.net.actsvc_client import online_activate

            cafile = Path(str(settings["actsvc_cafile"])) if settings["actsvc_cafile"] else None
            cid = online_activate(
                str(settings["actsvc"]), state.key or "", mak.current_iid(state), "host", cafile=cafile
            )
            return mak.apply_cid(state, cid)
    except EmuError as exc:
        log.error("KMS host key activation failed: %s", exc)
    return state
