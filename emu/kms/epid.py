"""The KMS host's ePID and HwId: format, generation, parsing and plausibility checks.

An ePID (docs/kms-host-keys.md) is ``PPPPP-GGGGG-KKK-KKKKKK-03-LLLL-BBBB.0000-DDDYYYY``: the host OS
platform id, the CSVLK group id, the CSVLK key id, the volume channel ``03``, the host's LCID, its OS
build, and the day-of-year and year of the host's "activation". Which CSVLK answers a product group is
vlmcsd's ePID index (7.2); unknown product groups get the Windows CSVLK (6.2).

Time and randomness are passed in: :func:`generate_epid` takes an :class:`emu.rng.Rng` and ``today``.
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from dataclasses import dataclass, field

from emu.errors import UsageError
from emu.kms.products import product_data
from emu.rng import Rng

__all__ = [
    "CSVLKS",
    "DEFAULT_HWID",
    "HOST_BUILDS",
    "KNOWN_GROUP_IDS",
    "VOLUME_CHANNEL",
    "Csvlk",
    "Epid",
    "HostBuild",
    "csvlk",
    "csvlk_for_kms_id",
    "format_hwid",
    "generate_epid",
    "host_build",
    "ndr64_for_build",
    "parse_epid",
    "parse_hwid",
    "platform_id_for_build",
]

#: License channel field of every KMS ePID: volume (6.1).
VOLUME_CHANNEL = 3

#: vlmcsd's default HwId, 3A 1C 04 96 00 B6 00 76 in wire order (6.4, config.h ``HWID``).
DEFAULT_HWID = bytes.fromhex("3A1C049600B60076")

#: First build whose ePIDs carry platform id 3612 (Windows 10 1507 and later, 6.1).
_FIRST_3612_BUILD = 10240


@dataclass(frozen=True, slots=True)
class HostBuild:
    """A KMS host OS build an ePID can claim (6.3 host-build table).

    Attributes:
        build: the OS build number written in the ePID.
        platform_id: the ePID's first field for this build.
        release: the build's release date; random ePID dates are not earlier.
        ndr64: whether a genuine host of this build negotiates NDR64 (2.5: builds after 7601).
        name: display name.
        vlmcsd: in vlmcsd's shipped list of six builds drawn for random ePIDs.
    """

    build: int
    platform_id: int
    release: _dt.date
    ndr64: bool
    name: str
    vlmcsd: bool = True


#: Host builds (6.3), plus 20348 and 26100 with platform id 3612 (6.1).
HOST_BUILDS: tuple[HostBuild, ...] = (
    HostBuild(26100, 3612, _dt.date(2024, 11, 1), True, "Windows 11 24H2 / Server 2025", vlmcsd=False),
    HostBuild(20348, 3612, _dt.date(2021, 8, 18), True, "Windows Server 2022", vlmcsd=False),
    HostBuild(17763, 3612, _dt.date(2018, 10, 2), True, "Windows 10 1809 / Server 2019"),
    HostBuild(14393, 3612, _dt.date(2016, 8, 2), True, "Windows 10 1607 / Server 2016"),
    HostBuild(9600, 6401, _dt.date(2013, 10, 18), True, "Windows 8.1 / Server 2012 R2"),
    HostBuild(9200, 5426, _dt.date(2012, 10, 26), True, "Windows 8 / Server 2012"),
    HostBuild(7601, 55041, _dt.date(2011, 2, 22), False, "Windows 7 / Server 2008 R2 SP1"),
    HostBuild(6002, 55041, _dt.date(2009, 5, 26), False, "Windows Vista / Server 2008 SP2"),
)
_BUILDS = {b.build: b for b in HOST_BUILDS}


@dataclass(frozen=True, slots=True)
class Csvlk:
    """A KMS host key (CSVLK) as far as the ePID shows it (6.1, 6.3).

    Attributes:
        name: vlmcsd's ini name ("Windows", "Office2010", ...) or ours for the newer keys.
        group_id: the ePID's second field.
        min_key_id: lowest key id of the key's range (``None``: not known).
        max_key_id: vlmcsd's MaxKeyId; generated key ids stay below it (``None``: not known).
        release: the key's release date; random ePID dates are not earlier (``None``: not known).
        index: vlmcsd's ePID index (``None``: not in vlmcsd's data).
        default_epid: the ePID in vlmcsd's internal data, used by ``-r0``.
    """

    name: str
    group_id: int
    min_key_id: int | None
    max_key_id: int | None
    release: _dt.date | None
    index: int | None
    default_epid: str | None = None

    def contains(self, key_id: int) -> bool:
        """Whether ``key_id`` lies in the key's known range (``[min, max]``); ``True`` if the range is unknown."""
        if self.min_key_id is None or self.max_key_id is None:
            return True
        return self.min_key_id <= key_id <= self.max_key_id


