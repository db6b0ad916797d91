"""Application-level replay of captured KMS conversations against a live host, with a verdict.

For every KMS conversation of a capture (found by content on any port, as ``emu decode`` does),
the client's PDUs are re-sent in order over a fresh TCP connection; each answer is read (framed by
frag_length) and compared with the captured answer field by field (docs/howto-run-a-lab.md, approach D). What
legitimately differs is ignored: the association group id, the secondary address (the port),
random IVs and salts, the ePID and HwId when the target is another host, and the echoed time and
CMID when the replay rewrote them. Each exchange gets a verdict: ``same``, ``differs`` (with the
fields) or ``error`` (no answer, undecodable answer, connection problems).

Requests can be rewritten before sending: ``rewrite_time`` sets the client time to now (hosts
refuse stale requests), ``renew_cmid`` gives every conversation a new client machine id (so a
counting host sees new clients). v5/v6 requests are decrypted, patched and re-encrypted with the
same IV. ``concurrency``, ``rate`` and ``repeat`` turn the replay into bounded load.

:func:`replay_dns` does the same for DNS: each captured query or update is re-sent (over the
transport it was captured on) and the answer compared with the captured answer by
:func:`emu.pcap.dns_decode.compare_answers`: rcode, flags, every section, ignoring the ID, TTLs and
the TSIG MAC and time. A TSIG-signed update is stale once its time is past the fudge, so with a
key it is re-signed with the current time before sending.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.clock import unix_to_filetime
from emu.errors import DecodeError, EmuError, KmsError, UsageError
from emu.kms.messages import build_request, open_request, verify_response
from emu.pcap.kms_decode import decode_capture
from emu.pcap.reader import read_conversations
from emu.rng import Rng, system_rng
from emu.wire import ndr
from emu.wire.rpc import (
    AlterContextResp,
    BindAck,
    Fault,
    PType,
    Request,
    decode_pdu,
    encode_pdu,
    frag_length_of,
    split_pdus,
)

__all__ = [
    "DnsReplayOptions",
    "ExchangeVerdict",
    "ReplayOptions",
    "ReplayReport",
    "replay_capture",
    "replay_dns",
    "resign",
]

#: Seconds to wait for one answer PDU.
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to replay.

    Attributes:
        target: (host, port) of the KMS host under test.
        same_host: the target is the host that was captured: compare ePIDs and HwIds too.
        rewrite_time: set each request's client time to now before sending.
        renew_cmid: give each replayed conversation a fresh CMID.
        timeout: seconds to wait for each answer.
        concurrency: conversations replayed at once.
        rate: conversations started per second at most (0: as fast as possible).
        repeat: how many times the whole capture is replayed.
        max_duration: seconds after which no new conversation is started.
    """

    target: tuple[str, int]
    same_host: bool = False
    rewrite_time: bool = False
    renew_cmid: bool = False
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = 1
    rate: float = 0.0
    repeat: int = 1
    max_duration: float = 300.0


@dataclass(frozen=True, slots=True)
class ExchangeVerdict:
    """The outcome of one client PDU and its answer."""

    conversation: int
    index: int
    ptype: str
    verdict: str  # "same", "differs" or "error"
    differences: tuple[str, ...] = ()
    error: str = ""
    round: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"differences": list(self.differences)}


@dataclass(slots=True)
class ReplayReport:
    """Every verdict of a replay, with counts."""

    capture: str
    verdicts: list[ExchangeVerdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.verdicts) and all(v.verdict == "same" for v in self.verdicts)

    def counts(self) -> dict[str, int]:
        out = {"same": 0, "differs": 0, "error": 0}
        for v in self.verdicts:
            out[v.verdict] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "capture": self.capture,
            "ok": self.ok,
            "counts": self.counts(),
            "elapsed": round(self.elapsed, 3),
            "problems": self.problems,
            "exchanges": [v.to_json() for v in self.verdicts],
        }


def _ptype_name(pdu: bytes) -> str:
    try:
        return PType(pdu[2]).name.lower()
    except (ValueError, IndexError):
        return f"ptype-{pdu[2] if len(pdu) > 2 else '?'}"


def _now_filetime() -> int:
    return unix_to_filetime(time.time())


