"""The MAK path of the client's activation order: the last path, after ADBA and KMS (documented order).

:class:`MakStep` is an attempt for :func:`emu.activation.order.run_paths` (``later=(("mak", step),)``).
It uses the client's MAK licensing state (emu.mak.client): a machine already MAK-activated stays
activated (MAK activation is permanent); otherwise it shows its IID, asks ``obtain_cid`` (online, phone
or proxy: injected, so this stays sans-IO) and deposits the CID. ``step.state`` is the state afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

from emu.activation.order import PathOutcome
from emu.mak import client as mak
from emu.mak.errors import ActivationError

__all__ = ["MakStep"]

#: ``obtain_cid(key, iid) -> cid``; raises :class:`ActivationError` with the service's code when refused.
ObtainCid = Callable[[str, str], str]


class MakStep:
    """One MAK attempt; callable with no arguments, as run_paths expects."""

    name = "mak"

    def __init__(self, state: mak.ClientLicense, obtain_cid: ObtainCid) -> None:
        self.state = state
        self._obtain_cid = obtain_cid

    def __call__(self) -> PathOutcome:
        if self.state.activated:
            return PathOutcome(self.name, True, 0, "MAK activation is permanent")
        try:
            iid = mak.current_iid(self.state)
            cid = self._obtain_cid(self.state.key or "", iid)
            self.state = mak.apply_cid(self.state, cid)
        except ActivationError as exc:
            return PathOutcome(self.name, False, exc.code, str(exc))
        return PathOutcome(self.name, True, 0, "activated with a MAK (permanent)")
