"""What the dns suite sends: queries, RFC 2136 updates (every prerequisite form), TSIG variants and
the KMS publishing story, each under names unique to the run and removed afterwards.

Messages are built with dnslib and emu's UPDATE builders (:mod:`emu.dns.publish`), signed with emu's
TSIG (:mod:`emu.dns.tsig`) and decoded with :func:`emu.wire.dns.decode_message`. Every datagram and
TCP exchange is noted in the recorder for ``--capture``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import EDNS0, QTYPE, RD, RR, A, DNSHeader, DNSQuestion, DNSRecord

from emu.conform.model import Case, Evidence, ProbeFailed
from emu.conform.recorder import Recorder
from emu.dns.publish import Publication, build_publish, build_withdraw, srv_owner
from emu.dns.tsig import TsigKey, parse_key_file, sign_request, verify_response
from emu.errors import EmuError, UsageError
from emu.rng import Rng
from emu.wire.dns import CLASS_ANY, CLASS_IN, CLASS_NONE, TYPE_ANY, TYPE_SOA, DnsMessage, Opcode, decode_message


def load_key(path: Path) -> TsigKey:
    """The first key of a BIND-syntax key file (``key "name" { algorithm ...; secret "..."; };``)."""
    try:
        keys = parse_key_file(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise UsageError(f"--tsig-key {path}: {exc.strerror or exc}") from exc
    if not keys:
        raise UsageError(f"--tsig-key {path}: no key block found")
    return keys[0]


@dataclass
class DnsContext:
    """The server, the zone, the key (None: send unsigned updates), a recorder, randomness."""

    address: tuple[str, int]
    zone: str
    key: TsigKey | None
    recorder: Recorder
    rng: Rng
    timeout: float = 3.0
    #: every owner name the run created (the cleanup case checks they are gone)
    names: list[str] = field(default_factory=list)

    def unique(self, label: str) -> str:
        name = f"conform-{label}-{self.rng.randint(0, 2**32 - 1):08x}.{self.zone}"
        self.names.append(name)
        return name


class _One(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


async def send(ctx: DnsContext, wire: bytes, ev: Evidence, *, tcp: bool = False) -> DnsMessage | None:
    """One message, one answer (None when the server stays silent); recorded, no TC fallback."""
    loop = asyncio.get_running_loop()
    if tcp:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*ctx.address), ctx.timeout)
        except (OSError, TimeoutError) as exc:
            raise ProbeFailed(f"cannot connect to {ctx.address[0]}:{ctx.address[1]} over TCP: {exc}", ev.conns) from exc
        sock = writer.get_extra_info("sockname")
        conn = ctx.recorder.open((sock[0], sock[1]), ctx.address)
        ev.conns.append(conn)
        framed = struct.pack("!H", len(wire)) + wire
        ctx.recorder.note(conn, True, framed)
        try:
            writer.write(framed)
            length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), ctx.timeout))[0]
            raw = await asyncio.wait_for(reader.readexactly(length), ctx.timeout)
            ctx.recorder.note(conn, False, struct.pack("!H", length) + raw)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return None
        finally:
            ctx.recorder.closed(conn, by_client=True)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    else:
        transport, proto = await loop.create_datagram_endpoint(_One, remote_addr=ctx.address)
        sock = transport.get_extra_info("sockname")
        conn = ctx.recorder.open((sock[0], sock[1]), ctx.address, kind="udp")
        ev.conns.append(conn)
        ctx.recorder.note(conn, True, wire)
        try:
            transport.sendto(wire)
            raw = await asyncio.wait_for(proto.answer, ctx.timeout)
            ctx.recorder.note(conn, False, raw)
        except (TimeoutError, OSError):
            return None
        finally:
            transport.close()
    try:
        return decode_message(raw)
    except EmuError as exc:
        raise ProbeFailed(f"undecodable answer: {exc}", ev.conns) from exc


def rcode(msg: DnsMessage | None) -> int | None:
    return None if msg is None else msg.header.flags & 0xF


def _query(ctx: DnsContext, name: str, rtype: int, *, edns: bool = False) -> bytes:
    record = DNSRecord(DNSHeader(id=ctx.rng.randint(0, 0xFFFF), bitmap=0), q=DNSQuestion(name, rtype))
    if edns:
        record.add_ar(EDNS0(udp_len=1232))
    return bytes(record.pack())


async def ask(ctx: DnsContext, ev: Evidence, name: str, rtype: int, **kw: Any) -> DnsMessage | None:
    tcp = kw.pop("tcp", False)
    return await send(ctx, _query(ctx, name, rtype, **kw), ev, tcp=tcp)


def update_message(
    ctx: DnsContext,
    *,
    prereqs: tuple[RR, ...] = (),
    updates: tuple[RR, ...] = (),
    zone: str | None = None,
    questions: int = 1,
) -> bytes:
    record = DNSRecord(DNSHeader(id=ctx.rng.randint(0, 0xFFFF), bitmap=Opcode.UPDATE << 11))
    for _ in range(questions):
        record.add_question(DNSQuestion(zone or ctx.zone, TYPE_SOA, CLASS_IN))
    for rr in prereqs:
        record.add_answer(rr)
    for rr in updates:
        record.add_auth(rr)
    return bytes(record.pack())


async def update(
    ctx: DnsContext, ev: Evidence, wire: bytes, *, key: TsigKey | str | None = "ctx", now: float | None = None
) -> DnsMessage | None:
    """Send an UPDATE signed with the context's key (or ``key``; None: unsigned); note TSIG verification."""
    use = ctx.key if key == "ctx" else key
    mac = b""
    if isinstance(use, TsigKey):
        wire, mac = sign_request(wire, use, int(now if now is not None else time.time()))
    answer = await send(ctx, wire, ev)
    if isinstance(use, TsigKey) and answer is not None and rcode(answer) == 0:
        try:
            verify_response(answer, use, mac, int(time.time()))
            ev.data.setdefault("tsig_ok", []).append(True)
        except EmuError as exc:
            ev.data.setdefault("tsig_ok", []).append(str(exc))
    return answer


