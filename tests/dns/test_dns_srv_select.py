"""RFC 2782 ordering with an injected RNG (dns.md 2.2)."""

from __future__ import annotations

from collections import Counter

from emu.dns.srv_select import SrvRecord, order_srv
from emu.rng import seeded


def rec(target, priority=0, weight=0):
    return SrvRecord(priority, weight, 1688, target)


def test_lower_priority_groups_come_first():
    records = [rec("c", 20), rec("a", 0), rec("b", 10)]
    assert [r.target for r in order_srv(records, seeded(1))] == ["a", "b", "c"]


def test_single_dot_target_means_not_available():
    assert order_srv([rec(".")], seeded(1)) == []


def test_seeded_rng_gives_the_same_order():
    records = [rec(f"h{i}", 0, 10 * i) for i in range(5)]
    assert order_srv(records, seeded(7)) == order_srv(records, seeded(7))


def test_every_record_appears_once():
    records = [rec(f"h{i}", i % 2, i) for i in range(6)]
    assert sorted(order_srv(records, seeded(3)), key=lambda r: r.target) == sorted(records, key=lambda r: r.target)


def test_all_zero_weights_are_uniform():
    rng = seeded(11)
    records = [rec("a"), rec("b"), rec("c")]
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(3000))
    assert all(900 < count < 1100 for count in firsts.values())


def test_weights_spread_first_choice_proportionally():
    rng = seeded(5)
    records = [rec("heavy", 0, 30), rec("light", 0, 10)]
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(4000))
    assert 0.70 < firsts["heavy"] / 4000 < 0.80  # 30/40, plus the inclusive-0 bias (dns.md 2.2)


def test_weight_zero_has_a_small_chance_when_others_weigh():
    rng = seeded(9)
    records = [rec("ten", 0, 10), rec("zero", 0, 0)]
    share = Counter(order_srv(records, rng)[0].target for _ in range(5000))["zero"] / 5000
    assert 0.06 < share < 0.12  # 1/(S+1) = 9.1 %
