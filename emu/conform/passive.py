"""``emu conform --pcap``: the kms-host rules that passive evidence can decide, judged on a capture.

The capture is read through emu's pcap layer (:func:`emu.pcap.reader.iter_conversations` reassembles
each TCP conversation); each conversation's PDUs are turned into the same evidence the live probes
produce (``offers``/``raw``/``extra`` for a bind, ``exchanges`` for activations), and the very same
judges of :mod:`emu.conform.kms_host` decide. A rule is judged on every conversation that carries
what it needs; the worst verdict wins, and the evidence names the conversation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emu.conform.kms_host import CASES, JUDGES
from emu.conform.model import Case, Evidence, Outcome, Result, Verdict, skipped
from emu.errors import EmuError
from emu.kms.epid import csvlk_for_kms_id
from emu.kms.messages import open_request, verify_response
from emu.wire.ndr import TransferSyntax, decode_request_stub, decode_response_stub
from emu.wire.rpc import (
    NDR32_SYNTAX,
    NDR64_SYNTAX,
    AlterContext,
    AlterContextResp,
    Bind,
    BindAck,
    ContextResult,
    Fault,
    Request,
    Response,
    btfn_bitmask,
    decode_pdu,
    split_pdus,
)

#: The kms-host cases a capture can decide (marked ``passive`` in the table).
PASSIVE: tuple[Case, ...] = tuple(c for c in CASES if c.passive)
_ORDER = {Verdict.FAIL: 0, Verdict.INCONCLUSIVE: 1, Verdict.PASS: 2, Verdict.SKIP: 3}


def _name(syntax: Any) -> str:
    if syntax == NDR32_SYNTAX:
        return "ndr32"
    if syntax == NDR64_SYNTAX:
        return "ndr64"
    return "btfn" if btfn_bitmask(syntax) is not None else "other"


def _pdus(stream: bytes) -> tuple[list[bytes], bytes]:
    """Whole PDUs while the stream stays aligned on DCE/RPC headers; the rest is returned as extra."""
    pdus, tail = split_pdus(stream)
    for i, raw in enumerate(pdus):
        if raw[:2] != b"\x05\x00":
            return pdus[:i], b"".join(pdus[i:]) + tail
    return pdus, tail


def conversation_evidence(client: bytes, server: bytes, number: int) -> dict[str, Evidence]:
    """Evidence per probe name ("bind", "exchange") from one conversation's two byte streams."""
    out: dict[str, Evidence] = {}
    c_pdus, _ = _pdus(client)
    s_pdus, s_extra = _pdus(server)
    decoded_c = [_safe(r) for r in c_pdus]
    decoded_s = [_safe(r) for r in s_pdus]
    bind = next((p for p in decoded_c if isinstance(p, Bind)), None)
    ack_index = next((i for i, p in enumerate(decoded_s) if isinstance(p, BindAck)), None)
    if bind is not None and ack_index is not None:
        extra = s_extra if ack_index == len(s_pdus) - 1 else b""
        offers = tuple(_name(e.transfer_syntaxes[0]) for e in bind.context_elements)
        out["bind"] = Evidence(
            {"offers": offers, "raw": s_pdus[ack_index], "pdu": decoded_s[ack_index], "extra": extra}, [number]
        )
    contexts: dict[int, TransferSyntax] = {}
    offered: dict[int, Any] = {}
    for p in decoded_c:
        if isinstance(p, (Bind, AlterContext)):
            offered.update({e.p_cont_id: e.transfer_syntaxes[0] for e in p.context_elements})
    for p in decoded_s:
        if isinstance(p, (BindAck, AlterContextResp)):
            ids = sorted(offered)
            for cid, result in zip(ids, p.results):
                syntax = TransferSyntax.of(result.transfer_syntax)
                if result.result == ContextResult.ACCEPTANCE and syntax is not None:
                    contexts[cid] = syntax
    answers = {p.call_id: p for p in decoded_s if isinstance(p, (Response, Fault))}
    records = []
    for p in decoded_c:
        if not isinstance(p, Request) or p.p_cont_id not in contexts:
            continue
        syntax = contexts[p.p_cont_id]
        answer = answers.get(p.call_id)
        try:
            request = decode_request_stub(p.stub_data, syntax).kms_data
            opened = open_request(request)
        except EmuError:
            continue
        ndr64_offered = any(s == NDR64_SYNTAX for s in offered.values())
        ndr64 = TransferSyntax.NDR64 in contexts.values() if ndr64_offered else None
        record: dict[str, Any] = {"request": request, "conn": number, "kms_id": opened.base.kms_id, "ndr64": ndr64}
        if isinstance(answer, Fault):
            record.update(hresult=None, fault=answer.status)
        elif isinstance(answer, Response):
            try:
                stub = decode_response_stub(answer.stub_data, syntax)
            except EmuError:
                continue
            record.update(hresult=stub.hresult, response=stub.kms_data)
            if stub.kms_data is not None:
                record["verified"] = verify_response(request, stub.kms_data)
        else:
            continue
        records.append(record)
    if records:
        out["exchange"] = Evidence({"exchanges": records}, [number])
    return out


def _safe(raw: bytes) -> Any:
    try:
        return decode_pdu(raw)
    except EmuError as exc:
        return exc


def _judge(case: Case, evidences: list[Evidence]) -> tuple[Outcome, tuple[int, ...]]:
    major = case.send_arg("major") or (6 if case.expect("field") == "hwid" else None)
    if case.judge == "stable":  # stable across connections: one evidence of every exchange in the capture
        merged = [r for ev in evidences for r in ev.get("exchanges", []) if r.get("verified")]
        conns = [c for ev in evidences for c in ev.conns]
        evidences = [Evidence({"exchanges": merged}, conns)] if merged else []
    outcomes: list[tuple[Outcome, Evidence]] = []
    for ev in evidences:
        if "exchanges" in ev.data:
            # a refusal is not evidence against the response rules: only answered requests are judged
            records = [
                r
                for r in ev["exchanges"]
                if (major is None or r["request"][2] == major) and r.get("hresult") == 0 and r.get("verified")
            ]
            groups: dict[str, list[dict[str, Any]]] = {}
            for r in records:
                groups.setdefault(csvlk_for_kms_id(r["kms_id"]).name, []).append(r)
            for group in groups.values():
                outcomes.append((JUDGES[case.judge](Evidence({"exchanges": group}, ev.conns), case), ev))
        else:
            if case.judge in ("results_count", "frag_length") or set(case.send_arg("offers", ())) <= set(ev["offers"]):
                outcomes.append((JUDGES[case.judge](ev, case), ev))
    if not outcomes:
        return skipped("nothing in the capture this rule applies to"), ()
    outcomes.sort(key=lambda o: _ORDER[o[0].verdict])
    worst, ev = outcomes[0]
    where = f"conversation {ev.conns[0]}" if ev.conns else ""
    return Outcome(worst.verdict, f"{where}: {worst.evidence} ({len(outcomes)} judged)"), tuple(ev.conns)


def judge_capture(path: str | Path) -> list[Result]:
    """Every passive case judged on every KMS conversation of the capture at ``path``."""
    from emu.pcap.reader import iter_conversations

    per_probe: dict[str, list[Evidence]] = {}
    for conv in iter_conversations(path):
        for probe, ev in conversation_evidence(conv.client.data, conv.server.data, conv.index).items():
            per_probe.setdefault(probe, []).append(ev)
    results = []
    for case in PASSIVE:
        outcome, conns = _judge(case, per_probe.get(case.probe, []))
        results.append(Result(case, outcome.verdict, outcome.evidence, conns))
    return results
