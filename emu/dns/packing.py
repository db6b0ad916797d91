"""The fast path of query answers: wire forms prepared once per zone snapshot, one pass to pack.

Most queries a KMS DNS server gets are one question, no EDNS, no TSIG (``_vlmcs._tcp`` SRV and the
targets' A/AAAA). dnslib builds an ``RR`` object per record and packs it field by field, which is
most of the time of an answer. Here:

* :func:`parse_simple_query` reads such a query without dnslib (anything else: None, and the
  general path answers);
* :class:`ZoneWire` keeps, per snapshot, each RRset's owner labels, its type/class/TTL bytes and
  each RDATA in wire form, packed once. RDATA that holds compressible names (NS, CNAME, MX, SOA,
  ...) depends on what came before it in the message, so it is packed in place, as dnslib does;
* :func:`pack_answer` writes the message with the same name compression as dnslib's
  ``DNSBuffer.encode_name`` (every suffix remembered, case-sensitive, the first occurrence
  wins), so the bytes are those of the general path, byte for byte (tests/dns checks it).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

from dnslib import RD, DNSBuffer, DNSLabel

from emu.dns.query import AnswerRRset
from emu.dns.zone import Zone
from emu.wire.dns import CLASS_IN, HEADER_LEN

__all__ = ["NotFast", "SimpleQuery", "ZoneWire", "pack_answer", "parse_simple_query"]

#: Labels the fast path takes as they are: what dnslib would neither escape nor refuse.
_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_*\-]{1,63}")
#: dnslib refuses names longer than this (``DNSBuffer.encode_name``).
_MAX_NAME = 253
_HEADER = struct.Struct("!6H")


class NotFast(Exception):
    """Raised inside the fast path for anything it does not handle; the general path answers."""


class SimpleQuery:
    """One question, no other records: the labels as received, the question's wire form."""

    __slots__ = ("labels", "qclass", "qname", "qtype", "question")

    def __init__(self, labels: tuple[bytes, ...], qtype: int, qclass: int, question: bytes) -> None:
        self.labels = labels
        self.qname = b".".join(labels).decode("ascii").lower() + "."
        self.qtype = qtype
        self.qclass = qclass
        self.question = question


def parse_simple_query(data: bytes) -> SimpleQuery | None:
    """A standard query with QDCOUNT 1 and nothing else, the name uncompressed and made of plain
    labels; None for anything else (including every malformed message)."""
    if len(data) < HEADER_LEN + 5 or data[2] & 0xF8 or data[4:12] != b"\x00\x01\x00\x00\x00\x00\x00\x00":
        return None  # QR=1 or opcode != QUERY, or not exactly one question and no records
    labels = []
    offset = HEADER_LEN
    end = len(data)
    while True:
        length = data[offset]
        offset += 1
        if length == 0:
            break
        if length > 63 or offset + length >= end:
            return None  # a pointer, an extended label type, or cut short
        label = data[offset : offset + length]
        if not _PLAIN_LABEL.fullmatch(label):
            return None
        labels.append(label)
        offset += length
    if not labels or offset + 4 != end or offset - HEADER_LEN - 1 > _MAX_NAME:
        return None
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    return SimpleQuery(tuple(labels), qtype, qclass, bytes(data[HEADER_LEN:end]))


def _labels(name: str) -> tuple[bytes, ...]:
    labels: tuple[bytes, ...] = DNSLabel(name).label
    if len(b".".join(labels)) > _MAX_NAME or any(len(label) > 63 for label in labels):
        raise NotFast(f"{name} cannot be packed")  # dnslib raises; let the general path do what it does
    return labels


class _RRsetWire:
    __slots__ = ("head", "owner", "rdatas", "ttl")

    def __init__(self, entry: AnswerRRset) -> None:
        self.owner = _labels(entry.name)
        self.ttl = entry.ttl
        self.head = struct.pack("!HHI", entry.rtype, CLASS_IN, entry.ttl)
        parts: list[bytes | RD] = []
        for rdata in entry.rdatas:
            buf = DNSBuffer()
            rdata.pack(buf)
            # No name registered: the bytes do not depend on the message around them.
            parts.append(struct.pack("!H", len(buf.data)) + bytes(buf.data) if not buf.names else rdata)
        self.rdatas = tuple(parts)


class ZoneWire:
    """Wire forms of one zone snapshot's RRsets, made on first use (a new snapshot gets a new one)."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self._rrsets: dict[tuple[str, int], _RRsetWire] = {}

    def rrset(self, entry: AnswerRRset) -> _RRsetWire:
        key = (entry.name, entry.rtype)
        wire = self._rrsets.get(key)
        if wire is None:
            wire = self._rrsets[key] = _RRsetWire(entry)
        return wire


def _encode_name(data: bytearray, names: dict[tuple[bytes, ...], int], labels: tuple[bytes, ...]) -> None:
    """dnslib's ``DNSBuffer.encode_name``: a pointer to the longest suffix already written, every
    new suffix remembered at its offset (pointers keep only 14 bits, as dnslib's ``set_bits``)."""
    for i in range(len(labels)):
        suffix = labels[i:]
        pointer = names.get(suffix)
        if pointer is not None:
            data += struct.pack("!H", 0xC000 | (pointer & 0x3FFF))
            return
        names[suffix] = len(data)
        label = labels[i]
        data.append(len(label))
        data += label
    data.append(0)


def pack_answer(
    query_id: int,
    flags: int,
    query: SimpleQuery,
    sections: Sequence[Sequence[AnswerRRset]],
    wire_of: dict[str, ZoneWire],
    limit: int,
    tc_flags: int,
) -> bytes:
    """The response: header, the question as received, the sections; header and question only,
    with ``tc_flags``, if it is longer than ``limit``.

    Raises:
        NotFast: a name dnslib would refuse (the general path then answers as it does).
    """
    buf = DNSBuffer()
    data = buf.data
    names = buf.names
    data += bytes(HEADER_LEN)
    offset = HEADER_LEN
    labels = query.labels
    for i in range(len(labels)):
        names[labels[i:]] = offset
        offset += 1 + len(labels[i])
    data += query.question
    counts = []
    for section in sections:
        count = 0
        for entry in section:
            zone_wire = wire_of.get(entry.zone.origin)
            if zone_wire is None or zone_wire.zone is not entry.zone:
                zone_wire = wire_of[entry.zone.origin] = ZoneWire(entry.zone)
            wire = zone_wire.rrset(entry)
            owner = wire.owner if entry.owner == entry.name else _labels(entry.owner)
            head = wire.head if entry.ttl == wire.ttl else struct.pack("!HHI", entry.rtype, CLASS_IN, entry.ttl)
            for part in wire.rdatas:
                _encode_name(data, names, owner)
                data += head
                if isinstance(part, bytes):
                    data += part
                else:
                    at = len(data)
                    data += b"\x00\x00"
                    buf.offset = len(data)
                    part.pack(buf)
                    struct.pack_into("!H", data, at, len(data) - at - 2)
                count += 1
        counts.append(count)
    if len(data) > limit:
        return _HEADER.pack(query_id, tc_flags, 1, 0, 0, 0) + query.question
    _HEADER.pack_into(data, 0, query_id, flags, 1, *counts)
    return bytes(data)
