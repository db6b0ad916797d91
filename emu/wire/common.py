"""Adapters shared by the wire modules: GUIDs, FILETIMEs, fixed UTF-16LE names, the decode guard.

Spec: docs/kms-wire-protocol.md (conventions; WorkstationName quirk).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import construct as cs

from emu.errors import DecodeError

__all__ = [
    "NULL_GUID",
    "ExactBytes",
    "FileTime",
    "Guid",
    "IndexedArray",
    "decode_guard",
    "guid_bytes",
    "guid_from_bytes_le",
    "join_fixed_utf16",
    "split_fixed_utf16",
]

NULL_GUID = uuid.UUID(int=0)


class ExactBytes(cs.Bytes):  # type: ignore[misc]  # construct has no type hints: Bytes is Any
    """``cs.Bytes`` whose compiled parser and builder check the length, as the interpreted ones do.

    Construct 2.10 compiles ``Bytes`` to a bare ``io.read(n)`` / ``io.write(obj)``, which silently
    returns or writes fewer bytes; every wire declaration uses this class instead.
    """

    def _emitparse(self, code: object) -> str:
        return f"stream_read(io, {self.length}, '(compiled)')"

    def _emitbuild(self, code: object) -> str:
        return (
            f"(io.write(obj) if len(obj) == ({self.length}) else "
            f"stream_write(io, obj, {self.length}, '(compiled)'), obj)[1]"
        )


class _GuidAdapter(cs.Adapter):  # type: ignore[misc]  # construct has no type hints: Adapter is Any
    """A GUID in Microsoft mixed-endian order (Data1..3 little-endian), as :class:`uuid.UUID`."""

    def _decode(self, obj: bytes, context: object, path: str) -> uuid.UUID:
        return self.decode_value(obj)

    def _encode(self, obj: uuid.UUID | str, context: object, path: str) -> bytes:
        return self.encode_value(obj)

    @staticmethod
    def decode_value(obj: bytes) -> uuid.UUID:
        """The GUID of 16 wire bytes (no context needed; :class:`emu.wire.layout.FixedLayout` calls it)."""
        return guid_from_bytes_le(obj)

    @staticmethod
    def encode_value(obj: uuid.UUID | str) -> bytes:
        """The 16 wire bytes of a GUID."""
        return guid_bytes(obj)


#: 16-byte GUID, mixed-endian (docs/kms-wire-protocol.md), decoded to :class:`uuid.UUID`.
Guid = _GuidAdapter(ExactBytes(16))

#: FILETIME: u64 LE count of 100-ns intervals since 1601-01-01 UTC (docs/kms-wire-protocol.md). Kept as the raw
#: integer so that decoding is lossless; :mod:`emu.clock` converts to and from Unix seconds.
FileTime = cs.Int64ul


class IndexedArray(cs.Array):  # type: ignore[misc]  # construct has no type hints: Array is Any
    """``cs.Array`` whose parse errors name the element index (``elements -> 3 -> field``).

    Only the interpreted parser differs; compiled code is Construct's own.
    """

    def _parse(self, stream: object, context: cs.Container, path: str) -> cs.ListContainer:
        count = cs.evaluate(self.count, context)
        if not count >= 0:
            raise cs.RangeError(f"invalid count {count}", path=path)
        obj = cs.ListContainer()
        for i in range(count):
            context._index = i
            obj.append(self.subcon._parsereport(stream, context, f"{path} -> {i}"))
        return obj


_new_object = object.__new__
_set_slot = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def guid_from_bytes_le(raw: bytes | bytearray) -> uuid.UUID:
    """The :class:`uuid.UUID` of 16 mixed-endian wire bytes, as ``uuid.UUID(bytes_le=raw)`` makes it.

    A KMS request carries five GUIDs, and ``UUID.__init__`` checks and converts its arguments in
    Python; this fills the same two slots (``int`` and ``is_safe``) directly, which is several times
    quicker on a host's and the decoder's hot paths. The result is an ordinary, equal and hashable UUID.

    Raises:
        ValueError: ``raw`` is not 16 bytes.
    """
    if len(raw) != 16:
        raise ValueError(f"a GUID is 16 bytes, got {len(raw)}")
    b = bytes(raw)
    value = _new_object(uuid.UUID)
    _set_slot(value, "int", int.from_bytes(b[3::-1] + b[5:3:-1] + b[7:5:-1] + b[8:], "big"))
    _set_slot(value, "is_safe", _SAFE_UNKNOWN)
    return value


def guid_bytes(value: uuid.UUID | str) -> bytes:
    """The 16 wire bytes of a GUID (mixed-endian)."""
    if isinstance(value, str):
        value = uuid.UUID(value)
    return value.bytes_le


def split_fixed_utf16(raw: bytes) -> tuple[str, bytes]:
    """Split a fixed-size UTF-16LE buffer at its first NUL character.

    Returns the text before the NUL and the bytes after it with trailing zero bytes removed
    (senders such as vlmcs leave stale memory there, quirk Q3; keeping it makes decoding
    lossless). Lone surrogates are kept with ``surrogatepass`` so nothing can fail here; a buffer
    without NUL is all text.
    """
    end = len(raw) - (len(raw) % 2)
    nul = raw.find(b"\0\0", 0, end)
    while nul >= 0 and nul % 2:  # a NUL pair straddling two characters is not a NUL character
        nul = raw.find(b"\0\0", nul + 1, end)
    if nul < 0:
        return raw[:end].decode("utf-16-le", "surrogatepass"), raw[end:]
    text = raw[:nul].decode("utf-16-le", "surrogatepass")
    tail = raw[nul + 2 :].rstrip(b"\0")
    return text, tail


def join_fixed_utf16(text: str, tail: bytes, size: int) -> bytes:
    """Inverse of :func:`split_fixed_utf16`: text, NUL, tail, zero-filled to ``size`` bytes.

    Raises:
        ValueError: the text (with its NUL and tail) does not fit.
    """
    body = text.encode("utf-16-le", "surrogatepass")
    if len(body) + 2 + len(tail) > size:
        if len(body) == size and not tail:
            return body
        raise ValueError(f"name of {len(text)} characters does not fit in {size} bytes with its NUL")
    return (body + b"\0\0" + tail).ljust(size, b"\0")


@contextmanager
def decode_guard(what: str) -> Iterator[None]:
    """Turn every failure inside a decoder into :class:`DecodeError` (the ``_untrusted`` rule).

    Construct's errors carry a ``path``; stream errors mention the offset in their message.
    """
    try:
        yield
    except DecodeError:
        raise
    except cs.ConstructError as exc:
        path = getattr(exc, "path", "") or ""
        offset = _offset_of(exc)
        raise DecodeError(f"malformed {what}: {_short(exc)}", offset=offset, path=_clean_path(path)) from exc
    except (UnicodeError, ValueError, TypeError, IndexError, KeyError, OverflowError, AttributeError) as exc:
        raise DecodeError(f"malformed {what}: {exc}") from exc


def _clean_path(path: str) -> str:
    """Construct's path without the "(parsing)" root and the repeats a documented field adds."""
    parts = [p for p in path.split(" -> ") if p and p != "(parsing)"]
    out = [p for i, p in enumerate(parts) if i == 0 or parts[i - 1] != p]
    return " -> ".join(out)


def _short(exc: Exception) -> str:
    text = str(exc)
    if "\n" in text:
        text = text.splitlines()[-1]
    # Construct prefixes messages with "Error in path (parsing) -> x"; keep the reason.
    return text.split("\n")[-1]


def _offset_of(exc: Exception) -> int | None:
    import re

    match = re.search(r"(?:position|offset) (\d+)", str(exc))
    return int(match.group(1)) if match else None
