"""What a capture does to the frames it writes: the one implementation (``emu capture`` and ``client --capture``).

On loopback only (docs/howto-decode.md, "Capturing"):

* an identical frame right after another is the second copy the loopback device shows of the same
  packet, and is dropped;
* the kernel never fills in checksums of loopback packets (offload), so IPv4, TCP and UDP checksums
  are recomputed, which keeps tshark from flagging every frame.

Frames from any other interface are written exactly as captured: there an identical frame is a real
retransmission, and a wrong checksum is evidence worth keeping.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FrameFixup", "is_loopback_interface"]


def is_loopback_interface(name: str) -> bool:
    """``lo`` (Linux) or ``lo0`` (BSD/macOS)."""
    return name in ("lo", "lo0")


class FrameFixup:
    """Apply the loopback fix-ups to Scapy frames, or nothing when ``loopback`` is false."""

    def __init__(self, loopback: bool) -> None:
        self.loopback = loopback
        self.duplicates = 0
        self._previous: bytes | None = None

    def apply(self, frame: Any) -> Any | None:
        """The frame to write, or ``None`` for a dropped loopback duplicate."""
        if not self.loopback:
            return frame
        raw = bytes(frame)
        if raw == self._previous:
            self.duplicates += 1
            return None
        self._previous = raw
        return _with_checksums(frame)


def _with_checksums(frame: Any) -> Any:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6

    fixed = frame.copy()
    if IP in fixed:
        del fixed[IP].chksum
    for layer in (TCP, UDP):
        if layer in fixed and (IP in fixed or IPv6 in fixed):
            del fixed[layer].chksum
    rebuilt = fixed.__class__(bytes(fixed))
    rebuilt.time = frame.time
    return rebuilt
