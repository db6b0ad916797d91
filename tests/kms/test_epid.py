"""ePID and HwId (kms-wire-protocol.md 6): the reference captures' ePIDs parse; generated ones are plausible."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from emu_testing import VECTORS_DIR, requires_vectors

from emu.errors import UsageError
from emu.kms import epid as E
from emu.kms.products import lookup
from emu.rng import seeded

#: The ePIDs the reference servers used (shared/vectors/INDEX.md, "ePIDs / HwIds the servers used").
INDEX_EPIDS = [
    "05426-00206-555-072633-03-7194-9200.0000-3332025",
    "05426-00096-208-315566-03-7194-9200.0000-2432013",
    "05426-00206-236-953465-03-7194-9200.0000-0052023",
    "05426-00206-443-903548-03-7194-9200.0000-3452025",
    "05426-00206-671-693397-03-7194-9200.0000-3012019",
    "55041-00206-555-444266-03-1068-6002.0000-3492019",
    "55041-00096-212-308992-03-1068-6002.0000-3502025",
    "55041-00206-248-962476-03-1068-6002.0000-2662023",
    "55041-00206-457-305237-03-1068-6002.0000-1582016",
    "55041-00206-670-501351-03-1068-6002.0000-0402024",
    "06401-00206-554-183664-03-6145-9600.0000-1022025",
    "06401-00096-215-556666-03-6145-9600.0000-1052019",
    "06401-00206-236-407072-03-6145-9600.0000-3122014",
    "06401-00206-438-250500-03-6145-9600.0000-2732025",
    "06401-00206-669-508517-03-6145-9600.0000-1602023",
]
#: Label -> CSVLK order of the INDEX table's columns.
COLUMNS = ["Windows", "Office2010", "Office2013", "Office2016", "Office2019"]
TODAY = dt.date(2026, 11, 28)  # the day the captures were made
#: The reference servers' logs, beside the captures ($EMU_VECTORS, like every other test that reads them).
SERVER_LOGS = VECTORS_DIR / "out" / "server-logs"


@pytest.mark.parametrize("text", INDEX_EPIDS)
def test_reference_epids_parse_without_problems(text: str):
    parsed = E.parse_epid(text, today=TODAY)
    assert parsed.well_formed
    assert parsed.problems == ()
    assert parsed.channel == 3


@pytest.mark.parametrize("row", range(3))
def test_reference_epids_fit_the_csvlk_of_their_column(row: int):
    for column, name in enumerate(COLUMNS):
        text = INDEX_EPIDS[row * 5 + column]
        key = E.csvlk(name)
        assert E.parse_epid(text, key=key).problems == (), (name, text)


def test_reference_epid_fields_are_split_as_the_spec_says():
    parsed = E.parse_epid("05426-00206-555-072633-03-7194-9200.0000-3332025\x00")
    assert (parsed.platform_id, parsed.group_id, parsed.key_id) == (5426, 206, 555_072_633)
    assert (parsed.lcid, parsed.build, parsed.day_of_year, parsed.year) == (7194, 9200, 333, 2025)
    assert parsed.date == dt.date(2025, 11, 29)


@requires_vectors
def test_every_epid_in_the_reference_server_logs_is_well_formed():
    assert SERVER_LOGS.is_dir(), f"{SERVER_LOGS}: the reference server logs belong with the captures"
    pattern = re.compile(r"\d{5}-\d{5}-\d{3}-\d{6}-03-\d+-\d+\.0000-\d{7}")
    found = {m for path in SERVER_LOGS.glob("*.log") for m in pattern.findall(path.read_text(errors="replace"))}
    assert len(found) > 20
    for text in found:
        parsed = E.parse_epid(text)
        assert parsed.well_formed, text
        assert not [p for p in parsed.problems if "platform id" in p or "channel" in p], (text, parsed.problems)


def test_py_kms_zero_based_day_is_reported():
    parsed = E.parse_epid("03612-00206-556-123727-03-1033-17763.0000-0002023")
    assert any("counted from 0" in p for p in parsed.problems)


def test_build_7601_with_ndr64_is_reported():
    text = "55041-00206-555-444266-03-1068-7601.0000-3492019"
    assert E.parse_epid(text, ndr64=False).problems == ()
    problems = E.parse_epid(text, ndr64=True).problems
    assert any("claims build 7601 but NDR64 was negotiated" in p for p in problems)


def test_platform_id_that_does_not_match_the_build_is_reported():
    problems = E.parse_epid("03612-00206-555-444266-03-1068-9600.0000-1002019").problems
    assert any("does not match build 9600" in p for p in problems)


def test_key_id_outside_the_csvlk_range_is_reported():
    problems = E.parse_epid("03612-00206-404-404816-03-1033-17763.0000-2402025", key=E.csvlk("Windows")).problems
    assert any("outside CSVLK Windows's range" in p for p in problems)


def test_text_that_is_not_an_epid_is_reported_not_raised():
    parsed = E.parse_epid("hello")
    assert not parsed.well_formed
    assert parsed.problems and parsed.date is None


def test_impossible_day_and_future_date_are_reported():
    assert any(
        "does not exist" in p for p in E.parse_epid("03612-00206-556-123727-03-1033-17763.0000-3662023").problems
    )
    assert any(
        "future" in p for p in E.parse_epid("03612-00206-556-123727-03-1033-17763.0000-0012030", today=TODAY).problems
    )


# Generation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [b.build for b in E.HOST_BUILDS])
@pytest.mark.parametrize("name", ["Windows", "Office2010", "Office2013", "Office2016", "Office2019", "WinChinaGov"])
def test_generated_epids_parse_back_in_range_with_the_builds_platform_id(name: str, build: int):
    rng = seeded(build)
    key = E.csvlk(name)
    entry = E.host_build(build)
    for _ in range(20):
        text = E.generate_epid(key, build, 1033, rng, TODAY)
        parsed = E.parse_epid(text, key=key, ndr64=entry.ndr64, today=TODAY)
        assert parsed.problems == (), (text, parsed.problems)
        assert parsed.platform_id == entry.platform_id
        assert key.min_key_id <= parsed.key_id < key.max_key_id
        assert parsed.date is not None
        assert max(key.release, entry.release) <= parsed.date <= TODAY


def test_generated_epid_has_the_spec_layout_and_length():
    text = E.generate_epid("Windows", 17763, 1033, seeded(1), TODAY)
    assert re.fullmatch(r"03612-00206-5[5-7]\d-\d{6}-03-1033-17763\.0000-\d{3}\d{4}", text)
    assert len(text) == 49
    assert len(E.generate_epid("Windows", 9600, 1033, seeded(1), TODAY)) == 48


def test_generation_is_deterministic_for_a_seed():
    assert E.generate_epid("Office2019", 14393, 1031, seeded(5), TODAY) == E.generate_epid(
        "Office2019", 14393, 1031, seeded(5), TODAY
    )


def test_today_before_the_release_dates_gives_today():
    text = E.generate_epid("Windows", 17763, 1033, seeded(3), dt.date(2018, 1, 1))
    assert E.parse_epid(text).date == dt.date(2018, 1, 1)


def test_csvlk_without_known_key_range_cannot_generate():
    with pytest.raises(UsageError, match="not known"):
        E.generate_epid(E.Csvlk("Lab", 206, None, None, None, None), 26100, 1033, seeded(1), TODAY)


def test_unknown_build_and_csvlk_are_usage_errors():
    with pytest.raises(UsageError, match="unknown host build"):
        E.generate_epid("Windows", 1234, 1033, seeded(1), TODAY)
    with pytest.raises(UsageError, match="unknown CSVLK"):
        E.csvlk("Office2003")


def test_platform_ids_and_ndr64_follow_the_build():
    assert [E.platform_id_for_build(b) for b in (6002, 7601, 9200, 9600, 14393, 17763, 20348, 26100, 22631)] == [
        55041,
        55041,
        5426,
        6401,
        3612,
        3612,
        3612,
        3612,
        3612,
    ]
    assert [E.ndr64_for_build(b) for b in (6002, 7601, 9200, 17763)] == [False, False, True, True]


def test_vlmcsd_default_epids_parse_without_problems():
    for key in E.CSVLKS:
        if key.default_epid is not None:
            assert E.parse_epid(key.default_epid, key=key).problems == (), key.name


# Which CSVLK answers which product group (7.2 ePID index) -----------------------------------------


@pytest.mark.parametrize(
    "product,expected",
    [
        ("Windows 10 Enterprise", "Windows"),
        ("Windows Server 2019 Datacenter", "Windows"),
        ("Windows Server 2022 Datacenter", "Windows"),
        ("Windows 10 Enterprise G", "WinChinaGov"),
        ("Office Professional Plus 2010", "Office2010"),
        ("Office Professional Plus 2013", "Office2013"),
        ("Office Professional Plus 2016", "Office2016"),
        ("Office Professional Plus 2019", "Office2019"),
        ("Office LTSC Professional Plus 2021", "Windows"),
    ],
)
def test_csvlk_for_kms_id_follows_the_epid_index(product: str, expected: str):
    assert E.csvlk_for_kms_id(lookup(product).kms_id).name == expected


def test_unknown_kms_id_is_answered_by_the_windows_csvlk():
    assert E.csvlk_for_kms_id("00000000-0000-0000-0000-0000000000aa").index == 0


# HwId ---------------------------------------------------------------------------------------------


def test_default_hwid_is_vlmcsds():
    assert bytes([0x3A, 0x1C, 0x04, 0x96, 0x00, 0xB6, 0x00, 0x76]) == E.DEFAULT_HWID


@pytest.mark.parametrize(
    "text", ["3A1C049600B60076", "3a 1c 04 96 00 b6 00 76", "0x3A1C049600B60076", "3A:1C:04:96:00:B6:00:76"]
)
def test_parse_hwid_accepts_the_usual_spellings(text: str):
    assert E.parse_hwid(text) == E.DEFAULT_HWID
    assert E.format_hwid(E.parse_hwid(text)) == "3A1C049600B60076"


@pytest.mark.parametrize("text", ["", "3A1C0496", "3A1C049600B60076FF", "ZZ1C049600B60076"])
def test_parse_hwid_rejects_anything_but_16_hex_digits(text: str):
    with pytest.raises(UsageError, match="16 hex digits"):
        E.parse_hwid(text)
