"""SQLite state of ``emu dc serve``: one row per directory entry, written (and committed) before the
LDAP answer goes out, so an accepted add or delete survives ``kill -9``."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable

from emu.adba.directory import Change, Directory, Entry
from emu.adba.dn import normalise_dn
from emu.errors import ScenarioError

__all__ = ["DcStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, dn TEXT NOT NULL, attrs TEXT NOT NULL);
"""


def _encode(entry: Entry) -> str:
    return json.dumps([[d, [base64.b64encode(v).decode() for v in vals]] for d, vals in entry.attrs.values()])


def _decode(dn: str, text: str) -> Entry:
    entry = Entry(dn)
    for disp, vals in json.loads(text):
        entry.attrs[disp.lower()] = (disp, [base64.b64decode(v) for v in vals])
    return entry


class DcStore:
    """The state file. ``durable`` adds synchronous=FULL (survives power loss, not just kill -9)."""

    def __init__(self, path: str, *, durable: bool = False) -> None:
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ScenarioError(f"--state {path}: not an emu dc state file ({exc})") from exc

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def empty(self) -> bool:
        return bool(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 0)

    def load(self, directory: Directory) -> int:
        """Replace ``directory``'s entries with the stored ones; returns how many."""
        directory.entries = {k: _decode(dn, a) for k, dn, a in self._db.execute("SELECT key, dn, attrs FROM entries")}
        return len(directory.entries)

    def save_all(self, entries: Iterable[Entry]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            for e in entries:
                self._db.execute(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", (normalise_dn(e.dn), e.dn, _encode(e))
                )

    def commit(self, changes: Iterable[Change]) -> None:
        """Write the changes of one operation in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            for ch in changes:
                key = normalise_dn(ch.dn)
                if ch.entry is None:
                    self._db.execute("DELETE FROM entries WHERE key=?", (key,))
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", (key, ch.entry.dn, _encode(ch.entry))
                    )

    def close(self) -> None:
        self._db.close()
