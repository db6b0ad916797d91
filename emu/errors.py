"""The exception tree of emu.

Errors are sorted by who is at fault:

* :class:`DecodeError` -- bytes from outside could not be decoded (raised only by ``emu.wire``).
* :class:`ProtocolError` -- a peer broke a protocol rule; each subclass carries the code that goes
  back on the wire (a DCE/RPC fault status, a KMS HRESULT or a DNS RCODE).
* :class:`UsageError` -- emu's own API or command line was misused.
* :class:`ScenarioError` -- a topology, privilege or environment problem.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "DnsUpdateError",
    "EmuError",
    "KmsError",
    "ProtocolError",
    "RpcError",
    "ScenarioError",
    "UsageError",
    "VerificationError",
]


class EmuError(Exception):
    """Base class of every error emu raises on purpose."""


class DecodeError(EmuError):
    """Bytes could not be decoded as the structure that was expected.

    Attributes:
        offset: byte offset into the input where decoding failed (``None`` when unknown).
        path: the field path inside the structure, such as ``"request -> stub -> kms_data"``.
    """

    def __init__(self, message: str, offset: int | None = None, path: str = "") -> None:
        self.offset = offset
        self.path = path
        where = []
        if path:
            where.append(f"at {path}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.reason = message


class ProtocolError(EmuError):
    """A peer broke a protocol rule. Subclasses name the code that is sent back."""

    #: The value put on the wire for this error, if any.
    wire_code: int | None = None

    def __init__(self, message: str, wire_code: int | None = None) -> None:
        super().__init__(message)
        if wire_code is not None:
            self.wire_code = wire_code


class RpcError(ProtocolError):
    """DCE/RPC rule broken; ``wire_code`` is the NCA fault status (``None``: close the connection)."""


class KmsError(ProtocolError):
    """KMS request refused; ``wire_code`` is the HRESULT returned in the response stub."""


class DnsUpdateError(ProtocolError):
    """DNS message refused; ``wire_code`` is the RCODE (extended RCODEs included)."""


class VerificationError(EmuError):
    """A KMS response failed one or more of the client-side checks (docs/kms-wire-protocol.md)."""

    def __init__(self, message: str, failed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.failed = failed


class UsageError(EmuError):
    """emu was called wrongly: a bad option, an unknown product name, a bad file."""


class ScenarioError(EmuError):
    """A topology, privilege or environment problem (no root for namespaces, missing tool)."""
