"""DNS messages on the wire: dnslib's record classes, with what dnslib 0.9 cannot read.

dnslib refuses every RR whose RDLENGTH is 0 ("Error: Empty RR"), which is most of RFC 2136
(delete-RRset, delete-name and four of the five prerequisite forms; docs/dns.md), and it shows a
TSIG RR as an opaque blob. This module parses a whole message itself, record by record, on top of
dnslib's :class:`DNSBuffer` and RDATA classes:

* an empty RDATA is kept as ``RD(b"")`` (checked against the class later, by the update rules);
* the OPT pseudo-RR is lifted out of the additional section;
* a TSIG RR (RFC 8945 4.2) must be the last additional record, is decoded into a
  :class:`TsigRecord`, and the offset where it starts is kept, because the MAC covers the raw
  bytes before it.

No monkeypatching of dnslib: other users of ``dnslib.RR.parse`` see the library unchanged.
:func:`decode_message` raises only :class:`DecodeError`, whatever the input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from dnslib import QTYPE, RD, RDMAP, RR, DNSBuffer, DNSLabel, DNSQuestion

from emu.errors import DecodeError

__all__ = [
    "CLASS_ANY",
    "CLASS_IN",
    "CLASS_NONE",
    "HEADER_LEN",
    "TYPE_ANY",
    "TYPE_AXFR",
    "TYPE_IXFR",
    "TYPE_MAILA",
    "TYPE_MAILB",
    "TYPE_OPT",
    "TYPE_SOA",
    "TYPE_TKEY",
    "TYPE_TSIG",
    "DnsHeader",
    "DnsMessage",
    "Opcode",
    "Rcode",
    "TsigRecord",
    "canonical_name",
    "canonical_name_wire",
    "decode_header",
    "decode_message",
    "encode_tsig_rr",
    "is_empty_rdata",
]

HEADER_LEN = 12  # RFC 1035 4.1.1

# RR types and classes used by the rules (RFC 1035 3.2.2/3.2.3, RFC 2136 1.3, RFC 6891, RFC 8945).
TYPE_SOA = 6
TYPE_OPT = 41
TYPE_TKEY = 249
TYPE_TSIG = 250
TYPE_IXFR = 251
TYPE_AXFR = 252
TYPE_MAILB = 253
TYPE_MAILA = 254
TYPE_ANY = 255
CLASS_IN = 1
CLASS_NONE = 254
CLASS_ANY = 255


class Opcode(IntEnum):
    """Header OPCODE (RFC 1035 4.1.1, RFC 1996, RFC 2136 1.3)."""

    QUERY = 0
    IQUERY = 1
    STATUS = 2
    NOTIFY = 4
    UPDATE = 5


class Rcode(IntEnum):
    """RCODEs, including the TSIG error codes that travel in the TSIG RR (RFC 2136 2.2, RFC 8945 3)."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    YXDOMAIN = 6
    YXRRSET = 7
    NXRRSET = 8
    NOTAUTH = 9
    NOTZONE = 10
    BADSIG = 16  # also BADVERS in an OPT (RFC 6891 6.1.3)
    BADKEY = 17
    BADTIME = 18
    BADTRUNC = 22