#: CSVLKs: vlmcsd's six (by ePID index), then one per KMS host key group emu models.
CSVLKS: tuple[Csvlk, ...] = (
    Csvlk(
        "Windows",
        206,
        551_000_000,
        570_999_999,
        _dt.date(2018, 10, 2),
        0,
        "03612-00206-556-123727-03-1033-17763.0000-2972018",
    ),
    Csvlk(
        "Office2010",
        96,
        199_000_000,
        217_999_999,
        _dt.date(2010, 7, 15),
        1,
        "03612-00096-199-799188-03-1033-17763.0000-2972018",
    ),
    Csvlk(
        "Office2013",
        206,
        234_000_000,
        255_999_999,
        _dt.date(2013, 1, 29),
        2,
        "03612-00206-240-719639-03-1033-17763.0000-2972018",
    ),
    Csvlk(
        "Office2016",
        206,
        437_000_000,
        458_999_999,
        _dt.date(2015, 9, 22),
        3,
        "03612-00206-438-004532-03-1033-17763.0000-2972018",
    ),
    Csvlk(
        "WinChinaGov",
        3858,
        15_000_000,
        999_999_999,
        _dt.date(2017, 4, 5),
        4,
        "03612-03858-053-089516-03-1033-17763.0000-2972018",
    ),
    Csvlk(
        "Office2019",
        206,
        666_000_000,
        685_999_999,
        _dt.date(2018, 9, 24),
        5,
        "03612-00206-684-137669-03-1033-17763.0000-2972018",
    ),
    # The KMS host key groups of docs/kms-host-keys.md. Group ids 4573/4918 and every key range below
    # come from a public KMS data file (py-kms's KmsDataBase.xml), not from a Microsoft page.
    Csvlk("Server2025", 4918, 30_000, 20_029_999, _dt.date(2024, 11, 1), None),
    Csvlk("Server2022", 4573, 0, 20_029_999, _dt.date(2021, 8, 18), None),
    Csvlk("Server2019", 206, 551_000_000, 570_999_999, _dt.date(2018, 10, 2), None),
    Csvlk("Server2016", 206, 491_000_000, 530_999_999, _dt.date(2016, 8, 2), None),
    Csvlk("Win10", 206, 390_000_000, 404_999_999, _dt.date(2015, 7, 29), None),
    Csvlk("Office2021", 206, 571_000_000, 590_999_999, _dt.date(2021, 9, 16), None),
    # Office LTSC 2024: the data file repeats Office 2019's range and gives no date; GA date used.
    Csvlk("Office2024", 206, 666_000_000, 685_999_999, _dt.date(2024, 9, 16), None),
)
_CSVLKS = {c.name.lower(): c for c in CSVLKS}

#: Group ids that real ePIDs carry (6.1): Windows 8+/Office 2013+, Office 2010, China Government,
#: Windows 7, Server 2008 R2, Server 2008, Vista (two), Server 2022, Server 2025.
KNOWN_GROUP_IDS = frozenset({206, 96, 3858, 172, 168, 152, 142, 154, 4573, 4918})


def host_build(build: int) -> HostBuild:
    """The table entry of a host build. Raises UsageError for builds not in :data:`HOST_BUILDS`."""
    try:
        return _BUILDS[build]
    except KeyError:
        known = ", ".join(str(b) for b in _BUILDS)
        raise UsageError(f"unknown host build {build}; known builds: {known}") from None


def csvlk(name: str) -> Csvlk:
    """The CSVLK with this name (case-insensitive). Raises UsageError listing the names if unknown."""
    try:
        return _CSVLKS[name.lower()]
    except KeyError:
        names = ", ".join(c.name for c in CSVLKS)
        raise UsageError(f"unknown CSVLK {name!r}; known: {names}") from None


def csvlk_for_kms_id(kms_id: uuid.UUID | str) -> Csvlk:
    """The CSVLK whose ePID answers a product group (vlmcsd's ePID index, 7.2); Windows for unknown IDs (6.2)."""
    key = kms_id if isinstance(kms_id, uuid.UUID) else uuid.UUID(str(kms_id))
    item = product_data().find_kms_item(key)
    return csvlk(item.csvlk) if item is not None else csvlk("Windows")


def platform_id_for_build(build: int) -> int | None:
    """The platform id a genuine ePID pairs with ``build`` (6.1), or ``None`` for builds it cannot tell."""
    entry = _BUILDS.get(build)
    if entry is not None:
        return entry.platform_id
    if build >= _FIRST_3612_BUILD:
        return 3612
    return None


def ndr64_for_build(build: int) -> bool:
    """Whether a host of this build negotiates NDR64: builds after 7601 (2.5, vlmcsd ``-H``)."""
    return build > 7601


def generate_epid(
    key: Csvlk | str,
    build: HostBuild | int,
    lcid: int,
    rng: Rng,
    today: _dt.date,
) -> str:
    """A random ePID the way vlmcsd makes one (6.1, 6.2).

    The key id is uniform in ``[min_key_id, max_key_id)``; the date is uniform between the later of the
    CSVLK's and the build's release dates and ``today`` (``today`` itself if that is earlier); the day of
    year is 1-based (vlmcsd, Q8).

    Raises:
        UsageError: for an unknown CSVLK or build, a CSVLK whose key range is unknown, or an LCID
            outside 1-65535.
    """
    key = csvlk(key) if isinstance(key, str) else key
    entry = host_build(build) if isinstance(build, int) else build
    if key.min_key_id is None or key.max_key_id is None:
        raise UsageError(
            f"the key-id range of CSVLK {key.name} (group {key.group_id}) is not known; give the ePID explicitly"
        )
    if not 1 <= lcid <= 0xFFFF:
        raise UsageError(f"LCID {lcid} is not a Windows language id (1-65535)")
    key_id = rng.randint(key.min_key_id, key.max_key_id - 1)
    start = max(d for d in (key.release, entry.release) if d is not None)
    start = min(start, today)
    day = start + _dt.timedelta(days=rng.randint(0, (today - start).days))
    return (
        f"{entry.platform_id:05d}-{key.group_id:05d}-{key_id // 1_000_000:03d}-{key_id % 1_000_000:06d}"
        f"-{VOLUME_CHANNEL:02d}-{lcid}-{entry.build}.0000-{day.timetuple().tm_yday:03d}{day.year:04d}"
    )


@dataclass(frozen=True, slots=True)
class Epid:
    """A parsed ePID. Fields are ``None`` when the text is not in the ePID format at all.

    Attributes:
        text: the ePID as received.
        platform_id, group_id, key_id, channel, lcid, build, day_of_year, year: the fields of 6.1.
        problems: everything implausible about it, in words (never raised: ePIDs are informational).
    """

    text: str
    platform_id: int | None = None
    group_id: int | None = None
    key_id: int | None = None
    channel: int | None = None
    lcid: int | None = None
    build: int | None = None
    day_of_year: int | None = None
    year: int | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def well_formed(self) -> bool:
        """The text has the ePID layout (whatever its values)."""
        return self.platform_id is not None

    @property
    def date(self) -> _dt.date | None:
        """The activation date, reading the day of year 1-based (``None`` if it is not a date)."""
        if self.year is None or self.day_of_year is None or not 1 <= self.year <= 9999:
            return None
        try:
            return _dt.date(self.year, 1, 1) + _dt.timedelta(days=self.day_of_year - 1)
        except OverflowError:
            return None


_EPID = re.compile(
    r"^(?P<platform>\d{5})-(?P<group>\d{5})-(?P<key_hi>\d{3})-(?P<key_lo>\d{6})-(?P<channel>\d{2})"
    r"-(?P<lcid>\d{1,5})-(?P<build>\d{4,5})\.0000-(?P<day>\d{3})(?P<year>\d{4})$"
)


def parse_epid(
    text: str,
    *,
    key: Csvlk | None = None,
    ndr64: bool | None = None,
    today: _dt.date | None = None,
) -> Epid:
    """Split an ePID into its fields and list what is implausible about it.

    Args:
        text: the ePID (a trailing NUL is ignored).
        key: if given, also check the group id and key-id range against this CSVLK.
        ndr64: if given, whether NDR64 was negotiated on the connection; checked against the build.
        today: if given, the date must not be later.
    """
    text = text.rstrip("\x00")
    match = _EPID.match(text)
    if match is None:
        return Epid(text, problems=("not in the PPPPP-GGGGG-KKK-KKKKKK-03-LLLL-BBBB.0000-DDDYYYY format",))
    platform = int(match["platform"])
    group = int(match["group"])
    key_id = int(match["key_hi"]) * 1_000_000 + int(match["key_lo"])
    channel = int(match["channel"])
    lcid = int(match["lcid"])
    build = int(match["build"])
    day = int(match["day"])
    year = int(match["year"])
    problems: list[str] = []

    if channel != VOLUME_CHANNEL:
        problems.append(f"license channel {channel:02d} is not 03 (volume)")
    expected_platform = platform_id_for_build(build)
    if expected_platform is None:
        problems.append(f"build {build} is not a known KMS host build")
    elif platform != expected_platform:
        problems.append(f"platform id {platform:05d} does not match build {build} (expected {expected_platform:05d})")
    if group not in KNOWN_GROUP_IDS:
        problems.append(f"group id {group:05d} is not a known CSVLK group")
    if not 1 <= lcid <= 0xFFFF:
        problems.append(f"LCID {lcid} is not a Windows language id")
    days_in_year = 366 if _is_leap(year) else 365
    if day == 0:
        problems.append("day of year 000: counted from 0 (py-kms does this, Q8); vlmcsd and Windows count from 1")
    elif day > days_in_year:
        problems.append(f"day of year {day:03d} does not exist in {year}")
    parsed = Epid(text, platform, group, key_id, channel, lcid, build, day, year)
    date = parsed.date
    entry = _BUILDS.get(build)
    if date is not None and day != 0 and entry is not None and date < entry.release:
        problems.append(f"date {date.isoformat()} is before build {build} was released ({entry.release.isoformat()})")
    if date is not None and today is not None and date > today:
        problems.append(f"date {date.isoformat()} is in the future")
    if key is not None:
        if group != key.group_id:
            problems.append(f"group id {group:05d} is not that of CSVLK {key.name} ({key.group_id:05d})")
        elif not key.contains(key_id):
            problems.append(f"key id {key_id} is outside CSVLK {key.name}'s range {key.min_key_id}-{key.max_key_id}")
    if ndr64 is not None and ndr64 != ndr64_for_build(build):
        if ndr64:
            problems.append(f"ePID claims build {build} but NDR64 was negotiated (hosts before 9200 have no NDR64)")
        else:
            problems.append(f"ePID claims build {build} but NDR64 was not used (hosts since 9200 negotiate it)")
    return Epid(text, platform, group, key_id, channel, lcid, build, day, year, tuple(problems))


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def parse_hwid(text: str) -> bytes:
    """Eight HwId bytes from 16 hex digits, first two digits = first wire byte (6.4).

    Spaces, colons and dashes between digits are ignored (vlmcsd's ini writes ``3A 1C 04 96 ...``),
    and a leading ``0x`` is allowed.

    Raises:
        UsageError: if the text is not exactly 16 hex digits.
    """
    digits = re.sub(r"[\s:\-]", "", text)
    if digits[:2].lower() == "0x":
        digits = digits[2:]
    if not re.fullmatch(r"[0-9A-Fa-f]{16}", digits):
        raise UsageError(f"HwId {text!r} is not 16 hex digits (e.g. 3A1C049600B60076)")
    return bytes.fromhex(digits)


def format_hwid(hwid: bytes) -> str:
    """The HwId as 16 upper-case hex digits in wire order, as vlmcs prints it."""
    if len(hwid) != 8:
        raise UsageError(f"a HwId has 8 bytes, not {len(hwid)}")
    return hwid.hex().upper()
