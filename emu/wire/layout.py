"""Compile the fixed-width run of a Construct ``Struct`` into one :class:`struct.Struct`.

The Construct declarations in :mod:`emu.wire` are the only place a frame layout is written.
Construct's own ``Struct.compile()`` turns a declaration into generated Python, but that code
still builds a ``Container`` and a context per struct, which costs several microseconds even for
a 16-byte header. For the fields of a declaration that have a fixed width (integers, fixed
``Bytes``, ``Padding`` and adapters over them), :class:`FixedLayout` generates the equivalent
:mod:`struct` format from the declaration itself at import time, so the hot path pays one
``unpack_from`` per run of fields and nothing is written twice.

Fields after the first variable-size one are not part of the layout; callers parse them with
the compiled Construct struct (see :class:`Compiled`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import construct as cs

from emu.errors import DecodeError
from emu.wire.common import decode_guard

__all__ = ["Compiled", "FixedLayout"]


class Compiled:
    """A declaration with Construct's generated parser/builder (``Struct.compile()``, done once).

    A failed compiled parse is repeated once by the interpreted declaration, whose error names the
    failing field path; both raise only :class:`~emu.errors.DecodeError`.
    """

    def __init__(self, declaration: Any, what: str) -> None:
        self.declaration = declaration
        self.what = what
        self._compiled = declaration.compile()

    def parse(self, data: bytes, **context: Any) -> Any:
        """The Container of ``data`` (raises DecodeError)."""
        try:
            return self._compiled.parse(data, **context)
        except Exception:  # the generated code raises whatever its statements raise
            pass
        with decode_guard(self.what):
            self.declaration.parse(data, **context)
        raise DecodeError(f"malformed {self.what}")

    def build(self, value: dict[str, Any], **context: Any) -> bytes:
        """The bytes of ``value``.

        Raises:
            ValueError: a field is out of range or of the wrong length.
        """
        try:
            return bytes(self._compiled.build(value, **context))
        except (cs.ConstructError, struct.error, ValueError, TypeError, OverflowError, KeyError) as exc:
            raise ValueError(f"cannot encode {self.what}: {exc}") from exc


def _unwrap(sub: Any) -> tuple[Any, list[Any]]:
    """Strip naming/doc wrappers and collect adapters (outermost first)."""
    adapters: list[Any] = []
    while True:
        if isinstance(sub, cs.Renamed):
            sub = sub.subcon
        elif isinstance(sub, cs.Adapter):
            adapters.append(sub)
            sub = sub.subcon
        elif isinstance(sub, cs.Rebuild):
            sub = sub.subcon
        else:
            return sub, adapters


def _format_of(sub: Any) -> str | None:
    """The struct format of one fixed-width field without its byte-order prefix, or None."""
    if isinstance(sub, cs.FormatField):
        return str(sub.fmtstr[1:])
    if isinstance(sub, cs.Bytes) and isinstance(sub.length, int):
        return f"{sub.length}s"
    if isinstance(sub, cs.Padded) and sub.subcon is cs.Pass and isinstance(sub.length, int):
        return f"{sub.length}x"
    return None


class FixedLayout:
    """The leading fixed-width fields of a Construct ``Struct`` (or those from ``start`` on) as one
    little-endian struct.

    Attributes:
        names: the field names in declaration order (padding excluded).
        size: bytes the fields occupy.
        rest: the declaration's remaining subcons (variable-size), for the caller.
    """

    def __init__(self, declaration: Any, *, start: str | None = None, stop: str | None = None) -> None:
        fmt = ["<"]
        names: list[str] = []
        decoders: list[tuple[int, Callable[[Any], Any]]] = []
        encoders: list[tuple[int, Callable[[Any], Any]]] = []
        rest: list[Any] = []
        subcons: Sequence[Any] = declaration.subcons
        if start is not None:  # the run of fields from ``start`` on (after a variable-size field)
            subcons = subcons[[field.name for field in subcons].index(start) :]
        for i, field in enumerate(subcons):
            if stop is not None and field.name == stop:
                rest = list(subcons[i:])
                break
            flat = _flat_fields(field, "")
            if flat is None:
                rest = list(subcons[i:])
                break
            for name, part, adapters in flat:
                fmt.append(part)
                if name is None:
                    continue
                index = len(names)
                names.append(name)
                for adapter in reversed(adapters):
                    decoders.append((index, _decoder(adapter)))
                for adapter in adapters:
                    encoders.append((index, _encoder(adapter)))
        if not names:
            raise TypeError(f"{declaration!r} starts with no fixed-width field")
        self.names = tuple(names)
        self.rest = tuple(rest)
        self._struct = struct.Struct("".join(fmt))
        self.size = self._struct.size
        self._decoders = tuple(decoders)
        self._encoders = tuple(encoders)
        #: ``unpack_from(data, offset=0)``: the field values, adapters applied (``struct.error`` if short).
        self.unpack_from: Callable[..., tuple[Any, ...]] = self._unpack if decoders else self._struct.unpack_from
        #: ``pack(*values)``: the bytes of the fields in declaration order (``struct.error`` if out of range).
        self.pack: Callable[..., bytes] = self._pack if encoders else self._struct.pack

    def _unpack(self, data: bytes | bytearray, offset: int = 0) -> tuple[Any, ...]:
        out = list(self._struct.unpack_from(data, offset))
        for index, decode in self._decoders:
            out[index] = decode(out[index])
        return tuple(out)

    def _pack(self, *values: Any) -> bytes:
        out = list(values)
        for index, encode in self._encoders:
            out[index] = encode(out[index])
        return self._struct.pack(*out)


def _flat_fields(field: Any, prefix: str) -> list[tuple[str | None, str, list[Any]]] | None:
    """(name, struct format, adapters) of a field, nested structs flattened as ``outer.inner``;
    None when some part has no fixed width."""
    inner, adapters = _unwrap(field)
    name = None if field.name is None else prefix + field.name
    if isinstance(inner, cs.Struct) and not adapters:
        out: list[tuple[str | None, str, list[Any]]] = []
        for sub in inner.subcons:
            flat = _flat_fields(sub, f"{name}.")
            if flat is None:
                return None
            out.extend(flat)
        return out
    part = _format_of(inner)
    if part is None:
        return None
    return [(None if part.endswith("x") else name, part, adapters)]


def _decoder(adapter: Any) -> Callable[[Any], Any]:
    fast = getattr(adapter, "decode_value", None)  # an adapter may offer a context-free form
    if fast is not None:
        return fast  # type: ignore[no-any-return]
    return lambda value: adapter._decode(value, None, "")


def _encoder(adapter: Any) -> Callable[[Any], Any]:
    fast = getattr(adapter, "encode_value", None)
    if fast is not None:
        return fast  # type: ignore[no-any-return]
    return lambda value: adapter._encode(value, None, "")
