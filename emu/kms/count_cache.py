"""The KMS host's client table (count cache), as a pure data structure.

Rules (docs/kms-host.md):

* the host counts distinct clients by CMID, **per application** (Windows, Office 2010, Office 2013+),
  cumulatively across editions: three Windows 10 clients and then one Server 2012 R2 client get 1, 2, 3, 4;
* the count returned to a client includes that client;
* a record lives :data:`RECORD_LIFETIME` (30 days) after its client's last request; a renewal replaces the
  record and starts a fresh 30 days; a client that stays away 30 days is dropped;
* the table holds ``capacity_factor`` (2) x the highest threshold seen for the application: 10 while only
  servers (N = 5) have asked, 50 from the first client-OS request (N = 25) on; it never shrinks; when it is
  full the oldest record leaves first.

No I/O and no clock: ``now`` is passed in (seconds, monotonic, never going backwards per application).
Each :meth:`CountCache.record` returns the exact change it made (:class:`Recorded`) so that a store
(SQLite, another module) can apply that delta and commit before the answer goes out; :meth:`records`
and :meth:`capacities` give the whole state and :meth:`load` restores it.

Each application's table is an ``OrderedDict`` ordered by last-request time (a renewal moves the CMID to
the end), so recording, expiring and evicting are amortised O(1).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from emu.errors import UsageError

__all__ = [
    "CAPACITY_FACTOR",
    "DAY",
    "RECORD_LIFETIME",
    "AppStatus",
    "ClientRecord",
    "CountCache",
    "CountPolicy",
    "Recorded",
]

#: Seconds in a day.
DAY = 86_400.0
#: How long a client's record stays after its last request (docs/kms-host.md: 30 days).
RECORD_LIFETIME = 30 * DAY
#: Table size = this x the highest threshold seen (docs/kms-host.md).
CAPACITY_FACTOR = 2


@dataclass(frozen=True, slots=True)
class CountPolicy:
    """The counting settings, named as in reports and configuration.

    Attributes:
        record_lifetime: seconds a record stays after its client's last request (default 30 days).
        capacity_factor: table size as a multiple of the highest threshold seen (default 2).
    """

    record_lifetime: float = RECORD_LIFETIME
    capacity_factor: int = CAPACITY_FACTOR

    def __post_init__(self) -> None:
        if self.record_lifetime <= 0:
            raise UsageError(f"record_lifetime must be positive seconds, not {self.record_lifetime}")
        if self.capacity_factor < 1:
            raise UsageError(f"capacity_factor must be at least 1, not {self.capacity_factor}")


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """One row of the client table: a CMID and the time of its last request.

    Attributes:
        app_id: the application the client was counted in.
        cmid: the client machine ID.
        last_request: ``now`` of the client's last request, in seconds.
    """

    app_id: uuid.UUID
    cmid: uuid.UUID
    last_request: float


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one :meth:`CountCache.record` call did; a store applies exactly this delta.

    Attributes:
        record: the requester's record as it now stands (insert or replace it).
        count: clients in the application's table after recording, the requester included.
        capacity: the application's table size after recording.
        is_new: the CMID was not in the table (``False``: a renewal replaced its record).
        expired: CMIDs dropped because their 30 days ran out (delete them).
        evicted: CMIDs pushed out, oldest first, because the table was full (delete them).
        capacity_grew: the capacity went up with this request's threshold (store the new capacity).
    """

    record: ClientRecord
    count: int
    capacity: int
    is_new: bool
    expired: tuple[uuid.UUID, ...] = ()
    evicted: tuple[uuid.UUID, ...] = ()
    capacity_grew: bool = False

    @property
    def removed(self) -> tuple[uuid.UUID, ...]:
        """Every CMID this call removed from the table (expired, then evicted)."""
        return self.expired + self.evicted