@dataclass(frozen=True, slots=True)
class DnsHeader:
    """The fixed 12-byte header (RFC 1035 4.1.1)."""

    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    @property
    def qr(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rd(self) -> bool:
        return bool(self.flags & 0x0100)

    @property
    def cd(self) -> bool:
        return bool(self.flags & 0x0010)


@dataclass(frozen=True, slots=True)
class TsigRecord:
    """A TSIG RR (RFC 8945 4.2). Names are canonical: lower case, absolute, with a trailing dot."""

    key_name: str
    algorithm: str
    time_signed: int  # 48-bit Unix seconds
    fudge: int  # seconds
    mac: bytes
    original_id: int
    error: int
    other: bytes


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """A decoded message. For UPDATE the sections are zone, prerequisite, update, additional.

    Attributes:
        raw: the bytes as received (TSIG MACs are computed over them).
        opt: the OPT pseudo-RR, if any (not included in ``additional``).
        tsig: the TSIG RR, if any (not included in ``additional``).
        tsig_offset: where the TSIG RR starts in ``raw``.
    """

    header: DnsHeader
    questions: tuple[DNSQuestion, ...]
    answers: tuple[RR, ...]
    authority: tuple[RR, ...]
    additional: tuple[RR, ...]
    opt: RR | None
    tsig: TsigRecord | None
    tsig_offset: int | None
    raw: bytes


def decode_header(data: bytes) -> DnsHeader:
    """The header of a message.

    Raises:
        DecodeError: fewer than 12 bytes.
    """
    if len(data) < HEADER_LEN:
        raise DecodeError(
            f"DNS message of {len(data)} bytes is shorter than its 12-byte header", offset=0, path="header"
        )
    return DnsHeader(*struct.unpack_from("!6H", data, 0))


def canonical_name(name: DNSLabel | str) -> str:
    """A name as emu keys it: lower case, absolute, trailing dot (``"kms.test."``; root is ``"."``)."""
    text = str(name).lower()
    if not text.endswith("."):
        text += "."
    return text


def canonical_name_wire(name: str) -> bytes:
    """The uncompressed, lower-case wire form of a name (RFC 4034 6.2, as RFC 8945 4.3.2 asks)."""
    buf = DNSBuffer()
    buf.encode_name_nocompress(DNSLabel(name.lower()))
    return bytes(buf.data)


def is_empty_rdata(rdata: RD) -> bool:
    """True for the zero-length RDATA of RFC 2136 delete/prerequisite forms."""
    return type(rdata) is RD and rdata.data == b""


def _read_rr(buf: DNSBuffer, where: str) -> tuple[RR, int, int]:
    """One RR at the buffer's offset: (rr, start offset, rdata offset). Empty RDATA allowed."""
    start = buf.offset
    name = buf.decode_name()
    rtype, rclass, ttl, rdlength = buf.unpack("!HHIH")
    rdata_at = buf.offset
    if rdata_at + rdlength > len(buf.data):
        raise DecodeError(f"{where}: RDATA of {rdlength} bytes runs past the end", offset=rdata_at, path=where)
    if rtype == TYPE_OPT:
        options = []
        opt_buf = DNSBuffer(buf.get(rdlength))
        from dnslib import EDNSOption

        while opt_buf.remaining() >= 4:
            code, length = opt_buf.unpack("!HH")
            options.append(EDNSOption(code, opt_buf.get(length)))
        if opt_buf.remaining():
            raise DecodeError(f"{where}: trailing bytes in OPT RDATA", offset=rdata_at, path=where)
        return RR(name, rtype, rclass, ttl, options), start, rdata_at
    if rdlength == 0:
        rdata: RD = RD(b"")
    elif rtype == TYPE_TSIG:
        rdata = RD(buf.get(rdlength))
    else:
        rdata = RDMAP.get(QTYPE.get(rtype), RD).parse(buf, rdlength)
        if buf.offset != rdata_at + rdlength:
            raise DecodeError(
                f"{where}: RDATA length {rdlength} does not match its content", offset=rdata_at, path=where
            )
    return RR(name, rtype, rclass, ttl, rdata), start, rdata_at


def _read_tsig(buf: DNSBuffer, owner: DNSLabel, rdata_at: int, rdlength: int) -> TsigRecord:
    """TSIG RDATA (RFC 8945 4.2): algorithm, time signed (48 bits), fudge, MAC, original ID, error, other."""
    end = rdata_at + rdlength
    buf.offset = rdata_at
    algorithm = buf.decode_name()
    high, low, fudge, mac_size = buf.unpack("!HIHH")
    mac = bytes(buf.get(mac_size))
    original_id, error, other_len = buf.unpack("!HHH")
    other = bytes(buf.get(other_len))
    if buf.offset != end:
        raise DecodeError("TSIG RDATA length does not match its content", offset=rdata_at, path="additional -> TSIG")
    return TsigRecord(
        key_name=canonical_name(owner),
        algorithm=canonical_name(algorithm),
        time_signed=(high << 32) | low,
        fudge=fudge,
        mac=mac,
        original_id=original_id,
        error=error,
        other=other,
    )


def decode_message(data: bytes) -> DnsMessage:
    """Decode a whole DNS message, tolerating empty RDATA and decoding OPT and TSIG.

    Raises:
        DecodeError: anything malformed: truncated sections, bad names, RDATA not matching its
            length, trailing bytes, more than one OPT, a TSIG that is not the last record.
    """
    header = decode_header(data)
    raw = bytes(data)
    buf = DNSBuffer(raw)
    buf.offset = HEADER_LEN
    where = "question"
    try:
        questions = []
        for _ in range(header.qdcount):
            qname = buf.decode_name()
            qtype, qclass = buf.unpack("!HH")
            questions.append(DNSQuestion(qname, qtype, qclass))
        sections: list[list[RR]] = [[], [], []]
        opt: RR | None = None
        tsig: TsigRecord | None = None
        tsig_offset: int | None = None
        counts = (header.ancount, header.nscount, header.arcount)
        names = ("answer", "authority", "additional")
        for index, (count, section_name) in enumerate(zip(counts, names)):
            for position in range(count):
                where = f"{section_name}[{position}]"
                if tsig is not None:
                    raise DecodeError(
                        "the TSIG RR must be the last record of the message (RFC 8945 5.1)",
                        offset=buf.offset,
                        path=where,
                    )
                rr, start, rdata_at = _read_rr(buf, where)
                if rr.rtype == TYPE_TSIG:
                    if index != 2:
                        raise DecodeError("a TSIG RR outside the additional section", offset=start, path=where)
                    end = buf.offset
                    tsig = _read_tsig(buf, rr.rname, rdata_at, end - rdata_at)
                    tsig_offset = start
                    continue
                if rr.rtype == TYPE_OPT:
                    if index != 2 or opt is not None:
                        raise DecodeError(
                            "an OPT RR outside the additional section or twice (RFC 6891 6.1.1)",
                            offset=start,
                            path=where,
                        )
                    opt = rr
                    continue
                sections[index].append(rr)
        if buf.offset != len(raw):
            raise DecodeError(
                f"{len(raw) - buf.offset} trailing bytes after the last record", offset=buf.offset, path="message"
            )
    except DecodeError:
        raise
    except Exception as exc:  # dnslib raises DNSError, BufferError, BimapError, DNSLabelError, struct.error...
        raise DecodeError(f"malformed DNS message: {exc}", offset=buf.offset, path=where) from exc
    return DnsMessage(
        header=header,
        questions=tuple(questions),
        answers=tuple(sections[0]),
        authority=tuple(sections[1]),
        additional=tuple(sections[2]),
        opt=opt,
        tsig=tsig,
        tsig_offset=tsig_offset,
        raw=raw,
    )


def encode_tsig_rr(record: TsigRecord) -> bytes:
    """A TSIG RR in wire form: owner and algorithm uncompressed, class ANY, TTL 0 (RFC 8945 4.2)."""
    rdata = (
        canonical_name_wire(record.algorithm)
        + struct.pack(
            "!HIHH", (record.time_signed >> 32) & 0xFFFF, record.time_signed & 0xFFFFFFFF, record.fudge, len(record.mac)
        )
        + record.mac
        + struct.pack("!HHH", record.original_id, record.error, len(record.other))
        + record.other
    )
    return canonical_name_wire(record.key_name) + struct.pack("!HHIH", TYPE_TSIG, CLASS_ANY, 0, len(rdata)) + rdata
