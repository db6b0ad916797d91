"""KmsHost.handle_request: the counting rules (kms-behaviour.md 3), refusals (spec 8.4), ePIDs (spec 6).

Every test drives the sans-IO host with explicit times from a virtual clock; no sockets.
"""

from __future__ import annotations

import datetime as _dt
import struct
import uuid

import pytest

from emu.clock import VirtualClock, unix_to_filetime
from emu.errors import UsageError
from emu.kms import epid as _epid
from emu.kms import products
from emu.kms.count_cache import DAY, RECORD_LIFETIME
from emu.kms.host import (
    E_INVALID_DATA,
    E_INVALID_TIMESTAMP,
    E_KMS_ID_MISMATCH,
    HostConfig,
    KmsHost,
    default_kms_ids,
    resolve_kms_ids,
)
from emu.kms.messages import build_request, verify_response
from emu.rng import seeded
from emu.wire.kms import LicenseStatus, RequestBase, Version

WIN10 = products.lookup("win10ent")
SERVER2012R2 = products.lookup("Windows Server 2012 R2 Datacenter")
OFFICE2019 = products.lookup("Office 2019 ProPlus")


class Lab:
    """A host and a virtual clock, with a helper that sends one request and returns the answer."""

    def __init__(self, config: HostConfig | None = None, seed: int = 7) -> None:
        self.clock = VirtualClock()
        self.rng = seeded(seed)
        self.host = KmsHost(config or HostConfig(), seeded(seed + 1), self.clock.wall())

    def request(
        self,
        sku=WIN10,
        cmid: uuid.UUID | None = None,
        *,
        major: int | None = None,
        required: int | None = None,
        kms_id: uuid.UUID | None = None,
        skew: float = 0.0,
    ):
        base = RequestBase(
            version=Version(major or sku.protocol),
            vm_info=0,
            license_status=LicenseStatus.OOB_GRACE,
            binding_expiration=43200,
            app_id=sku.app_id,
            sku_id=sku.id,
            kms_id=kms_id or sku.kms_id,
            cmid=cmid or uuid.UUID(int=self.rng.randint(1, 2**128 - 1)),
            required_client_count=sku.threshold if required is None else required,
            client_time=unix_to_filetime(self.clock.wall() + skew),
            previous_cmid=uuid.UUID(int=0),
            workstation_name="client.lab.test",
        )
        message = build_request(base, self.rng)
        return message, self.host.handle_request(message, self.clock.wall())

    def count(self, sku=WIN10, cmid: uuid.UUID | None = None) -> int:
        _, answer = self.request(sku, cmid)
        assert answer.ok, answer.reason
        return answer.count


# --- counting --------------------------------------------------------------------------------------


def test_three_windows10_clients_get_1_2_3_and_are_not_activated_then_server_2012r2_gets_4():
    lab = Lab()
    answers = [lab.request(WIN10)[1] for _ in range(3)]
    assert [a.count for a in answers] == [1, 2, 3]
    assert not any(a.activated for a in answers)
    _, server = lab.request(SERVER2012R2)
    assert server.count == 4  # cumulative across editions of one application
    assert not server.activated  # a server needs 5


def test_count_reaches_25_and_the_25th_client_activates():
    lab = Lab()
    answers = []
    for _ in range(25):
        answers.append(lab.request(WIN10)[1])
        lab.clock.advance(60)
    assert [a.count for a in answers] == list(range(1, 26))
    assert not answers[23].activated and answers[24].activated


def test_a_known_client_is_counted_once():
    lab = Lab()
    cmid = uuid.uuid4()
    assert [lab.count(WIN10, cmid) for _ in range(3)] == [1, 1, 1]


def test_office_is_counted_in_its_own_application():
    lab = Lab()
    for _ in range(3):
        lab.count(WIN10)
    assert lab.count(OFFICE2019) == 1
    assert lab.count(WIN10) == 4


def test_a_client_that_stays_away_30_days_is_dropped():
    lab = Lab()
    away = uuid.uuid4()
    lab.count(WIN10, away)
    lab.clock.advance(DAY)
    stayer = uuid.uuid4()
    assert lab.count(WIN10, stayer) == 2
    lab.clock.advance(RECORD_LIFETIME - DAY)  # exactly 30 days after the first request
    assert lab.count(WIN10, stayer) == 1


