"""DCE/RPC v5 names and constants KMS uses: PTYPEs, flags, result and reason codes, NCA fault
statuses, syntax ids (KMS interface, NDR32, NDR64, BTFN) and the frag_length framing helpers.

Spec: docs/kms-wire-protocol.md; DCE 1.1 RPC (C706) 12.6 and [MS-RPCE] 2.2.2 for the names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from emu.errors import DecodeError


class PType(IntEnum):
    """PTYPE of the common header (docs/kms-wire-protocol.md; C706 12.6.4)."""

    REQUEST = 0
    RESPONSE = 2
    FAULT = 3
    BIND = 11
    BIND_ACK = 12
    BIND_NAK = 13
    ALTER_CONTEXT = 14
    ALTER_CONTEXT_RESP = 15


class PfcFlag(IntFlag):
    """pfc_flags bits (docs/kms-wire-protocol.md; C706 12.6.3.1)."""

    FIRST_FRAG = 0x01
    LAST_FRAG = 0x02
    PENDING_CANCEL = 0x04  # SUPPORT_HEADER_SIGN in bind PDUs
    RESERVED_1 = 0x08
    CONC_MPX = 0x10
    DID_NOT_EXECUTE = 0x20
    MAYBE = 0x40
    OBJECT_UUID = 0x80


class ContextResult(IntEnum):
    """p_cont_def_result_t of a bind_ack result entry (docs/kms-wire-protocol.md; [MS-RPCE] 2.2.2.4)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    PROVIDER_REJECTION = 2
    NEGOTIATE_ACK = 3


class RejectReason(IntEnum):
    """p_provider_reason_t of a rejected result entry (docs/kms-wire-protocol.md; C706 12.6.3.1)."""

    REASON_NOT_SPECIFIED = 0
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
    PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2
    LOCAL_LIMIT_EXCEEDED = 3


class BindNakReason(IntEnum):
    """p_reject_reason_t of a bind_nak (C706 12.6.3.1; docs/kms-wire-protocol.md: never sent by the emulators)."""

    REASON_NOT_SPECIFIED = 0
    TEMPORARY_CONGESTION = 1
    LOCAL_LIMIT_EXCEEDED = 2
    CALLED_PADDR_UNKNOWN = 3
    PROTOCOL_VERSION_NOT_SUPPORTED = 4
    DEFAULT_CONTEXT_NOT_SUPPORTED = 5
    USER_DATA_NOT_READABLE = 6
    NO_PSAP_AVAILABLE = 7


# NCA fault status codes (docs/kms-wire-protocol.md; C706 appendix E / [MS-RPCE] 3.1.1.5.5 names).
NCA_S_OP_RNG_ERROR = 0x1C010002  #: nca_s_op_rng_error: opnum out of range for the interface
NCA_S_UNK_IF = 0x1C010003  #: nca_s_unk_if: no such interface / context id on this association
NCA_S_PROTO_ERROR = 0x1C01000B  #: nca_s_proto_error: the PDU broke the protocol
NCA_S_UNSPEC_REJECT = 0x1C000009  #: nca_s_unspec_reject: rejected for an unspecified reason
NCA_S_FAULT_NDR = 0x000006F7  #: nca_s_fault_ndr (RPC_X_BAD_STUB_DATA): stub data cannot be unmarshalled

#: NCA status codes of fault PDUs (C706 appendix E, [MS-RPCE] 3.1.1.5.5).
FAULT_STATUS_NAMES: dict[int, str] = {
    NCA_S_OP_RNG_ERROR: "nca_s_op_rng_error",
    NCA_S_UNK_IF: "nca_s_unk_if",
    NCA_S_PROTO_ERROR: "nca_s_proto_error",
    NCA_S_UNSPEC_REJECT: "nca_s_unspec_reject",
    NCA_S_FAULT_NDR: "nca_s_fault_ndr",
    0x1C010001: "nca_s_comm_failure",
    0x1C010013: "nca_s_server_too_busy",
    0x1C000001: "nca_s_fault_int_div_by_zero",
    0x00000005: "nca_s_fault_access_denied",
    0x000006D8: "nca_s_fault_cant_perform",
}