def a_rr(name: str, address: str = "192.0.2.77", rclass: int = CLASS_IN, ttl: int = 300) -> RR:
    return RR(name, QTYPE.A, rclass, ttl, A(address))


def _empty(name: str, rtype: int, rclass: int) -> RR:
    return RR(name, rtype, rclass, 0, RD(b""))


async def cleanup(ctx: DnsContext, ev: Evidence, *names: str) -> None:
    """Delete every RRset at ``names`` (class ANY, type ANY)."""
    await update(ctx, ev, update_message(ctx, updates=tuple(_empty(n, TYPE_ANY, CLASS_ANY) for n in names)))


async def probe_query(ctx: DnsContext, case: Case) -> Evidence:
    """A query: ``what`` = soa (the apex), nxdomain (a unique unused name), nodata (apex HINFO), edns."""
    ev = Evidence()
    what = case.send_arg("what")
    if what == "nxdomain":
        name, rtype = ctx.unique("absent"), QTYPE.A
    elif what == "nodata":
        name, rtype = ctx.zone, QTYPE.HINFO
    else:
        name, rtype = ctx.zone, QTYPE.SOA
    ev.data["answer"] = await ask(ctx, ev, name, rtype, edns=what == "edns")
    if ev["answer"] is None:
        raise ProbeFailed(f"no answer from {ctx.address[0]}:{ctx.address[1]}", ev.conns)
    return ev


async def _serial(ctx: DnsContext, ev: Evidence) -> int | None:
    answer = await ask(ctx, ev, ctx.zone, QTYPE.SOA)
    for rr in answer.answers if answer else ():
        if rr.rtype == TYPE_SOA:
            return int(rr.rdata.times[0])
    return None


