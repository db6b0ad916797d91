"""The KMS host's client table (kms-behaviour.md 3), one test per rule, each with explicit ``now``."""

from __future__ import annotations

import uuid

import pytest

from emu.errors import UsageError
from emu.kms.count_cache import DAY, RECORD_LIFETIME, ClientRecord, CountCache, CountPolicy
from emu.kms.products import OFFICE2010_APP_ID, OFFICE2013_APP_ID, WINDOWS_APP_ID

CLIENT_OS = 25  # threshold of Windows client editions (spec 7.2)
SERVER_OS = 5  # threshold of Windows Server and Office
T0 = 1_000.0


def cmid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n + 1)


def fill(cache: CountCache, clients: range, threshold: int = CLIENT_OS, start: float = T0, step: float = 60.0) -> float:
    """Record one request per client, ``step`` seconds apart; return the time of the last one."""
    now = start
    for n in clients:
        now = start + (n - clients.start) * step
        cache.record(WINDOWS_APP_ID, cmid(n), threshold, now)
    return now


def test_three_windows_10_clients_get_1_2_3_below_threshold():
    cache = CountCache()
    counts = [cache.record(WINDOWS_APP_ID, cmid(n), CLIENT_OS, T0 + n).count for n in range(3)]
    assert counts == [1, 2, 3]
    assert all(c < CLIENT_OS for c in counts)


def test_server_2012_r2_client_after_three_windows_10_clients_gets_4():
    cache = CountCache()
    fill(cache, range(3))
    assert cache.record(WINDOWS_APP_ID, cmid(100), SERVER_OS, T0 + 600).count == 4


def test_count_reaches_25_with_25_distinct_clients():
    cache = CountCache()
    last = fill(cache, range(25))
    assert cache.count(WINDOWS_APP_ID, last) == 25
    assert cache.record(WINDOWS_APP_ID, cmid(24), CLIENT_OS, last + 1).count == 25


def test_repeated_cmid_does_not_increase_the_count():
    cache = CountCache()
    first = cache.record(WINDOWS_APP_ID, cmid(1), CLIENT_OS, T0)
    again = cache.record(WINDOWS_APP_ID, cmid(1), CLIENT_OS, T0 + 7200)
    assert (first.count, again.count) == (1, 1)
    assert (first.is_new, again.is_new) == (True, False)


def test_client_away_30_days_is_dropped_and_the_count_falls_by_one():
    cache = CountCache()
    cache.record(WINDOWS_APP_ID, cmid(1), CLIENT_OS, T0)
    cache.record(WINDOWS_APP_ID, cmid(2), CLIENT_OS, T0 + DAY)
    assert cache.count(WINDOWS_APP_ID, T0 + 30 * DAY - 1) == 2
    assert cache.count(WINDOWS_APP_ID, T0 + 30 * DAY) == 1
    result = cache.record(WINDOWS_APP_ID, cmid(2), CLIENT_OS, T0 + 30 * DAY)
    assert result.expired == (cmid(1),)
    assert result.count == 1


def test_client_renewing_at_day_29_stays_with_a_fresh_30_days():
    cache = CountCache()
    cache.record(WINDOWS_APP_ID, cmid(1), CLIENT_OS, T0)
    renewed = cache.record(WINDOWS_APP_ID, cmid(1), CLIENT_OS, T0 + 29 * DAY)
    assert renewed.expired == () and not renewed.is_new
    assert cache.count(WINDOWS_APP_ID, T0 + 30 * DAY) == 1
    assert cache.count(WINDOWS_APP_ID, T0 + 29 * DAY + 30 * DAY - 1) == 1
    assert cache.count(WINDOWS_APP_ID, T0 + 29 * DAY + 30 * DAY) == 0


def test_51st_client_pushes_out_the_oldest():
    cache = CountCache()
    last = fill(cache, range(50))
    result = cache.record(WINDOWS_APP_ID, cmid(50), CLIENT_OS, last + 60)
    assert result.evicted == (cmid(0),)
    assert result.count == 50 and result.capacity == 50
    assert cmid(0) not in {r.cmid for r in cache.records()}


def test_renewal_moves_a_client_to_the_back_of_the_eviction_queue():
    cache = CountCache()
    last = fill(cache, range(50))
    cache.record(WINDOWS_APP_ID, cmid(0), CLIENT_OS, last + 1)  # the oldest renews
    result = cache.record(WINDOWS_APP_ID, cmid(50), CLIENT_OS, last + 2)
    assert result.evicted == (cmid(1),)


def test_servers_only_host_holds_10_then_a_client_os_request_grows_it_to_50_for_good():
    cache = CountCache()
    last = fill(cache, range(11), threshold=SERVER_OS)
    assert cache.capacity(WINDOWS_APP_ID) == 10
    assert cache.count(WINDOWS_APP_ID, last) == 10
    grown = cache.record(WINDOWS_APP_ID, cmid(200), CLIENT_OS, last + 60)
    assert grown.capacity_grew and grown.capacity == 50
    assert grown.count == 11
    after = cache.record(WINDOWS_APP_ID, cmid(201), SERVER_OS, last + 120)
    assert not after.capacity_grew and after.capacity == 50
    assert cache.capacity(WINDOWS_APP_ID) == 50


