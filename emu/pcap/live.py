"""``emu capture``: record KMS (and DNS) traffic on an interface into a pcap, one live line per exchange.

Frames are written as they arrive (a pcap that is valid even after Ctrl-C) by Scapy's libpcap
sniffer. Each completed KMS exchange gets a summary line decoded through emu.wire (the same decoder
as ``emu decode``): client, host, version, product, CMID, then count and activation, the HRESULT or
the fault; with ``dns`` each DNS message gets one too, over UDP and over TCP (each direction of a
TCP connection reassembled, then split at the 2-byte length prefix of every message, RFC 1035
4.2.2: a line as soon as a whole message is in).

Pitfalls handled (docs/howto-run-a-lab.md):

* loopback: libpcap is used (Scapy's own ``lo`` socket sees every frame twice) and the fix-ups of
  :mod:`emu.pcap.fixup` apply (duplicates dropped, checksums filled in) on loopback only; frames
  of any other interface are written exactly as captured;
* veth checksum offload: frames are written as seen, so the interface must compute its checksums;
  namespaces made by :mod:`emu.net.netns` have offloads off;
* namespaces: with ``netns`` the sniffer's socket is opened by a thread that entered the namespace
  (its capture thread inherits it), so ``-i veth0`` names the namespace's interface.

Sniffing needs root (CAP_NET_RAW); without it :class:`ScenarioError` says so. Scapy is imported
lazily.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emu.errors import ScenarioError, UsageError
from emu.pcap.dns_decode import DNS_PORT, summary_line
from emu.pcap.fixup import FrameFixup, is_loopback_interface
from emu.pcap.frames import TcpPacket
from emu.pcap.kms_decode import DecodedPdu, decode_conversation
from emu.pcap.reader import Conversation, ConversationTracker

__all__ = [
    "MAX_CONNECTIONS_TRACKED",
    "START_TIMEOUT",
    "CaptureOptions",
    "CaptureResult",
    "ExchangeSummaries",
    "bpf_filter",
    "capture",
    "exchange_line",
]

#: Seconds to wait for the sniffer to be listening.
START_TIMEOUT = 5.0
#: Connections whose bytes are kept for summaries at once (older ones are forgotten).
MAX_CONNECTIONS_TRACKED = 4096
_POLL = 0.05
#: At the end, the capture goes on until no frame has come for DRAIN_QUIET s (at most DRAIN_LIMIT s).
DRAIN_QUIET = 0.3
DRAIN_LIMIT = 5.0


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """What to capture.

    Attributes:
        interface: interface name (in ``netns`` when given).
        output: pcap file to write.
        port: KMS TCP port.
        dns: also capture DNS (UDP and TCP ``dns_port``).
        count: stop after this many frames (None: no limit).
        duration: stop after this many seconds (None: no limit).
        netns: network namespace to sniff in.
    """

    interface: str
    output: Path
    port: int = 1688
    dns: bool = False
    dns_port: int = DNS_PORT
    count: int | None = None
    duration: float | None = None
    netns: str | None = None

    def __post_init__(self) -> None:
        if not self.interface:
            raise UsageError("give the interface to capture on (-i IFACE)")
        if not 0 < self.port < 65536 or not 0 < self.dns_port < 65536:
            raise UsageError("ports are 1..65535")
        if self.count is not None and self.count < 1:
            raise UsageError(f"--count must be at least 1, not {self.count}")
        if self.duration is not None and self.duration <= 0:
            raise UsageError(f"--duration must be positive seconds, not {self.duration}")


@dataclass(slots=True)
class CaptureResult:
    """What a capture wrote."""

    output: Path
    frames: int = 0
    duplicates_dropped: int = 0
    exchanges: int = 0
    lines: list[str] = field(default_factory=list)


def bpf_filter(options: CaptureOptions) -> str:
    """The libpcap filter: the KMS port over TCP, and DNS over UDP/TCP when asked."""
    parts = [f"(tcp port {options.port})"]
    if options.dns:
        parts.append(f"(port {options.dns_port})")
    return " or ".join(parts)


def _clock(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%H:%M:%S.%f")[:-3]


def exchange_line(request: DecodedPdu | None, answer: DecodedPdu) -> str:
    """One line for a KMS request and its answer (response or fault)."""
    who = f"{answer.dst} -> {answer.src}"
    head = f"{_clock(answer.time or 0.0)} {who} KMS"
    if request is not None and request.request is not None:
        r = request.request
        head += f" v{r.version} {r.product or r.kms_id or '?'} cmid={r.cmid} ws={r.workstation}"
    if answer.ptype == "fault":
        return f"{head} -> fault 0x{answer.fault_status or 0:08X} ({answer.fault_name})"
    resp = answer.response
    if resp is None:
        return f"{head} -> response not decoded ({answer.error})"
    if resp.hresult:
        return f"{head} -> HRESULT 0x{resp.hresult:08X} ({resp.hresult_name})"
    required = request.request.required_client_count if request is not None and request.request else None
    verdict = "activated" if required is not None and (resp.count or 0) >= required else "not activated"
    checks = "checks ok" if resp.verified else f"failed checks: {', '.join(resp.failed_checks) or resp.note}"
    return f"{head} -> count {resp.count} (N={required}) {verdict}, epid {resp.epid}, {checks}"


class ExchangeSummaries:
    """Turn captured frames into summary lines, live: KMS per exchange, DNS per datagram or per
    length-prefixed message of a TCP stream.

    TCP is tracked by :class:`emu.pcap.reader.ConversationTracker`, the one conversation tracking of
    emu (the same as ``emu decode``): a client port reused for a new connection is a new
    conversation here too.
    """

    def __init__(self, kms_port: int, dns_port: int | None) -> None:
        self.kms_port = kms_port
        self.dns_port = dns_port
        self._tracker = ConversationTracker()
        #: per conversation index: KMS answers reported so far
        self._reported: dict[int, int] = {}
        #: DNS over TCP: per (conversation index, sender), the stream offset up to which messages were reported.
        self._dns_done: dict[tuple[int, tuple[str, int]], int] = {}
        self.exchanges = 0

    def _conversation(self, pkt: TcpPacket) -> Conversation | None:
        """Track ``pkt``; the conversation it belongs to, reassembled so far (or as it ended)."""
        if self._tracker.open_count >= MAX_CONNECTIONS_TRACKED:
            self._tracker.finish()  # forget connections that never closed
            self._reported.clear()
            self._dns_done.clear()
        ended = self._tracker.feed(pkt)
        ends = {pkt.src, pkt.dst}
        mine = next((c for c in ended if {c.client.src, c.client.dst} == ends and c.packets), None)
        for conv in ended:
            if conv is not mine:
                self._forget(conv.index)
        return mine if mine is not None else self._tracker.peek(pkt.src, pkt.dst)

    def _forget(self, index: int) -> None:
        self._reported.pop(index, None)
        for key in [k for k in self._dns_done if k[0] == index]:
            del self._dns_done[key]

    def _dns_over_tcp(self, pkt: TcpPacket) -> list[str]:
        """A line per DNS message this segment completed in its direction (RFC 1035 4.2.2 framing)."""
        from emu.pcap.dns_decode import _decode

        conv = self._conversation(pkt)
        if conv is None or not pkt.payload:
            return []
        stream = conv.client if conv.client.src == pkt.src else conv.server
        data = stream.data
        key = (conv.index, pkt.src)
        off = self._dns_done.get(key, 0)
        lines = []
        src, dst = pkt.src, pkt.dst
        while off + 2 <= len(data):  # each turn consumes at least the 2-byte prefix
            size = int.from_bytes(data[off : off + 2], "big")
            if off + 2 + size > len(data):
                break  # the rest of this message is still to come
            message, error = _decode(data[off + 2 : off + 2 + size])
            where = f"{_clock(pkt.time)} {src[0]}:{src[1]} -> {dst[0]}:{dst[1]}"
            lines.append(f"{where} {summary_line(message) if message else 'DNS undecodable: ' + error}")
            off += 2 + size
        self._dns_done[key] = off
        return lines

    def feed(self, frame: Any) -> list[str]:
        """Lines for what ``frame`` (a Scapy packet) completed (usually none)."""
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.layers.inet6 import IPv6

        ip = frame.getlayer(IP) or frame.getlayer(IPv6)
        if ip is None:
            return []
        udp = frame.getlayer(UDP)
        if udp is not None and self.dns_port in (udp.sport, udp.dport):
            from emu.pcap.dns_decode import _decode

            message, error = _decode(bytes(udp.payload))
            where = f"{_clock(float(frame.time))} {ip.src}:{udp.sport} -> {ip.dst}:{udp.dport}"
            return [f"{where} {summary_line(message) if message else 'DNS undecodable: ' + error}"]
        tcp = frame.getlayer(TCP)
        if tcp is None:
            return []
        pkt = TcpPacket(
            float(frame.time),
            (str(ip.src), int(tcp.sport)),
            (str(ip.dst), int(tcp.dport)),
            int(tcp.seq),
            int(tcp.flags),
            bytes(tcp.payload),
        )
        return self.feed_segment(pkt)

    def feed_segment(self, pkt: TcpPacket) -> list[str]:
        """Lines for what one TCP segment completed (the transport-neutral half of :meth:`feed`)."""
        if self.kms_port not in (pkt.src[1], pkt.dst[1]):
            if self.dns_port is not None and self.dns_port in (pkt.src[1], pkt.dst[1]):
                return self._dns_over_tcp(pkt)
            return []
        conv = self._conversation(pkt)
        if conv is None or not pkt.payload or pkt.src[1] != self.kms_port:
            return []  # only the host's bytes can complete an exchange
        pdus = decode_conversation(conv, force=True) or []
        done = self._reported.get(conv.index, 0)
        answers = [p for p in pdus if p.direction == "S->C" and p.ptype in ("response", "fault")]
        lines = []
        for answer in answers[done:]:
            request = next(
                (p for p in pdus if p.direction == "C->S" and p.ptype == "request" and p.call_id == answer.call_id),
                None,
            )
            lines.append(exchange_line(request, answer))
        if conv.end == "open":
            self._reported[conv.index] = len(answers)
        else:
            self._forget(conv.index)
        self.exchanges += len(lines)
        return lines


class _Writer:
    """Writes frames as they come, through :class:`emu.pcap.fixup.FrameFixup` (loopback fix-ups only)."""

    def __init__(self, path: Path, loopback: bool) -> None:
        from scapy.utils import PcapWriter

        self.fixup = FrameFixup(loopback)
        self.frames = 0
        try:
            self._writer = PcapWriter(str(path), sync=True)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc

    @property
    def duplicates(self) -> int:
        return self.fixup.duplicates

    def write(self, frame: Any) -> Any | None:
        fixed = self.fixup.apply(frame)
        if fixed is None:
            return None
        self._writer.write(fixed)
        self.frames += 1
        return fixed

    def close(self) -> None:
        self._writer.close()


def capture(
    options: CaptureOptions,
    on_line: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    started: threading.Event | None = None,
) -> CaptureResult:
    """Capture until ``count`` frames, ``duration`` seconds, or ``stop`` is set; return what was written.

    ``started`` is set once the sniffer listens (callers start traffic after it).

    Raises:
        ScenarioError: not root, the namespace or interface does not exist, or the sniffer did not start.
        UsageError: the output cannot be written.
    """
    if os.geteuid() != 0:
        raise ScenarioError("emu capture sniffs packets and needs root (CAP_NET_RAW): run it as root")
    from scapy.all import AsyncSniffer, conf

    conf.use_pcap = True  # libpcap drops the outgoing copy of each loopback frame (docs/howto-run-a-lab.md)
    stop = stop or threading.Event()
    listening = threading.Event()
    result = CaptureResult(options.output)
    summaries = ExchangeSummaries(options.port, options.dns_port if options.dns else None)
    writer = _Writer(options.output, is_loopback_interface(options.interface))
    lock = threading.Lock()
    seen = [0]

    def keep(frame: Any) -> None:
        with lock:
            seen[0] += 1
            written = writer.write(frame)
            if written is None:
                return
            try:
                lines = summaries.feed(written)
            except Exception as exc:  # a summary bug must not stop the recording
                lines = [f"(summary failed: {exc!r})"]
            for line in lines:
                result.lines.append(line)
                on_line(line)

    sniffer = AsyncSniffer(
        iface=options.interface,
        filter=bpf_filter(options),
        prn=keep,
        store=False,
        count=options.count or 0,
        started_callback=listening.set,
    )

    def start_sniffer() -> None:
        sniffer.start()

    try:
        if options.netns:
            from emu.net.netns import run_in

            run_in(options.netns, start_sniffer)  # the capture thread inherits the namespace
        else:
            start_sniffer()
    except (OSError, PermissionError, ValueError) as exc:
        writer.close()
        raise ScenarioError(
            f"cannot sniff on {options.interface}{' in ' + options.netns if options.netns else ''}: {exc}"
        ) from exc
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not listening.is_set():
            if time.monotonic() > deadline or not sniffer.running:
                raise ScenarioError(
                    f"the sniffer on {options.interface} did not start within {START_TIMEOUT:g} s "
                    "(does the interface exist there?)"
                )
            time.sleep(0.01)
        if started is not None:
            started.set()
        end = time.monotonic() + options.duration if options.duration else None
        while sniffer.running and not stop.is_set():
            if end is not None and time.monotonic() >= end:
                break
            time.sleep(_POLL)
        # Let the sniffer catch up before it stops: on a busy machine the frames of the last exchanges may
        # still wait in the capture buffer (stopping at once would lose them without a word).
        drain_until = time.monotonic() + DRAIN_LIMIT
        quiet_since, last = time.monotonic(), seen[0]
        while sniffer.running and time.monotonic() < drain_until:
            time.sleep(_POLL)
            if seen[0] != last:
                quiet_since, last = time.monotonic(), seen[0]
            elif time.monotonic() - quiet_since >= DRAIN_QUIET:
                break
    finally:
        if sniffer.running:
            try:
                sniffer.stop()
            except Exception:  # pragma: no cover - scapy raises if the thread ended meanwhile
                pass
        with lock:
            writer.close()
    result.frames, result.duplicates_dropped, result.exchanges = writer.frames, writer.duplicates, summaries.exchanges
    return result
