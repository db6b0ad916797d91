"""MAK and KMS host key (CSVLK) activation, sans-IO: emu's lab key format, installation and confirmation
IDs, the activation service's ledger rules, the BatchActivation SOAP shape and the client's licensing
state machine.

Everything here is emu-defined where Microsoft's formats are not public (keys, IIDs, CIDs, the online
exchange): visibly fake, marked ``EMU``/``emu/1``, unable to activate real Windows. See docs/mak.md.
"""

from __future__ import annotations

from emu.mak.errors import ActivationError

__all__ = ["ActivationError"]
