"""KMS host key groups (docs/kms-host-keys.md): each group accepts and refuses exactly what
Microsoft's "KMS activation planning" page lists, on the sans-IO host; the required-updates option;
the ePID of each group."""

from __future__ import annotations

import uuid

import pytest

from emu.errors import UsageError
from emu.kms import epid as _epid
from emu.kms import host_keys, products
from emu.kms.host import E_KMS_ID_MISMATCH, HostConfig, KmsHost
from emu.kms.messages import build_request
from emu.rng import seeded
from emu.wire.kms import LicenseStatus, RequestBase, Version

NOW = 1_750_000_000.0

S2025 = ["Windows Server 2025 Standard", "Windows Server 2025 Datacenter: Azure Edition"]
S2022 = ["Windows Server 2022 Datacenter", "Windows Server 2022 Datacenter: Azure Edition"]
SAC_2019 = ["Windows Server Standard, version 1809", "Windows Server Datacenter, version 20H2"]
S2019 = ["Windows Server 2019 Essentials", "Windows Server 2019 Standard"]
SAC_2016 = ["Windows Server Datacenter, version 1709", "Windows Server Standard, version 1803"]
OLDER_SERVERS = [
    "Windows Server 2016 Standard",
    "Windows Server 2016 Essentials",
    "Windows Server 2012 R2 Datacenter",
    "Windows Server 2012 Standard",
    "Windows Server 2012 MultiPoint Premium",
    "Windows Server 2008 R2 Enterprise",
    "Windows Server 2008 R2 Web",
    "Windows Server 2008 Datacenter without Hyper-V",
    "Windows Web Server 2008",
]
WIN10 = [
    "Windows 10 Enterprise",
    "Windows 10 Enterprise N",
    "Windows 10 Pro",
    "Windows 10 Pro N",
    "Windows 10 Pro for Workstations",
    "Windows 10 Education N",
]
LTSB = ["Windows 10 Enterprise LTSB 2015", "Windows 10 Enterprise N LTSB 2016"]
LTSC = ["Windows 10 Enterprise LTSC 2019", "Windows 11 Enterprise LTSC 2024"]
OLDER_CLIENTS = ["Windows 8.1 Enterprise", "Windows 8.1 Pro", "Windows 7 Enterprise", "Windows 7 Professional"]
NEVER_LISTED = ["Windows Vista Business", "Windows 8 Pro", "Windows 10 Enterprise G", "Office Professional Plus 2019"]

EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "Windows Server 2025": (
        S2025 + S2022 + SAC_2019 + S2019 + SAC_2016 + OLDER_SERVERS + WIN10 + LTSB + LTSC + OLDER_CLIENTS,
        NEVER_LISTED,
    ),
    "Windows Server 2022": (
        S2022 + SAC_2019 + S2019 + SAC_2016 + OLDER_SERVERS + WIN10 + LTSB + LTSC + OLDER_CLIENTS,
        S2025 + NEVER_LISTED,
    ),
    "Windows Server 2019": (
        SAC_2019 + S2019 + SAC_2016 + OLDER_SERVERS + WIN10 + LTSB + LTSC + OLDER_CLIENTS,
        S2025 + S2022 + NEVER_LISTED,
    ),
    "Windows Server 2016": (
        SAC_2016 + OLDER_SERVERS + WIN10 + LTSB + OLDER_CLIENTS,
        S2025 + S2022 + S2019 + SAC_2019 + LTSC + NEVER_LISTED,
    ),
    "Windows 10": (
        WIN10 + ["Windows 10 Enterprise LTSB 2015"] + OLDER_CLIENTS,
        S2025 + S2022 + S2019 + SAC_2016 + OLDER_SERVERS + ["Windows 10 Enterprise LTSB 2016"] + LTSC + NEVER_LISTED,
    ),
    "Office 2010": (["Office Professional Plus 2010", "Word 2010"], ["Office Professional Plus 2013"]),
    "Office 2013": (["Office Professional Plus 2013", "Lync 2013"], ["Word 2010", "Office Standard 2016"]),
    "Office 2016": (["Office Standard 2016", "Skype for Business 2016"], ["Word 2013", "Word 2019"]),
    "Office 2019": (["Office Professional Plus 2019", "Publisher 2019"], ["Word 2016", "Word LTSC 2021"]),
    "Office LTSC 2021": (["Office LTSC Professional Plus 2021", "Access LTSC 2021"], ["Word 2019", "Word LTSC 2024"]),
    "Office LTSC 2024": (["Visio LTSC Standard 2024", "Excel LTSC 2024"], ["Excel LTSC 2021", "Windows 10 Pro"]),
}


def ask(host: KmsHost, name: str) -> tuple[int, str]:
    sku = products.lookup(name)
    base = RequestBase(
        version=Version(sku.protocol),
        vm_info=0,
        license_status=LicenseStatus.OOB_GRACE,
        binding_expiration=43200,
        app_id=sku.app_id,
        sku_id=sku.id,
        kms_id=sku.kms_id,
        cmid=uuid.uuid4(),
        required_client_count=sku.threshold,
        client_time=0,
        previous_cmid=uuid.UUID(int=0),
        workstation_name="client.lab.test",
    )
    answer = host.handle_request(build_request(base, seeded(1)), NOW)
    return answer.hresult, answer.reason


def make_host(*groups: str, host_os: str | None = None, unpatched: bool = False) -> KmsHost:
    config = HostConfig(host_key_groups=groups, host_os=host_os, unpatched=unpatched)
    return KmsHost(config, seeded(2), NOW)


def test_every_group_of_the_planning_page_and_every_office_group_is_tested() -> None:
    assert [g.name for g in host_keys.host_key_groups()] == list(EXPECTED)