def test_office_2010_and_office_2013_are_counted_apart_from_windows():
    cache = CountCache()
    fill(cache, range(3))
    assert cache.record(OFFICE2010_APP_ID, cmid(0), SERVER_OS, T0 + 600).count == 1
    assert cache.record(OFFICE2013_APP_ID, cmid(0), SERVER_OS, T0 + 600).count == 1
    assert cache.record(OFFICE2013_APP_ID, cmid(1), SERVER_OS, T0 + 660).count == 2
    assert cache.count(WINDOWS_APP_ID, T0 + 700) == 3
    assert cache.capacity(OFFICE2013_APP_ID) == 10


def test_load_of_records_restores_exactly():
    cache = CountCache()
    fill(cache, range(12), threshold=SERVER_OS)
    cache.record(OFFICE2013_APP_ID, cmid(7), SERVER_OS, T0 + 5000)
    cache.record(WINDOWS_APP_ID, cmid(3), SERVER_OS, T0 + 6000)  # a renewal reorders
    restored = CountCache()
    restored.load(reversed(cache.records()), cache.capacities())
    assert restored.records() == cache.records()
    assert restored.capacities() == cache.capacities()
    assert restored.status(T0 + 7000) == cache.status(T0 + 7000)
    next_a = cache.record(WINDOWS_APP_ID, cmid(99), SERVER_OS, T0 + 8000)
    next_b = restored.record(WINDOWS_APP_ID, cmid(99), SERVER_OS, T0 + 8000)
    assert next_a == next_b


def test_load_refuses_more_records_than_the_capacity():
    records = [ClientRecord(WINDOWS_APP_ID, cmid(n), T0 + n) for n in range(11)]
    with pytest.raises(UsageError, match="more than its capacity"):
        CountCache().load(records, {WINDOWS_APP_ID: 10})


def test_load_refuses_a_cmid_listed_twice():
    records = [ClientRecord(WINDOWS_APP_ID, cmid(1), T0), ClientRecord(WINDOWS_APP_ID, cmid(1), T0 + 1)]
    with pytest.raises(UsageError, match="twice"):
        CountCache().load(records, {WINDOWS_APP_ID: 10})


def test_record_delta_names_what_a_store_must_write():
    cache = CountCache(CountPolicy(record_lifetime=10 * DAY, capacity_factor=2))
    cache.record(WINDOWS_APP_ID, cmid(1), SERVER_OS, T0)
    result = cache.record(WINDOWS_APP_ID, cmid(2), SERVER_OS, T0 + 10 * DAY)
    assert result.record == ClientRecord(WINDOWS_APP_ID, cmid(2), T0 + 10 * DAY)
    assert result.removed == (cmid(1),)
    assert not result.capacity_grew


def test_time_going_backwards_is_a_usage_error():
    cache = CountCache()
    cache.record(WINDOWS_APP_ID, cmid(1), CLIENT_OS, T0)
    with pytest.raises(UsageError, match="earlier"):
        cache.record(WINDOWS_APP_ID, cmid(2), CLIENT_OS, T0 - 1)


def test_status_reports_count_capacity_and_next_expiry():
    cache = CountCache()
    cache.record(WINDOWS_APP_ID, cmid(1), CLIENT_OS, T0)
    cache.record(WINDOWS_APP_ID, cmid(2), CLIENT_OS, T0 + DAY)
    status = cache.status(T0 + 2 * DAY)[WINDOWS_APP_ID]
    assert (status.count, status.capacity) == (2, 50)
    assert (status.oldest, status.newest) == (T0, T0 + DAY)
    assert status.next_expiry == T0 + RECORD_LIFETIME
    assert cache.next_expiry() == T0 + RECORD_LIFETIME


def test_expire_drops_what_ran_out_and_returns_it():
    cache = CountCache()
    cache.record(WINDOWS_APP_ID, cmid(1), CLIENT_OS, T0)
    cache.record(OFFICE2013_APP_ID, cmid(2), SERVER_OS, T0 + DAY)
    dropped = cache.expire(T0 + RECORD_LIFETIME)
    assert dropped == (ClientRecord(WINDOWS_APP_ID, cmid(1), T0),)
    assert [r.cmid for r in cache.records()] == [cmid(2)]


def test_threshold_zero_is_counted_as_one():
    cache = CountCache()
    result = cache.record(WINDOWS_APP_ID, cmid(1), 0, T0)
    assert (result.count, result.capacity) == (1, 2)


def test_policy_rejects_nonsense_settings():
    with pytest.raises(UsageError):
        CountPolicy(record_lifetime=0)
    with pytest.raises(UsageError):
        CountPolicy(capacity_factor=0)


def test_large_table_keeps_only_the_newest_capacity_records():
    cache = CountCache()
    for n in range(10_000):
        cache.record(WINDOWS_APP_ID, cmid(n), 1000, T0 + n)
    assert cache.count(WINDOWS_APP_ID, T0 + 10_000) == 2000
    assert cache.records()[0].cmid == cmid(8000)