def _rewrite_request(
    pdu: bytes, syntax: ndr.TransferSyntax, options: ReplayOptions, cmid: uuid.UUID | None, rng: Rng
) -> bytes:
    """The request PDU with its KMS request's time and/or CMID replaced (v5/v6 keep their IV)."""
    req = decode_pdu(pdu)
    assert isinstance(req, Request)
    stub = ndr.decode_request_stub(req.stub_data, syntax)
    opened = open_request(stub.kms_data)
    changes: dict[str, Any] = {}
    if options.rewrite_time:
        changes["client_time"] = _now_filetime()
    if cmid is not None:
        changes["cmid"] = cmid
    base = dataclasses.replace(opened.base, **changes)
    kms = build_request(base, rng, iv=opened.iv)
    new_stub = ndr.reencode_stub(dataclasses.replace(stub, kms_data=kms))
    return encode_pdu(dataclasses.replace(req, stub_data=new_stub, alloc_hint=len(new_stub)))


def _compare_bind_ack(want: BindAck | AlterContextResp, got: Any) -> list[str]:
    if type(got) is not type(want):
        return [f"ptype: {type(got).__name__} instead of {type(want).__name__}"]
    diffs = []
    for name in ("call_id", "max_xmit_frag", "max_recv_frag"):
        if getattr(got, name) != getattr(want, name):
            diffs.append(f"{name}: {getattr(got, name)} instead of {getattr(want, name)}")
    wanted = [(r.result, r.reason, r.transfer_syntax) for r in want.results]
    seen = [(r.result, r.reason, r.transfer_syntax) for r in got.results]
    if wanted != seen:
        diffs.append(f"results: {[(int(r[0]), r[1]) for r in seen]} instead of {[(int(r[0]), r[1]) for r in wanted]}")
    return diffs


def _kms_fields(sent_kms: bytes, response: bytes | None, options: ReplayOptions) -> dict[str, Any]:
    """The comparable fields of a KMS response (checked against the request that was sent)."""
    if response is None:
        return {}
    verified = verify_response(sent_kms, response)
    out: dict[str, Any] = {
        "version": str(verified.version),
        "checks_failed": verified.failed if not verified.ok else (),
        "count": verified.count,
        "activation_interval": verified.activation_interval,
        "renewal_interval": verified.renewal_interval,
    }
    if options.same_host:
        out["epid"] = verified.epid
        out["hwid"] = verified.hwid
    return out


def _compare_response(
    want: Any, got: Any, want_kms_req: bytes, sent_kms_req: bytes, syntax: ndr.TransferSyntax, options: ReplayOptions
) -> list[str]:
    if type(got) is not type(want):
        return [f"ptype: {type(got).__name__} instead of {type(want).__name__}"]
    if isinstance(want, Fault):
        return [] if got.status == want.status else [f"fault status: 0x{got.status:08X} instead of 0x{want.status:08X}"]
    diffs = []
    if got.call_id != want.call_id:
        diffs.append(f"call_id: {got.call_id} instead of {want.call_id}")
    try:
        w = ndr.decode_response_stub(want.stub_data, syntax)
        g = ndr.decode_response_stub(got.stub_data, syntax)
    except DecodeError as exc:
        return diffs + [f"stub: {exc}"]
    if g.hresult != w.hresult:
        diffs.append(f"hresult: 0x{g.hresult:08X} instead of 0x{w.hresult:08X}")
    try:
        want_fields = _kms_fields(want_kms_req, w.kms_data, options)
        got_fields = _kms_fields(sent_kms_req, g.kms_data, options)
    except KmsError as exc:
        return diffs + [f"request: {exc}"]
    for key in sorted(set(want_fields) | set(got_fields)):
        if want_fields.get(key) != got_fields.get(key):
            diffs.append(f"{key}: {got_fields.get(key)!r} instead of {want_fields.get(key)!r}")
    return diffs


async def _read_pdu(reader: asyncio.StreamReader, timeout: float) -> bytes:
    head = await asyncio.wait_for(reader.readexactly(16), timeout)
    length = frag_length_of(head)
    if length < 16:
        raise DecodeError(f"answer has frag_length {length}")
    return head + await asyncio.wait_for(reader.readexactly(length - 16), timeout)


