"""A lean reader of pcap and pcapng files down to TCP segments: the one home of link, IP and TCP headers.

Scapy dissects every layer of every frame into objects, which costs tens of microseconds a packet;
decoding a busy capture only needs the addresses, ports, sequence number, flags and payload of each
TCP segment. This module reads the capture file format (pcap in either byte order and timestamp
precision, pcapng with its section, interface and packet blocks) and the fixed headers of the link
layers emu meets (Ethernet with VLAN tags, Linux cooked v1/v2, BSD loopback, raw IP) and of IPv4, IPv6
(extension headers skipped) and TCP with :mod:`struct`. It is a reader of file formats, not a frame
definition of a protocol emu speaks (those are in :mod:`emu.wire`).

Nothing here raises on odd traffic: a frame that is not TCP over IP is counted in :class:`ReadStats`,
a record cut short at the end of the file ends the reading with :attr:`ReadStats.damaged` set. Only a
file that is not a capture at all raises (:class:`~emu.errors.UsageError`).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from emu.errors import UsageError

__all__ = [
    "TCP_ACK",
    "TCP_FIN",
    "TCP_PSH",
    "TCP_RST",
    "TCP_SYN",
    "PcapFileWriter",
    "ReadStats",
    "TcpPacket",
    "read_tcp_packets",
    "tcp_frame",
]

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
# link types (tcpdump.org LINKTYPE_*)
_ETHERNET, _NULL, _RAW, _RAW_OLD1, _RAW_OLD2, _LOOP, _SLL, _IPV4, _IPV6, _SLL2 = (
    1,
    0,
    101,
    12,
    14,
    108,
    113,
    228,
    229,
    276,
)
_IPV6_EXTENSIONS = frozenset((0, 43, 60, 135, 139, 140))
_IPV6_FRAGMENT = 44


class TcpPacket(NamedTuple):
    """One TCP segment of a capture: who sent it to whom, its sequence number, flags and payload.

    A named tuple rather than a dataclass: a busy capture makes hundreds of thousands of them.
    """

    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    seq: int
    flags: int
    payload: bytes


@dataclass(slots=True)
class ReadStats:
    """What the reader saw besides TCP segments (for the decode summary: nothing goes uncounted)."""

    packets: int = 0
    tcp_packets: int = 0
    other_packets: int = 0
    #: IP fragments and frames whose headers are cut short (not reassembled: KMS never fragments at IP)
    unparsed_packets: int = 0
    damaged: str = ""


_addr_cache: dict[bytes, str] = {}


def _addr(raw: bytes) -> str:
    text = _addr_cache.get(raw)
    if text is None:
        if len(_addr_cache) > 65536:
            _addr_cache.clear()
        text = str(ipaddress.ip_address(raw))
        _addr_cache[raw] = text
    return text


def _ip_offset(linktype: int, frame: bytes) -> int | None:
    """Where the IP header starts in a frame of this link type, ``None`` when it carries no IP."""
    if linktype == _ETHERNET:
        off, etype = 14, frame[12] << 8 | frame[13] if len(frame) >= 14 else 0
        while etype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            etype = frame[off + 2] << 8 | frame[off + 3]
            off += 4
        return off if etype in (0x0800, 0x86DD) else None
    if linktype in (_RAW, _RAW_OLD1, _RAW_OLD2, _IPV4, _IPV6):
        return 0
    if linktype in (_NULL, _LOOP):
        return 4
    if linktype == _SLL:
        return 16 if len(frame) >= 16 and frame[14:16] in (b"\x08\x00", b"\x86\xdd") else None
    if linktype == _SLL2:
        return 20 if len(frame) >= 20 and frame[0:2] in (b"\x08\x00", b"\x86\xdd") else None
    return None


def _tcp(frame: bytes, off: int, when: float, stats: ReadStats) -> TcpPacket | None:
    """The TCP segment of the IP packet at ``off``, or ``None`` (counted) when it is something else."""
    if len(frame) < off + 20:
        stats.unparsed_packets += 1
        return None
    version = frame[off] >> 4
    if version == 4:
        ihl = (frame[off] & 0x0F) * 4
        total = frame[off + 2] << 8 | frame[off + 3]
        if frame[off + 9] != 6:
            stats.other_packets += 1
            return None
        if (frame[off + 6] & 0x3F) or frame[off + 7]:  # a fragment (MF set or a fragment offset)
            stats.unparsed_packets += 1
            return None
        src, dst = _addr(frame[off + 12 : off + 16]), _addr(frame[off + 16 : off + 20])
        end = off + total if total >= ihl else len(frame)  # TSO frames may say 0
        off += ihl
    elif version == 6:
        if len(frame) < off + 40:
            stats.unparsed_packets += 1
            return None
        nxt = frame[off + 6]
        end = off + 40 + (frame[off + 4] << 8 | frame[off + 5])
        src, dst = _addr(frame[off + 8 : off + 24]), _addr(frame[off + 24 : off + 40])
        off += 40
        while nxt in _IPV6_EXTENSIONS and len(frame) >= off + 2:
            nxt, off = frame[off], off + (frame[off + 1] + 1) * 8
        if nxt != 6:
            if nxt == _IPV6_FRAGMENT:
                stats.unparsed_packets += 1
            else:
                stats.other_packets += 1
            return None
    else:
        stats.other_packets += 1
        return None
    if len(frame) < off + 20:
        stats.unparsed_packets += 1
        return None
    sport, dport, seq, _ack, offflags = _TCP_HEAD.unpack_from(frame, off)
    data_off = (offflags >> 12) * 4
    stats.tcp_packets += 1
    return TcpPacket(
        when, (src, sport), (dst, dport), seq, offflags & 0x3F, frame[off + data_off : min(end, len(frame))]
    )


_TCP_HEAD = struct.Struct("!HHIIH")


def _pcap_frames(fh: BinaryIO, head: bytes, stats: ReadStats) -> Iterator[tuple[int, float, bytes]]:
    endian, unit = _PCAP_MAGICS[head[:4]]
    rest = fh.read(20)
    if len(rest) < 20:
        raise UsageError("pcap file header is cut short")
    linktype = struct.unpack(endian + "I", rest[16:20])[0] & 0x0FFFFFFF
    rec = struct.Struct(endian + "IIII")
    read = fh.read
    while True:
        hdr = read(16)
        if not hdr:
            return
        if len(hdr) < 16:
            stats.damaged = "capture file ends with a damaged record header"
            return
        sec, frac, incl, _orig = rec.unpack(hdr)
        frame = read(incl)
        if len(frame) < incl:  # what was written of the last frame still counts
            stats.damaged = "capture file ends with a damaged record (frame cut short)"
            if len(frame) >= 14:
                yield linktype, sec + frac * unit, frame
            return
        yield linktype, sec + frac * unit, frame


def _pcapng_frames(fh: BinaryIO, head: bytes, stats: ReadStats) -> Iterator[tuple[int, float, bytes]]:
    endian = "<"
    interfaces: list[tuple[int, float]] = []
    block = head
    while True:
        if len(block) < 8:
            if block:
                stats.damaged = "capture file ends with a damaged block header"
            return
        btype = block[:4]
        if btype == _PCAPNG_SHB:
            bom = fh.read(4)
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            length = struct.unpack(endian + "I", block[4:8])[0]
            body = bom + fh.read(length - 12)
            interfaces = []
        else:
            length = struct.unpack(endian + "I", block[4:8])[0]
            body = fh.read(length - 8) if length >= 12 else b""
        if length < 12 or len(body) < length - 8:
            stats.damaged = "capture file ends with a damaged block"
            return
        code = struct.unpack(endian + "I", btype)[0]
        if code == 1:  # interface description: link type and timestamp resolution option
            linktype = struct.unpack_from(endian + "H", body, 0)[0]
            unit = 1e-6
            pos = 8
            while pos + 4 <= len(body) - 4:
                opt, olen = struct.unpack_from(endian + "HH", body, pos)
                if opt == 0:
                    break
                if opt == 9 and olen >= 1:
                    res = body[pos + 4]
                    unit = 2.0 ** -(res & 0x7F) if res & 0x80 else 10.0**-res
                pos += 4 + (olen + 3) // 4 * 4
            interfaces.append((linktype, unit))
        elif code == 6:  # enhanced packet
            iface, hi, lo, incl = struct.unpack_from(endian + "IIII", body, 0)
            if iface < len(interfaces):
                linktype, unit = interfaces[iface]
                yield linktype, ((hi << 32) | lo) * unit, body[20 : 20 + incl]
        elif code == 3 and interfaces:  # simple packet
            incl = struct.unpack_from(endian + "I", body, 0)[0]
            yield interfaces[0][0], 0.0, body[4 : 4 + incl]
        block = fh.read(8)


def read_tcp_packets(path: str | Path, stats: ReadStats | None = None) -> Iterator[TcpPacket]:
    """Every TCP segment of a pcap or pcapng file, in file order, read as a stream.

    ``stats`` (when given) is filled while iterating: packets, TCP packets, others, damage.

    Raises:
        UsageError: the file does not exist or is neither pcap nor pcapng.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    try:
        fh = path.open("rb", buffering=1 << 20)
    except OSError as exc:
        raise UsageError(f"{path}: no such capture file ({exc.strerror or exc})") from exc
    with fh:
        head = fh.read(4)
        if head in _PCAP_MAGICS:
            frames = _pcap_frames(fh, head, stats)
        elif head == _PCAPNG_SHB:
            frames = _pcapng_frames(fh, head + fh.read(4), stats)
        else:
            raise UsageError(f"{path}: not a pcap or pcapng file (magic {head.hex() or 'missing'})")
        for linktype, when, frame in frames:
            stats.packets += 1
            off = _ip_offset(linktype, frame)
            if off is None:
                stats.other_packets += 1
                continue
            pkt = _tcp(frame, off, when, stats)
            if pkt is not None:
                yield pkt


