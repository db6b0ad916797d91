"""What the kms-host suite sends: binds, activations, bad calls, hostile bytes (one probe per kind).

Every probe opens its own recorded connections (:class:`emu.conform.conn.Conn`) and returns an
:class:`~emu.conform.model.Evidence` whose keys the judges in :mod:`emu.conform.kms_host` read.
Requests are built with emu's own codec (:func:`emu.kms.messages.build_request`) and RPC client
association (:class:`emu.rpc.client.ClientAssociation`); hostile cases write raw bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from emu.clock import unix_to_filetime
from emu.conform.conn import Conn
from emu.conform.model import Case, Evidence, ProbeFailed
from emu.conform.recorder import Recorder
from emu.errors import EmuError
from emu.kms import products
from emu.kms.messages import build_request, verify_response
from emu.rng import Rng
from emu.rpc.client import BindAccepted, ClientAssociation, FaultReceived, Reply, SendAlterContext
from emu.wire.kms import LicenseStatus, RequestBase, Version
from emu.wire.ndr import TransferSyntax, encode_request_stub
from emu.wire.rpc import (
    KMS_INTERFACE,
    NDR32_SYNTAX,
    NDR64_SYNTAX,
    AlterContext,
    Bind,
    ContextElement,
    PfcFlag,
    Request,
    btfn_syntax,
    decode_pdu,
    encode_pdu,
)

_FL = PfcFlag.FIRST_FRAG | PfcFlag.LAST_FRAG
SYNTAXES = {"ndr32": NDR32_SYNTAX, "ndr64": NDR64_SYNTAX, "btfn": btfn_syntax(0x03)}


@dataclass
class HostContext:
    """What every kms-host probe needs: the target, a recorder, randomness, a bound on waits."""

    address: tuple[str, int]
    recorder: Recorder
    rng: Rng
    timeout: float = 5.0
    #: distinct CMIDs this run made up (so counting cases never reuse one by accident)
    cmids: list[uuid.UUID] = field(default_factory=list)

    def new_cmid(self) -> uuid.UUID:
        cmid = uuid.UUID(int=self.rng.randint(1, 2**128 - 1))
        self.cmids.append(cmid)
        return cmid


def make_request(
    ctx: HostContext,
    sku_name: str = "win10ent",
    *,
    major: int | None = None,
    cmid: uuid.UUID | None = None,
    kms_id: uuid.UUID | None = None,
    skew: float = 0.0,
) -> bytes:
    """A KMS request of a client of ``sku_name`` (its own threshold as N), stamped now + ``skew``."""
    sku = products.lookup(sku_name)
    base = RequestBase(
        version=Version(major or sku.protocol),
        vm_info=0,
        license_status=LicenseStatus.OOB_GRACE,
        binding_expiration=43200,
        app_id=sku.app_id,
        sku_id=sku.id,
        kms_id=kms_id or sku.kms_id,
        cmid=cmid or ctx.new_cmid(),
        required_client_count=sku.threshold,
        client_time=unix_to_filetime(time.time() + skew),
        previous_cmid=uuid.UUID(int=0),
        workstation_name="conform.emu.test",
    )
    return build_request(base, ctx.rng)


def _decoded(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return decode_pdu(raw)
    except EmuError as exc:
        return exc


async def probe_bind(ctx: HostContext, case: Case) -> Evidence:
    """A bind offering the named syntaxes, one per context; the answer, extra bytes, whether it closed."""
    offers: tuple[str, ...] = case.send_arg("offers", ("ndr32",))
    conn = await Conn.open(ctx)
    elements = tuple(ContextElement(i, KMS_INTERFACE, (SYNTAXES[o],)) for i, o in enumerate(offers))
    bind = Bind(call_id=2, pfc_flags=_FL | PfcFlag.CONC_MPX, context_elements=elements, rpc_vers_minor=0)
    await conn.send(encode_pdu(bind))
    raw = await conn.read_pdu(ctx.timeout)
    tail = await conn.linger(0.2)
    await conn.close()
    return Evidence(
        {"offers": offers, "raw": raw, "pdu": _decoded(raw), "extra": bytes(conn.stray) + tail}, [conn.number]
    )


async def _feed(conn: Conn, assoc: ClientAssociation, timeout: float) -> list[Any]:
    raw = await conn.read_pdu(timeout)
    if raw is None:
        raise ProbeFailed("the host closed the connection or stayed silent", [conn.number])
    try:
        return assoc.receive_data(raw)
    except EmuError as exc:
        raise ProbeFailed(f"unusable answer: {exc}", [conn.number]) from exc


async def bound(ctx: HostContext, *, ndr64: bool = True, btfn: bool = True) -> tuple[Conn, ClientAssociation]:
    """A connection bound like a Windows client (alter_context when NDR32 is rejected)."""
    conn = await Conn.open(ctx)
    assoc = ClientAssociation(offer_ndr64=ndr64, offer_btfn=btfn)
    await conn.send(assoc.bind())
    for _ in range(2):
        for event in await _feed(conn, assoc, ctx.timeout):
            if isinstance(event, SendAlterContext):
                await conn.send(event.data)
            elif isinstance(event, BindAccepted):
                return conn, assoc
    raise ProbeFailed("no usable bind_ack", [conn.number])


async def _send(conn: Conn, data: bytes, mode: str) -> None:
    if mode == "split":
        await conn.send(data[:10])
        await asyncio.sleep(0.02)
        await conn.send(data[10:])
    elif mode == "bytewise":
        for i in range(len(data)):
            await conn.send(data[i : i + 1])
            await asyncio.sleep(0.001)
    else:
        await conn.send(data)


async def exchange_on(
    ctx: HostContext, conn: Conn, assoc: ClientAssociation, requests: list[bytes], mode: str = "whole"
) -> list[dict[str, Any]]:
    """Send ``requests`` on a bound connection; one record per request (request, reply, verification)."""
    pdus = [assoc.request(r) for r in requests]
    if mode == "coalesced":
        await conn.send(b"".join(pdus))
    out: list[dict[str, Any]] = []
    for request, pdu in zip(requests, pdus):
        if mode != "coalesced":
            await _send(conn, pdu, mode)
        # whether NDR64 was negotiated (None when it was not offered): the ePID's build implies it
        ndr64 = TransferSyntax.NDR64 in assoc.contexts if assoc.offer_ndr64 else None
        record: dict[str, Any] = {"request": request, "conn": conn.number, "ndr64": ndr64}
        while "hresult" not in record:
            for event in await _feed(conn, assoc, ctx.timeout):
                if isinstance(event, Reply):
                    record["hresult"] = event.hresult
                    record["response"] = event.kms_response
                    if event.kms_response is not None:
                        record["verified"] = verify_response(request, event.kms_response)
                elif isinstance(event, FaultReceived):
                    record["hresult"] = None
                    record["fault"] = event.status
        out.append(record)
    return out


async def probe_exchange(ctx: HostContext, case: Case) -> Evidence:
    """``connections`` connections of ``requests`` activations each (KMS version ``major``, product ``sku``).

    ``cmid``: "new" (a new CMID per request) or "same" (one CMID for the whole probe).
    """
    sku = case.send_arg("sku", "win10ent")
    major = case.send_arg("major")
    mode = case.send_arg("mode", "whole")
    same = uuid.UUID(int=ctx.rng.randint(1, 2**128 - 1)) if case.send_arg("cmid") == "same" else None
    records: list[dict[str, Any]] = []
    conns: list[int] = []
    for _ in range(case.send_arg("connections", 1)):
        conn, assoc = await bound(ctx, ndr64=case.send_arg("ndr64", True), btfn=case.send_arg("btfn", True))
        conns.append(conn.number)
        requests = [make_request(ctx, sku, major=major, cmid=same) for _ in range(case.send_arg("requests", 1))]
        try:
            records += await exchange_on(ctx, conn, assoc, requests, mode)
        except ProbeFailed as exc:
            raise ProbeFailed(str(exc), conns) from exc
        finally:
            await conn.close()
    return Evidence({"exchanges": records, "sku": sku}, conns)


async def probe_refusal(ctx: HostContext, case: Case) -> Evidence:
    """One request the host should refuse: ``what`` = uncovered KMS id, bad KMS version, or skewed clock."""
    what = case.send_arg("what")
    if what == "uncovered":
        request = make_request(ctx, kms_id=uuid.UUID(int=ctx.rng.randint(1, 2**128 - 1)))
    elif what == "version":
        request = b"\x00\x00\x07\x00" + make_request(ctx)[4:]  # version 7.0 (minor, major)
    else:
        request = make_request(ctx, skew=float(case.send_arg("skew", 5 * 3600)))
    conn, assoc = await bound(ctx)
    try:
        records = await exchange_on(ctx, conn, assoc, [request])
    finally:
        await conn.close()
    return Evidence({"exchanges": records}, [conn.number])


async def probe_counting(ctx: HostContext, case: Case) -> Evidence:
    """New CMID A, new CMID B, A again, then a new CMID of another product of the same application."""
    conn, assoc = await bound(ctx)
    a = ctx.new_cmid()
    steps = [("new", "win10ent", a), ("new", "win10ent", None), ("repeat", "win10ent", a), ("other", "ws2022std", None)]
    try:
        records = await exchange_on(ctx, conn, assoc, [make_request(ctx, s, cmid=c) for _, s, c in steps])
    finally:
        await conn.close()
    counts = [r["verified"].count if r.get("verified") else None for r in records]
    return Evidence({"counts": counts, "exchanges": records}, [conn.number])


async def probe_threshold(ctx: HostContext, case: Case) -> Evidence:
    """New CMIDs of ``sku`` until the count reaches the product's threshold (or ``limit`` requests)."""
    sku = products.lookup(case.send_arg("sku", "win10ent"))
    limit = case.send_arg("limit", 2 * sku.threshold + 2)
    stop_at_cap = case.send_arg("until") == "cap"
    conn, assoc = await bound(ctx)
    counts: list[int | None] = []
    try:
        for _ in range(limit):
            (record,) = await exchange_on(ctx, conn, assoc, [make_request(ctx, sku.name)])
            verified = record.get("verified")
            counts.append(verified.count if verified is not None else None)
            if counts[-1] is None:
                break
            if not stop_at_cap and counts[-1] >= sku.threshold:
                break
            if stop_at_cap and len(counts) >= 3 and counts[-1] == counts[-2] == counts[-3]:
                break
        after: list[int | None] = []
        for other in case.send_arg("then", ()):
            (record,) = await exchange_on(ctx, conn, assoc, [make_request(ctx, other)])
            after.append(record["verified"].count if record.get("verified") is not None else None)
    finally:
        await conn.close()
    return Evidence({"counts": counts, "after": after, "threshold": sku.threshold}, [conn.number])


