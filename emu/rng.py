"""The only entropy core code sees: a seedable random source.

Core modules take an :class:`Rng` argument instead of calling ``os.urandom`` or ``random``; the
edges pass :func:`system_rng` (cryptographically strong, spec quirk Q19) and tests pass a seeded one.
"""

from __future__ import annotations

import random as _random
import secrets as _secrets
from collections.abc import MutableSequence, Sequence
from typing import TypeVar

__all__ = ["Rng", "seeded", "system_rng"]

_T = TypeVar("_T")


class Rng:
    """Random bytes and integers; deterministic when built with a seed."""

    def __init__(self, seed: int | None = None) -> None:
        self._seeded = seed is not None
        self._random: _random.Random = _random.Random(seed) if seed is not None else _random.SystemRandom()

    @property
    def deterministic(self) -> bool:
        return self._seeded

    def bytes(self, n: int) -> bytes:
        if self._seeded:
            return self._random.getrandbits(8 * n).to_bytes(n, "little") if n else b""
        return _secrets.token_bytes(n)

    def randint(self, low: int, high: int) -> int:
        """An integer in ``[low, high]`` (both ends included)."""
        return self._random.randint(low, high)

    def random(self) -> float:
        return self._random.random()

    def choice(self, seq: Sequence[_T]) -> _T:
        return self._random.choice(seq)

    def shuffle(self, seq: MutableSequence[_T]) -> None:
        self._random.shuffle(seq)


def seeded(seed: int) -> Rng:
    """A deterministic source for tests and scenarios."""
    return Rng(seed)


def system_rng() -> Rng:
    """The machine's strong source, for live servers and clients."""
    return Rng(None)
