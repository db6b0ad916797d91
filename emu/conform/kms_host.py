"""The kms-host suite: emu plays Windows clients against a KMS host and judges it rule by rule.

``CASES`` is the suite as data; the judges below are small and named, the probes live in
:mod:`emu.conform.kms_probes`. Counting rules start from the host's current count (they do not
assume a fresh host) and say when they cannot decide.
"""

from __future__ import annotations

import itertools
from typing import Any

from emu.conform import kms_probes as p
from emu.conform.model import Case, Evidence, Outcome, Suite, check, failed, inconclusive, passed, skipped
from emu.hresults import E_INVALID_DATA, E_INVALID_TIMESTAMP, E_KMS_ID_MISMATCH, describe
from emu.kms.epid import csvlk_for_kms_id, parse_epid, platform_id_for_build
from emu.kms.host import DEFAULT_ACTIVATION_INTERVAL, DEFAULT_RENEWAL_INTERVAL
from emu.kms.messages import expected_response_size, open_request
from emu.wire.rpc import (
    FAULT_STATUS_NAMES,
    NCA_S_OP_RNG_ERROR,
    NCA_S_PROTO_ERROR,
    NCA_S_UNK_IF,
    AlterContextResp,
    BindAck,
    BindNak,
    ContextResult,
    Fault,
    Response,
)

DOC = "docs/conformance.md"
C706 = "C706 12.6 (connection-oriented PDUs)"
SUITE = "kms-host"


def _fault_name(status: int) -> str:
    return FAULT_STATUS_NAMES.get(status, f"0x{status:08X}")


def _pdu_text(pdu: Any) -> str:
    if pdu is None:
        return "no answer"
    if isinstance(pdu, Exception):
        return f"undecodable answer ({pdu})"
    if isinstance(pdu, Fault):
        return f"fault {_fault_name(pdu.status)}"
    return type(pdu).__name__


# -- RPC judges -------------------------------------------------------------------------------------


def _ack(ev: Evidence) -> BindAck | AlterContextResp | None:
    pdu = ev.get("pdu")
    return pdu if isinstance(pdu, (BindAck, AlterContextResp)) else None


def j_accepts(ev: Evidence, case: Case) -> Outcome:
    """The result for the offered ``syntax`` is acceptance."""
    ack = _ack(ev)
    if ack is None:
        return failed(f"bind answered with {_pdu_text(ev.get('pdu'))}")
    want = case.expect("syntax")
    index = list(ev["offers"]).index(want)
    if index >= len(ack.results):
        return failed(f"bind_ack has {len(ack.results)} results for {len(ev['offers'])} contexts")
    result = ack.results[index]
    return check(
        result.result == ContextResult.ACCEPTANCE and result.transfer_syntax == p.SYNTAXES[want],
        f"{want.upper()} accepted",
        f"{want.upper()} answered {result.result.name.lower()} (reason {result.reason})",
    )


def j_any_accepted(ev: Evidence, case: Case) -> Outcome:
    ack = _ack(ev)
    if ack is None:
        return failed(f"bind answered with {_pdu_text(ev.get('pdu'))}")
    names = [o for o, r in zip(ev["offers"], ack.results) if r.result == ContextResult.ACCEPTANCE]
    return check(bool(names), f"accepted {', '.join(names)}", "no transfer syntax accepted")


def j_btfn(ev: Evidence, case: Case) -> Outcome:
    ack = _ack(ev)
    if ack is None:
        return failed(f"bind answered with {_pdu_text(ev.get('pdu'))}")
    index = list(ev["offers"]).index("btfn")
    if index >= len(ack.results):
        return failed("no result for the BTFN context")
    result = ack.results[index]
    if result.result == ContextResult.NEGOTIATE_ACK:
        return passed(f"negotiate_ack, features 0x{result.reason:X}")
    if result.result == ContextResult.PROVIDER_REJECTION:
        return inconclusive("BTFN rejected: the host negotiates no features (allowed)")
    return failed(f"BTFN context answered {result.result.name.lower()}")


