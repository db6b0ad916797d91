"""How known KMS host implementations behave on the wire: one table of traits, used twice.

``emu probe`` compares what a host does with these traits to say which implementation it behaves like;
``emu host serve --profile vlmcsd|py-kms`` makes emu's own host show the traits of that implementation
(fault injection for clients and detectors). The table holds facts observed in captures between the
independent implementations and read in their documentation; "Windows" holds only what Microsoft
documents or what follows from the DCE/RPC specification, and ``None`` where that is not known.

Traits:

* ``counting``: ``"distinct-cmids"`` (the count is the number of distinct client machine IDs, a repeated
  CMID does not raise it) or ``"fixed"`` (every answer carries the same count, twice the client's
  threshold);
* ``epid_per_request``: a new ePID in every response (instead of one per host key for the host's life);
* ``epid_build``: the OS build every ePID claims, when an implementation always uses one (no known one
  does: vlmcsd and py-kms draw it at random, Windows uses its own; shown as evidence, not compared);
* ``ndr32_with_ndr64``: when a bind offers both NDR32 and NDR64, NDR32 is accepted (``False``: rejected in
  favour of NDR64);
* ``btfn``: bind-time feature negotiation is acknowledged;
* ``assoc_group``: the association group id every bind_ack carries, when it is a constant;
* ``keeps_connection``: a second request on the same connection is answered;
* ``bad_version``: what a request with an unknown protocol version gets: ``"hresult"`` (0x8007000D) or
  ``"close"`` (the connection is closed without an answer);
* ``unknown_opnum``: a request for an operation the interface does not have gets ``"fault"`` (as DCE/RPC
  requires) or an ordinary ``"answer"``;
* ``fault_call_id``: ``"request"`` (faults carry the failing request's call id) or ``"fixed"``;
* ``v4_delay``: seconds an implementation waits before answering a V4 request;
* ``refuses_large_n``: a RequiredClientCount above 1000 is refused with 0x8007000D.

emu marks its own host (emu-defined): the association group ids of its bind_acks carry 0x454D ("EM")
in their upper 16 bits, so a capture or a probe tells emu from the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = [
    "EMU_ASSOC_GROUP_MARK",
    "IMPLEMENTATIONS",
    "PROFILES",
    "PYKMS_ASSOC_GROUP",
    "PYKMS_EPID_BUILDS",
    "Implementation",
    "Observations",
    "Verdict",
    "classify",
    "emu_assoc_group",
    "is_emu_assoc_group",
]

#: Upper 16 bits of every association group id emu's host sends ("EM").
EMU_ASSOC_GROUP_MARK = 0x454D
#: The association group id py-kms puts in every bind_ack.
PYKMS_ASSOC_GROUP = 0x1063BF3F
#: OS builds seen in py-kms's ePIDs (a random one per response in the reference captures).
PYKMS_EPID_BUILDS = (9600, 14393, 17763)


def emu_assoc_group(n: int) -> int:
    """The ``n``-th association group id of an emu host (marked, see the module docstring)."""
    return (EMU_ASSOC_GROUP_MARK << 16) | (n & 0xFFFF)


def is_emu_assoc_group(value: int) -> bool:
    return value >> 16 == EMU_ASSOC_GROUP_MARK


@dataclass(frozen=True)
class Implementation:
    """One implementation's traits (see the module docstring); ``None``: not known or varies."""

    name: str
    counting: str | None
    epid_per_request: bool | None
    epid_build: int | None
    ndr32_with_ndr64: bool | None
    btfn: bool | None
    assoc_group: int | None
    keeps_connection: bool | None
    bad_version: str | None
    unknown_opnum: str | None
    fault_call_id: str | None
    v4_delay: float | None
    refuses_large_n: bool | None = None
    sources: str = ""


IMPLEMENTATIONS: dict[str, Implementation] = {
    impl.name: impl
    for impl in (
        Implementation(
            "Windows",
            counting="distinct-cmids",
            epid_per_request=False,
            epid_build=None,
            ndr32_with_ndr64=None,
            btfn=True,
            assoc_group=None,
            keeps_connection=True,
            bad_version="hresult",
            unknown_opnum="fault",
            fault_call_id="request",
            v4_delay=0.0,
            sources="Microsoft's KMS activation planning (count of distinct clients, 2 x threshold cache); "
            "DCE/RPC (faults for unknown operations carry the request's call id)",
        ),
        Implementation(
            "vlmcsd",
            counting="fixed",
            epid_per_request=False,
            epid_build=None,
            ndr32_with_ndr64=False,
            btfn=True,
            assoc_group=None,
            keeps_connection=True,
            bad_version="hresult",
            unknown_opnum="answer",
            fault_call_id="fixed",
            v4_delay=0.0,
            refuses_large_n=True,
            sources="captures between vlmcs, vlmcsd and py-kms; vlmcsd's manual (-M0 default, -r1 default)",
        ),
        Implementation(
            "py-kms",
            counting="fixed",
            epid_per_request=True,
            epid_build=None,
            ndr32_with_ndr64=True,
            btfn=True,
            assoc_group=PYKMS_ASSOC_GROUP,
            keeps_connection=False,
            bad_version="close",
            unknown_opnum="answer",
            fault_call_id=None,
            v4_delay=1.0,
            refuses_large_n=False,
            sources="captures between vlmcs, vlmcsd and py-kms",
        ),
        Implementation(
            "emu",
            counting="distinct-cmids",
            epid_per_request=False,
            epid_build=None,
            ndr32_with_ndr64=False,
            btfn=True,
            assoc_group=None,
            keeps_connection=True,
            bad_version="hresult",
            unknown_opnum="fault",
            fault_call_id="request",
            v4_delay=0.0,
            refuses_large_n=True,
            sources="this project (docs/probe.md); marked by its association group ids",
        ),
    )
}

