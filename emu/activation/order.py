"""Which activation path runs, in which order, and which one activated (documented order: a domain
member asks AD first; then KMS found through DNS; then MAK. slmgr's ``/act-type``: 0 any, 1 AD only,
2 KMS only).

Extension point for the MAK path (helper "mak"): pass it in ``later``, e.g.
``run_paths(policy, domain_member=..., adba=..., kms=..., later=(("mak", mak_attempt),))``. Each later
path runs, in order, only when policy is ANY and ADBA and KMS did not activate; add a new
:class:`ActivationType` value if a policy should select it alone.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["ActivationOutcome", "ActivationType", "PathOutcome", "parse_activation_type", "run_paths"]


class ActivationType(enum.IntEnum):
    """slmgr ``/act-type`` values (documented)."""

    ANY = 0
    AD = 1
    KMS = 2


def parse_activation_type(text: str) -> ActivationType:
    """``any``/``ad``/``kms`` or ``0``/``1``/``2``."""
    key = text.strip().lower()
    names = {"any": ActivationType.ANY, "ad": ActivationType.AD, "adba": ActivationType.AD, "kms": ActivationType.KMS}
    if key in names:
        return names[key]
    if key.isdigit() and int(key) in (0, 1, 2):
        return ActivationType(int(key))
    raise ValueError(f"activation type {text!r}: expected any, ad or kms (0, 1, 2)")


@dataclass(frozen=True)
class PathOutcome:
    path: str
    activated: bool
    hresult: int = 0
    detail: str = ""


@dataclass(frozen=True)
class ActivationOutcome:
    """Every attempt in order; ``activated_by`` names the path that activated (None: none did)."""

    attempts: tuple[PathOutcome, ...]

    @property
    def activated_by(self) -> str | None:
        return next((a.path for a in self.attempts if a.activated), None)

    @property
    def hresult(self) -> int:
        """0 when activated, else the last attempt's code."""
        if self.activated_by is not None or not self.attempts:
            return 0
        return self.attempts[-1].hresult


Attempt = Callable[[], PathOutcome]


def run_paths(
    policy: ActivationType,
    *,
    domain_member: bool,
    adba: Attempt | None,
    kms: Attempt | None,
    later: Sequence[tuple[str, Attempt]] = (),
) -> ActivationOutcome:
    """Run the paths the policy allows, in order, stopping at the first that activates."""
    attempts: list[PathOutcome] = []
    plan: list[Attempt] = []
    if policy in (ActivationType.ANY, ActivationType.AD) and domain_member and adba is not None:
        plan.append(adba)
    if policy in (ActivationType.ANY, ActivationType.KMS) and kms is not None:
        plan.append(kms)
    if policy == ActivationType.ANY:
        plan.extend(step for _, step in later)
    for step in plan:
        outcome = step()
        attempts.append(outcome)
        if outcome.activated:
            break
    return ActivationOutcome(tuple(attempts))
