"""Injected time: every timer in emu reads a :class:`Clock`, so months run in seconds.

``now()`` is seconds on a monotonic scale; ``wall()`` is UTC seconds since the Unix epoch and is
what goes into FILETIME fields. A :class:`VirtualClock` moves only when told to, and keeps both
scales consistent (``wall = epoch + now``).
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "FILETIME_UNIX_OFFSET",
    "MAX_SCALE",
    "Clock",
    "ScaledClock",
    "VirtualClock",
    "WallClock",
    "filetime_to_unix",
    "parse_clock_spec",
    "unix_to_filetime",
]

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


class ScaledClock:
    """Virtual time that runs ``scale`` times faster than real time, the same in every process that shares it.

    Every emu process of a lab scenario gets the same three numbers (``--clock SPEC``, see :meth:`spec`):
    the real Unix time the run started, the virtual UTC time that instant stands for, and the scale. Each
    computes the present from its own real clock (``time.time()``, which all processes of one machine
    share), so a host's 30-day expiry, a client's 2-hour retry and a DNS server's TSIG check agree
    without any message between them.

    Args:
        scale: virtual seconds per real second (3600: one real second is one virtual hour).
        origin: the real Unix time (seconds) at which virtual time is ``epoch``.
        epoch: the virtual UTC time (Unix seconds) at ``origin``.
    """

    def __init__(self, scale: float, origin: float, epoch: float = VirtualClock.DEFAULT_EPOCH) -> None:
        if not 0 < scale <= MAX_SCALE:
            raise ValueError(f"a clock scale is a number of virtual seconds per real second in (0, {MAX_SCALE:g}]")
        self.scale = float(scale)
        self.origin = float(origin)
        self.epoch = float(epoch)

    def now(self) -> float:
        """Virtual seconds since ``epoch`` (0 at ``origin``)."""
        import time

        return (time.time() - self.origin) * self.scale

    def wall(self) -> float:
        return self.epoch + self.now()

    def real_delay(self, virtual_seconds: float) -> float:
        """How many real seconds ``virtual_seconds`` of this clock take (never negative)."""
        return max(0.0, virtual_seconds / self.scale)

    def spec(self) -> str:
        """The text ``--clock`` takes to build the same clock in another process."""
        return f"scale={self.scale:g},origin={self.origin:.6f},epoch={self.epoch:.3f}"


#: The largest scale a :class:`ScaledClock` accepts (one real second = 100 virtual days).
MAX_SCALE = 8_640_000.0


def parse_clock_spec(text: str) -> ScaledClock:
    """A :class:`ScaledClock` from ``scale=3600,origin=<unix>,epoch=<unix>`` (``ScaledClock.spec``).

    ``origin`` defaults to now and ``epoch`` to 2026-01-01 UTC, so ``scale=3600`` alone starts a scaled
    clock at the moment the process reads it.

    Raises:
        ValueError: an unknown field, a field that is not a number, or a scale out of range; the message
            says which.
    """
    import time

    fields: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in ("scale", "origin", "epoch"):
            raise ValueError(f"clock {text!r}: expected scale=N[,origin=UNIX][,epoch=UNIX], not {part.strip()!r}")
        try:
            fields[name] = float(value)
        except ValueError:
            raise ValueError(f"clock {text!r}: {name} must be a number, not {value.strip()!r}") from None
    if "scale" not in fields:
        raise ValueError(f"clock {text!r}: give scale=N (virtual seconds per real second)")
    return ScaledClock(
        fields["scale"], fields.get("origin", time.time()), fields.get("epoch", VirtualClock.DEFAULT_EPOCH)
    )