@pytest.mark.parametrize("group", list(EXPECTED))
def test_a_group_activates_exactly_what_the_planning_page_lists(group: str) -> None:
    accepted, refused = EXPECTED[group]
    host = make_host(group)
    for name in accepted:
        assert ask(host, name)[0] == 0, f"{group} should activate {name}"
    for name in refused:
        hresult, reason = ask(host, name)
        assert hresult == E_KMS_ID_MISMATCH, f"{group} should refuse {name}"
        assert group in reason


def test_a_2019_host_answers_a_server_2022_client_with_0xC004F042() -> None:
    hresult, reason = ask(make_host("Windows Server 2019"), "Windows Server 2022 Standard")
    assert hresult == 0xC004F042
    assert "Windows Server 2019" in reason


def test_without_a_group_the_host_activates_every_volume_product() -> None:
    host = KmsHost(HostConfig(), seeded(2), NOW)
    for name in ["Windows Server 2025 Datacenter", "Windows Vista Business N", "Word 2010", "Word LTSC 2024"]:
        assert ask(host, name)[0] == 0, name


def test_office_groups_add_to_a_windows_group() -> None:
    host = make_host("Windows Server 2022", "Office LTSC 2021")
    assert ask(host, "Windows Server 2019 Datacenter")[0] == 0
    assert ask(host, "Excel LTSC 2021")[0] == 0
    assert ask(host, "Excel 2019")[0] == E_KMS_ID_MISMATCH


def test_group_names_are_forgiving_and_unknown_ones_are_usage_errors() -> None:
    assert host_keys.host_key_group("Volume License for Windows Server 2019").name == "Windows Server 2019"
    assert host_keys.host_key_group("ws2016").name == "Windows Server 2016"
    with pytest.raises(UsageError, match="known: 'Windows Server 2025'"):
        host_keys.host_key_group("Windows Server 2003")


def test_a_host_holds_one_windows_key_and_only_on_the_documented_host_os() -> None:
    with pytest.raises(UsageError, match="one Windows host key"):
        HostConfig(host_key_groups=("Windows Server 2019", "Windows Server 2022"))
    with pytest.raises(UsageError, match="cannot be hosted on Windows Server 2016"):
        HostConfig(host_key_groups=("Windows Server 2025",), host_os="Windows Server 2016")
    HostConfig(host_key_groups=("Windows Server 2025",), host_os="Windows Server 2019")


def test_an_unpatched_2019_host_refuses_2022_and_2025_clients_naming_the_update() -> None:
    patched = make_host("Windows Server 2022", host_os="Windows Server 2019")
    assert ask(patched, "Windows Server 2022 Standard")[0] == 0
    unpatched = make_host("Windows Server 2022", host_os="Windows Server 2019", unpatched=True)
    hresult, reason = ask(unpatched, "Windows Server 2022 Standard")
    assert hresult == E_KMS_ID_MISMATCH
    assert "KB5003646" in reason
    assert ask(unpatched, "Windows Server 2019 Standard")[0] == 0


def test_an_unpatched_2012_r2_host_refuses_windows_10_and_server_2016() -> None:
    host = make_host("Windows Server 2016", host_os="Windows Server 2012 R2", unpatched=True)
    assert ask(host, "Windows 10 Enterprise")[0] == E_KMS_ID_MISMATCH
    assert ask(host, "Windows Server 2016 Standard")[0] == E_KMS_ID_MISMATCH
    assert ask(host, "Windows Server 2012 R2 Standard")[0] == 0
    assert ask(host, "Windows 8.1 Pro")[0] == 0


@pytest.mark.parametrize(
    ("group", "host_os", "csvlk", "build"),
    [
        ("Windows Server 2025", None, "Server2025", 26100),
        ("Windows Server 2022", None, "Server2022", 20348),
        ("Windows Server 2022", "Windows Server 2016", "Server2022", 14393),
        ("Windows Server 2019", None, "Server2019", 17763),
        ("Windows Server 2016", "Windows Server 2012", "Server2016", 9200),
        ("Windows 10", "Windows 7", "Win10", 7601),
    ],
)
def test_the_epid_is_the_groups_key_on_the_host_os_build(
    group: str, host_os: str | None, csvlk: str, build: int
) -> None:
    host = make_host(group, host_os=host_os)
    text = host.epid_for(products.lookup("Windows 10 Enterprise").kms_id)
    key = _epid.csvlk(csvlk)
    parsed = _epid.parse_epid(text, key=key)
    assert parsed.well_formed, text
    assert parsed.build == build
    assert parsed.group_id == key.group_id
    assert parsed.platform_id == _epid.platform_id_for_build(build)
    assert not parsed.problems, parsed.problems


def test_office_groups_answer_with_their_own_csvlk() -> None:
    host = make_host("Office LTSC 2021")
    parsed = _epid.parse_epid(host.epid_for(products.lookup("Word LTSC 2021").kms_id), key=_epid.csvlk("Office2021"))
    assert parsed.well_formed
    assert not parsed.problems


def test_office_keys_need_the_host_os_the_office_page_names() -> None:
    with pytest.raises(UsageError, match="cannot be hosted on Windows Server 2012 R2"):
        HostConfig(host_key_groups=("Windows Server 2019", "Office LTSC 2021"), host_os="Windows Server 2012 R2")
    HostConfig(host_key_groups=("Windows Server 2019", "Office 2019"), host_os="Windows Server 2012 R2")
    with pytest.raises(UsageError, match="cannot be hosted on Windows 7"):
        HostConfig(host_key_groups=("Office 2019",), host_os="Windows 7")
    HostConfig(host_key_groups=("Office 2016",), host_os="Windows 7")
