"""DNS messages in captures: find them, summarise them, compare two answers.

Used by ``emu capture --dns`` (a live line per message), by the ``pcaps/`` sidecars (a record per
message: query or update, rcode, records) and by ``emu replay --dns`` (captured answer versus the
target's). Messages are decoded with :func:`emu.wire.dns.decode_message`, which reads every RFC 2136
form and TSIG; UDP datagrams are taken one by one, DNS over TCP is cut from the reassembled
streams by its two-byte length prefix (RFC 1035 4.2.2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnslib import CLASS, QTYPE, RR

from emu.errors import DecodeError, UsageError
from emu.wire.dns import DnsMessage, Opcode, Rcode, decode_message

__all__ = [
    "DNS_PORT",
    "FLAG_NAMES",
    "CapturedDns",
    "compare_answers",
    "dns_records",
    "read_dns_messages",
    "rr_text",
    "summarise",
    "summary_line",
]

log = logging.getLogger(__name__)

DNS_PORT = 53
#: Header flag bits by name (RFC 1035 4.1.1, RFC 4035 3.2).
FLAG_NAMES = (
    ("qr", 0x8000),
    ("aa", 0x0400),
    ("tc", 0x0200),
    ("rd", 0x0100),
    ("ra", 0x0080),
    ("ad", 0x0020),
    ("cd", 0x0010),
)


@dataclass(frozen=True, slots=True)
class CapturedDns:
    """One DNS message of a capture.

    Attributes:
        time: capture time (Unix seconds).
        src, dst: (address, port) of sender and receiver.
        transport: ``"udp"`` or ``"tcp"``.
        raw: the message bytes (without the TCP length prefix).
        message: the decoded message, ``None`` when it did not decode (``error`` says why).
    """

    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    transport: str
    raw: bytes
    message: DnsMessage | None
    error: str = ""

    @property
    def is_response(self) -> bool:
        return len(self.raw) >= 3 and bool(self.raw[2] & 0x80)


def _decode(raw: bytes) -> tuple[DnsMessage | None, str]:
    try:
        return decode_message(raw), ""
    except DecodeError as exc:
        return None, str(exc)


def read_dns_messages(path: str | Path, port: int = DNS_PORT) -> list[CapturedDns]:
    """Every DNS message to or from ``port`` in a capture, UDP and TCP, in capture order.

    Raises:
        UsageError: the file is not a readable capture.
    """
    from scapy.error import Scapy_Exception
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader

    from emu.pcap.reader import read_conversations

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such capture file")
    out: list[CapturedDns] = []
    try:
        reader = PcapReader(str(path))
    except (Scapy_Exception, OSError, EOFError, ValueError) as exc:
        raise UsageError(f"{path}: not a pcap or pcapng file Scapy can read ({exc})") from exc
    with reader:
        for pkt in reader:
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            udp = pkt.getlayer(UDP)
            if ip is None or udp is None or port not in (udp.sport, udp.dport):
                continue
            raw = bytes(udp.payload)
            message, error = _decode(raw)
            out.append(
                CapturedDns(
                    float(pkt.time),
                    (str(ip.src), int(udp.sport)),
                    (str(ip.dst), int(udp.dport)),
                    "udp",
                    raw,
                    message,
                    error,
                )
            )
    for conv in read_conversations(path):
        if port not in (conv.client.src[1], conv.client.dst[1]):
            continue
        for stream in (conv.client, conv.server):
            off = 0
            while off + 2 <= len(stream.data):
                size = int.from_bytes(stream.data[off : off + 2], "big")
                raw = stream.data[off + 2 : off + 2 + size]
                if len(raw) < size:
                    break
                message, error = _decode(raw)
                when = stream.time_at(off) or conv.start
                out.append(CapturedDns(when, stream.src, stream.dst, "tcp", raw, message, error))
                off += 2 + size
    out.sort(key=lambda m: m.time)
    return out


def rr_text(rr: RR, *, ttl: bool = True) -> str:
    """``owner [TTL] CLASS TYPE RDATA`` of one record (classes NONE and ANY spelled out)."""
    klass = {254: "NONE", 255: "ANY"}.get(rr.rclass) or CLASS.get(rr.rclass, f"CLASS{rr.rclass}")
    rtype = QTYPE.get(rr.rtype, f"TYPE{rr.rtype}")
    rdata = str(rr.rdata) if rr.rdata is not None else ""
    parts = [str(rr.rname)] + ([str(rr.ttl)] if ttl else []) + [str(klass), str(rtype), rdata]
    return " ".join(p for p in parts if p != "")


def _name(enum: type, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


def summarise(message: DnsMessage) -> dict[str, Any]:
    """A JSON-ready summary: kind (query, update, response, update-response), id, rcode, flags,
    question or zone, and every record as text (TSIG as its key name and error)."""
    flags = message.header.flags
    opcode = (flags >> 11) & 0xF
    rcode = flags & 0xF
    update = opcode == Opcode.UPDATE
    kind = "update" if update else "query" if opcode == Opcode.QUERY else _name(Opcode, opcode).lower()
    if flags & 0x8000:
        kind = "response" if kind == "query" else f"{kind}-response"
    sections = (
        ("zone", "prerequisites", "updates", "additional")
        if update
        else ("question", "answers", "authority", "additional")
    )
    out: dict[str, Any] = {
        "kind": kind,
        "id": message.header.id,
        "opcode": _name(Opcode, opcode),
        "rcode": _name(Rcode, rcode),
        "flags": [name for name, bit in FLAG_NAMES if flags & bit],
        sections[0]: [f"{q.qname} {QTYPE.get(q.qtype, q.qtype)}" for q in message.questions],
        sections[1]: [rr_text(rr) for rr in message.answers],
        sections[2]: [rr_text(rr) for rr in message.authority],
        sections[3]: [rr_text(rr) for rr in message.additional],
    }
    if message.tsig is not None:
        out["tsig"] = {
            "key": message.tsig.key_name,
            "algorithm": message.tsig.algorithm,
            "error": _name(Rcode, message.tsig.error) if message.tsig.error else "NOERROR",
        }
    return out


def summary_line(message: DnsMessage) -> str:
    """One line for a person, e.g. ``DNS query id=7 _vlmcs._tcp.kms.test. SRV`` or
    ``DNS response id=7 NOERROR aa 1 answer(s): ...``."""
    s = summarise(message)
    head = f"DNS {s['kind']} id={s['id']}"
    if s["kind"] in ("query", "update"):
        first = s.get("question") or s.get("zone") or []
        body = " ".join(first)
        if s["kind"] == "update":
            body += f" ({len(s['prerequisites'])} prerequisite(s), {len(s['updates'])} change(s))"
    else:
        records = s.get("answers", s.get("updates", []))
        body = f"{s['rcode']} {' '.join(s['flags'])} {len(records)} answer(s)"
        if records:
            body += ": " + "; ".join(records[:3]) + (" ..." if len(records) > 3 else "")
    if "tsig" in s:
        body += f" [TSIG {s['tsig']['key']} {s['tsig']['error']}]"
    return f"{head} {body}"


def _comparable(message: DnsMessage) -> dict[str, Any]:
    flags = message.header.flags
    return {
        "rcode": _name(Rcode, flags & 0xF),
        "opcode": _name(Opcode, (flags >> 11) & 0xF),
        "flags": [name for name, bit in FLAG_NAMES if flags & bit],
        "question": sorted(f"{q.qname} {q.qclass} {q.qtype}".lower() for q in message.questions),
        "answer": sorted(rr_text(rr, ttl=False).lower() for rr in message.answers),
        "authority": sorted(rr_text(rr, ttl=False).lower() for rr in message.authority),
        "additional": sorted(rr_text(rr, ttl=False).lower() for rr in message.additional),
        "tsig": None if message.tsig is None else (message.tsig.key_name.lower(), message.tsig.error),
    }


def compare_answers(want: DnsMessage, got: DnsMessage) -> list[str]:
    """The differences between a captured answer and a new one, as ``field: got instead of want``.

    Ignored: the message ID, TTLs (a countdown in caches), the order of records within a section,
    and the TSIG MAC and time (only its key and error are compared).
    """
    w, g = _comparable(want), _comparable(got)
    return [f"{key}: {g[key]!r} instead of {w[key]!r}" for key in w if w[key] != g[key]]


def _endpoint(addr: tuple[str, int]) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def dns_records(path: str | Path, port: int = DNS_PORT) -> list[dict[str, Any]]:
    """JSON-ready records of every DNS message in a capture (the ``dns`` part of a pcaps/ sidecar)."""
    import datetime as _dt

    out = []
    for m in read_dns_messages(path, port):
        when = _dt.datetime.fromtimestamp(m.time, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record: dict[str, Any] = {
            "record": "dns",
            "time": when,
            "src": _endpoint(m.src),
            "dst": _endpoint(m.dst),
            "transport": m.transport,
            "size": len(m.raw),
        }
        record.update(summarise(m.message) if m.message is not None else {"error": m.error})
        out.append(record)
    return out
