"""The KMS host's state in SQLite: the client table, capacities and the host's ePIDs.

Each answered request's change (:class:`emu.kms.count_cache.Recorded`) is applied and committed in
one transaction before the server writes the response, so a ``kill -9`` at any moment loses no
answered activation and a restarted host resumes its counts exactly. The database runs in WAL
mode with ``synchronous=OFF``: a commit has been handed to the operating system when ``COMMIT``
returns, so it survives the death of the process (kill -9), which is the guarantee the host
makes; measured, that halves the cost of a commit against ``NORMAL``, whose checkpoints fsync.
``durable=True`` (``--durable``, ``synchronous=FULL``) also survives a power cut, at the cost of
an fsync per commit.

Several worker processes (``emu host serve --workers N``) share one file. Each keeps the table in
memory, as a single host does, and serialises its batches through SQLite's write lock: a batch starts
with ``BEGIN IMMEDIATE`` (:meth:`HostStore.begin_batch`), which waits for any other worker's batch to
commit, and reports whether another process committed since this one last did (``PRAGMA
data_version``); the worker then brings its table up to date before counting. So every count is
computed from every answer committed before it, by any worker, exactly as one host would.

Bringing a table up to date reads only what changed: a store opened with ``shared=True`` (each worker's)
numbers its batches (``meta.seq``), stamps every row it writes with its batch number and notes every
row it deletes in ``removed``; another worker then reads the rows and deletions numbered after the last
batch it saw (:meth:`HostStore.sync`) instead of the whole table, which it reloads only when it has
fallen further behind than the deletions kept (:data:`REMOVED_KEPT` batches).
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from emu.errors import UsageError
from emu.kms.count_cache import AppStatus, ClientRecord, CountCache, CountPolicy, Recorded

__all__ = ["SCHEMA_VERSION", "ClientSeen", "HostStore", "InventoryRow"]

SCHEMA_VERSION = 3
#: Batches whose deletions stay in ``removed`` for other workers to read; a worker further behind reloads.
REMOVED_KEPT = 1024
#: Milliseconds a worker waits for another worker's batch before giving up on its own (then its clients retry).
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
    app_id TEXT NOT NULL,
    cmid TEXT NOT NULL,
    last_request REAL NOT NULL,
    workstation TEXT,
    sku_id TEXT,
    first_seen REAL,
    last_count INTEGER,
    activated INTEGER,
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, cmid)
);
CREATE TABLE IF NOT EXISTS capacities (app_id TEXT PRIMARY KEY, capacity INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS epids (csvlk TEXT PRIMARY KEY, epid TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS removed (app_id TEXT NOT NULL, cmid TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_seq ON removed (seq);
"""
#: After any migration (a schema 2 file has no ``seq`` column before it).
_SEQ_INDEX = "CREATE INDEX IF NOT EXISTS clients_seq ON clients (seq)"
#: Schema 1 (before the inventory) gains the inventory columns; its rows keep their counts.
_MIGRATE_1_TO_2 = [
    "ALTER TABLE clients ADD COLUMN workstation TEXT",
    "ALTER TABLE clients ADD COLUMN sku_id TEXT",
    "ALTER TABLE clients ADD COLUMN first_seen REAL",
    "ALTER TABLE clients ADD COLUMN last_count INTEGER",
    "ALTER TABLE clients ADD COLUMN activated INTEGER",
]
#: Schema 2 gains the batch numbers workers read each other's changes by (rows written before stay at 0).
_MIGRATE_2_TO_3 = ["ALTER TABLE clients ADD COLUMN seq INTEGER NOT NULL DEFAULT 0"]


_UPSERT = (
    "INSERT INTO clients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(app_id, cmid) DO UPDATE SET "
    "last_request=excluded.last_request, workstation=coalesce(excluded.workstation, workstation), "
    "sku_id=coalesce(excluded.sku_id, sku_id), last_count=coalesce(excluded.last_count, last_count), "
    "activated=coalesce(excluded.activated, activated), seq=excluded.seq"
)
_DELETE = "DELETE FROM clients WHERE app_id=? AND cmid=?"
_NOTE_REMOVED = "INSERT INTO removed VALUES (?, ?, ?)"
_REMOVED_SINCE = "SELECT app_id, cmid FROM removed WHERE seq > ? ORDER BY seq"
_ROWS_SINCE = "SELECT app_id, cmid, last_request FROM clients WHERE seq > ? ORDER BY last_request, rowid"
_ALL_ROWS = "SELECT app_id, cmid, last_request FROM clients ORDER BY last_request, rowid"
_CAPACITY = (
    "INSERT INTO capacities VALUES (?, ?) ON CONFLICT(app_id) DO UPDATE SET capacity=max(capacity, excluded.capacity)"
)


