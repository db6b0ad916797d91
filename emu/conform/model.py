"""The data a conformance case is made of, and what running it yields.

A :class:`Case` names its probe (what is sent) and its judge (what is decided from the evidence)
by name; each suite keeps a table of probes and judges. Probes with the same name and ``sends``
arguments run once per run and share their evidence, so ten judgements of one bind cost one bind.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emu.errors import EmuError, UsageError


class Verdict(enum.Enum):
    """How one case came out."""

    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class Case:
    """One rule of one suite, as data.

    Attributes:
        id: stable dotted id (``rpc.bind.ndr64``), used by ``--only``/``--skip``.
        suite: ``kms-host``, ``kms-client`` or ``dns``.
        group: the id's family (``rpc``, ``kms``, ``count``...), also selectable.
        text: the rule in one sentence.
        source: where the rule is written: a docs/ page section or an RFC section.
        probe: name of the probe that sends the traffic.
        judge: name of the judge that decides from the evidence.
        sends: arguments of the probe (part of the evidence's identity).
        expects: arguments of the judge.
        needs: a precondition the suite cannot create itself ("a fresh host"), shown by ``--list``.
        passive: whether ``--pcap`` can judge it from a captured conversation.
    """

    id: str
    suite: str
    group: str
    text: str
    source: str
    probe: str
    judge: str
    sends: tuple[tuple[str, Any], ...] = ()
    expects: tuple[tuple[str, Any], ...] = ()
    needs: str = ""
    passive: bool = False

    def send_arg(self, name: str, default: Any = None) -> Any:
        return dict(self.sends).get(name, default)

    def expect(self, name: str, default: Any = None) -> Any:
        return dict(self.expects).get(name, default)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A judge's decision: verdict and one line of evidence."""

    verdict: Verdict
    evidence: str


def passed(evidence: str) -> Outcome:
    return Outcome(Verdict.PASS, evidence)


def failed(evidence: str) -> Outcome:
    return Outcome(Verdict.FAIL, evidence)


def inconclusive(evidence: str) -> Outcome:
    return Outcome(Verdict.INCONCLUSIVE, evidence)


def skipped(evidence: str) -> Outcome:
    return Outcome(Verdict.SKIP, evidence)


def check(ok: bool, good: str, bad: str) -> Outcome:
    """PASS with ``good`` or FAIL with ``bad``."""
    return passed(good) if ok else failed(bad)


@dataclass(slots=True)
class Evidence:
    """What a probe saw; ``conns`` are the recorder's connection numbers it used (for frame numbers)."""

    data: dict[str, Any] = field(default_factory=dict)
    conns: list[int] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


class ProbeFailed(Exception):
    """The probe could not produce evidence (target unreachable...): the case is inconclusive."""

    def __init__(self, message: str, conns: list[int] | None = None) -> None:
        super().__init__(message)
        self.conns = conns or []


@dataclass(frozen=True, slots=True)
class Result:
    """A case, its outcome, and where in the capture the evidence is (``frames``: "12-19", or "")."""

    case: Case
    verdict: Verdict
    evidence: str
    conns: tuple[int, ...] = ()
    frames: str = ""


Probe = Callable[[Any, Case], Awaitable[Evidence]]
Judge = Callable[[Evidence, Case], Outcome]


@dataclass(frozen=True, slots=True)
class Suite:
    """A suite's cases and the probes and judges they name."""

    name: str
    cases: tuple[Case, ...]
    probes: Mapping[str, Probe]
    judges: Mapping[str, Judge]

    def validate(self) -> None:
        """Every case names a known probe and judge and has a unique id (checked by the tests)."""
        seen: set[str] = set()
        for case in self.cases:
            if case.id in seen:
                raise UsageError(f"case id {case.id} appears twice in suite {self.name}")
            seen.add(case.id)
            if case.probe not in self.probes:
                raise UsageError(f"case {case.id} names unknown probe {case.probe!r}")
            if case.judge not in self.judges:
                raise UsageError(f"case {case.id} names unknown judge {case.judge!r}")


def select(cases: tuple[Case, ...], only: list[str], skip: list[str]) -> tuple[list[Case], list[Case]]:
    """(cases to run, cases skipped by the user). A selector matches an id, a group or an id prefix."""

    def matches(case: Case, selector: str) -> bool:
        return selector in (case.id, case.group) or case.id.startswith(selector.rstrip(".") + ".")

    known = {c.id for c in cases} | {c.group for c in cases}
    for selector in [*only, *skip]:
        if selector not in known and not any(matches(c, selector) for c in cases):
            raise UsageError(f"--only/--skip {selector!r} matches no case (see --list)")
    run, dropped = [], []
    for case in cases:
        wanted = not only or any(matches(case, s) for s in only)
        if wanted and not any(matches(case, s) for s in skip):
            run.append(case)
        else:
            dropped.append(case)
    return run, dropped


async def run_suite(suite: Suite, cases: list[Case], ctx: Any) -> list[Result]:
    """Run ``cases`` in order; a probe's evidence is shared by every case with the same probe and sends."""
    cache: dict[tuple[str, tuple[tuple[str, Any], ...]], Evidence | ProbeFailed] = {}
    results: list[Result] = []
    for case in cases:
        key = (case.probe, case.sends)
        if key not in cache:
            try:
                cache[key] = await suite.probes[case.probe](ctx, case)
            except ProbeFailed as exc:
                cache[key] = exc
            except (OSError, EOFError, TimeoutError, EmuError) as exc:  # the target misbehaved: no traceback
                cache[key] = ProbeFailed(f"{type(exc).__name__}: {exc}")
        got = cache[key]
        if isinstance(got, ProbeFailed):
            results.append(Result(case, Verdict.INCONCLUSIVE, f"probe failed: {got}", tuple(got.conns)))
            continue
        outcome = suite.judges[case.judge](got, case)
        results.append(Result(case, outcome.verdict, outcome.evidence, tuple(got.conns)))
    return results