def j_results_count(ev: Evidence, case: Case) -> Outcome:
    ack = _ack(ev)
    if ack is None:
        return failed(f"bind answered with {_pdu_text(ev.get('pdu'))}")
    n, want = len(ack.results), len(ev["offers"])
    return check(n == want, f"{n} results for {want} contexts", f"{n} results for {want} offered contexts")


def j_frag_length(ev: Evidence, case: Case) -> Outcome:
    raw, extra = ev.get("raw"), ev.get("extra", b"")
    if raw is None:
        return failed("no bind_ack")
    frag = raw[8] | raw[9] << 8
    if extra:
        return failed(f"frag_length {frag} but {frag + len(extra)} bytes sent ({len(extra)} beyond the PDU)")
    return passed(f"frag_length {frag} equals the bytes sent")


def j_fault(ev: Evidence, case: Case) -> Outcome:
    """A fault with one of the expected statuses; the association goes on (a later call is answered)."""
    want = [int(s) for s in case.expect("status", ())]
    pdu = ev.get("pdu")
    names = "/".join(_fault_name(s) for s in want)
    if isinstance(pdu, Fault) and pdu.status in want:
        follow = ev.get("follow")
        if case.expect("continues") and not isinstance(follow, Response):
            return failed(f"fault {_fault_name(pdu.status)}, but the next valid call got {_pdu_text(follow)}")
        return passed(f"fault {_fault_name(pdu.status)}")
    if ev.get("closed") and case.expect("close_ok"):
        return passed("connection closed without answering")
    return failed(f"expected fault {names}, got {_pdu_text(pdu)}" + (" then close" if ev.get("closed") else ""))


def j_version_reject(ev: Evidence, case: Case) -> Outcome:
    pdu = ev.get("pdu")
    if isinstance(pdu, BindNak):
        return passed(f"bind_nak reason {pdu.provider_reject_reason}")
    if pdu is None and ev.get("closed"):
        return passed("connection closed (no bind_ack)")
    return failed(f"a version 4.0 bind was answered with {_pdu_text(pdu)}")


def j_alter_context(ev: Evidence, case: Case) -> Outcome:
    pdu = ev.get("pdu")
    if not isinstance(pdu, AlterContextResp):
        return failed(f"alter_context answered with {_pdu_text(pdu)}")
    if len(pdu.results) != 1:
        return failed(f"alter_context_resp has {len(pdu.results)} results for 1 context")
    follow = ev.get("follow")
    return check(
        isinstance(follow, Response),
        f"alter_context_resp ({pdu.results[0].result.name.lower()}), context 0 still answers",
        f"after alter_context the request on context 0 got {_pdu_text(follow)}",
    )


# -- KMS message judges -----------------------------------------------------------------------------


def _answered(ev: Evidence) -> tuple[list[dict[str, Any]], Outcome | None]:
    records = ev.get("exchanges", [])
    bad = [r for r in records if r.get("hresult") != 0 or r.get("verified") is None]
    if not records:
        return [], failed("no exchange")
    if bad:
        r = bad[0]
        what = f"fault {_fault_name(r['fault'])}" if "fault" in r else describe(r.get("hresult") or 0)
        return records, failed(f"{len(bad)} of {len(records)} requests not answered: {what}")
    return records, None


def j_verifies(ev: Evidence, case: Case) -> Outcome:
    """Every response passes the client's checks (emu.kms.messages.verify_response, by check name)."""
    records, problem = _answered(ev)
    if problem:
        return problem
    failures = sorted(
        {
            name
            for r in records
            for name in r["verified"].failed
            if not r["verified"].check(name).passed and r["verified"].check(name).severity == "error"
        }
    )
    major = records[0]["verified"].version
    return check(
        not failures,
        f"{len(records)} V{major.major if major else '?'} responses verify",
        f"failed checks: {', '.join(failures)}",
    )


