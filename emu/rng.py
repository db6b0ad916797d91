"""The only entropy core code sees: a seedable random source.

Core modules take an :class:`Rng` argument instead of calling ``os.urandom`` or ``random``. The edges
choose the source: :func:`system_rng` (the operating system's cryptographically strong source, one
system call per value), :func:`fast_rng` (a Mersenne Twister seeded once from the operating system:
unpredictable from run to run, about ten times cheaper per value, not cryptographically strong) and
:func:`seeded` (deterministic, for tests and scenarios).

Nothing the KMS protocol asks a host for needs cryptographic strength: the host's random values are
the response IV of V5/V6 and the 16-byte salt R of V5/V6 responses, which a client only echoes or
hashes, and the association group id. The KMS host uses :func:`fast_rng` for them (docs/performance.md,
"Randomness"); clients keep :func:`system_rng`.
"""

from __future__ import annotations

import random as _random
import secrets as _secrets
from collections.abc import MutableSequence, Sequence
from typing import TypeVar

__all__ = ["Rng", "fast_rng", "seeded", "system_rng"]

_T = TypeVar("_T")


class Rng:
    """Random bytes and integers; deterministic when built with a seed."""

    def __init__(self, seed: int | None = None, *, deterministic: bool | None = None) -> None:
        self._seeded = seed is not None
        self._deterministic = self._seeded if deterministic is None else deterministic
        self._random: _random.Random = _random.Random(seed) if seed is not None else _random.SystemRandom()

    @property
    def deterministic(self) -> bool:
        """True when the values repeat for the same seed (tests, scenarios)."""
        return self._deterministic

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
    """The machine's strong source, for live clients."""
    return Rng(None)


def fast_rng() -> Rng:
    """A fast source seeded once from the machine's strong one: for the host's non-secret values.

    Call it again in each worker process after a fork, so that workers do not share a stream.
    """
    return Rng(_secrets.randbits(256), deterministic=False)
