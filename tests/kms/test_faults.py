"""Fault injection rules (emu.kms.faults) and what the host answers when one fires."""

from __future__ import annotations

import uuid

import pytest

from emu.errors import UsageError
from emu.kms import products
from emu.kms.faults import FaultPlan, parse_fault
from emu.kms.host import HostConfig, KmsHost
from emu.kms.messages import build_request, verify_response
from emu.rng import seeded
from emu.wire.kms import LicenseStatus, RequestBase, Version

NOW = 1_750_000_000.0


def _request(sku_name: str = "win10ent", cmid: int = 1, major: int | None = None) -> bytes:
    sku = products.lookup(sku_name)
    base = RequestBase(
        version=Version(major or sku.protocol),
        vm_info=0,
        license_status=LicenseStatus.OOB_GRACE,
        binding_expiration=43200,
        app_id=sku.app_id,
        sku_id=sku.id,
        kms_id=sku.kms_id,
        cmid=uuid.UUID(int=cmid),
        required_client_count=sku.threshold,
        client_time=int((NOW + 11644473600) * 10_000_000),
        previous_cmid=uuid.UUID(int=0),
        workstation_name="faults.lab.test",
    )
    return build_request(base, seeded(cmid))


def _host(*rules: str) -> KmsHost:
    return KmsHost(HostConfig(faults=tuple(parse_fault(r) for r in rules)), seeded(1), NOW)


def test_a_rule_reads_its_action_value_and_conditions() -> None:
    rule = parse_fault("refuse=0xC004F074, product=win10ent, percent=25%")
    sku = products.lookup("win10ent")
    assert (rule.action, rule.hresult, rule.percent) == ("refuse", 0xC004F074, 25.0)
    assert rule.matches(sku.app_id, sku.id, sku.kms_id, uuid.UUID(int=1))
    office = products.lookup("Office 2019 ProPlus")
    assert not rule.matches(office.app_id, office.id, office.kms_id, uuid.UUID(int=1))


@pytest.mark.parametrize(
    "text,words",
    [
        ("explode", "unknown action"),
        ("refuse", "needs an HRESULT"),
        ("refuse=0", "success"),
        ("delay=soon", "seconds"),
        ("low-count=3", "takes no value"),
        ("low-count,colour=red", "is not one of"),
        ("drop-after-bind,product=win10ent", "only percent"),
        ("low-count,percent=0", "above 0"),
        ("low-count,cmid=nope", "not a GUID"),
        ("low-count,application=Excel", "unknown application"),
        ("low-count,product=no such thing", "no such thing"),
    ],
)
def test_a_bad_rule_is_a_usage_error_naming_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_fault(text)


def test_percent_fires_for_about_that_share_of_matching_requests() -> None:
    plan = FaultPlan([parse_fault("low-count,percent=30")], seeded(3))
    sku = products.lookup("win10ent")
    fired = sum(plan.for_request(sku.app_id, sku.id, sku.kms_id, uuid.UUID(int=i)) is not None for i in range(2000))
    assert 500 <= fired <= 700


def test_refuse_answers_the_hresult_and_does_not_count_the_client() -> None:
    host = _host("refuse=0xC004F074")
    answer = host.handle_request(_request(), NOW)
    assert answer.hresult == 0xC004F074 and answer.response is None and answer.change is None
    assert answer.injected == "refuse=0xC004F074"


def test_low_count_keeps_every_client_one_below_its_threshold_but_counts_it() -> None:
    host = _host("low-count,application=Windows")
    counts = [host.handle_request(_request(cmid=i), NOW).count for i in range(1, 31)]
    assert max(counts) == 24 and counts[:24] == list(range(1, 25))
    assert host.cache.status(NOW)[products.lookup("win10ent").app_id].count == 30
    office = host.handle_request(_request("Office 2019 ProPlus"), NOW)
    assert office.injected == "" and office.count == 1


@pytest.mark.parametrize(
    "major,rule,failed",
    [
        (6, "corrupt-hmac", "hmac_ok"),
        (6, "corrupt-hash", "hash_ok"),
        (5, "corrupt-hash", "hash_ok"),
        (4, "corrupt-hash", "mac_ok"),
    ],
)
def test_corrupt_rules_make_the_named_client_check_fail(major: int, rule: str, failed: str) -> None:
    host = _host(rule)
    message = _request(major=major)
    answer = host.handle_request(message, NOW)
    assert answer.response is not None
    verified = verify_response(message, answer.response)
    assert failed in verified.failed


def test_rpc_fault_and_drop_request_and_delay_are_handed_to_the_server() -> None:
    fault = _host("rpc-fault").handle_request(_request(), NOW)
    assert fault.fault == 0x1C010002 and fault.change is None
    drop = _host("drop-request,cmid=00000000-0000-0000-0000-000000000001").handle_request(_request(), NOW)
    assert drop.drop and drop.change is None
    delay = _host("delay=1.5").handle_request(_request(), NOW)
    assert delay.delay == 1.5 and delay.response is not None and delay.change is not None


def test_the_first_matching_rule_wins() -> None:
    host = _host("refuse=0xC004F042,product=win11pro", "low-count")
    assert host.handle_request(_request("win10ent"), NOW).count == 1
    assert host.handle_request(_request("win11pro", cmid=2), NOW).hresult == 0xC004F042
