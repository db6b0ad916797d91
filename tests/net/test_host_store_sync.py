"""Workers sharing one state file read only each other's changes (HostStore.sync) and still count exactly.

Two HostStore objects on one file stand for two ``--workers`` processes: they take turns writing
batches (new clients, renewals, evictions once the table is full, expiries after 30 days); after each
batch the other one syncs, and its table must equal a table loaded whole from the file.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from pathlib import Path

import pytest

from emu.kms.count_cache import CountCache, CountPolicy
from emu.net import host_store as host_store_module
from emu.net.host_store import SCHEMA_VERSION, HostStore

DAY = 86400.0
APPS = [uuid.UUID(int=0xA0 + i) for i in range(2)]


def _table(cache: CountCache) -> dict[uuid.UUID, tuple[int, list[tuple[uuid.UUID, float]]]]:
    """Every application's capacity and records, oldest first (what the counts depend on)."""
    return {app: (t.capacity, list(t.clients.items())) for app, t in cache._tables.items() if t.clients or t.capacity}


def _batch(store: HostStore, cache: CountCache, requests: list[tuple[uuid.UUID, uuid.UUID, int, float]]) -> list[int]:
    """One worker's batch: catch up if the other committed, count, write, commit; the counts answered."""
    if store.begin_batch():
        assert store.sync(cache), "a shared store within the deletions kept must sync"
    changes = [cache.record(app, cmid, threshold, now) for app, cmid, threshold, now in requests]
    store.write_changes(changes)
    store.commit()
    return [c.count for c in changes]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_workers_taking_turns_keep_tables_equal_to_the_file(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "state.sqlite"
    policy = CountPolicy()
    stores = [HostStore(path, shared=True), HostStore(path, shared=True)]
    caches = [store.load_cache(policy) for store in stores]
    rng = random.Random(seed)
    cmids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(90)]
    now = 1_000_000.0
    try:
        for turn in range(160):
            now += rng.choice([60.0, 3600.0, 5 * DAY]) if turn % 17 else 31 * DAY  # some records expire
            worker = rng.randrange(2)
            requests = [
                (rng.choice(APPS), rng.choice(cmids), rng.choice([5, 25]), now + i) for i in range(rng.randint(1, 4))
            ]
            _batch(stores[worker], caches[worker], requests)
            other = 1 - worker
            stores[other].begin_batch()
            assert stores[other].sync(caches[other])
            stores[other].rollback()
            whole = HostStore(path).load_cache(policy)
            assert _table(caches[other]) == _table(whole) == _table(caches[worker]), f"turn {turn}"
    finally:
        for store in stores:
            store.close()


def test_counts_of_alternating_workers_are_those_of_one_host(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    stores = [HostStore(path, shared=True), HostStore(path, shared=True)]
    caches = [store.load_cache() for store in stores]
    alone = CountCache()
    try:
        for i in range(120):  # threshold 25: capacity 50, so the later clients evict the earlier ones
            request = (APPS[0], uuid.UUID(int=i % 70 + 1), 25, 1000.0 + i)
            expected = alone.record(*request).count
            assert _batch(stores[i % 2], caches[i % 2], [request]) == [expected]
    finally:
        for store in stores:
            store.close()


def test_a_worker_further_behind_than_the_deletions_kept_reloads_the_whole_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_store_module, "REMOVED_KEPT", 4)
    path = tmp_path / "state.sqlite"
    busy, idle = HostStore(path, shared=True), HostStore(path, shared=True)
    busy_cache, idle_cache = busy.load_cache(), idle.load_cache()
    try:
        for i in range(12):
            _batch(busy, busy_cache, [(APPS[0], uuid.UUID(int=i + 1), 1, 1000.0 + i)])  # capacity 2: evictions
        assert idle.begin_batch()
        assert not idle.sync(idle_cache)
        idle.rollback()
        assert busy._db.execute("SELECT count(*) FROM removed").fetchone()[0] <= 4 + 1
        assert _table(idle.load_cache()) == _table(busy_cache)
    finally:
        busy.close()
        idle.close()


def test_an_unshared_store_never_claims_to_sync(tmp_path: Path) -> None:
    store = HostStore(tmp_path / "state.sqlite")
    try:
        store.begin_batch()
        assert not store.sync(CountCache())
        store.rollback()
    finally:
        store.close()


def test_a_state_file_of_schema_2_is_migrated_and_keeps_its_clients(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE clients (app_id TEXT NOT NULL, cmid TEXT NOT NULL, last_request REAL NOT NULL,"
        " workstation TEXT, sku_id TEXT, first_seen REAL, last_count INTEGER, activated INTEGER,"
        " PRIMARY KEY (app_id, cmid));"
        "CREATE TABLE capacities (app_id TEXT PRIMARY KEY, capacity INTEGER NOT NULL);"
        "CREATE TABLE epids (csvlk TEXT PRIMARY KEY, epid TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '2');"
        f"INSERT INTO clients VALUES ('{APPS[0]}', '{uuid.UUID(int=7)}', 1e9, 'pc7', NULL, 1e9, 3, 0);"
        f"INSERT INTO capacities VALUES ('{APPS[0]}', 50);"
    )
    db.close()
    store = HostStore(path, shared=True)
    try:
        (row,) = store.inventory()
        assert (row.cmid, row.workstation, row.last_count) == (uuid.UUID(int=7), "pc7", 3)
        assert store._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(SCHEMA_VERSION)
        cache = store.load_cache()
        assert _batch(store, cache, [(APPS[0], uuid.UUID(int=8), 5, 2e9)]) == [1]  # the old record expired
    finally:
        store.close()


def test_a_client_coming_back_after_its_record_expired_stays_in_the_state_file(tmp_path: Path) -> None:
    """The request drops the expired record (its own) and then records the client: the file keeps it."""
    path = tmp_path / "state.sqlite"
    store, cache = HostStore(path), CountCache()
    client = uuid.UUID(int=42)
    try:
        for when in (1000.0, 1000.0 + 31 * DAY):
            store.begin_batch()
            change = cache.record(APPS[0], client, 5, when)
            store.write_changes([change])
            store.commit()
        assert change.expired == (client,)
        assert _table(HostStore(path).load_cache()) == _table(cache) == {APPS[0]: (10, [(client, 1000.0 + 31 * DAY)])}
    finally:
        store.close()
