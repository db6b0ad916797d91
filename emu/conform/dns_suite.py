"""The dns suite: queries, RFC 2136 updates, TSIG (RFC 8945) and the KMS publishing story.

``CASES`` is the suite as data; the judges below are small and named; the probes live in
:mod:`emu.conform.dns_probes`. The suite leaves the zone as it found it: every name it adds is
unique to the run and removed, and the last case checks that.
"""

from __future__ import annotations

from typing import Any

from emu.conform import dns_probes as p
from emu.conform.dns_probes import DnsContext, load_key, rcode
from emu.conform.model import Case, Evidence, Outcome, Suite, check, failed, inconclusive, passed, skipped
from emu.wire.dns import TYPE_OPT, TYPE_SOA, Rcode

__all__ = ["DNS", "DnsContext", "load_key"]

SUITE = "dns"
DOC = "docs/conformance.md"


def _rc(code: int | None) -> str:
    if code is None:
        return "no answer"
    try:
        return Rcode(code).name
    except ValueError:
        return str(code)


def _soa_in_authority(msg: Any) -> bool:
    return any(rr.rtype == TYPE_SOA for rr in msg.authority)


def j_soa_answer(ev: Evidence, case: Case) -> Outcome:
    msg = ev["answer"]
    aa = bool(msg.header.flags & 0x0400)
    has = any(rr.rtype == TYPE_SOA for rr in msg.answers)
    return check(
        rcode(msg) == 0 and aa and has, "authoritative SOA answer", f"rcode {_rc(rcode(msg))}, AA={aa}, SOA={has}"
    )


def j_negative(ev: Evidence, case: Case) -> Outcome:
    """rcode ``rcode`` with an empty answer and the zone's SOA in the authority section (RFC 2308)."""
    msg, want = ev["answer"], int(case.expect("rcode"))
    ok = rcode(msg) == want and not msg.answers and _soa_in_authority(msg)
    return check(
        ok,
        f"{_rc(want)}, SOA in authority",
        f"rcode {_rc(rcode(msg))}, {len(msg.answers)} answers, SOA in authority: {_soa_in_authority(msg)}",
    )


def j_edns(ev: Evidence, case: Case) -> Outcome:
    msg = ev["answer"]
    return check(
        msg.opt is not None and msg.opt.rtype == TYPE_OPT,
        "OPT record in the answer",
        "no OPT in the answer to an EDNS query",
    )


def j_truncation(ev: Evidence, case: Case) -> Outcome:
    if ev["setup"] != 0:
        return inconclusive(f"could not create a large RRset (update {_rc(ev['setup'])})")
    udp, tcp = ev.get("udp"), ev.get("tcp")
    if udp is None or tcp is None:
        return failed(f"no answer over {'UDP' if udp is None else 'TCP'}")
    tc = bool(udp.header.flags & 0x0200)
    n = sum(1 for rr in tcp.answers if rr.rtype == 1)
    return check(
        tc and n == 40, f"UDP answer has TC; TCP answer holds all {n} RRs", f"TC={tc} over UDP, {n} of 40 RRs over TCP"
    )


def _updated(ev: Evidence) -> Outcome | None:
    code = rcode(ev.get("answer"))
    if code == Rcode.REFUSED:
        return inconclusive("update REFUSED: give --tsig-key (or allow this client) to run update cases")
    if code == Rcode.NOTAUTH and ev.get("answer") is not None and ev["answer"].tsig is not None:
        return inconclusive("update refused by TSIG: check --tsig-key")
    return None


def j_added(ev: Evidence, case: Case) -> Outcome:
    refused = _updated(ev)
    if refused:
        return refused
    after = ev["after"]
    visible = after is not None and any(rr.rtype == 1 for rr in after.answers)
    return check(
        rcode(ev["answer"]) == 0 and visible and ev["gone"] == Rcode.NXDOMAIN,
        "NOERROR; the RR is served, and gone (NXDOMAIN) after its deletion",
        f"update {_rc(rcode(ev['answer']))}, visible {visible}, after delete {_rc(ev['gone'])}",
    )


def j_serial(ev: Evidence, case: Case) -> Outcome:
    refused = _updated(ev)
    if refused:
        return refused
    a, b = ev["serial_before"], ev["serial_after"]
    if a is None or b is None:
        return failed("no SOA serial")
    return check(
        (b - a) % 2**32 not in (0,) and (b - a) % 2**32 < 2**31,
        f"serial {a} -> {b}",
        f"serial {a} -> {b} did not increase",
    )


def j_rcode(ev: Evidence, case: Case) -> Outcome:
    """The update is answered ``rcode`` (``applied``: whether its add must then be visible)."""
    if ev.get("no_key"):
        return skipped("no --tsig-key given")
    if ev.get("setup") not in (None, 0):
        return inconclusive(f"could not add the RR the prerequisite needs (update {_rc(ev['setup'])})")
    want = int(case.expect("rcode"))
    got = rcode(ev.get("answer"))
    if got != want and want != Rcode.REFUSED:
        refused = _updated(ev)
        if refused:
            return refused
    applied, should = ev.get("applied"), bool(case.expect("applied", want == 0))
    if got != want:
        return failed(f"expected {_rc(want)}, got {_rc(got)}")
    if applied != should:
        return failed(f"{_rc(got)}, but the update's add was {'applied' if applied else 'not applied'}")
    return passed(f"{_rc(got)}; the add {'applied' if applied else 'not applied'}")


