"""Generate a busy capture fast: many short TCP connections carrying the same PDUs, client ports reused.

This is the shape of a loaded KMS host's traffic (a new connection per exchange, several at a time,
ephemeral ports coming round again) that ``scripts/bench decode`` and the conversation-tracking
tests need in large numbers. Frames are built with :mod:`emu.pcap.frames` (struct, valid checksums)
rather than Scapy, so 20,000 connections take a few seconds. The PDUs are whatever bytes the caller
gives (an exchange cut from a capture emu made), so the decode of every connection verifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emu.pcap.frames import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, PcapFileWriter, tcp_frame

__all__ = ["BusyShape", "connection_frames", "write_busy_capture"]


@dataclass(frozen=True, slots=True)
class BusyShape:
    """How the busy capture looks.

    Attributes:
        connections: TCP connections in the file.
        concurrency: connections open at a time (their frames interleave).
        client_ports: how many ephemeral ports the clients cycle through (fewer than
            ``connections`` makes reuse certain).
        clients: distinct client addresses (10.9.x.y).
        server: the KMS host's address and port.
        start, step: capture time of the first frame and seconds between frames.
    """

    connections: int = 20_000
    concurrency: int = 8
    client_ports: int = 2_000
    clients: int = 50
    server: tuple[str, int] = ("10.9.0.1", 1688)
    start: float = 1_764_000_000.0
    step: float = 0.00004


def connection_frames(
    client: tuple[str, int],
    server: tuple[str, int],
    pdus: Sequence[tuple[str, bytes]],
    client_isn: int,
    server_isn: int,
    *,
    close: str = "fin",
) -> list[tuple[bool, bytes]]:
    """The frames of one connection as (from_client, frame): handshake, the PDUs (each acknowledged),
    then ``close``: ``fin`` (client first), ``rst`` (client resets) or ``none`` (left open)."""
    c, s = client_isn + 1, server_isn + 1
    out = [
        (True, tcp_frame(client, server, client_isn, 0, TCP_SYN)),
        (False, tcp_frame(server, client, server_isn, c, TCP_SYN | TCP_ACK)),
        (True, tcp_frame(client, server, c, s, TCP_ACK)),
    ]
    for side, data in pdus:
        if side == "C":
            out.append((True, tcp_frame(client, server, c, s, TCP_PSH | TCP_ACK, data)))
            c += len(data)
            out.append((False, tcp_frame(server, client, s, c, TCP_ACK)))
        else:
            out.append((False, tcp_frame(server, client, s, c, TCP_PSH | TCP_ACK, data)))
            s += len(data)
            out.append((True, tcp_frame(client, server, c, s, TCP_ACK)))
    if close == "fin":
        out.append((True, tcp_frame(client, server, c, s, TCP_FIN | TCP_ACK)))
        out.append((False, tcp_frame(server, client, s, c + 1, TCP_FIN | TCP_ACK)))
        out.append((True, tcp_frame(client, server, c + 1, s + 1, TCP_ACK)))
    elif close == "rst":
        out.append((True, tcp_frame(client, server, c, s, TCP_RST | TCP_ACK)))
    return out


def write_busy_capture(path: str | Path, pdus: Sequence[tuple[str, bytes]], shape: BusyShape = BusyShape()) -> int:
    """Write the capture; returns the number of frames. Connection ``i`` uses client port
    ``40000 + i % client_ports`` and ISNs derived from ``i`` (different on every reuse)."""
    frames = 0
    when = shape.start
    with PcapFileWriter(path) as writer:
        for first in range(0, shape.connections, shape.concurrency):
            batch = []
            for i in range(first, min(first + shape.concurrency, shape.connections)):
                client = (
                    f"10.9.{1 + (i % shape.clients) // 250}.{1 + (i % shape.clients) % 250}",
                    40000 + i % shape.client_ports,
                )
                isn = (i * 2_654_435_761) & 0xFFFFFFFF
                batch.append(connection_frames(client, shape.server, pdus, isn, isn ^ 0x5A5A5A5A))
            # interleave the batch's connections frame by frame, as concurrent clients do
            for k in range(max(len(b) for b in batch)):
                for conn in batch:
                    if k < len(conn):
                        writer.write(when, conn[k][1])
                        when += shape.step
                        frames += 1
    return frames