def test_a_renewal_restarts_the_30_days():
    lab = Lab()
    client, other = uuid.uuid4(), uuid.uuid4()
    lab.count(WIN10, client)
    lab.count(WIN10, other)
    lab.clock.advance(20 * DAY)
    assert lab.count(WIN10, client) == 2  # renewal
    lab.clock.advance(20 * DAY)  # 40 days after the first record, 20 after the renewal
    assert lab.count(WIN10, client) == 1  # the other one expired, the renewed one did not


def test_the_51st_client_pushes_out_the_oldest():
    lab = Lab()
    first = uuid.uuid4()
    lab.count(WIN10, first)
    for _ in range(49):
        lab.clock.advance(1)
        lab.count(WIN10)
    lab.clock.advance(1)
    _, answer = lab.request(WIN10)
    assert answer.count == 50
    assert answer.change is not None and answer.change.evicted == (first,)
    assert lab.count(WIN10, first) == 50  # it comes back as a new client, pushing out the next oldest


def test_servers_only_host_holds_10_then_grows_to_50_and_never_shrinks():
    lab = Lab()
    counts = [lab.count(SERVER2012R2) for _ in range(12)]
    assert counts[-3:] == [10, 10, 10]
    assert lab.host.cache.capacity(SERVER2012R2.app_id) == 10
    lab.count(WIN10)  # the first client-OS request (N = 25)
    assert lab.host.cache.capacity(WIN10.app_id) == 50
    counts = [lab.count(SERVER2012R2) for _ in range(50)]
    assert max(counts) == 50 and counts[-1] == 50
    assert lab.host.cache.capacity(WIN10.app_id) == 50  # servers (N = 5) do not shrink it


def test_next_deadline_is_the_oldest_record_expiry():
    lab = Lab()
    assert lab.host.next_deadline() is None
    lab.count(WIN10)
    first = lab.clock.wall()
    lab.clock.advance(3600)
    lab.count(WIN10)
    assert lab.host.next_deadline() == pytest.approx(first + RECORD_LIFETIME)


def test_a_clock_stepping_back_does_not_break_the_table():
    lab = Lab()
    lab.count(WIN10)
    base = lab.clock.wall()
    message, _ = lab.request(WIN10)
    answer = lab.host.handle_request(message, base - 3600)  # wall clock stepped back an hour
    assert answer.ok and answer.count == 2


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kms_id",
    [
        uuid.UUID("e1c51358-fe3e-4203-a4a2-3b6b20c9734e"),  # Windows 10/11 retail
        uuid.UUID("5f94a0bb-d5a0-4081-a685-5819418b2fe0"),  # Windows preview
        uuid.UUID("7ba0bf23-d0f5-4072-91d9-d55af5a481b6"),  # China Government: its own CSVLK
        uuid.UUID("01234567-89ab-cdef-0123-456789abcdef"),  # unknown
    ],
)
def test_uncovered_kms_id_is_refused_with_C004F042(kms_id):
    lab = Lab()
    _, answer = lab.request(WIN10, kms_id=kms_id)
    assert answer.hresult == E_KMS_ID_MISMATCH and answer.response is None and answer.change is None


def test_configured_coverage_refuses_office_when_only_windows_is_covered():
    lab = Lab(HostConfig(kms_ids=resolve_kms_ids(product_names=["win10ent"])))
    assert lab.request(WIN10)[1].ok
    assert lab.request(OFFICE2019)[1].hresult == E_KMS_ID_MISMATCH


def test_an_application_id_that_does_not_match_the_kms_id_is_refused():
    lab = Lab()
    _, answer = lab.request(WIN10, kms_id=OFFICE2019.kms_id)
    assert answer.hresult == E_KMS_ID_MISMATCH


def test_default_coverage_is_windows_server_csvlk_group_plus_office():
    ids = default_kms_ids()
    assert {WIN10.kms_id, SERVER2012R2.kms_id, OFFICE2019.kms_id, products.lookup("Office 2010 ProPlus").kms_id} <= ids
    assert all(not products.kms_item(i).retail and not products.kms_item(i).preview for i in ids)


@pytest.mark.parametrize("version", [(3, 0), (7, 0), (6, 1)])
def test_bad_protocol_version_is_refused_with_8007000D(version):
    lab = Lab()
    message, _ = lab.request(WIN10)
    bad = struct.pack("<HH", version[1], version[0]) + message[4:]
    answer = lab.host.handle_request(bad, lab.clock.wall())
    assert answer.hresult == E_INVALID_DATA and answer.response is None