async def probe_truncation(ctx: DnsContext, case: Case) -> Evidence:
    """40 A RRs at a unique name, then the A query over UDP without EDNS (TC expected) and over TCP."""
    ev = Evidence()
    name = ctx.unique("big")
    rrs = tuple(a_rr(name, f"198.51.100.{i}") for i in range(1, 41))
    ev.data["setup"] = rcode(await update(ctx, ev, update_message(ctx, updates=rrs)))
    try:
        ev.data["udp"] = await ask(ctx, ev, name, QTYPE.A)
        ev.data["tcp"] = await ask(ctx, ev, name, QTYPE.A, tcp=True)
    finally:
        await cleanup(ctx, ev, name)
    return ev


async def probe_update(ctx: DnsContext, case: Case) -> Evidence:
    """Add an A RR at a unique name; the serial and the name before and after; then remove it."""
    ev = Evidence()
    name = ctx.unique("add")
    ev.data["serial_before"] = await _serial(ctx, ev)
    ev.data["answer"] = await update(ctx, ev, update_message(ctx, updates=(a_rr(name),)))
    ev.data["after"] = await ask(ctx, ev, name, QTYPE.A)
    ev.data["serial_after"] = await _serial(ctx, ev)
    await cleanup(ctx, ev, name)
    ev.data["gone"] = rcode(await ask(ctx, ev, name, QTYPE.A))
    return ev


async def probe_prereq(ctx: DnsContext, case: Case) -> Evidence:
    """One prerequisite form (RFC 2136 2.4) against a name that exists (``exists``) with an A RR,
    plus an add at a second unique name; whether the add happened."""
    ev = Evidence()
    present, target = ctx.unique("pre"), ctx.unique("guarded")
    ev.data["setup"] = rcode(await update(ctx, ev, update_message(ctx, updates=(a_rr(present),))))
    form = case.send_arg("form")
    absent = ctx.unique("none")
    prereqs = {
        "yxrrset": (_empty(absent, QTYPE.A, CLASS_ANY),),
        "yxrrset_value": (a_rr(present, "192.0.2.99", ttl=0),),
        "nxrrset": (_empty(present, QTYPE.A, CLASS_NONE),),
        "yxdomain": (_empty(absent, TYPE_ANY, CLASS_ANY),),
        "nxdomain": (_empty(present, TYPE_ANY, CLASS_NONE),),
        "satisfied": (
            _empty(present, QTYPE.A, CLASS_ANY),
            a_rr(present, ttl=0),
            _empty(present, QTYPE.TXT, CLASS_NONE),
            _empty(present, TYPE_ANY, CLASS_ANY),
            _empty(absent, TYPE_ANY, CLASS_NONE),
        ),
    }[form]
    try:
        ev.data["answer"] = await update(ctx, ev, update_message(ctx, prereqs=prereqs, updates=(a_rr(target),)))
        ev.data["applied"] = rcode(await ask(ctx, ev, target, QTYPE.A)) == 0
    finally:
        await cleanup(ctx, ev, present, target)
    return ev


async def probe_bad_update(ctx: DnsContext, case: Case) -> Evidence:
    """An update that must be refused whole: ``what`` = notzone (a good add then an RR outside the
    zone), notauth (zone section names a zone not served), formerr (two zone questions)."""
    ev = Evidence()
    what = case.send_arg("what")
    name = ctx.unique("half")
    if what == "notzone":
        wire = update_message(ctx, updates=(a_rr(name), a_rr(f"conform-outside.{ctx.zone}invalid.")))
    elif what == "notauth":
        wire = update_message(ctx, updates=(a_rr(name),), zone=f"conform-nozone-{ctx.rng.randint(0, 2**32):x}.invalid.")
    else:
        wire = update_message(ctx, updates=(a_rr(name),), questions=2)
    try:
        ev.data["answer"] = await update(ctx, ev, wire)
        ev.data["applied"] = rcode(await ask(ctx, ev, name, QTYPE.A)) == 0
    finally:
        await cleanup(ctx, ev, name)
    return ev


async def probe_tsig(ctx: DnsContext, case: Case) -> Evidence:
    """An add signed right, with an unknown key name, a wrong secret, a clock 2 h off, or unsigned."""
    ev = Evidence()
    if ctx.key is None:
        ev.data["no_key"] = True
        return ev
    what = case.send_arg("what")
    key, now = ctx.key, time.time()
    if what == "badkey":
        key = TsigKey.make(f"conform-unknown-{ctx.rng.randint(0, 2**32):x}", ctx.key.secret)
    elif what == "badsig":
        key = TsigKey(ctx.key.name, ctx.key.algorithm, bytes(b ^ 0x5A for b in ctx.key.secret))
    elif what == "badtime":
        now -= 2 * 3600
    name = ctx.unique("tsig")
    try:
        use: TsigKey | None = None if what == "unsigned" else key
        ev.data["answer"] = await update(ctx, ev, update_message(ctx, updates=(a_rr(name),)), key=use, now=now)
        ev.data["applied"] = rcode(await ask(ctx, ev, name, QTYPE.A)) == 0
    finally:
        await cleanup(ctx, ev, name)
    return ev


async def probe_publish(ctx: DnsContext, case: Case) -> Evidence:
    """The KMS host story: another host's SRV is there; ours is added with A/AAAA, refreshed,
    withdrawn with class-NONE deletes; what the SRV RRset and addresses look like at each step."""
    ev = Evidence()
    domain = ctx.zone.rstrip(".")
    ours = Publication(domain, ctx.unique("kms"), port=1688, ttl=600)
    other = Publication(domain, ctx.unique("other"), port=1689, ttl=600)
    owner = srv_owner(domain)

    async def srv_targets() -> set[str]:
        answer = await ask(ctx, ev, owner, QTYPE.SRV)
        return {str(rr.rdata.target).lower() for rr in (answer.answers if answer else ()) if rr.rtype == QTYPE.SRV}

    def mid() -> int:
        return ctx.rng.randint(0, 0xFFFF)

    ev.data["before"] = await srv_targets()
    ev.data["other"] = rcode(await update(ctx, ev, build_publish(ctx.zone, other, (), mid())))
    ev.data["add"] = rcode(await update(ctx, ev, build_publish(ctx.zone, ours, ("192.0.2.10", "2001:db8::10"), mid())))
    ev.data["after_add"] = await srv_targets()
    a = await ask(ctx, ev, ours.host_name, QTYPE.A)
    aaaa = await ask(ctx, ev, ours.host_name, QTYPE.AAAA)
    ev.data["addresses"] = {
        str(rr.rdata) for m in (a, aaaa) if m for rr in m.answers if rr.rtype in (QTYPE.A, QTYPE.AAAA)
    }
    ev.data["refresh"] = rcode(
        await update(ctx, ev, build_publish(ctx.zone, ours, ("192.0.2.10", "2001:db8::10"), mid()))
    )
    again = await ask(ctx, ev, owner, QTYPE.SRV)
    ev.data["ours_after_refresh"] = sum(
        1 for rr in (again.answers if again else ()) if str(rr.rdata.target).lower() == ours.host_name
    )
    withdraw = build_withdraw(ctx.zone, ours, ("192.0.2.10", "2001:db8::10"), ours.host_name, mid())
    ev.data["withdraw"] = rcode(await update(ctx, ev, withdraw))
    ev.data["after_withdraw"] = await srv_targets()
    ev.data["names"] = (ours.host_name, other.host_name)
    await update(ctx, ev, build_withdraw(ctx.zone, other, (), other.host_name, mid()))
    ev.data["end"] = await srv_targets()
    return ev


async def probe_cleanup(ctx: DnsContext, case: Case) -> Evidence:
    """Every name this run created, asked for again at the end."""
    ev = Evidence()
    left = []
    for name in ctx.names:
        answer = await ask(ctx, ev, name, QTYPE.A)
        if answer is not None and rcode(answer) == 0 and answer.answers:
            left.append(name)
    ev.data["left"] = left
    ev.data["checked"] = len(ctx.names)
    return ev
