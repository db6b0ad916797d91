"""Waiting on an injected clock: how long a timer of ``seconds`` clock-seconds takes in real time.

A server's timers (the host's re-publication, the DNS server's SRV aging) sleep with asyncio in real
seconds. On the real clock that is the same number; on a lab's shared scaled clock
(:class:`emu.clock.ScaledClock`) a 24-hour re-publication at scale 3600 is a 24-second sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from emu.clock import Clock, ScaledClock

__all__ = ["real_seconds", "sleeper"]


def real_seconds(clock: Clock, seconds: float) -> float:
    """Real seconds that ``seconds`` of ``clock`` last (the same number unless the clock is scaled)."""
    if isinstance(clock, ScaledClock):
        return clock.real_delay(seconds)
    return max(0.0, seconds)


def sleeper(clock: Clock) -> Callable[[float], Awaitable[None]]:
    """An ``asyncio.sleep`` that counts in ``clock``'s seconds (what servers take as ``sleep=``)."""
    if not isinstance(clock, ScaledClock):
        return asyncio.sleep

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(clock.real_delay(seconds))

    return sleep
