"""The client's licensing state for MAK (and CSVLK) keys: install, IID, deposit a CID, rearm.

Documented behaviour modelled here: ``/ipk`` of an invalid key fails with 0xC004F050; activating with
no key gives 0xC004F014; a CID is checked against the IID the machine shows (0xC004F02C format,
0xC004F04D check digits, 0xC004F07E another key, 0xC004F07F another machine); MAK activation is
permanent; the rearm count is 1001 (3 for the Windows 7 generation), past it 0xC004D307, and a rearm
resets the licensing state (the machine must activate again). Formats are emu's (emu/mak/ids.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from emu.mak.errors import ActivationError
from emu.mak.ids import installation_id, verify_cid
from emu.mak.keys import KeyKind, ProductKey, classify
from emu.rng import Rng

__all__ = [
    "E_MAX_REARM",
    "E_NO_KEY",
    "REARMS",
    "ClientLicense",
    "apply_cid",
    "current_iid",
    "install_key",
    "new_license",
    "rearm",
]

E_NO_KEY = 0xC004F014
E_MAX_REARM = 0xC004D307
E_WRONG_TYPE = 0xC004F07D
#: Rearms allowed by OS generation (documented: Sysprep/rearm limits).
REARMS = {"win7": 3, "win8+": 1001}


@dataclass(frozen=True)
class ClientLicense:
    """A machine's licensing state: its hardware ID, the installed key, the installation serial (part of
    the IID), whether it is activated (and the CID it deposited), and its rearm budget."""

    hardware_id: str
    generation: str = "win8+"
    key: str | None = None
    kind: str | None = None
    serial: int = 0
    activated: bool = False
    cid: str | None = None
    rearms_used: int = 0

    @property
    def rearms_left(self) -> int:
        return REARMS[self.generation] - self.rearms_used

    @property
    def status(self) -> str:
        if self.key is None:
            return "no key"
        return "licensed (permanent)" if self.activated else "unlicensed (notification)"


def new_license(hardware_id: str, generation: str = "win8+") -> ClientLicense:
    if generation not in REARMS:
        raise ValueError(f"generation must be one of {', '.join(REARMS)}")
    return ClientLicense(hardware_id, generation)


def install_key(
    state: ClientLicense, key: str, rng: Rng, gvlk_product: Callable[[str], str | None] = lambda _k: None
) -> ClientLicense:
    """``slmgr /ipk``: a valid key replaces the old one and the machine is unactivated again."""
    parsed: ProductKey = classify(key, gvlk_product)
    return replace(
        state, key=parsed.text, kind=parsed.kind.value, serial=rng.randint(0, 10**12 - 1), activated=False, cid=None
    )


def current_iid(state: ClientLicense) -> str:
    """``slmgr /dti``: the installation ID of the installed key on this machine."""
    if state.key is None:
        raise ActivationError(E_NO_KEY, "install a key first (emu client mak install KEY)")
    if state.kind == KeyKind.GVLK.value:
        raise ActivationError(E_WRONG_TYPE, "a GVLK activates against KMS or ADBA, not by phone or online")
    return installation_id(state.key, state.hardware_id, state.serial)


def apply_cid(state: ClientLicense, cid: str) -> ClientLicense:
    """``slmgr /atp CID``: deposit a confirmation ID; the activation is permanent."""
    iid = current_iid(state)
    checked = verify_cid(cid, iid)
    return replace(state, activated=True, cid=checked.text)


def rearm(state: ClientLicense, rng: Rng) -> ClientLicense:
    """``slmgr /rearm``: one rearm used; the licensing state is reset (a new IID; activate again)."""
    if state.rearms_left <= 0:
        raise ActivationError(E_MAX_REARM, f"all {REARMS[state.generation]} rearms are used")
    return replace(
        state, rearms_used=state.rearms_used + 1, activated=False, cid=None, serial=rng.randint(0, 10**12 - 1)
    )
