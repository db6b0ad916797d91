"""Cut the KMS message out of the request/response PDUs of the reference captures (spec 3.2, 3.3).

A small local helper so the KMS tests do not depend on the RPC layer: the NDR layout is recognised
from the stub itself (NDR64 has zero bytes where NDR32 has a non-zero max_count/referent).
"""

from __future__ import annotations

__all__ = ["STUB_OFFSET", "request_kms", "response_kms"]

#: request/response PDU: 16-byte common header + alloc_hint u32 + p_cont_id u16 + opnum/cancel u16 (spec 2.6, 2.7)
STUB_OFFSET = 24


def request_kms(pdu: bytes) -> bytes:
    """The KMS request message inside a request PDU (NDR32 or NDR64)."""
    stub = pdu[STUB_OFFSET:]
    size = int.from_bytes(stub[0:4], "little")
    if int.from_bytes(stub[4:8], "little") == 0:  # NDR64: u64 size, u64 max_count
        return stub[16 : 16 + size]
    return stub[8 : 8 + size]


def response_kms(pdu: bytes) -> tuple[bytes | None, int]:
    """(KMS response message or None on the error form, HRESULT) of a response PDU."""
    stub = pdu[STUB_OFFSET:]
    size = int.from_bytes(stub[0:4], "little")
    ndr64 = int.from_bytes(stub[4:8], "little") == 0
    if size == 0:  # error form: size 0, NULL referent, HRESULT (12 bytes NDR32, 20 bytes NDR64)
        return None, int.from_bytes(stub[-4:], "little")
    start = 24 if ndr64 else 12
    data = stub[start : start + size]
    hresult_at = start + size + (-(start + size) % 4)
    return data, int.from_bytes(stub[hresult_at : hresult_at + 4], "little")