async def probe_bad_call(ctx: HostContext, case: Case) -> Evidence:
    """A request with an unknown opnum or context id, or one before any bind; then whether the host goes on."""
    what = case.send_arg("what")
    conn = await Conn.open(ctx)
    syntax = TransferSyntax.NDR32
    if what != "before_bind":
        bind = Bind(call_id=2, pfc_flags=_FL, context_elements=(ContextElement(0, KMS_INTERFACE, (NDR32_SYNTAX,)),))
        await conn.send(encode_pdu(bind))
        if await conn.read_pdu(ctx.timeout) is None:
            await conn.close()
            raise ProbeFailed("no answer to an NDR32 bind", [conn.number])
    stub = encode_request_stub(make_request(ctx), syntax)
    bad = Request(
        call_id=3,
        pfc_flags=_FL,
        alloc_hint=len(stub),
        p_cont_id=7 if what == "context" else 0,
        opnum=5 if what == "opnum" else 0,
        stub_data=stub,
    )
    await conn.send(encode_pdu(bad))
    raw = await conn.read_pdu(ctx.timeout)
    closed = raw is None and conn.eof
    follow = None
    if not conn.eof and what != "before_bind":
        good = Request(call_id=4, pfc_flags=_FL, alloc_hint=len(stub), p_cont_id=0, opnum=0, stub_data=stub)
        await conn.send(encode_pdu(good))
        follow = _decoded(await conn.read_pdu(ctx.timeout))
    await conn.close()
    return Evidence({"raw": raw, "pdu": _decoded(raw), "closed": closed, "follow": follow}, [conn.number])


