"""The MAK step in the client's activation order: after ADBA and KMS, recorded as the path that activated."""

from __future__ import annotations

from emu.activation.mak_step import MakStep
from emu.activation.order import ActivationType, PathOutcome, run_paths
from emu.mak import client as mak
from emu.mak.errors import ActivationError
from emu.mak.ids import confirmation_id_for, parse_iid
from emu.mak.keys import KeyKind, make_key
from emu.rng import seeded


def _failing(name: str, code: int):
    return lambda: PathOutcome(name, False, code)


def _state() -> mak.ClientLicense:
    return mak.install_key(mak.new_license("hw"), make_key(KeyKind.MAK, seeded(1)), seeded(2))


def test_mak_activates_when_adba_and_kms_fail_and_is_recorded_as_the_path():
    asked: list[str] = []

    def service(key: str, iid: str) -> str:
        asked.append(iid)
        return confirmation_id_for(parse_iid(iid))

    step = MakStep(_state(), service)
    outcome = run_paths(
        ActivationType.ANY,
        domain_member=True,
        adba=_failing("adba", 0xC004F081),
        kms=_failing("kms", 0xC004F074),
        later=(("mak", step),),
    )
    assert [a.path for a in outcome.attempts] == ["adba", "kms", "mak"]
    assert outcome.activated_by == "mak" and step.state.activated and len(asked) == 1
    again = run_paths(ActivationType.ANY, domain_member=False, adba=None, kms=None, later=(("mak", step),))
    assert again.activated_by == "mak" and len(asked) == 1  # permanent: no second activation


def test_a_refused_mak_leaves_the_service_code_as_the_outcome():
    def refuse(key: str, iid: str) -> str:
        raise ActivationError(0xC004C020, "limit")

    step = MakStep(_state(), refuse)
    outcome = run_paths(
        ActivationType.ANY, domain_member=False, adba=None, kms=_failing("kms", 0xC004F074), later=(("mak", step),)
    )
    assert outcome.activated_by is None and outcome.hresult == 0xC004C020 and not step.state.activated


def test_kms_only_policy_never_runs_the_mak_step():
    step = MakStep(_state(), lambda k, i: confirmation_id_for(parse_iid(i)))
    outcome = run_paths(
        ActivationType.KMS, domain_member=False, adba=None, kms=_failing("kms", 0xC004F074), later=(("mak", step),)
    )
    assert [a.path for a in outcome.attempts] == ["kms"] and not step.state.activated
