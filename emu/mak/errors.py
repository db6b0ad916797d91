"""The one exception of the MAK paths: a licensing HRESULT with its text from emu's error table."""

from __future__ import annotations

from emu.errors import EmuError
from emu.hresults import describe, lookup

__all__ = ["ActivationError"]


class ActivationError(EmuError):
    """An activation step failed with ``code`` (an HRESULT from :mod:`emu.hresults`)."""

    def __init__(self, code: int, detail: str = "") -> None:
        entry = lookup(code)
        meaning = entry.meaning if entry else "unknown error"
        text = f"{describe(code)}: {meaning}" + (f" ({detail})" if detail else "")
        super().__init__(text)
        self.code = code & 0xFFFFFFFF
        self.detail = detail
