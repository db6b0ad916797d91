"""The activation service's ledger in SQLite: lab keys, their limits and every activation.

Each activation is decided (emu/mak/ledger.py rules) and recorded in one ``BEGIN IMMEDIATE``
transaction, committed with ``synchronous=FULL`` before the caller sends the answer, so a service killed
with SIGKILL never hands out a CID it did not count. ``emu actsvc phone`` and ``emu actsvc keys`` open
the same file next to a running service (WAL mode).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from emu.mak.errors import ActivationError
from emu.mak.ids import E_MISMATCHED_KEY, confirmation_id_for, key_digits, parse_iid
from emu.mak.keys import KeyKind, extended_pid, parse_lab_key
from emu.mak.ledger import E_OUT_OF_RANGE, KeyRecord, admit, remaining

__all__ = ["E_WRONG_KEY_TYPE", "Activation", "LedgerStore"]

E_WRONG_KEY_TYPE = 0xC004F07D

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, grp TEXT NOT NULL, lim INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0, blocked INTEGER NOT NULL DEFAULT 0,
    pid TEXT NOT NULL UNIQUE, digits TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS activations (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL REFERENCES keys(key), identity TEXT NOT NULL,
    iid TEXT NOT NULL, purpose TEXT NOT NULL, channel TEXT NOT NULL, at REAL NOT NULL);
"""


@dataclass(frozen=True)
class Activation:
    key: str
    identity: str
    iid: str
    purpose: str
    channel: str
    at: float


class LedgerStore:
    """One SQLite ledger; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- keys -------------------------------------------------------------------------------------------
    def add_key(self, key: str, group: str, limit: int) -> KeyRecord:
        """Register a lab key (MAK: ``limit`` activations; CSVLK: the limit is the documented 6 x 10)."""
        parsed = parse_lab_key(key)
        if limit < 0:
            raise ValueError("the limit must be 0 or more")
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO keys (key, kind, grp, lim, pid, digits) VALUES (?, ?, ?, ?, ?, ?)",
                    (parsed.text, parsed.kind.value, group, limit, extended_pid(parsed.text), key_digits(parsed.text)),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"{parsed.text} is already in the ledger") from None
        return self._record_where("key = ?", parsed.text)  # type: ignore[return-value]

    def block(self, key: str, blocked: bool = True) -> KeyRecord:
        text = parse_lab_key(key).text
        with self._lock:
            if self._db.execute("UPDATE keys SET blocked = ? WHERE key = ?", (int(blocked), text)).rowcount == 0:
                raise ActivationError(E_OUT_OF_RANGE, f"{text} is not in the ledger")
        return self._record_where("key = ?", text)  # type: ignore[return-value]

    def keys(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._db.execute("SELECT key FROM keys ORDER BY rowid").fetchall()
        return [r for r in (self._record_where("key = ?", row[0]) for row in rows) if r is not None]

    def record(self, key: str) -> KeyRecord | None:
        return self._record_where("key = ?", parse_lab_key(key).text)

    def pid_of(self, key: str) -> str:
        return extended_pid(parse_lab_key(key).text)

    def activations(self, key: str | None = None) -> list[Activation]:
        sql = "SELECT key, identity, iid, purpose, channel, at FROM activations"
        with self._lock:
            rows = self._db.execute(sql + (" WHERE key = ?" if key else "") + " ORDER BY id", (key,) if key else ())
            return [Activation(*row) for row in rows.fetchall()]

    def _record_where(self, where: str, value: str, db: sqlite3.Connection | None = None) -> KeyRecord | None:
        lock = None if db is not None else self._lock
        if lock:
            lock.acquire()
        try:
            cur = db or self._db
            row = cur.execute(f"SELECT key, kind, grp, lim, used, blocked FROM keys WHERE {where}", (value,)).fetchone()
            if row is None:
                return None
            hosts = cur.execute(
                "SELECT identity, COUNT(*) FROM activations WHERE key = ? GROUP BY identity ORDER BY MIN(id)", (row[0],)
            ).fetchall()
        finally:
            if lock:
                lock.release()
        kind = KeyKind(row[1])
        return KeyRecord(
            row[0], kind, row[2], row[3], row[4], bool(row[5]), tuple(hosts) if kind is KeyKind.CSVLK else ()
        )

    # --- activation ---------------------------------------------------------------------------------------
    def activate(
        self,
        iid_text: str,
        now: float,
        *,
        key: str | None = None,
        pid: str | None = None,
        purpose: str = "client",
        channel: str = "online",
        identity: str | None = None,
    ) -> str:
        """Decide, count and commit one activation; the CID, or :class:`ActivationError`."""
        iid = parse_iid(iid_text)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                record = self._record_where("digits = ?", iid.key_part, db=self._db)
                if key is not None:
                    text = parse_lab_key(key).text
                    if record is None or record.key != text:
                        mine = self._record_where("key = ?", text, db=self._db)
                        if mine is None:
                            raise ActivationError(E_OUT_OF_RANGE, "the key is not in the activation service's ledger")
                        raise ActivationError(E_MISMATCHED_KEY, "the installation ID belongs to another key")
                if record is not None and pid is not None and extended_pid(record.key) != pid:
                    raise ActivationError(E_MISMATCHED_KEY, "the installation ID belongs to another product ID")
                if record is not None and purpose in ("host", "forest") and record.kind is not KeyKind.CSVLK:
                    raise ActivationError(E_WRONG_KEY_TYPE, f"a {purpose} activates with a KMS host key")
                who = identity or iid.hardware_part
                code = admit(record, who)
                if code:
                    raise ActivationError(code, record.key if record else "no such key in the ledger")
                assert record is not None
                self._db.execute("UPDATE keys SET used = used + 1 WHERE key = ?", (record.key,))
                self._db.execute(
                    "INSERT INTO activations (key, identity, iid, purpose, channel, at) VALUES (?, ?, ?, ?, ?, ?)",
                    (record.key, who, iid.text, purpose, channel, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return confirmation_id_for(iid)

    def remaining_for_pid(self, pid: str) -> int:
        """Activations left on the key whose ePID is ``pid`` (BatchActivation RequestType 2)."""
        record = self._record_where("pid = ?", pid)
        if record is None:
            raise ActivationError(E_OUT_OF_RANGE, f"no key with product ID {pid}")
        if record.blocked:
            raise ActivationError(0xC004C003, record.key)
        return remaining(record)
