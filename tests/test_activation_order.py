"""The client's path order: ADBA for domain members, then KMS, then later paths, per the act-type policy."""

from __future__ import annotations

import pytest

from emu.activation.order import ActivationType, PathOutcome, parse_activation_type, run_paths


def _path(name: str, ok: bool, calls: list[str]):
    def attempt() -> PathOutcome:
        calls.append(name)
        return PathOutcome(name, ok, 0 if ok else 0xC004F074)

    return attempt


@pytest.mark.parametrize(
    "policy,member,adba_ok,kms_ok,expected_calls,activated_by",
    [
        (ActivationType.ANY, True, True, True, ["adba"], "adba"),
        (ActivationType.ANY, True, False, True, ["adba", "kms"], "kms"),
        (ActivationType.ANY, False, True, True, ["kms"], "kms"),
        (ActivationType.AD, True, False, True, ["adba"], None),
        (
            ActivationType.KMS,
            True,
            True,
            False,
            [
                "kms",
            ],
            None,
        ),
        (ActivationType.ANY, True, False, False, ["adba", "kms", "mak"], "mak"),
    ],
)
def test_paths_run_in_documented_order_under_the_policy(policy, member, adba_ok, kms_ok, expected_calls, activated_by):
    calls: list[str] = []
    outcome = run_paths(
        policy,
        domain_member=member,
        adba=_path("adba", adba_ok, calls),
        kms=_path("kms", kms_ok, calls),
        later=(("mak", _path("mak", True, calls)),),
    )
    assert calls == expected_calls
    assert outcome.activated_by == activated_by


def test_activation_type_parses_slmgr_numbers_and_names():
    assert parse_activation_type("1") is ActivationType.AD
    assert parse_activation_type("kms") is ActivationType.KMS
    with pytest.raises(ValueError):
        parse_activation_type("3")
