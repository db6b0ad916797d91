"""emu: a packet-level emulator of Windows volume activation (KMS) and the DNS around it.

A lab and testing tool: it speaks the KMS protocol byte for byte so that protocol, lab and
security engineers can inspect captures, run emulated activation networks and test other
implementations. It ships only protocol constants and the GVLKs Microsoft publishes.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
