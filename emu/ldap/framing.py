"""Cut a TCP byte stream into whole LDAPMessage PDUs (BER definite lengths; RFC 4511 5.1)."""

from __future__ import annotations

from emu.wire.ldap import ldap_pdu_length

__all__ = ["PduBuffer"]


class PduBuffer:
    """Accumulates stream bytes and yields whole PDUs; raises DecodeError on an impossible header."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every PDU now complete (possibly none)."""
        self._buf += data
        out: list[bytes] = []
        while True:
            n = ldap_pdu_length(bytes(self._buf[:6]))
            if n is None or n > len(self._buf):
                return out
            out.append(bytes(self._buf[:n]))
            del self._buf[:n]

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole PDU."""
        return len(self._buf)