async def probe_bad_rpc_version(ctx: HostContext, case: Case) -> Evidence:
    """A bind claiming DCE/RPC version 4.0."""
    conn = await Conn.open(ctx)
    bind = encode_pdu(
        Bind(call_id=2, pfc_flags=_FL, context_elements=(ContextElement(0, KMS_INTERFACE, (NDR32_SYNTAX,)),))
    )
    await conn.send(b"\x04" + bind[1:])
    raw = await conn.read_pdu(ctx.timeout)
    closed = raw is None and await conn.closed_within(0.5)
    await conn.close()
    return Evidence({"raw": raw, "pdu": _decoded(raw), "closed": closed}, [conn.number])


async def probe_alter_context(ctx: HostContext, case: Case) -> Evidence:
    """Bind NDR32 (context 0), alter_context adding NDR64 (context 1), then a request on context 0."""
    conn = await Conn.open(ctx)
    ctx0 = ContextElement(0, KMS_INTERFACE, (NDR32_SYNTAX,))
    await conn.send(encode_pdu(Bind(call_id=2, pfc_flags=_FL, context_elements=(ctx0,))))
    ack = await conn.read_pdu(ctx.timeout)
    alter = AlterContext(
        call_id=3, pfc_flags=_FL, context_elements=(ContextElement(1, KMS_INTERFACE, (NDR64_SYNTAX,)),)
    )
    await conn.send(encode_pdu(alter))
    resp = await conn.read_pdu(ctx.timeout)
    request = make_request(ctx)
    stub = encode_request_stub(request, TransferSyntax.NDR32)
    await conn.send(encode_pdu(Request(call_id=4, pfc_flags=_FL, alloc_hint=len(stub), p_cont_id=0, stub_data=stub)))
    answer = await conn.read_pdu(ctx.timeout)
    await conn.close()
    return Evidence({"ack": _decoded(ack), "pdu": _decoded(resp), "follow": _decoded(answer)}, [conn.number])


