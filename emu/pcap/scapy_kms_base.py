"""Shared parts of emu's Scapy KMS layers: display fields and the layer base whose bytes come
from :mod:`emu.wire` (see :mod:`emu.pcap.scapy_kms`)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from scapy.fields import (
    Field,
    UUIDField,
    _StrField,
)
from scapy.packet import Packet

from emu.clock import filetime_to_unix, unix_to_filetime
from emu.wire import kms as wkms

__all__ = ["KMS_PORT", "filetime_now"]

#: The KMS TCP port (docs/kms-wire-protocol.md).
KMS_PORT = 1688
_ZERO_UUID = uuid.UUID(int=0)
_LICENSE_NAMES = {int(s): s.name.lower() for s in wkms.LicenseStatus}


def filetime_now() -> int:
    """The current UTC time as a FILETIME (the default ``client_time`` of a crafted request)."""
    return unix_to_filetime(time.time())


def _product_name(kind: str, value: uuid.UUID) -> str | None:
    from emu.kms import products

    data = products.product_data()
    if kind == "sku":
        sku = data.find_sku(value)
        return None if sku is None else sku.name
    if kind == "kms":
        item = data.find_kms_item(value)
        return None if item is None else item.name
    for app in data.applications():
        if app.id == value:
            return app.name
    return None


class _GuidField(UUIDField):
    """A GUID shown with the product, KMS group or application it names (display only)."""

    __slots__ = ["kind"]

    def __init__(self, name: str, default: Any, kind: str = "") -> None:
        super().__init__(name, default, uuid_fmt=UUIDField.FORMAT_LE)
        self.kind = kind

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        text = super().i2repr(pkt, x)
        if self.kind and isinstance(x, uuid.UUID):
            name = _product_name(self.kind, x)
            if name:
                return f"{text} ({name})"
        return text


class _TextField(_StrField[str]):
    """A text value (str), such as the workstation name or the ePID (display only).

    Scapy's ``StrField`` is ``_StrField[bytes]`` with nothing added; this is the same field
    holding ``str`` (``h2i`` decodes what ``any2i`` encodes).
    """

    def h2i(self, pkt: Packet | None, x: Any) -> Any:
        return x.decode("utf-8") if isinstance(x, bytes) else x

    def i2h(self, pkt: Packet | None, x: Any) -> Any:
        return x

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        return repr(x)


class _FileTimeField(Field[int, int]):
    """A FILETIME shown with its UTC date (display only)."""

    def __init__(self, name: str, default: int | None) -> None:
        super().__init__(name, default, "<Q")

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        if not isinstance(x, int):
            return repr(x)
        seconds = filetime_to_unix(x)
        try:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
        except (OverflowError, OSError, ValueError):
            when = "out of range"
        return f"{x} ({when} UTC)"


class _WireLayer(Packet):
    """A layer whose bytes come from :mod:`emu.wire`; ``fields_desc`` only names the values.

    Subclasses implement :meth:`_decode` (bytes -> field values and bytes consumed) and
    :meth:`_encode` (field values -> bytes). A dissected layer keeps its exact bytes until a field
    is changed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # DceRpcSession passes NDR context to the classes of a registered interface.
        self._ndr64_hint = kwargs.pop("ndr64", None)
        kwargs.pop("ndrendian", None)
        kwargs.pop("request_packet", None)
        super().__init__(*args, **kwargs)

    __slots__ = ["_ndr64_hint"]

    def _decode(self, s: bytes) -> tuple[dict[str, Any], int]:
        raise NotImplementedError

    def _encode(self, payload: bytes) -> bytes:
        raise NotImplementedError

    def do_dissect(self, s: bytes) -> bytes:
        values, used = self._decode(bytes(s))
        self.fields.update(values)
        self.raw_packet_cache = None
        self.raw_packet_cache_fields = None
        self.explicit = 1
        return s[used:]

    def self_build(self) -> bytes:
        return b""

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        return self._encode(pay)

    def _value(self, name: str) -> Any:
        return self.getfieldval(name)
