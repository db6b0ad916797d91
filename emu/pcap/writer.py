"""Write pcaps deterministically from application bytes (no sniffing, no root).

:class:`TcpFlow` turns "the client sent these bytes, then the server sent those" into Ethernet/IP/TCP
frames with a three-way handshake, consistent sequence and acknowledgement numbers, segments of at
most one MSS, valid IP and TCP checksums (Scapy computes them at build) and timestamps from a fixed
start, so the same exchange always gives the same file. ``scripts/make-pcaps`` uses it for
``pcaps/``; replay tests use it for captures they craft.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MSS", "TcpFlow", "write_pcap"]

#: Largest TCP payload per frame (Ethernet MTU 1500 minus 40 bytes of IPv4 and TCP headers).
MSS = 1460
_CLIENT_MAC = "02:00:00:00:00:01"
_SERVER_MAC = "02:00:00:00:00:02"


@dataclass
class TcpFlow:
    """One TCP connection, built frame by frame.

    Args:
        client, server: (IPv4 address, port) of each end.
        start: capture time of the SYN (Unix seconds).
        step: seconds between consecutive frames.
        client_isn, server_isn: initial sequence numbers (fixed for reproducible files).
    """

    client: tuple[str, int]
    server: tuple[str, int]
    start: float = 1_764_000_000.0
    step: float = 0.0005
    client_isn: int = 1_000_000
    server_isn: int = 2_000_000
    frames: list[Any] = field(default_factory=list)
    _cseq: int = 0
    _sseq: int = 0
    _time: float = 0.0

    def __post_init__(self) -> None:
        self._cseq, self._sseq = self.client_isn, self.server_isn
        self._time = self.start

    def _frame(
        self, from_client: bool, flags: str, payload: bytes = b"", seq: int | None = None, ack: int | None = None
    ) -> None:
        from scapy.layers.inet import IP, TCP
        from scapy.layers.l2 import Ether

        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        macs = (_CLIENT_MAC, _SERVER_MAC) if from_client else (_SERVER_MAC, _CLIENT_MAC)
        tcp = TCP(
            sport=src[1],
            dport=dst[1],
            flags=flags,
            window=65535,
            seq=(self._cseq if from_client else self._sseq) if seq is None else seq,
            ack=((self._sseq if from_client else self._cseq) if "A" in flags else 0) if ack is None else ack,
        )
        pkt = Ether(src=macs[0], dst=macs[1]) / IP(src=src[0], dst=dst[0], id=len(self.frames) + 1, flags="DF") / tcp
        if payload:
            pkt = pkt / payload
        frame = pkt.__class__(bytes(pkt))  # checksums and lengths filled in once, here
        frame.time = round(self._time, 6)
        self._time += self.step
        self.frames.append(frame)

    def handshake(self) -> TcpFlow:
        """SYN, SYN/ACK, ACK."""
        self._frame(True, "S", ack=0)
        self._cseq += 1
        self._frame(False, "SA")
        self._sseq += 1
        self._frame(True, "A")
        return self

    def refused(self) -> TcpFlow:
        """SYN answered by RST/ACK: nobody listens on the server port."""
        self._frame(True, "S", ack=0)
        self._cseq += 1
        self._frame(False, "RA", seq=0, ack=self._cseq)
        return self

    def send(self, from_client: bool, data: bytes) -> TcpFlow:
        """``data`` as PSH/ACK segments of at most :data:`MSS` bytes, then the peer's ACK."""
        for off in range(0, len(data), MSS):
            chunk = data[off : off + MSS]
            self._frame(from_client, "PA", chunk)
            if from_client:
                self._cseq += len(chunk)
            else:
                self._sseq += len(chunk)
        self._frame(not from_client, "A")
        return self

    def close(self, client_first: bool = True) -> TcpFlow:
        """FIN/ACK from each side and the last ACK."""
        first = client_first
        self._frame(first, "FA")
        self._bump(first)
        self._frame(not first, "FA")
        self._bump(not first)
        self._frame(first, "A")
        return self

    def _bump(self, from_client: bool) -> None:
        if from_client:
            self._cseq += 1
        else:
            self._sseq += 1

    @property
    def end_time(self) -> float:
        return self._time


def write_pcap(path: str | Path, frames: list[Any]) -> Path:
    """Write ``frames`` (in the given order) as a classic pcap, Ethernet link type."""
    from scapy.utils import PcapWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with PcapWriter(str(path), linktype=1, sync=False) as writer:
        for frame in frames:
            writer.write(frame)
    return path
