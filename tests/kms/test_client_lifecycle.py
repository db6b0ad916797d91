"""The client life cycle on a virtual timeline (kms-behaviour.md 2, 4, 5): no sockets, no sleeps."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from emu.errors import UsageError
from emu.kms.client import (
    DAY,
    HOUR,
    Activated,
    Answered,
    AttemptFailed,
    BelowThreshold,
    ClientLifecycle,
    ClientPolicy,
    ClientState,
    Discover,
    Exchange,
    Expired,
    Failover,
    HostAddress,
    HostError,
    Rediscovery,
    Unreachable,
)

CMID = uuid.UUID("11111111-2222-4333-8444-555555555555")
H1, H2, H3 = HostAddress("kms1.test"), HostAddress("kms2.test"), HostAddress("kms3.test")

Behaviour = Callable[[HostAddress, float], object]


def run(
    client: ClientLifecycle, until: float, behaviour: Behaviour, dns: Callable[[float], list[HostAddress]] | None = None
) -> list:
    """Drive the client like a real driver would, jumping from deadline to deadline (bounded)."""
    exchanges = []
    for _ in range(10_000):
        deadline = client.next_deadline()
        if deadline is None or deadline > until:
            break
        now = deadline
        action = client.poll(now)
        while action is not None:
            if isinstance(action, Discover):
                assert dns is not None, "static client asked for DNS"
                action = client.discovered(dns(now), now)
            else:
                assert isinstance(action, Exchange)
                exchanges.append((now, action.host, action.renewal))
                action = client.exchange_done(action.host, behaviour(action.host, now), now)
    else:  # pragma: no cover - the loop is bounded on purpose
        pytest.fail("client kept the driver busy for 10,000 steps")
    return exchanges


def host_answering(count: int = 50, activation: int = 120, renewal: int = 10080) -> Behaviour:
    return lambda host, now: Answered(count, activation, renewal)


def test_client_activates_on_first_answer_at_threshold():
    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, static_host=H1)
    run(client, 0.0, host_answering(count=25))
    assert client.state is ClientState.ACTIVATED
    assert client.valid_until == 180 * DAY
    (event,) = [e for e in client.events if isinstance(e, Activated)]
    assert (event.count, event.threshold, event.renewal) == (25, 25, False)


def test_activated_client_renews_every_seven_days_with_the_same_cmid():
    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, static_host=H1)
    exchanges = run(client, 30 * DAY, host_answering())
    assert [t for t, _, _ in exchanges] == [0.0, 7 * DAY, 14 * DAY, 21 * DAY, 28 * DAY]
    assert [renewal for _, _, renewal in exchanges] == [False, True, True, True, True]
    assert client.cmid == CMID
    assert client.valid_until == 28 * DAY + 180 * DAY


def test_client_obeys_the_hosts_renewal_interval():
    client = ClientLifecycle(threshold=5, now=0.0, cmid=CMID, static_host=H1)
    exchanges = run(client, 10 * DAY, host_answering(count=10, renewal=3 * 24 * 60))
    assert [t for t, _, _ in exchanges] == [0.0, 3 * DAY, 6 * DAY, 9 * DAY]


def test_client_below_threshold_is_not_activated_and_retries_every_two_hours():
    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, static_host=H1)
    exchanges = run(client, 6 * HOUR, host_answering(count=3))
    assert [t for t, _, _ in exchanges] == [0.0, 2 * HOUR, 4 * HOUR, 6 * HOUR]
    assert client.state is ClientState.WAITING
    below = [e for e in client.events if isinstance(e, BelowThreshold)]
    assert [(e.count, e.threshold, e.retry_at) for e in below][-1] == (3, 25, 8 * HOUR)
    assert len(below) == 4 and not any(isinstance(e, Activated) for e in client.events)


def test_waiting_client_activates_once_the_count_is_met():
    counts = iter([3, 10, 24, 25])
    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, static_host=H1)
    run(client, 6 * HOUR, lambda host, now: Answered(next(counts), 120, 10080))
    assert client.state is ClientState.ACTIVATED
    assert client.activated_at == 6 * HOUR


def test_failed_attempt_is_retried_after_two_hours():
    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, static_host=H1)
    exchanges = run(client, 4 * HOUR, lambda host, now: HostError(0xC004F042))
    assert [t for t, _, _ in exchanges] == [0.0, 2 * HOUR, 4 * HOUR]
    assert client.state is ClientState.UNLICENSED
    assert isinstance(client.events[-1], AttemptFailed)


def test_activation_expires_after_180_days_without_a_host():
    up_until = 10 * DAY

    def behaviour(host, now):
        return Answered(50, 120, 10080) if now < up_until else Unreachable("connection refused")

    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, static_host=H1)
    run(client, 200 * DAY, behaviour)
    assert client.state is ClientState.EXPIRED
    (expired,) = [e for e in client.events if isinstance(e, Expired)]
    assert expired.at == 7 * DAY + 180 * DAY  # the last successful renewal was on day 7


def test_expired_client_activates_again_when_a_host_returns():
    def behaviour(host, now):
        return Unreachable("down") if 1 * DAY <= now < 200 * DAY else Answered(50, 120, 10080)

    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, static_host=H1)
    run(client, 201 * DAY, behaviour)
    assert client.state is ClientState.ACTIVATED
    assert any(isinstance(e, Expired) for e in client.events)


def test_discovery_fails_over_past_a_dead_host_and_caches_the_one_that_answered():
    dns_order = [H1, H2, H3]

    def behaviour(host, now):
        return Unreachable("timed out") if host == H1 else Answered(50, 120, 10080)

    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, domain="kms.test")
    exchanges = run(client, 0.0, behaviour, dns=lambda now: list(dns_order))
    assert [h for _, h, _ in exchanges] == [H1, H2]
    assert client.cached_host == H2
    (failover,) = [e for e in client.events if isinstance(e, Failover)]
    assert (failover.failed, failover.next_host) == (H1, H2)
    # Renewals go to the cached host without asking DNS again.
    dns_calls = []
    exchanges = run(client, 14 * DAY, behaviour, dns=lambda now: dns_calls.append(now) or list(dns_order))
    assert [h for _, h, _ in exchanges] == [H2, H2]
    assert dns_calls == []


def test_client_rediscovers_through_dns_when_the_cached_host_dies():
    dead: set[HostAddress] = set()

    def behaviour(host, now):
        return Unreachable("connection refused") if host in dead else Answered(50, 120, 10080)

    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, domain="kms.test")
    run(client, 0.0, behaviour, dns=lambda now: [H1, H2, H3])
    assert client.cached_host == H1
    dead.add(H1)
    exchanges = run(client, 7 * DAY, behaviour, dns=lambda now: [H1, H3, H2])
    assert [h for _, h, _ in exchanges] == [H1, H1, H3]  # cached H1 fails, DNS again, H1 fails, H3 answers
    assert client.cached_host == H3
    assert any(isinstance(e, Rediscovery) for e in client.events)


def test_without_host_caching_every_attempt_starts_with_dns():
    dns_calls = []
    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, domain="kms.test", policy=ClientPolicy(cache_host=False))
    run(client, 14 * DAY, host_answering(), dns=lambda now: dns_calls.append(now) or [H2, H1])
    assert dns_calls == [0.0, 7 * DAY, 14 * DAY]
    assert client.cached_host is None


def test_all_hosts_down_is_one_failed_attempt_retried_in_two_hours():
    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, domain="kms.test")
    exchanges = run(client, 2 * HOUR, lambda host, now: Unreachable("refused"), dns=lambda now: [H1, H2, H3])
    assert [h for _, h, _ in exchanges] == [H1, H2, H3, H1, H2, H3]
    failed = [e for e in client.events if isinstance(e, AttemptFailed)]
    assert [e.retry_at for e in failed] == [2 * HOUR, 4 * HOUR]


def test_empty_srv_answer_is_a_failed_attempt():
    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, domain="kms.test")
    run(client, 0.0, host_answering(), dns=lambda now: [])
    (failed,) = [e for e in client.events if isinstance(e, AttemptFailed)]
    assert "no _vlmcs._tcp SRV records" in failed.reason


def test_client_needs_exactly_one_way_to_find_a_host():
    with pytest.raises(UsageError):
        ClientLifecycle(threshold=25, now=0.0, cmid=CMID)
    with pytest.raises(UsageError):
        ClientLifecycle(threshold=25, now=0.0, cmid=CMID, static_host=H1, domain="kms.test")


def test_request_fields_follow_the_state():
    client = ClientLifecycle(threshold=25, now=0.0, cmid=CMID, static_host=H1)
    assert (client.license_status, client.binding_expiration(0.0)) == (2, 43200)
    run(client, 0.0, host_answering())
    assert client.license_status == 1
    assert client.binding_expiration(0.0) == 180 * 24 * 60