def j_tsig_error(ev: Evidence, case: Case) -> Outcome:
    """NOTAUTH with the TSIG error ``error`` (BADKEY 17, BADSIG 16, BADTIME 18), nothing applied."""
    if ev.get("no_key"):
        return skipped("no --tsig-key given")
    msg, want = ev.get("answer"), int(case.expect("error"))
    if msg is None:
        return failed("no answer")
    err = msg.tsig.error if msg.tsig is not None else None
    ok = rcode(msg) == Rcode.NOTAUTH and err == want and not ev["applied"]
    return check(
        ok,
        f"NOTAUTH, TSIG error {_rc(want)}",
        f"rcode {_rc(rcode(msg))}, TSIG error {_rc(err)}, applied {ev['applied']}",
    )


def j_signed_answer(ev: Evidence, case: Case) -> Outcome:
    if ev.get("no_key"):
        return skipped("no --tsig-key given")
    marks = ev.get("tsig_ok", [])
    if rcode(ev.get("answer")) != 0:
        return failed(f"a correctly signed update got {_rc(rcode(ev.get('answer')))}")
    return check(
        bool(marks) and marks[0] is True,
        "the answer is signed and its MAC verifies",
        f"answer TSIG: {marks[0] if marks else 'missing'}",
    )


def j_publish(ev: Evidence, case: Case) -> Outcome:
    """One step of the publishing story (``step``: add, refresh, withdraw)."""
    if ev["add"] == Rcode.REFUSED or ev["other"] == Rcode.REFUSED:
        return inconclusive("publishing updates REFUSED: give --tsig-key")
    ours, other = ev["names"]
    step = case.expect("step")
    if step == "add":
        ok = ev["add"] == 0 and ours in ev["after_add"] and other in ev["after_add"] and len(ev["addresses"]) == 2
        return check(
            ok,
            f"SRV -> {ours} served beside the other host's, A and AAAA served",
            f"add {_rc(ev['add'])}, SRV targets {sorted(ev['after_add'])}, addresses {sorted(ev['addresses'])}",
        )
    if step == "refresh":
        return check(
            ev["refresh"] == 0 and ev["ours_after_refresh"] == 1,
            "re-adding refreshes: still one SRV RR of ours",
            f"refresh {_rc(ev['refresh'])}, {ev['ours_after_refresh']} SRV RRs of ours",
        )
    ok = (
        ev["withdraw"] == 0
        and ours not in ev["after_withdraw"]
        and other in ev["after_withdraw"]
        and ev["end"] == ev["before"]
    )
    return check(
        ok,
        "withdrawing removes only our SRV; the other host's stays",
        f"withdraw {_rc(ev['withdraw'])}, SRV targets then {sorted(ev['after_withdraw'])}",
    )


def j_clean(ev: Evidence, case: Case) -> Outcome:
    left = ev["left"]
    return check(not left, f"{ev['checked']} test names checked: none left", f"left in the zone: {', '.join(left)}")


JUDGES = {f.__name__[2:]: f for f in (
    j_soa_answer, j_negative, j_edns, j_truncation, j_added, j_serial, j_rcode, j_tsig_error, j_signed_answer,
    j_publish, j_clean,
)}  # fmt: skip

PROBES = {
    "query": p.probe_query,
    "truncation": p.probe_truncation,
    "update": p.probe_update,
    "prereq": p.probe_prereq,
    "bad_update": p.probe_bad_update,
    "tsig": p.probe_tsig,
    "publish": p.probe_publish,
    "cleanup": p.probe_cleanup,
}


def _c(id: str, text: str, source: str, probe: str, judge: str, **kw: Any) -> Case:
    sends = tuple(sorted(kw.pop("sends", {}).items()))
    expects = tuple(sorted(kw.pop("expects", {}).items()))
    return Case(id, SUITE, id.split(".")[0], text, source, probe, judge, sends, expects, kw.pop("needs", ""))


