"""Record the TCP connections a client makes into a pcap with Scapy (``emu client activate --capture``).

Scapy's native ``lo`` sniffer sees every frame twice, so libpcap is used (it drops the outgoing
copy). What is written goes through :class:`emu.pcap.fixup.FrameFixup`, the same fix-ups as
``emu capture``: on loopback only, remaining identical back-to-back frames are dropped and checksums
the kernel never filled in are recomputed; on any other interface frames are written exactly as
captured (an identical frame there is a real retransmission).
Sniffing needs root (CAP_NET_RAW); without it :class:`ScenarioError` says so before anything is sent.

Scapy is imported lazily: it is slow to import and has import-time side effects.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from emu.errors import ScenarioError, UsageError
from emu.kms.client import HostAddress
from emu.pcap.fixup import FrameFixup, is_loopback_interface

__all__ = ["DRAIN_TIMEOUT", "SNIFF_START_TIMEOUT", "TcpCapture", "interface_for"]

#: Seconds to wait for the sniffer thread to be listening before the first packet is sent.
SNIFF_START_TIMEOUT = 5.0
#: Seconds to wait after the exchange for the closing FIN/ACK frames to be seen.
DRAIN_TIMEOUT = 1.0
_POLL = 0.01
_FIN, _RST = 0x01, 0x04


def interface_for(host: str) -> str:
    """The interface packets to ``host`` leave on: ``lo`` for loopback, else the route's."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "lo"
    except ValueError:
        if host == "localhost":
            return "lo"
    from scapy.all import conf

    try:
        route = conf.route6.route(host) if ":" in host else conf.route.route(host)
    except Exception as exc:  # scapy raises plain exceptions for unroutable names
        raise UsageError(f"--capture: no route to {host}: {exc}") from exc
    return str(route[0])


class TcpCapture:
    """A Scapy sniffer on the interface towards the hosts, keeping the frames of our connections."""

    def __init__(self) -> None:
        self._frames: list[Any] = []
        self._sniffer: Any = None
        self._interface = ""
        self._lock = threading.Lock()

    async def start(self, hosts: Sequence[HostAddress]) -> None:
        """Start sniffing TCP to/from the hosts' ports; returns once the sniffer is listening.

        Raises:
            ScenarioError: not root, or the sniffer could not start.
        """
        if os.geteuid() != 0:
            raise ScenarioError(
                "--capture sniffs packets and needs root (CAP_NET_RAW): run emu as root, "
                "or drop --capture and record with tcpdump"
            )
        if not hosts:
            return
        from scapy.all import AsyncSniffer, conf

        conf.use_pcap = True  # libpcap drops the outgoing copy of each loopback frame (docs/howto-run-a-lab.md)
        iface = interface_for(hosts[0].host)
        self._interface = iface
        ports = sorted({h.port for h in hosts})
        bpf = "tcp and (" + " or ".join(f"port {p}" for p in ports) + ")"
        started = threading.Event()
        self._sniffer = AsyncSniffer(iface=iface, filter=bpf, prn=self._keep, store=False, started_callback=started.set)
        try:
            self._sniffer.start()
        except (OSError, PermissionError) as exc:
            raise ScenarioError(f"--capture: cannot sniff on {iface}: {exc}") from exc
        for _ in range(int(SNIFF_START_TIMEOUT / _POLL)):
            if started.is_set():
                return
            await asyncio.sleep(_POLL)
        raise ScenarioError(f"--capture: the sniffer on {iface} did not start within {SNIFF_START_TIMEOUT:g} s")

    def _keep(self, frame: Any) -> None:
        with self._lock:
            self._frames.append(frame)

    def _closed_both_ways(self) -> bool:
        """Every connection seen so far has a FIN from each side, or an RST."""
        from scapy.layers.inet import TCP

        with self._lock:
            frames = list(self._frames)
        fins: dict[tuple[int, int], set[int]] = {}
        reset: set[tuple[int, int]] = set()
        for f in frames:
            if TCP not in f:
                continue
            key = (min(f[TCP].sport, f[TCP].dport), max(f[TCP].sport, f[TCP].dport))
            fins.setdefault(key, set())
            if f[TCP].flags & _FIN:
                fins[key].add(f[TCP].sport)
            if f[TCP].flags & _RST:
                reset.add(key)
        return bool(fins) and all(len(sides) == 2 or key in reset for key, sides in fins.items())

    async def stop(self) -> None:
        """Wait (bounded) for the connections' closing frames, then stop the sniffer."""
        if self._sniffer is None:
            return
        for _ in range(int(DRAIN_TIMEOUT / _POLL)):
            if self._closed_both_ways():
                break
            await asyncio.sleep(_POLL)
        await asyncio.sleep(_POLL)  # the final ACK follows the second FIN
        try:
            self._sniffer.stop()
        except Exception:  # pragma: no cover - scapy raises if the thread already ended
            pass
        self._sniffer = None

    def write(self, path: str, client_ports: Iterable[int]) -> int:
        """Write the frames of the connections from ``client_ports`` to ``path``; returns how many.

        Raises:
            UsageError: the file cannot be written.
        """
        from scapy.layers.inet import TCP
        from scapy.utils import wrpcap

        wanted = set(client_ports)
        out: list[Any] = []
        fixup = FrameFixup(is_loopback_interface(self._interface))
        with self._lock:
            frames = list(self._frames)
        for frame in frames:
            if TCP not in frame or not ({frame[TCP].sport, frame[TCP].dport} & wanted):
                continue
            fixed = fixup.apply(frame)
            if fixed is not None:
                out.append(fixed)
        try:
            wrpcap(path, out)
        except OSError as exc:
            raise UsageError(f"--capture: cannot write {path}: {exc.strerror or exc}") from exc
        return len(out)