def test_truncated_request_is_refused_with_8007000D():
    lab = Lab()
    message, _ = lab.request(WIN10)
    assert lab.host.handle_request(message[:100], lab.clock.wall()).hresult == E_INVALID_DATA


def test_required_count_over_1000_is_refused_and_1000_is_answered():
    lab = Lab()
    assert lab.request(WIN10, required=1001)[1].hresult == E_INVALID_DATA
    assert lab.request(WIN10, required=1000)[1].ok


def test_time_skew_over_4_hours_is_refused_only_when_checked():
    checked = Lab(HostConfig(check_time_skew=True))
    assert checked.request(WIN10, skew=4 * 3600 + 60)[1].hresult == E_INVALID_TIMESTAMP
    assert checked.request(WIN10, skew=-(4 * 3600 + 60))[1].hresult == E_INVALID_TIMESTAMP
    assert checked.request(WIN10, skew=3 * 3600)[1].ok
    assert Lab().request(WIN10, skew=10 * 3600)[1].ok


def test_refusals_do_not_count():
    lab = Lab()
    lab.request(WIN10, required=1001)
    assert lab.count(WIN10) == 1


# --- responses and ePIDs ---------------------------------------------------------------------------


@pytest.mark.parametrize("major", [4, 5, 6])
def test_every_answer_verifies_with_all_named_checks(major):
    lab = Lab(HostConfig(activation_interval=30, renewal_interval=1440))
    message, answer = lab.request(WIN10, major=major)
    verified = verify_response(message, answer.response)
    assert verified.ok, verified.failed
    assert (verified.count, verified.activation_interval, verified.renewal_interval) == (1, 30, 1440)
    if major == 6:
        assert verified.hwid == lab.host.config.hwid


def test_epids_are_stable_per_csvlk_and_consistent_with_build_and_lcid():
    lab = Lab(HostConfig(host_build=17763, lcid=1031))
    seen: dict[str, set[str]] = {}
    for sku in (
        WIN10,
        SERVER2012R2,
        OFFICE2019,
        products.lookup("Office 2016 ProPlus"),
        products.lookup("Office 2010 ProPlus"),
    ):
        for _ in range(2):
            message, answer = lab.request(sku)
            epid = verify_response(message, answer.response).epid
            key = _epid.csvlk_for_kms_id(sku.kms_id)
            seen.setdefault(key.name, set()).add(epid)
            today = _dt.datetime.fromtimestamp(lab.clock.wall(), _dt.UTC).date()
            parsed = _epid.parse_epid(epid, key=key, today=today)
            assert parsed.problems == (), parsed.problems
            assert (parsed.build, parsed.lcid) == (17763, 1031)
    assert all(len(v) == 1 for v in seen.values())
    assert seen["Windows"] != seen["Office2019"]


def test_restored_epids_are_kept_and_configured_ones_win():
    config = HostConfig(epids={"Office2019": "03612-00206-684-137669-03-1033-17763.0000-2972018"})
    first = KmsHost(config, seeded(1), VirtualClock().wall())
    second = KmsHost(config, seeded(2), VirtualClock().wall(), epids=dict(first.epids, Office2019="x"))
    assert second.epids == first.epids
    assert second.epids["Office2019"] == "03612-00206-684-137669-03-1033-17763.0000-2972018"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host_build": 12345},
        {"lcid": 0},
        {"hwid": b"\x00" * 7},
        {"activation_interval": 0},
        {"epids": {"Nope": "03612-00206-684-137669-03-1033-17763.0000-2972018"}},
        {"epids": {"Windows": "garbage"}},
    ],
)
def test_bad_host_settings_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        HostConfig(**kwargs)


def test_resolve_kms_ids_names_bad_input():
    with pytest.raises(UsageError, match="not a GUID"):
        resolve_kms_ids(["nope"])
    assert resolve_kms_ids() is None
    assert resolve_kms_ids([str(WIN10.kms_id)], ["Office 2019 ProPlus"]) == {WIN10.kms_id, OFFICE2019.kms_id}


def test_log_fields_name_the_product_and_the_result():
    lab = Lab()
    _, answer = lab.request(WIN10)
    fields = answer.log_fields()
    assert fields["count"] == 1 and fields["result"] == "below-threshold" and fields["cmid"]
    _, refused = lab.request(WIN10, required=1001)
    assert refused.log_fields()["result"].startswith("0x8007000D")
