"""Reading one table of a TOML file (a scenario's) key by key: a value of the wrong type, a missing key and
any key left unread are each one :class:`UsageError` naming the file, the table and the key."""

from __future__ import annotations

from typing import Any

from emu.durations import parse_duration
from emu.errors import UsageError

__all__ = ["Table", "tables"]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


class Table:
    """One TOML table being read: every key taken is remembered, the rest are errors."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a table, got {type(data).__name__}")
        self.data = data
        self.where = where
        self.taken: set[str] = set()

    def get(self, key: str, default: Any = None, *, kind: type | tuple[type, ...] | None = None) -> Any:
        self.taken.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is not None:
            kinds = kind if isinstance(kind, tuple) else (kind,)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                names = " or ".join(k.__name__ for k in kinds)
                raise UsageError(f"{self.where}: {key} must be {names}, got {value!r}")
        return value

    def need(self, key: str, *, kind: type | tuple[type, ...] | None = None) -> Any:
        if key not in self.data:
            raise UsageError(f"{self.where}: {key} is missing")
        return self.get(key, kind=kind)

    def duration(self, key: str, default: float | None = None) -> float | None:
        value = self.get(key)
        if value is None:
            return default
        return parse_duration(value, f"{self.where}: {key}")

    def name(self, key: str = "name") -> str:
        text = str(self.need(key, kind=str)).lower()
        if not text or not set(text) <= _NAME_CHARS or len(text) > 12 or text[0] == "-":
            raise UsageError(f"{self.where}: {key} {text!r}: 1..12 characters of a-z, 0-9 and '-'")
        return text

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.taken)
        if unknown:
            raise UsageError(f"{self.where}: unknown key(s) {', '.join(unknown)} (docs/scenarios.md lists them)")


def tables(data: dict[str, Any], key: str, source: str) -> list[Table]:
    items = data.get(key, [])
    if not isinstance(items, list):
        raise UsageError(f"{source}: [[{key}]] must be an array of tables ([[{key}]] headers)")
    return [Table(item, f"{source}: [[{key}]] #{n + 1}") for n, item in enumerate(items)]