@dataclass(frozen=True, slots=True)
class AppStatus:
    """One application's table at a moment, for reports and timelines.

    Attributes:
        app_id: the application.
        count: live clients (records not yet expired at that moment).
        capacity: the table size.
        oldest: last-request time of the oldest live record (``None`` if empty).
        newest: last-request time of the newest live record (``None`` if empty).
        next_expiry: when the oldest live record expires, unless renewed (``None`` if empty).
    """

    app_id: uuid.UUID
    count: int
    capacity: int
    oldest: float | None
    newest: float | None
    next_expiry: float | None


@dataclass(slots=True)
class _AppTable:
    capacity: int = 0
    # CMID -> last request time, oldest first.
    clients: OrderedDict[uuid.UUID, float] = field(default_factory=OrderedDict)

    @property
    def newest(self) -> float | None:
        if not self.clients:
            return None
        return self.clients[next(reversed(self.clients))]


class CountCache:
    """The host's client table, per application. See the module docstring for the rules."""

    def __init__(self, policy: CountPolicy | None = None) -> None:
        self.policy = policy if policy is not None else CountPolicy()
        self._tables: dict[uuid.UUID, _AppTable] = {}

    # Recording ------------------------------------------------------------------------------------

    def record(self, app_id: uuid.UUID, cmid: uuid.UUID, threshold: int, now: float) -> Recorded:
        """Record a valid request from ``cmid`` and return the count to answer with, and the change.

        Args:
            app_id: the request's application ID (the table it is counted in).
            cmid: the request's client machine ID.
            threshold: the request's required client count N; the capacity becomes at least
                ``capacity_factor x N``. N below 1 is counted as 1 (as vlmcsd does, docs/kms-wire-protocol.md).
            now: seconds on the host's monotonic clock.

        Raises:
            UsageError: if ``now`` is earlier than the application's newest record (time went back).
        """
        table = self._tables.setdefault(app_id, _AppTable())
        newest = table.newest
        if newest is not None and now < newest:
            raise UsageError(
                f"count cache: now={now} is earlier than the newest record ({newest}) of application "
                f"{app_id}; pass times from one monotonic clock"
            )
        expired = tuple(cmid for cmid, _ in self._expire(table, now))

        wanted = self.policy.capacity_factor * max(int(threshold), 1)
        capacity_grew = wanted > table.capacity
        if capacity_grew:
            table.capacity = wanted

        is_new = cmid not in table.clients
        if not is_new:
            table.clients.move_to_end(cmid)
        table.clients[cmid] = now

        evicted: list[uuid.UUID] = []
        while len(table.clients) > table.capacity:
            old, _ = table.clients.popitem(last=False)
            evicted.append(old)

        return Recorded(
            record=ClientRecord(app_id, cmid, now),
            count=len(table.clients),
            capacity=table.capacity,
            is_new=is_new,
            expired=expired,
            evicted=tuple(evicted),
            capacity_grew=capacity_grew,
        )

    def expire(self, now: float) -> tuple[ClientRecord, ...]:
        """Drop every record whose lifetime has run out at ``now``; return the dropped records.

        :meth:`record` expires its own application's table itself; a host calls this at
        :meth:`next_expiry` when it wants its store (and its reports) to follow the table exactly.
        """
        dropped: list[ClientRecord] = []
        for app_id, table in self._tables.items():
            dropped.extend(ClientRecord(app_id, cmid, last) for cmid, last in self._expire(table, now))
        return tuple(dropped)

    def _expire(self, table: _AppTable, now: float) -> list[tuple[uuid.UUID, float]]:
        # A record expires once record_lifetime has fully passed since its last request.
        limit = now - self.policy.record_lifetime
        gone: list[tuple[uuid.UUID, float]] = []
        while table.clients:
            cmid, last = next(iter(table.clients.items()))
            if last > limit:
                break
            table.clients.popitem(last=False)
            gone.append((cmid, last))
        return gone

    # Queries --------------------------------------------------------------------------------------

    def count(self, app_id: uuid.UUID, now: float) -> int:
        """Live clients of the application at ``now`` (records not yet expired); does not change the table."""
        table = self._tables.get(app_id)
        if table is None:
            return 0
        limit = now - self.policy.record_lifetime
        stale = 0
        for last in table.clients.values():
            if last > limit:
                break
            stale += 1
        return len(table.clients) - stale

    def capacity(self, app_id: uuid.UUID) -> int:
        """The application's table size (0 before its first request)."""
        table = self._tables.get(app_id)
        return table.capacity if table is not None else 0

    def next_expiry(self) -> float | None:
        """The earliest time a record expires unless renewed (``None`` if the table is empty)."""
        times = [
            next(iter(t.clients.values())) + self.policy.record_lifetime for t in self._tables.values() if t.clients
        ]
        return min(times) if times else None

    def status(self, now: float) -> dict[uuid.UUID, AppStatus]:
        """Per application: live count, capacity, oldest/newest live record, next expiry."""
        limit = now - self.policy.record_lifetime
        out: dict[uuid.UUID, AppStatus] = {}
        for app_id, table in self._tables.items():
            live = [last for last in table.clients.values() if last > limit]
            oldest = live[0] if live else None
            out[app_id] = AppStatus(
                app_id=app_id,
                count=len(live),
                capacity=table.capacity,
                oldest=oldest,
                newest=live[-1] if live else None,
                next_expiry=oldest + self.policy.record_lifetime if oldest is not None else None,
            )
        return out

    # Persistence ----------------------------------------------------------------------------------

    def records(self) -> tuple[ClientRecord, ...]:
        """Every record, per application oldest first (expired ones included until dropped)."""
        return tuple(
            ClientRecord(app_id, cmid, last)
            for app_id, table in self._tables.items()
            for cmid, last in table.clients.items()
        )

    def capacities(self) -> dict[uuid.UUID, int]:
        """Each application's table size."""
        return {app_id: table.capacity for app_id, table in self._tables.items()}

    def merge(
        self,
        removed: Iterable[tuple[uuid.UUID, uuid.UUID]],
        records: Iterable[ClientRecord],
        capacities: Mapping[uuid.UUID, int],
    ) -> None:
        """Take in what another process sharing this table committed since this one last looked.

        ``removed`` are the (application, CMID) pairs it deleted (expired or evicted), ``records`` the
        rows it wrote that are still present, oldest request first, ``capacities`` every application's
        capacity. Deletions go first, then the records, so a CMID deleted and recorded again ends up
        present. The records are newer than every record here (the processes take turns under one
        lock), so each goes to the young end of its application's table.
        """
        for app_id, capacity in capacities.items():
            table = self._tables.setdefault(app_id, _AppTable())
            table.capacity = max(table.capacity, int(capacity))
        for app_id, cmid in removed:
            holder = self._tables.get(app_id)
            if holder is not None:
                holder.clients.pop(cmid, None)
        for rec in records:
            table = self._tables.setdefault(rec.app_id, _AppTable())
            table.clients.pop(rec.cmid, None)
            table.clients[rec.cmid] = rec.last_request

    def load(self, records: Iterable[ClientRecord], capacities: Mapping[uuid.UUID, int]) -> None:
        """Replace the whole table with saved state (from :meth:`records` and :meth:`capacities`).

        Raises:
            UsageError: if the saved state breaks the table's rules: a CMID twice in one application,
                records of an application without a capacity, or more records than the capacity.
        """
        tables: dict[uuid.UUID, _AppTable] = {
            app_id: _AppTable(capacity=int(capacity)) for app_id, capacity in capacities.items()
        }
        grouped: dict[uuid.UUID, list[ClientRecord]] = {}
        for rec in records:
            grouped.setdefault(rec.app_id, []).append(rec)
        for app_id, recs in grouped.items():
            table = tables.get(app_id)
            if table is None:
                raise UsageError(f"saved count cache has records for application {app_id} but no capacity")
            if len(recs) > table.capacity:
                raise UsageError(
                    f"saved count cache has {len(recs)} records for application {app_id}, "
                    f"more than its capacity {table.capacity}"
                )
            for rec in sorted(recs, key=lambda r: r.last_request):
                if rec.cmid in table.clients:
                    raise UsageError(f"saved count cache lists CMID {rec.cmid} twice for application {app_id}")
                table.clients[rec.cmid] = rec.last_request
        self._tables = tables
