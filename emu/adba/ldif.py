"""LDIF (RFC 2849) content records: export a directory's entries, read records back.

Values that are not printable ASCII (msSPP GUIDs, licences) are written base64 (``attr:: ...``)."""

from __future__ import annotations

import base64
from collections.abc import Iterable

from emu.adba.directory import Entry

__all__ = ["LdifError", "dump_ldif", "parse_ldif"]


class LdifError(ValueError):
    """Malformed LDIF; the message names the line."""


def _safe(value: bytes) -> bool:
    return bool(value) and all(0x20 <= b < 0x7F for b in value) and value[0] not in b" :<" and value[-1] != 0x20


def _line(attr: str, value: bytes) -> str:
    if _safe(value):
        return f"{attr}: {value.decode('ascii')}"
    return f"{attr}:: {base64.b64encode(value).decode('ascii')}"


def dump_ldif(entries: Iterable[Entry]) -> str:
    """Entries, parents first, as LDIF content records."""
    out = ["version: 1", ""]
    for entry in sorted(entries, key=lambda e: (e.dn.count(","), e.dn.lower())):
        dn_value = entry.dn.encode()
        out.append(_line("dn", dn_value))
        for disp, values in entry.attrs.values():
            out.extend(_line(disp, v) for v in values)
        out.append("")
    return "\n".join(out)


def parse_ldif(text: str) -> list[tuple[str, list[tuple[str, list[bytes]]]]]:
    """Records as (dn, [(attr, values)]); ``changetype: add`` lines are accepted and dropped."""
    lines: list[tuple[int, str]] = []
    for no, raw in enumerate(text.splitlines(), 1):
        if raw.startswith(" ") and lines:
            lines[-1] = (lines[-1][0], lines[-1][1] + raw[1:])
        elif raw.startswith("#"):
            continue
        else:
            lines.append((no, raw))
    records: list[tuple[str, list[tuple[str, list[bytes]]]]] = []
    dn: str | None = None
    attrs: dict[str, tuple[str, list[bytes]]] = {}
    for no, line in [*lines, (0, "")]:
        if not line.strip():
            if dn is not None:
                records.append((dn, list(attrs.values())))
            dn, attrs = None, {}
            continue
        attr, sep, rest = line.partition(":")
        if not sep:
            raise LdifError(f"line {no}: expected 'attribute: value'")
        if rest.startswith(":"):
            try:
                value = base64.b64decode(rest[1:].strip(), validate=True)
            except ValueError:
                raise LdifError(f"line {no}: bad base64 value") from None
        elif rest.startswith("<"):
            raise LdifError(f"line {no}: URL values are not supported")
        else:
            value = rest.strip().encode()
        key = attr.strip()
        if key.lower() == "version" and dn is None:
            continue
        if key.lower() == "dn":
            if dn is not None:
                raise LdifError(f"line {no}: second dn in one record")
            dn = value.decode("utf-8", "replace")
            continue
        if dn is None:
            raise LdifError(f"line {no}: attribute before 'dn:'")
        if key.lower() == "changetype":
            if value.lower() != b"add":
                raise LdifError(f"line {no}: only 'changetype: add' is supported")
            continue
        attrs.setdefault(key.lower(), (key, []))[1].append(value)
    return records