async def _still_answers(ctx: HostContext, ev: Evidence) -> None:
    """After a hostile input: one valid activation on a new connection, noted under ``after``."""
    try:
        conn, assoc = await bound(ctx)
    except ProbeFailed as exc:
        ev.conns += exc.conns
        ev.data["after"] = f"no valid exchange afterwards: {exc}"
        return
    ev.conns.append(conn.number)
    try:
        (record,) = await exchange_on(ctx, conn, assoc, [make_request(ctx)])
        ok = record.get("hresult") == 0 and record.get("verified") is not None and record["verified"].ok
        ev.data["after"] = "ok" if ok else f"valid request answered {record.get('hresult')!r}"
    except ProbeFailed as exc:
        ev.data["after"] = f"no valid exchange afterwards: {exc}"
    finally:
        await conn.close()


async def probe_hostile(ctx: HostContext, case: Case) -> Evidence:
    """Hostile input ``what``, then a valid exchange on a new connection."""
    what = case.send_arg("what")
    ev = Evidence()
    conns: list[Conn] = []
    if what == "idle":
        with contextlib.suppress(ProbeFailed):
            for _ in range(case.send_arg("count", 40)):
                conns.append(await Conn.open(ctx))
    else:
        conn = await Conn.open(ctx)
        conns.append(conn)
        if what == "garbage":
            await conn.send(bytes(ctx.rng.randint(0, 255) for _ in range(300)))
        elif what == "truncated":
            bind = ClientAssociation().bind()
            await conn.send(bind[: len(bind) // 2])
        elif what == "oversize":
            raw = ClientAssociation().bind()
            await conn.send(raw[:8] + b"\xff\xff" + raw[10:])
        elif what == "halfopen":
            await conn.send(ClientAssociation().bind())
            with contextlib.suppress(OSError):
                conn.writer.write_eof()
        ev.data["closed"] = await conn.closed_within(0.3)
    ev.conns += [c.number for c in conns]
    await _still_answers(ctx, ev)
    for c in conns:
        await c.close()
    ev.data["opened"] = len(conns)
    return ev