# --- writing: the same headers, for captures emu generates (benchmarks, tests) ------------------

_ETH_IPV4 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
_IPV4_HEAD = struct.Struct("!BBHHHBBH4s4s")
_TCP_FULL = struct.Struct("!HHIIBBHHH")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_frame(
    src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int, payload: bytes = b""
) -> bytes:
    """An Ethernet/IPv4/TCP frame with valid checksums (fixed MACs, window 65535, no options)."""
    sip, dip = ipaddress.IPv4Address(src[0]).packed, ipaddress.IPv4Address(dst[0]).packed
    tcp = _TCP_FULL.pack(src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0) + payload
    pseudo = sip + dip + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    head = _IPV4_HEAD.pack(0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, sip, dip)
    head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
    return _ETH_IPV4 + head + tcp


class PcapFileWriter:
    """Write frames to a classic pcap file (microsecond timestamps, Ethernet), as a stream."""

    def __init__(self, path: str | Path) -> None:
        self._fh = Path(path).open("wb", buffering=1 << 20)  # noqa: SIM115 - closed by close()/__exit__
        self._fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, _ETHERNET))
        self.frames = 0

    def write(self, when: float, frame: bytes) -> None:
        sec = int(when)
        usec = round((when - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self._fh.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
        self.frames += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PcapFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