async def _replay_conversation(
    index: int, client_pdus: list[bytes], server_pdus: list[bytes], options: ReplayOptions, rng: Rng, round_: int
) -> list[ExchangeVerdict]:
    verdicts: list[ExchangeVerdict] = []
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*options.target), options.timeout)
    except (TimeoutError, OSError) as exc:
        return [
            ExchangeVerdict(
                index,
                0,
                "connect",
                "error",
                error=f"cannot connect to {options.target[0]}:{options.target[1]}: {exc or 'timeout'}",
                round=round_,
            )
        ]
    cmid = uuid.UUID(bytes=rng.bytes(16), version=4) if options.renew_cmid else None
    # p_cont_id -> the NDR syntax offered for it (a request's stub is in its context's syntax)
    contexts: dict[int, ndr.TransferSyntax] = {}
    try:
        for i, pdu in enumerate(client_pdus):
            name = _ptype_name(pdu)
            want_raw = server_pdus[i] if i < len(server_pdus) else None
            sent = pdu
            sent_kms = want_kms = b""
            syntax = ndr.TransferSyntax.NDR32
            try:
                parsed = decode_pdu(pdu)
                for elem in getattr(parsed, "context_elements", ()):
                    offered = ndr.TransferSyntax.of(elem.transfer_syntaxes[0]) if elem.transfer_syntaxes else None
                    if offered is not None:
                        contexts[elem.p_cont_id] = offered
                if isinstance(parsed, Request):
                    syntax = contexts.get(parsed.p_cont_id, ndr.TransferSyntax.NDR32)
                    want_kms = ndr.decode_request_stub(parsed.stub_data, syntax).kms_data
                    if options.rewrite_time or cmid is not None:
                        sent = _rewrite_request(pdu, syntax, options, cmid, rng)
                    resent = decode_pdu(sent)
                    if not isinstance(resent, Request):
                        raise DecodeError(f"the rewritten request decodes as a {type(resent).__name__}")
                    sent_kms = ndr.decode_request_stub(resent.stub_data, syntax).kms_data
            except (EmuError, ValueError) as exc:
                verdicts.append(ExchangeVerdict(index, i, name, "error", error=f"captured PDU: {exc}", round=round_))
                continue
            writer.write(sent)
            await writer.drain()
            try:
                got_raw = await _read_pdu(reader, options.timeout)
            except (TimeoutError, asyncio.IncompleteReadError, OSError, DecodeError) as exc:
                verdicts.append(
                    ExchangeVerdict(
                        index, i, name, "error", error=f"no answer: {type(exc).__name__} {exc}".strip(), round=round_
                    )
                )
                break
            if want_raw is None:
                verdicts.append(
                    ExchangeVerdict(
                        index, i, name, "error", error="the capture holds no answer to compare with", round=round_
                    )
                )
                continue
            try:
                want, got = decode_pdu(want_raw), decode_pdu(got_raw)
            except DecodeError as exc:
                verdicts.append(
                    ExchangeVerdict(index, i, name, "error", error=f"undecodable answer: {exc}", round=round_)
                )
                continue
            if isinstance(want, (BindAck, AlterContextResp)):
                diffs = _compare_bind_ack(want, got)
            else:
                diffs = _compare_response(want, got, want_kms, sent_kms, syntax, options)
            verdicts.append(ExchangeVerdict(index, i, name, "differs" if diffs else "same", tuple(diffs), round=round_))
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), options.timeout)
        except (TimeoutError, OSError):
            pass
    return verdicts


async def replay_capture(path: str | Path, options: ReplayOptions, rng: Rng | None = None) -> ReplayReport:
    """Replay every KMS conversation of ``path`` against ``options.target``.

    Raises:
        UsageError: the file is not a readable capture, or an option is out of range.
    """
    if options.concurrency < 1 or options.repeat < 1 or options.rate < 0 or options.timeout <= 0:
        raise UsageError("concurrency and repeat must be at least 1, rate at least 0 and timeout positive")
    rng = rng or system_rng()
    report = ReplayReport(Path(path).name)
    kms = set(decode_capture(path).kms_conversations)
    work = []
    for conv in read_conversations(path):
        if conv.index not in kms:
            continue
        client, rest_c = split_pdus(conv.client.data)
        server, _ = split_pdus(conv.server.data)
        if rest_c or conv.client.problems:
            report.problems.append(
                f"conversation {conv.index}: client stream incomplete ({'; '.join(conv.client.problems) or 'partial PDU'}); replaying the whole PDUs"
            )
        if client:
            work.append((conv.index, client, server))
    if not work:
        report.problems.append("no KMS conversation found in the capture")
        return report
    started = time.monotonic()
    sem = asyncio.Semaphore(options.concurrency)
    interval = 1.0 / options.rate if options.rate > 0 else 0.0

    async def one(job: tuple[int, list[bytes], list[bytes]], round_: int) -> list[ExchangeVerdict]:
        async with sem:
            return await _replay_conversation(job[0], job[1], job[2], options, rng, round_)

    tasks: list[asyncio.Task[list[ExchangeVerdict]]] = []
    for n, (round_, job) in enumerate((r, j) for r in range(options.repeat) for j in work):
        if time.monotonic() - started > options.max_duration:
            report.problems.append(f"stopped after {options.max_duration} s: {len(tasks)} conversations started")
            break
        if interval:
            await asyncio.sleep(max(0.0, started + n * interval - time.monotonic()))
        tasks.append(asyncio.ensure_future(one(job, round_)))
    for result in await asyncio.gather(*tasks):
        report.verdicts.extend(result)
    report.elapsed = time.monotonic() - started
    return report