def j_size(ev: Evidence, case: Case) -> Outcome:
    records, problem = _answered(ev)
    if problem:
        return problem
    for r in records:
        v = r["verified"]
        want = expected_response_size(v.version.major, 2 * (len(v.epid) + 1))
        if len(r["response"]) != want:
            return failed(f"V{v.version.major} response is {len(r['response'])} bytes, expected {want}")
    return passed(f"{len(records)} responses of the expected size")


def j_epid_form(ev: Evidence, case: Case) -> Outcome:
    """Every ePID is well formed and fits its build and the CSVLK of the product asked for."""
    records, problem = _answered(ev)
    if problem:
        return problem
    for r in records:
        text = r["verified"].epid.rstrip("\x00")
        key = csvlk_for_kms_id(open_request(r["request"]).base.kms_id)
        parsed = parse_epid(text, key=key, ndr64=r.get("ndr64"))
        if not parsed.well_formed:
            return failed(f"ePID {text!r} is not in the ePID layout")
        platform = platform_id_for_build(parsed.build or 0)
        if platform is not None and platform != parsed.platform_id:
            return failed(f"ePID {text}: platform {parsed.platform_id} does not match build {parsed.build}")
        if parsed.problems:
            return failed(f"ePID {text}: {'; '.join(parsed.problems)}")
    return passed(
        f"ePID {text} (build {parsed.build}, LCID {parsed.lcid})"
        + (f" and {len(records) - 1} more" if len(records) > 1 else "")
    )


def j_stable(ev: Evidence, case: Case) -> Outcome:
    """A response field (``field``: epid or hwid) is the same in every response of the probe."""
    records, problem = _answered(ev)
    if problem:
        return problem
    name = case.expect("field")
    values = {getattr(r["verified"], name) for r in records}
    conns = len({r["conn"] for r in records})
    shown = ", ".join(v.hex() if isinstance(v, bytes) else str(v) for v in values)
    return check(
        len(values) == 1 and None not in values,
        f"one {name} over {len(records)} responses on {conns} connections: {shown}",
        f"{len(values)} different {name}s over {len(records)} responses: {shown}",
    )


def j_intervals(ev: Evidence, case: Case) -> Outcome:
    records, problem = _answered(ev)
    if problem:
        return problem
    v = records[0]["verified"]
    got = (v.activation_interval, v.renewal_interval)
    if got == (DEFAULT_ACTIVATION_INTERVAL, DEFAULT_RENEWAL_INTERVAL):
        return passed(f"activation {got[0]} min, renewal {got[1]} min (the defaults)")
    if all(x and x > 0 for x in got):
        return inconclusive(f"activation {got[0]} min, renewal {got[1]} min: not the defaults (configured?)")
    return failed(f"intervals {got} are not positive minutes")


def j_hresult(ev: Evidence, case: Case) -> Outcome:
    """The request is refused with ``hresult`` (``optional``: an answer instead means 'not enforced')."""
    want = int(case.expect("hresult"))
    records = ev.get("exchanges", [])
    if not records:
        return failed("no exchange")
    r = records[0]
    got = r.get("hresult")
    if got == want:
        return passed(f"refused with {describe(want)}")
    if got == 0 and case.expect("optional"):
        return skipped(f"answered normally (count {r['verified'].count if r.get('verified') else '?'}): not enforced")
    shown = f"fault {_fault_name(r['fault'])}" if "fault" in r else describe(got or 0)
    return failed(f"expected {describe(want)}, got {shown}")


# -- counting judges --------------------------------------------------------------------------------