@dataclass(frozen=True, slots=True)
class ClientSeen:
    """What the inventory keeps of a client's latest request (``emu host status``)."""

    app_id: uuid.UUID
    cmid: uuid.UUID
    workstation: str
    sku_id: uuid.UUID
    at: float
    count: int
    activated: bool


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """One client of the table, as ``emu host status`` lists it."""

    app_id: uuid.UUID
    cmid: uuid.UUID
    last_request: float
    workstation: str | None
    sku_id: uuid.UUID | None
    first_seen: float | None
    last_count: int | None
    activated: bool | None


class HostStore:
    """SQLite persistence of a KMS host (``path=None`` or ``":memory:"``: in memory)."""

    def __init__(self, path: str | Path | None = None, durable: bool = False, shared: bool = False) -> None:
        self.path = str(path) if path else ":memory:"
        #: Other processes write this file too (``--workers``): number batches and note deletions for :meth:`sync`.
        self.shared = shared
        #: The last batch number whose changes this process's table holds (shared stores).
        self._seq = 0
        #: The number of the last batch committed before the one :meth:`begin_batch` began (shared stores);
        #: that batch's number is one more.
        self._latest = 0
        if self.path != ":memory:" and not Path(self.path).parent.exists():
            raise UsageError(f"state file {self.path}: folder {Path(self.path).parent} does not exist")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # Workers sharing the file wait for each other's batches instead of failing with SQLITE_BUSY.
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) in (1, 2):
                self._db.execute("BEGIN IMMEDIATE")
                steps = (_MIGRATE_1_TO_2 if int(row[0]) == 1 else []) + _MIGRATE_2_TO_3
                for statement in steps:
                    self._db.execute(statement)
                self._db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))
                self._db.execute("COMMIT")
            elif int(row[0]) != SCHEMA_VERSION:
                raise UsageError(f"state file {self.path} has schema {row[0]}; this emu reads schema {SCHEMA_VERSION}")
            self._db.execute(_SEQ_INDEX)
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"state file {self.path} is not an emu host database: {exc}") from exc
        self._data_version: int | None = None

    def close(self) -> None:
        """Close the database (every change is already committed)."""
        self._db.close()

    # -- writing -------------------------------------------------------------------------------

    def apply_all(self, changes: list[Recorded]) -> None:
        """Apply several requests' changes, in order, in one transaction (the server's group commit).

        Either all of them are committed or none is (the exception propagates and nothing is answered).
        """
        self.begin_batch()
        try:
            self.write_changes(changes)
            self.commit()
        except BaseException:
            self.rollback()
            raise

    def begin_batch(self) -> bool:
        """Take the write lock for a batch; True when another process committed since this one last did.

        The caller then reloads its table (:meth:`load_cache`) before counting, computes its answers,
        :meth:`write_changes`, and :meth:`commit` (or :meth:`rollback`) before writing any answer.
        """
        self._db.execute("BEGIN IMMEDIATE")
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        if self.shared:
            self._latest = self._meta_int("seq") if changed else self._seq
        return changed

    def sync(self, cache: CountCache) -> bool:
        """Bring ``cache`` up to date with the batches other workers committed (call after :meth:`begin_batch`
        reported them); False when this store cannot tell (not shared, or further behind than the deletions
        kept): then load the whole table with :meth:`load_cache`.

        Only the rows stamped with a later batch number and the deletions noted since are read.
        """
        if not self.shared or not self._db.in_transaction or self._seq < self._meta_int("removed_floor"):
            return False
        removed = [(uuid.UUID(app), uuid.UUID(cmid)) for app, cmid in self._db.execute(_REMOVED_SINCE, (self._seq,))]
        cache.merge(removed, self._records(_ROWS_SINCE, self._seq), self._capacities())
        self._seq = self._latest
        return True

    def commit(self) -> None:
        """Commit the batch begun by :meth:`begin_batch`."""
        self._db.execute("COMMIT")
        if self.shared:
            self._seq = self._latest + 1

    def _meta_int(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def rollback(self) -> None:
        """Abandon the batch begun by :meth:`begin_batch` (nothing of it is kept)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def write_changes(self, changes: list[Recorded], seen: list[ClientSeen] | None = None) -> None:
        """Write several requests' changes, in order, inside the current batch (``seen``: the inventory).

        One row per client carries both what the count needs (its last request) and what the inventory
        shows (workstation, product, first request, the count sent, activated), written by one statement.
        """
        about = {(s.app_id, s.cmid): s for s in seen or ()}
        seq = self._latest + 1 if self.shared else 0
        rows: list[tuple[object, ...]] = []
        expired: list[list[tuple[str, str]]] = []
        evicted: list[list[tuple[str, str]]] = []
        capacities: dict[str, int] = {}
        for change in changes:
            record = change.record
            app = str(record.app_id)
            s = about.get((record.app_id, record.cmid))
            if s is None:
                rows.append(
                    (app, str(record.cmid), record.last_request, None, None, record.last_request, None, None, seq)
                )
            else:
                rows.append(
                    (
                        app,
                        str(record.cmid),
                        record.last_request,
                        s.workstation,
                        str(s.sku_id),
                        s.at,
                        s.count,
                        int(s.activated),
                        seq,
                    )
                )
            expired.append([(app, str(cmid)) for cmid in change.expired])
            evicted.append([(app, str(cmid)) for cmid in change.evicted])
            if change.capacity_grew or change.is_new:
                capacities[app] = max(capacities.get(app, 0), change.capacity)
        db = self._db
        if not any(expired) and not any(evicted):
            db.executemany(_UPSERT, rows)
        else:
            # In the order the host made them: a request first drops its application's expired records
            # (a returning client's own among them), then is recorded, then evicts the oldest beyond the
            # capacity. So a CMID recorded and then evicted within one batch ends up deleted, one expired
            # or evicted and then recorded again ends up present.
            for row, dropped, pushed_out in zip(rows, expired, evicted):
                if dropped:
                    db.executemany(_DELETE, dropped)
                db.execute(_UPSERT, row)
                if pushed_out:
                    db.executemany(_DELETE, pushed_out)
        if capacities:
            db.executemany(_CAPACITY, sorted(capacities.items()))
        if self.shared:  # what the other workers read in sync()
            gone = [(app, cmid, seq) for removed in (*expired, *evicted) for app, cmid in removed]
            if gone:
                db.executemany(_NOTE_REMOVED, gone)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('seq', ?)", (str(seq),))
            if seq % REMOVED_KEPT == 0:
                floor = seq - REMOVED_KEPT
                db.execute("DELETE FROM removed WHERE seq <= ?", (floor,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('removed_floor', ?)", (str(floor),))

    def save_epids(self, epids: dict[str, str]) -> None:
        """Remember the host's ePIDs so they stay the same across restarts."""
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO epids VALUES (?, ?)", sorted(epids.items()))
        self._db.execute("COMMIT")

    # -- reading -------------------------------------------------------------------------------

    def load_cache(self, policy: CountPolicy | None = None) -> CountCache:
        """A client table holding exactly what was committed."""
        cache = CountCache(policy)
        # The version first: a commit by another process while the rows are read makes the next batch reload.
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        seq = self._meta_int("seq")  # likewise: rows of a later batch read now are read again by sync()
        cache.load(self._records(_ALL_ROWS), self._capacities())
        self._data_version = version
        self._seq = seq
        return cache

    def _records(self, query: str, *params: object) -> list[ClientRecord]:
        """The client records a query over ``clients`` selects (app_id, cmid, last_request)."""
        return [
            ClientRecord(uuid.UUID(app), uuid.UUID(cmid), float(last))
            for app, cmid, last in self._db.execute(query, params)
        ]

    def _capacities(self) -> dict[uuid.UUID, int]:
        return {uuid.UUID(app): int(cap) for app, cap in self._db.execute("SELECT app_id, capacity FROM capacities")}

    def status(self, now: float) -> dict[uuid.UUID, AppStatus]:
        """Per application at ``now``: live count, capacity, oldest/newest record, next expiry."""
        return self.load_cache().status(now)

    def load_epids(self) -> dict[str, str]:
        """The ePIDs saved by :meth:`save_epids`, per CSVLK name."""
        return dict(self._db.execute("SELECT csvlk, epid FROM epids"))

    def inventory(self) -> list[InventoryRow]:
        """Every client in the table with what the inventory knows of it, oldest request first."""
        rows = self._db.execute(
            "SELECT app_id, cmid, last_request, workstation, sku_id, first_seen, last_count, activated "
            "FROM clients ORDER BY last_request, rowid"
        )
        return [
            InventoryRow(
                uuid.UUID(app),
                uuid.UUID(cmid),
                float(last),
                ws,
                uuid.UUID(sku) if sku else None,
                first,
                count,
                None if activated is None else bool(activated),
            )
            for app, cmid, last, ws, sku, first, count, activated in rows
        ]

    def client_count(self) -> int:
        """Rows in the client table (all applications, expired ones included until dropped)."""
        return int(self._db.execute("SELECT count(*) FROM clients").fetchone()[0])

    def cmids(self) -> set[tuple[str, str]]:
        """Every (app_id, cmid) stored (tests and ``emu host status``)."""
        return {(a, c) for a, c in self._db.execute("SELECT app_id, cmid FROM clients")}
