"""emu-side recording of a conformance run for ``--capture`` (no root, no sniffing).

Every byte the suite writes and reads is noted per connection, and the file is built afterwards
with :class:`emu.pcap.writer.TcpFlow` (TCP) or Scapy UDP frames (DNS over UDP), connection after
connection. The frames are therefore what emu sent and received, in order within a connection,
with synthetic sequence numbers and timestamps; they are not a sniffer's view of the interface.
Each connection's frame range is known after writing, so failed cases can name their frames.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _v4(addr: tuple[str, int]) -> tuple[str, int]:
    """TcpFlow writes IPv4: an IPv6 peer is shown as a 192.0.2.x documentation address."""
    try:
        if ipaddress.ip_address(addr[0]).version == 4:
            return addr
    except ValueError:
        pass
    return ("192.0.2.1", addr[1])


@dataclass(slots=True)
class _Conn:
    kind: str  # "tcp" or "udp"
    client: tuple[str, int]
    server: tuple[str, int]
    events: list[tuple[bool, bytes]] = field(default_factory=list)
    closed_by_client: bool | None = None


class Recorder:
    """Collects connections; :meth:`write` turns them into a pcap and returns frame ranges."""

    def __init__(self) -> None:
        self._conns: list[_Conn] = []

    def open(self, client: tuple[str, int], server: tuple[str, int], kind: str = "tcp") -> int:
        self._conns.append(_Conn(kind, _v4(client), _v4(server)))
        return len(self._conns)

    def note(self, conn: int, from_client: bool, data: bytes) -> None:
        if data:
            self._conns[conn - 1].events.append((from_client, bytes(data)))

    def closed(self, conn: int, by_client: bool) -> None:
        c = self._conns[conn - 1]
        if c.closed_by_client is None:
            c.closed_by_client = by_client

    def write(self, path: str | Path) -> dict[int, tuple[int, int]]:
        """Write the pcap; return {connection: (first frame, last frame)}, frames numbered from 1."""
        from emu.pcap.writer import TcpFlow, write_pcap

        frames: list[Any] = []
        ranges: dict[int, tuple[int, int]] = {}
        start = 1_764_000_000.0
        for number, conn in enumerate(self._conns, 1):
            first = len(frames) + 1
            if conn.kind == "udp":
                frames.extend(self._udp(conn, start))
            else:
                flow = TcpFlow(conn.client, conn.server, start=start).handshake()
                for from_client, data in conn.events:
                    flow.send(from_client, data)
                flow.close(client_first=conn.closed_by_client is not False)
                frames.extend(flow.frames)
            start = float(frames[-1].time) + 0.01 if len(frames) >= first else start
            ranges[number] = (first, len(frames))
        write_pcap(path, frames)
        return ranges

    @staticmethod
    def _udp(conn: _Conn, start: float) -> list[Any]:
        from scapy.layers.inet import IP, UDP
        from scapy.layers.l2 import Ether

        out = []
        for i, (from_client, data) in enumerate(conn.events):
            src, dst = (conn.client, conn.server) if from_client else (conn.server, conn.client)
            pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src[0], dst=dst[0])
            pkt = pkt / UDP(sport=src[1], dport=dst[1]) / data
            frame = pkt.__class__(bytes(pkt))
            frame.time = round(start + i * 0.0005, 6)
            out.append(frame)
        return out


def frame_text(conns: tuple[int, ...], ranges: dict[int, tuple[int, int]]) -> str:
    """``"12-19, 20-27"`` for the given connections."""
    parts = []
    for c in conns:
        if c in ranges and ranges[c][1] >= ranges[c][0]:
            a, b = ranges[c]
            parts.append(f"{a}-{b}" if b > a else str(a))
    return ", ".join(parts)
