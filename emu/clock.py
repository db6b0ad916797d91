"""Injected time: every timer in emu reads a :class:`Clock`, so months run in seconds.

``now()`` is seconds on a monotonic scale; ``wall()`` is UTC seconds since the Unix epoch and is
what goes into FILETIME fields. A :class:`VirtualClock` moves only when told to, and keeps both
scales consistent (``wall = epoch + now``).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["FILETIME_UNIX_OFFSET", "Clock", "VirtualClock", "WallClock", "filetime_to_unix", "unix_to_filetime"]

#: 100-ns intervals between 1601-01-01 and 1970-01-01 (docs/kms-wire-protocol.md).
FILETIME_UNIX_OFFSET = 116444736000000000


def unix_to_filetime(seconds: float) -> int:
    """Unix seconds (UTC) to a Windows FILETIME (100-ns ticks since 1601)."""
    return round(seconds * 10_000_000) + FILETIME_UNIX_OFFSET


def filetime_to_unix(filetime: int) -> float:
    """Windows FILETIME to Unix seconds (UTC)."""
    return (filetime - FILETIME_UNIX_OFFSET) / 10_000_000


class Clock(Protocol):
    """What emu's state machines and drivers need to know about time."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wall(self) -> float:
        """UTC seconds since 1970-01-01."""
        ...


class WallClock:
    """The real clock of the machine (used only at the edges: servers and CLI)."""

    def now(self) -> float:
        import time

        return time.monotonic()

    def wall(self) -> float:
        import time

        return time.time()


class VirtualClock:
    """A clock that moves only when advanced (tests and scenarios jump it to the next deadline).

    Args:
        epoch: the UTC time (Unix seconds) that ``now() == 0`` stands for. Default 2026-01-01.
    """

    DEFAULT_EPOCH = 1767225600.0  # 2026-01-01T00:00:00Z

    def __init__(self, epoch: float = DEFAULT_EPOCH, start: float = 0.0) -> None:
        self._now = start
        self.epoch = epoch

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self.epoch + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self.advance_to(self._now + seconds)

    def advance_to(self, when: float) -> None:
        """Move time to ``when`` (never backwards)."""
        self._now = max(self._now, when)
