"""emu/mak, sans-IO: lab keys, IIDs/CIDs and their errors, ledger rules, client state, BatchActivation shape."""

from __future__ import annotations

import re

import pytest

from emu.hresults import lookup
from emu.mak import batch, ids, ledger
from emu.mak import client as mak
from emu.mak.errors import ActivationError
from emu.mak.keys import KeyKind, classify, extended_pid, make_key, parse_lab_key
from emu.rng import seeded

REAL_KEY_ALPHABET = set("BCDFGHJKMPQRTVWXY2346789N")


def _code(exc: pytest.ExceptionInfo[ActivationError]) -> str:
    return f"0x{exc.value.code:08X}"


def test_lab_keys_have_the_5x5_shape_a_marker_group_and_can_never_be_real_keys():
    rng = seeded(7)
    for kind, marker in ((KeyKind.MAK, "EMUM1"), (KeyKind.CSVLK, "EMUK1")):
        key = make_key(kind, rng)
        assert re.fullmatch(r"[0-9A-Z]{5}(-[0-9A-Z]{5}){4}", key)
        assert key.startswith(marker + "-")
        assert not set(marker) <= REAL_KEY_ALPHABET  # E, U and 1 never occur in real keys
        assert parse_lab_key(key.lower().replace("-", "")).kind is kind


@pytest.mark.parametrize(
    "mangle,reason",
    [
        (lambda k: k[:-1] + ("0" if k[-1] != "0" else "1"), "check character"),
        (lambda k: k[:-6], "25 characters"),
        (lambda k: "ABCDE" + k[5:], "not an emu lab key"),
        (lambda k: k[:6] + "!" + k[7:], "characters not used"),
    ],
)
def test_a_bad_key_is_refused_at_install_with_0xC004F050(mangle, reason):
    key = make_key(KeyKind.MAK, seeded(1))
    with pytest.raises(ActivationError, match=reason) as exc:
        parse_lab_key(mangle(key))
    assert exc.value.code == 0xC004F050
    assert lookup(0xC004F050) is not None and "not valid" in str(exc.value)


def test_a_published_gvlk_is_recognised_through_the_injected_product_lookup():
    gvlk = "NPPR9-FWDCX-D2C8J-H872K-2YT43"
    key = classify(gvlk.lower(), lambda k: "Windows 10 Enterprise" if k == gvlk else None)
    assert (key.kind, key.product, key.partial) == (KeyKind.GVLK, "Windows 10 Enterprise", "2YT43")
    with pytest.raises(ActivationError):
        classify(gvlk)  # without product data it is neither a GVLK nor a lab key


def test_extended_pid_has_the_documented_shape_with_volume_channel_and_emu_build():
    pid = extended_pid(make_key(KeyKind.MAK, seeded(2)))
    assert re.fullmatch(r"\d{5}-\d{5}-\d{3}-\d{6}-03-1033-9999\.0000-\d{7}", pid)


@pytest.fixture
def machine():
    rng = seeded(3)
    key = make_key(KeyKind.MAK, rng)
    state = mak.install_key(mak.new_license("hw-A"), key, rng)
    return key, state, rng


def test_iid_is_63_digits_in_9_groups_of_7_and_cid_48_digits_in_8_groups_of_6(machine):
    _, state, _ = machine
    iid = mak.current_iid(state)
    assert re.fullmatch(r"\d{7}(-\d{7}){8}", iid)
    cid = ids.confirmation_id_for(ids.parse_iid(iid))
    assert re.fullmatch(r"\d{6}(-\d{6}){7}", cid)
    assert mak.apply_cid(state, cid).activated


def _flip(text: str, index: int) -> str:
    ch = text[index]
    return text[:index] + str((int(ch) + 1) % 10) + text[index + 1 :]


@pytest.mark.parametrize("position", [0, 5, 9, 30, 62 + 8])
def test_a_mistyped_iid_digit_gives_0xC004F04D(machine, position):
    _, state, _ = machine
    iid = mak.current_iid(state)
    with pytest.raises(ActivationError) as exc:
        ids.parse_iid(_flip(iid, position))
    assert _code(exc) == "0xC004F04D"


@pytest.mark.parametrize("position", [0, 3, 19, 54])
def test_a_mistyped_cid_digit_gives_0xC004F04D(machine, position):
    _, state, _ = machine
    cid = ids.confirmation_id_for(ids.parse_iid(mak.current_iid(state)))
    with pytest.raises(ActivationError) as exc:
        mak.apply_cid(state, _flip(cid, position))
    assert _code(exc) == "0xC004F04D"
    assert not state.activated


@pytest.mark.parametrize("bad", ["12345", "A" * 48, "1" * 47])
def test_a_cid_of_the_wrong_format_gives_0xC004F02C(machine, bad):
    with pytest.raises(ActivationError) as exc:
        mak.apply_cid(machine[1], bad)
    assert _code(exc) == "0xC004F02C"


def test_a_cid_acquired_for_another_key_gives_0xC004F07E(machine):
    _, state, rng = machine
    other = mak.install_key(state, make_key(KeyKind.MAK, rng), rng)
    cid = ids.confirmation_id_for(ids.parse_iid(mak.current_iid(other)))
    with pytest.raises(ActivationError) as exc:
        mak.apply_cid(state, cid)
    assert _code(exc) == "0xC004F07E"


