"""The KMS fields of a decoded request or response stub, for ``emu decode``: names from the packaged
product data and the error table, the response verified against its request (docs/kms-wire-protocol
sections on the messages; the checks are :func:`emu.kms.messages.verify_response`'s).
"""

from __future__ import annotations

import datetime as _dt
import functools
import uuid

from emu.clock import filetime_to_unix
from emu.errors import DecodeError, KmsError
from emu.hresults import symbol_of
from emu.kms.crypto import BLOCK_SIZE, cbc_decrypt
from emu.kms.epid import format_hwid, parse_epid
from emu.kms.messages import Check, OpenedRequest, VerifiedResponse, open_request, verify_response
from emu.kms.products import describe_kms_id, product_data
from emu.pcap.kms_records import KmsRequestInfo, KmsResponseInfo
from emu.wire.kms import (
    ResponseBase,
    ResponseV4,
    ResponseV5Plain,
    ResponseV6Plain,
    decode_encrypted_message,
    decode_response_v4,
    decode_response_v5_plain,
    decode_response_v6_plain,
    decode_version,
)
from emu.wire.ndr import TransferSyntax, request_stub_syntax, response_stub_syntax
from emu.wire.rpc import KMS_INTERFACE, SyntaxId, btfn_bitmask

__all__ = [
    "abstract_name",
    "endpoint",
    "guess_request_syntax",
    "guess_response_syntax",
    "request_info",
    "response_info",
    "syntax_name",
]