#: packed_drep: little-endian integers, ASCII, IEEE floats (docs/kms-wire-protocol.md).
DREP_LE = b"\x10\x00\x00\x00"
#: Length of the common header (docs/kms-wire-protocol.md).
HEADER_LENGTH = 16


@dataclass(frozen=True, slots=True)
class SyntaxId:
    """An abstract or transfer syntax: UUID plus the 32-bit version word on the wire.

    For abstract syntaxes the word is ``major | minor << 16`` (docs/kms-wire-protocol.md: u16 major, u16 minor);
    transfer syntaxes carry a single u32 version.
    """

    uuid: uuid.UUID
    version: int

    @property
    def major(self) -> int:
        """Major version of an abstract syntax (low 16 bits)."""
        return self.version & 0xFFFF

    @property
    def minor(self) -> int:
        """Minor version of an abstract syntax (high 16 bits)."""
        return self.version >> 16


#: KMS interface "KMSServer", version 1.0 (docs/kms-wire-protocol.md; KMSServer.idl).
KMS_INTERFACE = SyntaxId(uuid.UUID("51c82175-844e-4750-b0d8-ec255555bc06"), 1)
#: NDR32 transfer syntax, version 2 (docs/kms-wire-protocol.md).
NDR32_SYNTAX = SyntaxId(uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860"), 2)
#: NDR64 transfer syntax, version 1 (docs/kms-wire-protocol.md).
NDR64_SYNTAX = SyntaxId(uuid.UUID("71710533-beba-4937-8319-b5dbef9ccc36"), 1)
#: The first 8 wire bytes that identify Bind Time Feature Negotiation; bytes 8-15 are the bitmask (docs/kms-wire-protocol.md).
BTFN_PREFIX = bytes.fromhex("2c1cb76c12984045")
#: Version word of the BTFN pseudo transfer syntax (docs/kms-wire-protocol.md).
BTFN_VERSION = 1


def btfn_syntax(bitmask: int) -> SyntaxId:
    """The BTFN pseudo transfer syntax requesting ``bitmask`` (docs/kms-wire-protocol.md: clients send 0x03)."""
    return SyntaxId(uuid.UUID(bytes_le=BTFN_PREFIX + bitmask.to_bytes(8, "little")), BTFN_VERSION)


def btfn_bitmask(syntax: SyntaxId) -> int | None:
    """The requested feature bitmask if ``syntax`` is BTFN, else ``None`` (vlmcsd compares 8 bytes)."""
    raw = syntax.uuid.bytes_le
    if raw[:8] != BTFN_PREFIX:
        return None
    return int.from_bytes(raw[8:], "little")


def secondary_address_bytes(port: str) -> bytes:
    """The secondary address as sent in a bind_ack: ASCII text plus NUL, or nothing for ``""`` (docs/kms-wire-protocol.md)."""
    return port.encode("ascii") + b"\0" if port else b""


def split_pdus(stream: bytes) -> tuple[list[bytes], bytes]:
    """Cut a byte stream into whole PDUs by their frag_length (docs/kms-wire-protocol.md); also return the rest
    (a partial PDU, or bytes whose frag_length is below the 16-byte header)."""
    pdus, offset = [], 0
    while offset + 10 <= len(stream):
        length = int.from_bytes(stream[offset + 8 : offset + 10], "little")
        if length < HEADER_LENGTH or offset + length > len(stream):
            break
        pdus.append(stream[offset : offset + length])
        offset += length
    return pdus, stream[offset:]


def frag_length_of(header: bytes | bytearray) -> int:
    """frag_length of a PDU from (at least) its first 10 bytes (docs/kms-wire-protocol.md).

    Raises:
        DecodeError: fewer than 10 bytes given.
    """
    if len(header) < 10:
        raise DecodeError("need 10 bytes to read frag_length", offset=len(header), path="header -> frag_length")
    return header[8] | header[9] << 8