def j_count_step(ev: Evidence, case: Case) -> Outcome:
    """counts[at] - counts[at-1] == ``delta`` (unless the table is full)."""
    counts = ev["counts"]
    at, delta = case.expect("at"), case.expect("delta")
    if None in counts[: at + 1]:
        return failed(f"a counting request was refused: counts {counts}")
    before, after = counts[at - 1], counts[at]
    if delta == 1 and before >= 50:
        return inconclusive(f"count already {before} (table full): needs a host below 50")
    return check(
        after - before == delta,
        f"count {before} -> {after}",
        f"count {before} -> {after}, expected {before + delta} (counts {counts})",
    )


def j_threshold(ev: Evidence, case: Case) -> Outcome:
    counts, n = ev["counts"], ev["threshold"]
    if not counts or counts[0] is None:
        return failed(f"refused: counts {counts}")
    if counts[0] >= n:
        return inconclusive(f"count already {counts[0]} >= {n}: needs a fresh host (or one below {n})")
    steps_ok = all(b == a + 1 for a, b in itertools.pairwise(counts))
    return check(
        steps_ok and counts[-1] == n,
        f"counts {counts[0]}..{counts[-1]}: the client making it {n} is the first one activated",
        f"counts {counts} never landed on {n} exactly",
    )


def j_capacity(ev: Evidence, case: Case) -> Outcome:
    counts, after, n = ev["counts"], ev["after"], ev["threshold"]
    if None in counts or None in after:
        return failed(f"a request was refused: counts {counts}, then {after}")
    top = max(counts)
    if top != 2 * n:
        return failed(f"count stopped at {top}, expected 2 x {n} = {2 * n}")
    if after and after[-1] != top:
        return failed(f"after a lower-threshold client the count went {top} -> {after[-1]} (table shrank)")
    return passed(f"count capped at {top}; a lower-threshold client then got {after[-1] if after else '-'}")


def j_still_answers(ev: Evidence, case: Case) -> Outcome:
    after = ev.get("after")
    closed = "host closed it" if ev.get("closed") else "connection left open"
    return check(after == "ok", f"valid exchange answered afterwards ({closed})", str(after))


JUDGES = {f.__name__[2:]: f for f in (
    j_accepts, j_any_accepted, j_btfn, j_results_count, j_frag_length, j_fault, j_version_reject,
    j_alter_context, j_verifies, j_size, j_epid_form, j_stable, j_intervals, j_hresult, j_count_step,
    j_threshold, j_capacity, j_still_answers,
)}  # fmt: skip

PROBES = {
    "bind": p.probe_bind,
    "alter_context": p.probe_alter_context,
    "bad_call": p.probe_bad_call,
    "bad_rpc_version": p.probe_bad_rpc_version,
    "exchange": p.probe_exchange,
    "refusal": p.probe_refusal,
    "counting": p.probe_counting,
    "threshold": p.probe_threshold,
    "hostile": p.probe_hostile,
}


def _c(
    id: str, text: str, source: str, probe: str, judge: str, needs: str = "", passive: bool = False, **kw: Any
) -> Case:
    sends = tuple(sorted(kw.pop("sends", {}).items()))
    expects = tuple(sorted(kw.pop("expects", {}).items()))
    return Case(id, SUITE, id.split(".")[0], text, source, probe, judge, sends, expects, needs, passive)