R = Rcode
CASES: tuple[Case, ...] = (
    _c("query.soa", "The zone apex SOA is answered authoritatively", "RFC 1035 4.1.1, 6.2", "query", "soa_answer", sends={"what": "soa"}),
    _c("query.nxdomain", "An unused name gets NXDOMAIN with the SOA in authority", "RFC 2308 2.1, 3", "query", "negative", sends={"what": "nxdomain"}, expects={"rcode": R.NXDOMAIN}),
    _c("query.nodata", "A used name without the type gets NOERROR, no answer, SOA in authority", "RFC 2308 2.2, 3", "query", "negative", sends={"what": "nodata"}, expects={"rcode": R.NOERROR}),
    _c("query.edns", "An EDNS query is answered with an OPT record", "RFC 6891 6.1.1, 7", "query", "edns", sends={"what": "edns"}),
    _c("query.truncation", "An answer too big for 512 bytes of UDP sets TC; TCP carries it whole", "RFC 1035 4.2.1; RFC 7766 5", "truncation", "truncation", needs="permission to add RRs"),
    _c("update.add", "An add is applied, served, and removable", "RFC 2136 3.4.2.2", "update", "added"),
    _c("update.serial", "An update that changes the zone increases the SOA serial", "RFC 2136 3.6", "update", "serial"),
    _c("prereq.yxrrset", "RRset exists (value independent) fails with NXRRSET when it does not", "RFC 2136 2.4.1, 3.2.5", "prereq", "rcode", sends={"form": "yxrrset"}, expects={"rcode": R.NXRRSET}),
    _c("prereq.yxrrset_value", "RRset exists (value dependent) fails with NXRRSET when values differ", "RFC 2136 2.4.2, 3.2.5", "prereq", "rcode", sends={"form": "yxrrset_value"}, expects={"rcode": R.NXRRSET}),
    _c("prereq.nxrrset", "RRset does not exist fails with YXRRSET when it does", "RFC 2136 2.4.3, 3.2.5", "prereq", "rcode", sends={"form": "nxrrset"}, expects={"rcode": R.YXRRSET}),
    _c("prereq.yxdomain", "Name is in use fails with NXDOMAIN when it is not", "RFC 2136 2.4.4, 3.2.5", "prereq", "rcode", sends={"form": "yxdomain"}, expects={"rcode": R.NXDOMAIN}),
    _c("prereq.nxdomain", "Name is not in use fails with YXDOMAIN when it is", "RFC 2136 2.4.5, 3.2.5", "prereq", "rcode", sends={"form": "nxdomain"}, expects={"rcode": R.YXDOMAIN}),
    _c("prereq.satisfied", "All five forms, satisfied, let the update through", "RFC 2136 2.4, 3.2", "prereq", "rcode", sends={"form": "satisfied"}, expects={"rcode": R.NOERROR}),
    _c("update.atomic", "An update with one RR outside the zone is refused NOTZONE and none of it applied", "RFC 2136 3.4.1, 3.7", "bad_update", "rcode", sends={"what": "notzone"}, expects={"rcode": R.NOTZONE, "applied": False}),
    _c("zone.notauth", "An update for a zone the server does not serve gets NOTAUTH", "RFC 2136 3.1.2", "bad_update", "rcode", sends={"what": "notauth"}, expects={"rcode": R.NOTAUTH}),
    _c("zone.formerr", "A zone section of two questions gets FORMERR", "RFC 2136 3.1.1", "bad_update", "rcode", sends={"what": "formerr"}, expects={"rcode": R.FORMERR}),
    _c("tsig.signed", "A correctly signed update is applied and its answer signed", "RFC 8945 5.3", "tsig", "signed_answer", sends={"what": "good"}, needs="--tsig-key"),
    _c("tsig.badkey", "An unknown key name gets NOTAUTH/BADKEY, nothing applied", "RFC 8945 5.2.1", "tsig", "tsig_error", sends={"what": "badkey"}, expects={"error": 17}, needs="--tsig-key"),
    _c("tsig.badsig", "A wrong MAC gets NOTAUTH/BADSIG, nothing applied", "RFC 8945 5.2.2", "tsig", "tsig_error", sends={"what": "badsig"}, expects={"error": 16}, needs="--tsig-key"),
    _c("tsig.badtime", "A signature 2 h old gets NOTAUTH/BADTIME, nothing applied", "RFC 8945 5.2.3", "tsig", "tsig_error", sends={"what": "badtime"}, expects={"error": 18}, needs="--tsig-key"),
    _c("tsig.unsigned", "With a key policy, an unsigned update is REFUSED", f"RFC 2136 3.3; {DOC} DNS", "tsig", "rcode", sends={"what": "unsigned"}, expects={"rcode": R.REFUSED, "applied": False}, needs="--tsig-key"),
    _c("publish.add", "A KMS host adds its SRV and A/AAAA beside other hosts' SRV", f"RFC 2782; {DOC} Publishing", "publish", "publish", expects={"step": "add"}),
    _c("publish.refresh", "Re-adding the same SRV refreshes it without a duplicate", f"RFC 2136 3.4.2.2; {DOC} Publishing", "publish", "publish", expects={"step": "refresh"}),
    _c("publish.withdraw", "Withdrawing removes only the host's own RRs", f"RFC 2136 3.4.2.4; {DOC} Publishing", "publish", "publish", expects={"step": "withdraw"}),
    _c("zone.clean", "The run leaves the zone as it found it", DOC, "cleanup", "clean"),
)  # fmt: skip

DNS = Suite(SUITE, CASES, PROBES, JUDGES)