def test_a_cid_acquired_for_another_machine_or_installation_gives_0xC004F07F(machine):
    key, state, rng = machine
    elsewhere = mak.install_key(mak.new_license("hw-B"), key, rng)
    cid = ids.confirmation_id_for(ids.parse_iid(mak.current_iid(elsewhere)))
    with pytest.raises(ActivationError) as exc:
        mak.apply_cid(state, cid)
    assert _code(exc) == "0xC004F07F"
    old_cid = ids.confirmation_id_for(ids.parse_iid(mak.current_iid(state)))
    rearmed = mak.rearm(state, rng)
    with pytest.raises(ActivationError) as exc:
        mak.apply_cid(rearmed, old_cid)
    assert _code(exc) == "0xC004F07F"


def test_without_a_key_there_is_no_iid_0xC004F014():
    with pytest.raises(ActivationError) as exc:
        mak.current_iid(mak.new_license("hw"))
    assert _code(exc) == "0xC004F014"


@pytest.mark.parametrize("generation,limit", [("win7", 3), ("win8+", 1001)])
def test_the_rearm_counter_runs_out_with_0xC004D307(generation, limit):
    rng = seeded(4)
    state = mak.new_license("hw", generation)
    for _ in range(limit):
        state = mak.rearm(state, rng)
    assert state.rearms_left == 0
    with pytest.raises(ActivationError) as exc:
        mak.rearm(state, rng)
    assert _code(exc) == "0xC004D307"


def test_a_mak_is_admitted_until_its_limit_then_0xC004C020_blocked_0xC004C003_unknown_0xC004C001():
    rec = ledger.KeyRecord("K", KeyKind.MAK, "g", limit=2, used=1)
    assert ledger.admit(rec, "hw") == 0
    assert ledger.admit(ledger.KeyRecord("K", KeyKind.MAK, "g", 2, used=2), "hw") == 0xC004C020
    assert ledger.admit(ledger.KeyRecord("K", KeyKind.MAK, "g", 2, blocked=True), "hw") == 0xC004C003
    assert ledger.admit(None, "hw") == 0xC004C001
    assert ledger.remaining(rec) == 1


def test_a_csvlk_allows_six_hosts_ten_activations_each_then_0xC004C008():
    hosts = tuple((f"h{i}", 1) for i in range(6))
    rec = ledger.KeyRecord("K", KeyKind.CSVLK, "g", 60, 6, hosts=hosts)
    assert ledger.admit(rec, "h0") == 0  # a known host reactivates
    assert ledger.admit(rec, "h7") == 0xC004C008  # a seventh host
    tired = ledger.KeyRecord("K", KeyKind.CSVLK, "g", 60, 10, hosts=(("h0", 10),))
    assert ledger.admit(tired, "h0") == 0xC004C008  # an eleventh activation on one host
    assert ledger.admit(tired, "h1") == 0
    assert ledger.remaining(tired) == 50


def test_batch_envelope_round_trips_with_the_digest_and_utf16le_request_xml():
    req = batch.BatchRequest(1, (batch.BatchItem("12345-00000-000-000000-03-1033-9999.0000-0012026", "1" * 63),))
    body = batch.build_envelope(req)
    assert batch.parse_envelope(body) == req
    raw = batch.build_request_xml(req)
    assert raw.decode("utf-16-le").startswith("<ActivationRequest")


def test_batch_envelope_with_another_digest_key_is_a_fault():
    req = batch.BatchRequest(2, (batch.BatchItem("pid"),))
    with pytest.raises(batch.BatchFault, match="Digest"):
        batch.parse_envelope(batch.build_envelope(req, b"another key"))


@pytest.mark.parametrize(
    "body,reason",
    [
        (b"not xml", "well-formed"),
        (b"<a/>", "Envelope"),
        (batch.build_envelope(batch.BatchRequest(1, (batch.BatchItem("p"),))), "IID"),
        (batch.build_envelope(batch.BatchRequest(3, (batch.BatchItem("p"),))), "RequestType"),
        (batch.build_envelope(batch.BatchRequest(2, ())), "no Requests"),
    ],
)
def test_malformed_batch_requests_are_faults(body, reason):
    with pytest.raises(batch.BatchFault, match=reason):
        batch.parse_envelope(body)


def test_batch_response_round_trips_and_maps_short_codes_to_hresults():
    results = (
        batch.BatchResult("a", cid="1" * 48),
        batch.BatchResult("b", remaining=4),
        batch.BatchResult("c", error=0x7F),
    )
    parsed = batch.parse_response(batch.build_response(1, results))
    assert parsed == results
    assert parsed[2].hresult == 0xC004C020
    assert {batch.short_code_for(h) for h in (0xC004C020, 0xC004C003, 0xC004C001, 0xC004F04D)} == {
        0x7F,
        0x67,
        0x68,
        0x90,
    }
    with pytest.raises(batch.BatchFault, match="boom"):
        batch.parse_response(batch.build_fault("boom"))