_ALL = {"offers": ("ndr32", "ndr64", "btfn")}
_V6_TWICE = {"requests": 3, "connections": 2}
CASES: tuple[Case, ...] = (
    # documented behaviour: counting first, while the host's count is lowest (capacity last: it fills the table)
    _c("count.threshold.office", "Office (threshold 5): the client whose CMID makes the count 5 is answered 5", f"{DOC} Counting", "threshold", "threshold", needs="an Office count below 5 (a fresh host)", sends={"sku": "office2021proplus"}),
    _c("count.threshold.client", "Client OS (threshold 25): counts rise by one up to exactly 25", f"{DOC} Counting", "threshold", "threshold", needs="a Windows count below 25 (a fresh host)", sends={"sku": "win10ent"}),
    _c("count.distinct", "A new CMID raises the count by one", f"{DOC} Counting", "counting", "count_step", expects={"at": 1, "delta": 1}),
    _c("count.repeat", "A repeated CMID does not raise the count", f"{DOC} Counting", "counting", "count_step", expects={"at": 2, "delta": 0}),
    _c("count.cumulative", "Products of one application share the count", f"{DOC} Counting", "counting", "count_step", expects={"at": 3, "delta": 1}),
    _c("count.capacity", "The count stops at 2 x the highest threshold (50) and a server client does not shrink it", f"{DOC} Counting", "threshold", "capacity", needs="up to 52 distinct clients", sends={"sku": "win10ent", "until": "cap", "limit": 54, "then": ("ws2022std",)}),
    # RPC negotiation
    _c("rpc.bind.ndr32", "A bind offering only NDR32 is accepted with NDR32", f"{C706}; {DOC} RPC", "bind", "accepts", sends={"offers": ("ndr32",)}, expects={"syntax": "ndr32"}),
    _c("rpc.bind.ndr64", "A bind offering only NDR64 is accepted with NDR64", f"MS-RPCE 3.3.1.5.3; {DOC} RPC", "bind", "accepts", sends={"offers": ("ndr64",)}, expects={"syntax": "ndr64"}),
    _c("rpc.bind.btfn", "A BTFN context is answered with negotiate_ack", f"MS-RPCE 3.3.1.5.3; {DOC} RPC", "bind", "btfn", sends={"offers": ("ndr32", "btfn")}),
    _c("rpc.bind.all", "NDR32+NDR64+BTFN together: a transfer syntax is accepted", f"MS-RPCE 3.3.1.5.3; {DOC} RPC", "bind", "any_accepted", sends=_ALL),
    _c("rpc.bind_ack.results", "bind_ack carries one result per offered context", f"{C706} bind_ack", "bind", "results_count", sends=_ALL, passive=True),
    _c("rpc.bind_ack.frag_length", "bind_ack frag_length equals the bytes the host sent", f"{C706} common header", "bind", "frag_length", sends=_ALL, passive=True),
    _c("rpc.alter_context", "alter_context is answered with one result and context 0 keeps working", f"{C706} alter_context; {DOC} RPC", "alter_context", "alter_context"),
    _c("rpc.fault.opnum", "An unknown opnum gets fault nca_s_op_rng_error and the association goes on", f"{C706} fault; MS-RPCE 3.1.1.5.5", "bad_call", "fault", sends={"what": "opnum"}, expects={"status": (NCA_S_OP_RNG_ERROR,), "continues": True}),
    _c("rpc.fault.context", "An unknown context id gets fault nca_s_unk_if", f"{C706} fault; MS-RPCE 3.1.1.5.5", "bad_call", "fault", sends={"what": "context"}, expects={"status": (NCA_S_UNK_IF,)}),
    _c("rpc.fault.before_bind", "A request before any bind is faulted (nca_s_unk_if/proto_error) or the connection closed, never answered", f"{C706} association rules", "bad_call", "fault", sends={"what": "before_bind"}, expects={"status": (NCA_S_UNK_IF, NCA_S_PROTO_ERROR), "close_ok": True}),
    _c("rpc.reject.version", "A bind of DCE/RPC version 4.0 gets bind_nak or a close, never bind_ack", f"{C706} bind_nak", "bad_rpc_version", "version_reject"),
    _c("rpc.requests.several", "Several requests on one connection are each answered", f"{DOC} RPC", "exchange", "verifies", sends={"requests": 3}),
    _c("rpc.requests.split", "A request split across TCP segments is answered", f"{C706} framing", "exchange", "verifies", sends={"mode": "split", "requests": 2}),
    _c("rpc.requests.coalesced", "Two requests in one segment are both answered", f"{C706} framing", "exchange", "verifies", sends={"mode": "coalesced", "requests": 2}),
    # KMS protocol
    _c("kms.v4.verifies", "A V4 response verifies (MAC, echoes)", f"{DOC} KMS messages", "exchange", "verifies", passive=True, sends={"major": 4}),
    _c("kms.v5.verifies", "A V5 response verifies (decrypts, IV, echoes)", f"{DOC} KMS messages", "exchange", "verifies", passive=True, sends={"major": 5}),
    _c("kms.v6.verifies", "A V6 response verifies (decrypts, HMAC, echoes)", f"{DOC} KMS messages", "exchange", "verifies", passive=True, sends={"major": 6}),
    _c("kms.v4.size", "A V4 response has the size its ePID implies", f"{DOC} KMS messages", "exchange", "size", passive=True, sends={"major": 4}),
    _c("kms.v5.size", "A V5 response has the size its ePID implies", f"{DOC} KMS messages", "exchange", "size", passive=True, sends={"major": 5}),
    _c("kms.v6.size", "A V6 response has the size its ePID implies", f"{DOC} KMS messages", "exchange", "size", passive=True, sends={"major": 6}),
    _c("kms.epid.form", "The ePID is well formed and consistent with its key and build (NDR64 negotiated iff the build does)", f"{DOC} ePID", "exchange", "epid_form", passive=True, sends={"major": 6}),
    _c("kms.epid.stable", "One CSVLK, one ePID across requests and connections", f"{DOC} ePID", "exchange", "stable", passive=True, sends=_V6_TWICE, expects={"field": "epid"}),
    _c("kms.hwid.stable", "The V6 HwId is the same in every response", f"{DOC} KMS messages", "exchange", "stable", passive=True, sends=_V6_TWICE, expects={"field": "hwid"}),
    _c("behaviour.intervals", "Responses carry the activation (120 min) and renewal (10080 min) intervals", f"{DOC} Intervals", "exchange", "intervals", passive=True, sends={"major": 6}),
    _c("behaviour.uncovered", "A product the host key does not cover is refused with 0xC004F042", f"{DOC} Refusals", "refusal", "hresult", sends={"what": "uncovered"}, expects={"hresult": E_KMS_ID_MISMATCH}),
    _c("behaviour.bad_version", "A KMS protocol version other than 4/5/6 is refused with 0x8007000D", f"{DOC} Refusals", "refusal", "hresult", sends={"what": "version"}, expects={"hresult": E_INVALID_DATA}),
    _c("behaviour.time_skew", "A client clock 5 h off is refused with 0xC004F06C where the host enforces skew", f"{DOC} Refusals", "refusal", "hresult", sends={"what": "skew"}, expects={"hresult": E_INVALID_TIMESTAMP, "optional": True}),
    # robustness
    _c("robust.garbage", "After 300 random bytes the host still answers a valid exchange", f"{DOC} Robustness", "hostile", "still_answers", sends={"what": "garbage"}),
    _c("robust.truncated", "After half a bind and silence the host still answers", f"{DOC} Robustness", "hostile", "still_answers", sends={"what": "truncated"}),
    _c("robust.oversize", "After a frag_length of 65535 the host still answers", f"{DOC} Robustness", "hostile", "still_answers", sends={"what": "oversize"}),
    _c("robust.bytewise", "A whole exchange sent one byte per segment is answered", f"{DOC} Robustness", "exchange", "verifies", sends={"mode": "bytewise"}),
    _c("robust.idle", "With 40 idle connections open the host still answers", f"{DOC} Robustness", "hostile", "still_answers", sends={"what": "idle", "count": 40}),
    _c("robust.halfopen", "After a bind and a half-close the host still answers", f"{DOC} Robustness", "hostile", "still_answers", sends={"what": "halfopen"}),
)  # fmt: skip

KMS_HOST = Suite(SUITE, CASES, PROBES, JUDGES)