#: Host profiles ``emu host serve --profile`` takes: the implementation whose traits emu then shows.
PROFILES = ("emu", "vlmcsd", "py-kms")

#: Traits compared one to one (``assoc_group`` and ``v4_delay`` are judged separately).
_COMPARED = (
    "counting",
    "epid_per_request",
    "ndr32_with_ndr64",
    "btfn",
    "keeps_connection",
    "bad_version",
    "unknown_opnum",
    "fault_call_id",
    "refuses_large_n",
)


@dataclass
class Observations:
    """What a probe or a capture showed of a host; ``None`` where it did not show it."""

    counting: str | None = None
    epid_per_request: bool | None = None
    epid_build: int | None = None
    ndr32_with_ndr64: bool | None = None
    btfn: bool | None = None
    assoc_groups: list[int] = field(default_factory=list)
    keeps_connection: bool | None = None
    bad_version: str | None = None
    unknown_opnum: str | None = None
    fault_call_id: str | None = None
    v4_delay: float | None = None
    refuses_large_n: bool | None = None
    evidence: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Verdict:
    """The implementation a host behaves like, how sure, and why."""

    behaves_like: str
    confidence: float
    scores: dict[str, float]
    matches: dict[str, list[str]]
    mismatches: dict[str, list[str]]
    #: when the best fits tie: who they are ("vlmcsd or Windows")
    candidates: str = ""


def _assoc_trait(obs: Observations, impl: Implementation) -> bool | None:
    """Whether the bind_acks' association group ids fit ``impl`` (None: nothing to judge)."""
    if not obs.assoc_groups:
        return None
    emu_marked = all(is_emu_assoc_group(g) for g in obs.assoc_groups)
    if impl.name == "emu":
        return emu_marked
    if impl.assoc_group is not None:
        return all(g == impl.assoc_group for g in obs.assoc_groups)
    return not emu_marked and PYKMS_ASSOC_GROUP not in obs.assoc_groups


def classify(obs: Observations) -> Verdict:
    """Compare ``obs`` with every implementation; the best fit wins when it is clearly ahead.

    Each observed trait that an implementation's table entry states scores +1 when it agrees and -1 when
    it does not; unknown traits score nothing. The association group id counts double (it is the one
    deliberate mark). Confidence is the winner's score over the traits it could be judged on, lowered by
    the runner-up's score; below 0.3, or with fewer than three judged traits, the verdict is "unknown".
    """
    scores: dict[str, float] = {}
    judged: dict[str, int] = {}
    matches: dict[str, list[str]] = {}
    mismatches: dict[str, list[str]] = {}
    for name, impl in IMPLEMENTATIONS.items():
        score = 0.0
        count = 0
        ok: list[str] = []
        bad: list[str] = []
        for trait in _COMPARED:
            seen, expected = getattr(obs, trait), getattr(impl, trait)
            if seen is None or expected is None:
                continue
            count += 1
            if seen == expected:
                score += 1
                ok.append(trait)
            else:
                score -= 1
                bad.append(trait)
        assoc = _assoc_trait(obs, impl)
        if assoc is not None:
            count += 2
            score += 2 if assoc else -2
            (ok if assoc else bad).append("assoc_group")
        if obs.v4_delay is not None and impl.v4_delay is not None:
            count += 1
            slow = obs.v4_delay >= 0.8
            fits = slow == (impl.v4_delay >= 0.8)
            score += 1 if fits else -1
            (ok if fits else bad).append("v4_delay")
        scores[name] = score
        judged[name] = count
        matches[name] = ok
        mismatches[name] = bad
    ranked = sorted(scores, key=lambda n: scores[n], reverse=True)
    best, runner_up = ranked[0], ranked[1]
    if judged[best] < 3:
        return Verdict("unknown", 0.0, scores, matches, mismatches)
    if scores[best] == scores[runner_up]:  # the evidence cannot tell them apart: say so
        tied = " or ".join(n for n in ranked if scores[n] == scores[best])
        return Verdict("unknown", 0.0, scores, matches, mismatches, candidates=tied)
    confidence = max(0.0, min(1.0, (scores[best] - max(scores[runner_up], 0.0) / 2) / judged[best]))
    if confidence < 0.3:
        return Verdict("unknown", round(confidence, 2), scores, matches, mismatches)
    return Verdict(best, round(confidence, 2), scores, matches, mismatches)