def endpoint(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _iso_filetime(filetime: int) -> str:
    try:
        when = _dt.datetime.fromtimestamp(filetime_to_unix(filetime), tz=_dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"FILETIME {filetime} (out of range)"
    return when.isoformat().replace("+00:00", "Z")


def syntax_name(syntax: SyntaxId) -> str:
    ndr = TransferSyntax.of(syntax)
    if ndr is not None:
        return ndr.name
    bits = btfn_bitmask(syntax)
    if bits is not None:
        return f"BTFN(0x{bits:02x})"
    if syntax.uuid.int == 0 and syntax.version == 0:
        return "none"
    return f"{syntax.uuid} v{syntax.version}"


def abstract_name(syntax: SyntaxId) -> str:
    if syntax == KMS_INTERFACE:
        return "KMS v1.0"
    return f"{syntax.uuid} v{syntax.major}.{syntax.minor}"


def _hresult_name(hresult: int) -> str:
    return symbol_of(hresult) or "unknown HRESULT"


def guess_request_syntax(stub: bytes) -> TransferSyntax | None:
    """The NDR of a request stub whose context was not seen negotiated (one home: :mod:`emu.wire.ndr`)."""
    return request_stub_syntax(stub)


def guess_response_syntax(stub: bytes) -> TransferSyntax | None:
    """The NDR of a response stub whose context was not seen negotiated (one home: :mod:`emu.wire.ndr`)."""
    return response_stub_syntax(stub)


def _threshold(kms_id: uuid.UUID | None, sku_id: uuid.UUID | None) -> int | None:
    data = product_data()
    if sku_id is not None:
        sku = data.find_sku(sku_id)
        if sku is not None and (kms_id is None or sku.kms_id == kms_id):
            return sku.threshold
    if kms_id is not None:
        item = data.find_kms_item(kms_id)
        if item is not None:
            return item.threshold
    return None


@functools.lru_cache(maxsize=1024)
def _product_names(
    app_id: uuid.UUID, sku_id: uuid.UUID, kms_id: uuid.UUID
) -> tuple[str | None, str, str | None, str, str, str]:
    """(application, product, SKU name, and the three ids as text) of a request's ids, looked up once:
    a busy capture repeats the same few products thousands of times."""
    products = product_data()
    sku = products.find_sku(sku_id)
    app = next((a for a in products.applications() if a.id == app_id), None)
    return (
        app.name if app is not None else None,
        describe_kms_id(kms_id, sku_id),
        sku.name if sku is not None else None,
        str(app_id),
        str(sku_id),
        str(kms_id),
    )


def request_info(data: bytes) -> tuple[KmsRequestInfo, OpenedRequest | None]:
    """Decode a KMS request; a version without layout is reported, not raised (docs/kms-wire-protocol.md).

    Raises:
        DecodeError: not even a version header, or a known version whose body does not decode.
    """
    version = decode_version(data)
    try:
        opened = open_request(data)
    except KmsError as exc:
        if version.minor != 0 or version.major not in (4, 5, 6):
            return KmsRequestInfo(version=str(version), size=len(data), refused=str(exc)), None
        raise DecodeError(str(exc), offset=0, path="KMS request") from exc
    base = opened.base
    application, product, sku_name, app_id, sku_id, kms_id = _product_names(base.app_id, base.sku_id, base.kms_id)
    info = KmsRequestInfo(
        version=str(opened.version),
        size=len(data),
        application=application,
        product=product,
        sku_name=sku_name,
        app_id=app_id,
        sku_id=sku_id,
        kms_id=kms_id,
        cmid=str(base.cmid),
        previous_cmid=str(base.previous_cmid),
        workstation=base.workstation_name,
        required_client_count=base.required_client_count,
        client_time=_iso_filetime(base.client_time),
        vm=bool(base.vm_info),
        license_status=base.license_status.name if hasattr(base.license_status, "name") else str(base.license_status),
        binding_expiration=base.binding_expiration,
        mac_ok=opened.mac_ok,
    )
    return info, opened


def _open_unpaired(data: bytes) -> ResponseV4 | ResponseV5Plain | ResponseV6Plain:
    """Decode a response without its request: v4 is clear, v5/v6 decrypt with the response IV.

    Raises:
        DecodeError: unknown version or undecodable message.
    """
    version = decode_version(data)
    if version.major == 4:
        return decode_response_v4(data)
    if version.major not in (5, 6):
        raise DecodeError(f"KMS response version {version} has no message layout", offset=0, path="KMS response")
    env = decode_encrypted_message(data)
    if not env.ciphertext or len(env.ciphertext) % BLOCK_SIZE:
        raise DecodeError(
            f"ciphertext of {len(env.ciphertext)} bytes is not whole AES blocks",
            offset=20,
            path="KMS response -> ciphertext",
        )
    plain = cbc_decrypt(version.major, env.iv, env.ciphertext)
    return decode_response_v5_plain(plain) if version.major == 5 else decode_response_v6_plain(plain)


def response_info(
    hresult: int, data: bytes | None, request: OpenedRequest | None, request_info: KmsRequestInfo | None
) -> KmsResponseInfo:
    """Decode (and with its request, verify) a response's KMS message. Never raises."""
    name = _hresult_name(hresult)
    if data is None:
        return KmsResponseInfo(hresult=hresult, hresult_name=name)
    message: ResponseV4 | ResponseV5Plain | ResponseV6Plain | None = None
    checks: tuple[Check, ...] = ()
    verified: bool | None = None
    note = ""
    version: str | None = None
    if len(data) >= 4:
        version = str(decode_version(data))
    if request is not None:
        result: VerifiedResponse = verify_response(request, data)
        message = result.message
        checks = tuple(result.checks)
        verified = result.ok
        if message is None:
            note = "response could not be decoded: " + "; ".join(c.detail for c in result.checks if not c.passed)
    else:
        try:
            message = _open_unpaired(data)
            note = "not verified: its request is not in the capture"
        except (DecodeError, ValueError) as exc:
            note = f"response could not be decoded without its request: {exc}"
    if message is None:
        return KmsResponseInfo(
            hresult=hresult,
            hresult_name=name,
            version=version,
            size=len(data),
            checks=checks,
            verified=verified,
            note=note,
        )
    base: ResponseBase = message.base
    epid = parse_epid(base.epid)
    hwid = format_hwid(message.hwid) if isinstance(message, ResponseV6Plain) else None
    threshold = None
    if request is not None:
        threshold = _threshold(request.base.kms_id, request.base.sku_id)
    return KmsResponseInfo(
        hresult=hresult,
        hresult_name=name,
        version=version,
        size=len(data),
        epid=base.epid,
        epid_problems=epid.problems,
        hwid=hwid,
        count=base.count,
        threshold=threshold,
        activation_interval=base.activation_interval,
        renewal_interval=base.renewal_interval,
        cmid=str(base.cmid),
        client_time=_iso_filetime(base.client_time),
        checks=checks,
        verified=verified,
        note=note,
    )
