"""RFC 2782 target selection: priority groups, weighted random order inside each (docs/dns.md).

The randomness is injected (:class:`emu.rng.Rng`), so a seeded run always picks the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emu.rng import Rng

__all__ = ["SrvRecord", "order_srv"]


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV RDATA (RFC 2782): lower priority first, weight spreads load, target canonical."""

    priority: int
    weight: int
    port: int
    target: str


def order_srv(records: Sequence[SrvRecord], rng: Rng) -> list[SrvRecord]:
    """The order in which a client should try the targets (RFC 2782 "Usage rules").

    A single record with target ``"."`` means "decidedly not available": the result is empty.
    """
    if len(records) == 1 and records[0].target in (".", ""):
        return []
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority and r.target not in (".", "")]
        rng.shuffle(group)  # any order, but random so that all-zero groups come out uniform
        group.sort(key=lambda r: r.weight != 0)  # weight-0 records first (stable: keeps the shuffle)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)  # uniform in 0..sum, inclusive
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered
