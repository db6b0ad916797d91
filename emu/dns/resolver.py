"""The DNS server's one entry point: raw request bytes + peer + now -> raw response bytes.

:meth:`Resolver.handle` never raises. It follows the error ladder of emu's style rules:

* fewer than 12 bytes, or a response (QR=1): dropped (``None``);
* undecodable after the header: FORMERR with the header's ID and opcode;
* an opcode other than QUERY and UPDATE: NOTIMP; EDNS version above 0: BADVERS (RFC 6891 6.1.3);
* a TSIG that fails: NOTAUTH with the TSIG error (RFC 8945 5.2); GSS-TSIG and TKEY: REFUSED;
* a signed UPDATE whose (key, MAC) was accepted before, inside its fudge window (a retransmission
  or a replay) is never applied again: it gets the first answer back while that is remembered,
  else NOTAUTH with TSIG error BADTIME, signed (RFC 8945 5.2.3, :class:`~emu.dns.tsig.ReplayCache`).
  Queries are not checked: a replayed query changes nothing, and a client may resend the same
  signed query over TCP after a truncated UDP answer;
* any bug: SERVFAIL, and the traceback goes to the log.

Zones are immutable snapshots (see :mod:`emu.dns.zone`); an accepted update hands its changes
to the ``journal`` callback *before* the new snapshot replaces the old one, so nothing is
answered NOERROR that is not durable. Time (``now``) is UTC Unix seconds, as TSIG needs.

With :class:`~emu.dns.aging.SrvAging`, :meth:`Resolver.next_deadline` says when a published SRV
RR reaches its max age and :meth:`Resolver.on_timer` removes it (journaled, serial bumped once);
the edge schedules the calls.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dnslib import RR, DNSHeader, DNSQuestion, DNSRecord

from emu.dns.aging import SrvAging
from emu.dns.packing import NotFast, SimpleQuery, ZoneWire, pack_answer, parse_simple_query
from emu.dns.policy import Requester, UpdatePolicy
from emu.dns.query import AnswerRRset, answer_query
from emu.dns.tsig import (
    REPLAY_CACHE_SIZE,
    ReplayCache,
    TsigCheck,
    TsigKey,
    append_unsigned_tsig,
    sign_response,
    verify_request,
)
from emu.dns.update import evaluate_update, remove_rrs
from emu.dns.zone import Zone, ZoneChange
from emu.errors import DecodeError, UsageError
from emu.wire.dns import (
    CLASS_IN,
    TYPE_AXFR,
    TYPE_IXFR,
    TYPE_OPT,
    TYPE_TKEY,
    DnsHeader,
    DnsMessage,
    Opcode,
    Rcode,
    canonical_name,
    canonical_name_wire,
    decode_header,
    decode_message,
)

__all__ = ["CLASSIC_UDP_LIMIT", "MAX_UDP_PAYLOAD", "Journal", "Peer", "Resolver"]

log = logging.getLogger(__name__)

#: Our EDNS UDP payload size: 1232 avoids IP fragmentation on common paths (DNS Flag Day 2020).
MAX_UDP_PAYLOAD = 1232
#: UDP limit without EDNS (RFC 1035 4.2.1).
CLASSIC_UDP_LIMIT = 512
#: Answers cached per distinct query (bytes after the ID); the cache is emptied on every change.
ANSWER_CACHE_SIZE = 4096

_SRV = 33

#: Receives the net changes of an accepted update; must make them durable or raise.
Journal = Callable[[Sequence[ZoneChange]], None]


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent a message, and over which transport (``"udp"`` or ``"tcp"``)."""

    address: str
    port: int
    transport: str = "udp"


def _flags(header: DnsHeader, rcode: int, aa: bool = False, tc: bool = False) -> int:
    """Response flags: QR, the request's opcode, RD and CD copied; RA and AD never set."""
    flags = 0x8000 | (header.opcode << 11) | (header.flags & 0x0100) | (header.flags & 0x0010) | (rcode & 0xF)
    if aa:
        flags |= 0x0400
    if tc:
        flags |= 0x0200
    return flags


def _header_only(header: DnsHeader, rcode: int) -> bytes:
    return struct.pack("!6H", header.id, _flags(header, rcode), 0, 0, 0, 0)


class Resolver:
    """An authoritative server's logic for zones it is primary for.

    Args:
        zones: the zones served.
        keys: TSIG keys known to the server.
        policy: who may update what (default: any known key, anything).
        journal: called with the changes of each accepted update before they become visible.
        max_udp_payload: the EDNS payload size we advertise and honour at most.
        cache_size: unsigned query answers kept for identical later queries (0: no cache).
        replay_cache_size: signed UPDATEs remembered to refuse their replay (:class:`ReplayCache`).
        aging: removes ``_vlmcs._tcp`` SRV RRs not refreshed in time (None: records never age).
        fast_path: answer plain queries (one question, no EDNS, no TSIG) from wire forms prepared
            per zone snapshot (:mod:`emu.dns.packing`); the bytes are the same either way.
    """

    def __init__(
        self,
        zones: Iterable[Zone],
        keys: Iterable[TsigKey] = (),
        policy: UpdatePolicy | None = None,
        journal: Journal | None = None,
        max_udp_payload: int = MAX_UDP_PAYLOAD,
        cache_size: int = ANSWER_CACHE_SIZE,
        replay_cache_size: int = REPLAY_CACHE_SIZE,
        aging: SrvAging | None = None,
        fast_path: bool = True,
    ) -> None:
        self._zones: dict[str, Zone] = {}
        for zone in zones:
            if zone.origin in self._zones:
                raise UsageError(f"zone {zone.origin} given twice")
            self._zones[zone.origin] = zone
        self.keys: dict[str, TsigKey] = {key.name: key for key in keys}
        self.policy = policy or UpdatePolicy()
        self.journal = journal
        self.max_udp_payload = max(CLASSIC_UDP_LIMIT, max_udp_payload)
        self._cache: dict[tuple[str, bytes], bytes] = {}
        self.cache_size = cache_size
        self.replays = ReplayCache(replay_cache_size)
        self.aging = aging
        self.fast_path = fast_path
        self._wire: dict[str, ZoneWire] = {}

    @property
    def zones(self) -> Mapping[str, Zone]:
        """The current snapshots by canonical origin (read-only view)."""
        return dict(self._zones)

    def zone(self, origin: str) -> Zone | None:
        return self._zones.get(origin.lower() if origin.endswith(".") else origin.lower() + ".")

    # --- entry point -------------------------------------------------------------------------

    def handle(self, data: bytes, peer: Peer, now: float) -> bytes | None:
        """The response to one message, or None to drop it. Never raises."""
        try:
            header = decode_header(data)
        except DecodeError:
            return None
        if header.qr:
            return None  # never answer a response (no reflection loops)
        try:
            key = (peer.transport, bytes(data[2:]))
            cached = self._cache.get(key)
            if cached is not None:
                return data[:2] + cached
            response: bytes | None = None
            if self.fast_path:
                simple = parse_simple_query(data)
                if simple is not None:
                    response = self._fast_query(header, simple, peer)
            if response is not None:
                cacheable = True
            else:
                response, cacheable = self._handle(header, data, peer, int(now))
            if cacheable and response is not None and self.cache_size > 0:
                if len(self._cache) >= self.cache_size:
                    self._cache.clear()
                self._cache[key] = response[2:]
            return response
        except Exception:
            log.exception(
                "internal error answering %d bytes from %s:%s; sending SERVFAIL", len(data), peer.address, peer.port
            )
            return _header_only(header, Rcode.SERVFAIL)

    def _handle(self, header: DnsHeader, data: bytes, peer: Peer, now: int) -> tuple[bytes | None, bool]:
        try:
            message = decode_message(data)
        except DecodeError as exc:
            log.info("FORMERR to %s:%s: %s", peer.address, peer.port, exc)
            return _header_only(header, Rcode.FORMERR), False
        if header.opcode not in (Opcode.QUERY, Opcode.UPDATE):
            return self._pack(message, Rcode.NOTIMP, peer), False
        if message.opt is not None and (message.opt.ttl >> 16) & 0xFF != 0:
            return self._pack(message, Rcode.NOERROR, peer, badvers=True), False
        check: TsigCheck | None = None
        if message.tsig is not None:
            if message.tsig.algorithm.startswith("gss-tsig") or message.tsig.algorithm.startswith("gss.microsoft"):
                return self._pack(message, Rcode.REFUSED, peer), False
            check = verify_request(message, self.keys, now)
            if not check.ok:
                log.info(
                    "TSIG from %s:%s rejected: rcode %d, error %d (key %s)",
                    peer.address,
                    peer.port,
                    check.rcode,
                    check.error,
                    message.tsig.key_name,
                )
                if check.rcode == Rcode.FORMERR:
                    return self._pack(message, Rcode.FORMERR, peer), False
                unsigned = self._pack(message, check.rcode, peer, reserve=0)
                if check.error in (Rcode.BADKEY, Rcode.BADSIG) or check.key is None:
                    return append_unsigned_tsig(unsigned, message.tsig, check.error), False
                return sign_response(unsigned, check.key, message.tsig, now, check.error), False
            if header.opcode == Opcode.UPDATE and check.key is not None:
                earlier = self.replays.earlier_answer(message.tsig, now)
                if earlier is not None:
                    log.info(
                        "repeated UPDATE from %s:%s (key %s): the first answer again, nothing re-applied",
                        peer.address,
                        peer.port,
                        message.tsig.key_name,
                    )
                    # Same MAC, maybe another ID (RFC 8945 lets the ID change: the MAC covers the
                    # original one): answer with the request's ID, the signature stays valid.
                    return header.id.to_bytes(2, "big") + earlier[2:], False
                if not self.replays.admit(message.tsig, now):
                    log.info(
                        "replayed UPDATE from %s:%s refused (key %s): NOTAUTH/BADTIME",
                        peer.address,
                        peer.port,
                        message.tsig.key_name,
                    )
                    unsigned = self._pack(message, Rcode.NOTAUTH, peer, reserve=0)
                    return sign_response(unsigned, check.key, message.tsig, now, Rcode.BADTIME), False
        if header.opcode == Opcode.UPDATE:
            response = self._update(message, peer, check, now)
        else:
            response = self._query(message, peer, check)
        if check is not None and check.key is not None and message.tsig is not None:
            signed = sign_response(response, check.key, message.tsig, now)
            if header.opcode == Opcode.UPDATE:
                self.replays.remember(message.tsig, signed)
            return signed, False
        return response, check is None and header.opcode == Opcode.QUERY

    # --- query -------------------------------------------------------------------------------

    def _fast_query(self, header: DnsHeader, query: SimpleQuery, peer: Peer) -> bytes | None:
        """The answer to a plain query, as :meth:`_query` would pack it; None: ask the general path."""
        if query.qtype in (TYPE_AXFR, TYPE_IXFR, TYPE_TKEY):
            return None
        answer = answer_query(self._zones, query.qname, query.qtype, query.qclass)
        limit = CLASSIC_UDP_LIMIT if peer.transport == "udp" else 65535
        flags = _flags(header, answer.rcode, answer.authoritative)
        try:
            return pack_answer(
                header.id,
                flags,
                query,
                (answer.answers, answer.authority, answer.additional),
                self._wire,
                limit,
                _flags(header, answer.rcode, answer.authoritative, tc=True),
            )
        except NotFast:
            return None

    def _query(self, message: DnsMessage, peer: Peer, check: TsigCheck | None) -> bytes:
        if len(message.questions) != 1:
            return self._pack(message, Rcode.FORMERR, peer)
        question = message.questions[0]
        if question.qtype in (TYPE_AXFR, TYPE_IXFR, TYPE_TKEY):
            return self._pack(message, Rcode.REFUSED, peer)  # no zone transfers; no TKEY/GSS (docs/dns.md)
        answer = answer_query(self._zones, str(question.qname), question.qtype, question.qclass)
        reserve = self._tsig_size(check)
        return self._pack(
            message,
            answer.rcode,
            peer,
            aa=answer.authoritative,
            answers=_rrs(answer.answers),
            authority=_rrs(answer.authority),
            additional=_rrs(answer.additional),
            reserve=reserve,
        )

    # --- update ------------------------------------------------------------------------------

    def _update(self, message: DnsMessage, peer: Peer, check: TsigCheck | None, now: int) -> bytes:
        requester = Requester(check.key.name if check is not None and check.key is not None else None, peer.address)
        outcome = evaluate_update(self._zones, message, lambda zone, rr: self.policy.allows(requester, zone, rr))
        key_text = requester.key or "unsigned"
        if outcome.zone is not None and outcome.zone_name is not None:
            if self.journal is not None:
                self.journal(outcome.changes)
            self._zones[outcome.zone_name] = outcome.zone
            self._cache.clear()
            log.info(
                "UPDATE %s from %s (%s): %s, serial %d",
                outcome.zone_name,
                peer.address,
                key_text,
                outcome.reason,
                outcome.zone.serial,
            )
        else:
            log.info(
                "UPDATE from %s (%s): rcode %s: %s", peer.address, key_text, Rcode(outcome.rcode).name, outcome.reason
            )
        if self.aging is not None and outcome.rcode == Rcode.NOERROR and outcome.zone_name is not None:
            self.aging.changed(outcome.changes, now)
            zone = self._zones[outcome.zone_name]
            for rr in message.authority:  # a re-add that changed nothing is a refresh all the same
                if rr.rclass == CLASS_IN and rr.rtype == _SRV:
                    self.aging.refresh(zone, canonical_name(rr.rname), rr.rdata, now)
        return self._pack(message, outcome.rcode, peer, echo=True, reserve=0)

    # --- timers ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` has work (an SRV RR reaches its max age), or None."""
        return self.aging.next_deadline() if self.aging is not None else None

    def on_timer(self, now: float) -> int:
        """Remove the SRV RRs that reached their max age by ``now``: per zone one journaled change,
        one serial bump. Returns how many RRs went.

        Raises:
            whatever the journal raises; the zone is then left as it was (retry later).
        """
        if self.aging is None:
            return 0
        removed = 0
        for origin, zone in list(self._zones.items()):
            expired = self.aging.expired(zone, now)
            if not expired:
                continue
            outcome = remove_rrs(zone, _SRV, expired, f"not refreshed for {self.aging.max_age:g} s")
            if outcome.zone is None:
                continue
            if self.journal is not None:
                self.journal(outcome.changes)
            self._zones[origin] = outcome.zone
            self._cache.clear()
            self.aging.changed(outcome.changes, now)
            removed += len(expired)
            log.info(
                "aging %s: removed %s, serial %d",
                origin,
                ", ".join(f"{name} SRV {rdata}" for name, rdata in expired),
                outcome.zone.serial,
            )
        return removed

    # --- building responses ------------------------------------------------------------------

    def _tsig_size(self, check: TsigCheck | None) -> int:
        if check is None or check.key is None:
            return 0
        key = check.key
        return len(canonical_name_wire(key.name)) + 10 + len(canonical_name_wire(key.algorithm)) + 16 + key.digest_size

    def _pack(
        self,
        message: DnsMessage,
        rcode: int,
        peer: Peer,
        *,
        aa: bool = False,
        answers: Sequence[RR] = (),
        authority: Sequence[RR] = (),
        additional: Sequence[RR] = (),
        echo: bool = True,
        badvers: bool = False,
        reserve: int = 0,
    ) -> bytes:
        """A response: header, the question (zone section for UPDATE, docs/dns.md), the
        records, our OPT when the request had one; truncated to the UDP limit with TC=1."""
        header = message.header
        questions = list(message.questions[:1]) if echo else []
        opt = self._opt(message, badvers)
        limit = 65535
        if peer.transport == "udp":
            limit = CLASSIC_UDP_LIMIT
            if message.opt is not None:
                limit = max(CLASSIC_UDP_LIMIT, min(message.opt.rclass, self.max_udp_payload))
        limit -= reserve
        wire = _build(header, _flags(header, rcode, aa), questions, answers, authority, list(additional) + opt)
        if len(wire) > limit:
            wire = _build(header, _flags(header, rcode, aa, tc=True), questions, (), (), opt)
        return wire

    def _opt(self, message: DnsMessage, badvers: bool) -> list[RR]:
        """Our OPT RR (RFC 6891 6.1): payload size, version 0, extended rcode BADVERS if asked."""
        if message.opt is None:
            return []
        ttl = (1 << 24) if badvers else 0  # extended RCODE 16 = BADVERS: upper 8 bits are 16 >> 4
        return [RR(".", TYPE_OPT, self.max_udp_payload, ttl, [])]


def _rrs(section: Sequence[AnswerRRset]) -> list[RR]:
    return [rr for entry in section for rr in entry.rrs()]


def _build(
    header: DnsHeader,
    flags: int,
    questions: Sequence[DNSQuestion],
    answers: Sequence[RR],
    authority: Sequence[RR],
    additional: Sequence[RR],
) -> bytes:
    record = DNSRecord(
        DNSHeader(id=header.id, bitmap=flags),
        questions=list(questions),
        rr=list(answers),
        auth=list(authority),
        ar=list(additional),
    )
    return bytes(record.pack())