# --- DNS ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DnsReplayOptions:
    """How to replay DNS.

    Attributes:
        target: (host, port) of the DNS server under test.
        key: TSIG key to re-sign captured signed messages with (the capture's signature is stale).
        tcp: send every message over TCP (default: the transport it was captured on).
        timeout: seconds to wait for each answer.
        port: the DNS port in the capture.
    """

    target: tuple[str, int]
    key: Any = None  # emu.dns.tsig.TsigKey
    tcp: bool = False
    timeout: float = DEFAULT_TIMEOUT
    port: int = 53


def resign(raw: bytes, key: Any, now: int) -> bytes:
    """``raw`` with its TSIG RR replaced by a fresh one made with ``key`` at ``now`` (unsigned: signed)."""
    from emu.dns.tsig import sign_request
    from emu.wire.dns import decode_message

    message = decode_message(raw)
    unsigned = raw
    if message.tsig is not None and message.tsig_offset is not None:
        arcount = int.from_bytes(raw[10:12], "big")
        unsigned = (
            message.tsig.original_id.to_bytes(2, "big")
            + raw[2:10]
            + (arcount - 1).to_bytes(2, "big")
            + raw[12 : message.tsig_offset]
        )
    return sign_request(unsigned, key, now)[0]


async def replay_dns(path: str | Path, options: DnsReplayOptions) -> ReplayReport:
    """Re-send every captured DNS query and update to ``options.target``; one verdict per message.

    A message whose captured answer is missing gets an ``error`` verdict after being sent (the
    answer cannot be compared). Verdict ``ptype`` is ``dns-query``, ``dns-update`` ...

    Raises:
        UsageError: the file is not a readable capture, or the timeout is not positive.
    """
    from emu.net.dns_client import exchange
    from emu.pcap.dns_decode import compare_answers, read_dns_messages, summarise

    if options.timeout <= 0:
        raise UsageError("timeout must be positive")
    report = ReplayReport(Path(path).name)
    messages = read_dns_messages(path, options.port)
    started = time.monotonic()
    asked = [m for m in messages if not m.is_response]
    if not asked:
        report.problems.append("no DNS query or update found in the capture")
    for index, sent in enumerate(asked):
        if sent.message is None:
            report.verdicts.append(ExchangeVerdict(index, 0, "dns", "error", error=f"captured message: {sent.error}"))
            continue
        kind = "dns-" + summarise(sent.message)["kind"]
        want = next(
            (
                m
                for m in messages
                if m.is_response
                and m.src == sent.dst
                and m.dst == sent.src
                and m.time >= sent.time
                and m.raw[:2] == sent.raw[:2]
                and m.message is not None
            ),
            None,
        )
        wire = sent.raw
        if sent.message.tsig is not None and options.key is not None:
            wire = resign(wire, options.key, int(time.time()))
        try:
            got = await exchange(
                wire, options.target, timeout=options.timeout, tcp=options.tcp or sent.transport == "tcp"
            )
        except (EmuError, OSError) as exc:
            report.verdicts.append(ExchangeVerdict(index, 0, kind, "error", error=f"no answer: {exc}"))
            continue
        if want is None or want.message is None:
            report.verdicts.append(
                ExchangeVerdict(index, 0, kind, "error", error="the capture holds no answer to compare with")
            )
            continue
        diffs = compare_answers(want.message, got)
        report.verdicts.append(ExchangeVerdict(index, 0, kind, "differs" if diffs else "same", tuple(diffs)))
    report.elapsed = time.monotonic() - started
    return report
