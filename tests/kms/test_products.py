"""Product data (kms-wire-protocol.md 7.1, 7.2): the packaged tables, GUID lookups and forgiving names."""

from __future__ import annotations

import json
import uuid
from importlib import resources

import pytest

from emu.errors import UsageError
from emu.kms import products
from emu.kms.products import (
    GVLK_PATTERN,
    OFFICE2010_APP_ID,
    OFFICE2013_APP_ID,
    WINDOWS_APP_ID,
    ProductData,
)

#: kms-wire-protocol.md 7.2 "Selected SKU IDs": SKU ID -> KMS counted ID.
SPEC_SKUS = {
    "2de67392-b7a7-462a-b1ca-108dd189f588": "58e2134f-8e11-4d17-9cb2-91069c151148",
    "73111121-5638-40f6-bc11-f1d7b0d64300": "58e2134f-8e11-4d17-9cb2-91069c151148",
    "e0c42288-980c-4788-a014-c080d2e1926e": "58e2134f-8e11-4d17-9cb2-91069c151148",
    "32d2fab3-e4a8-42c2-923b-4bf4fd13e6ee": "11b15659-e603-4cf1-9c1f-f0ec01b81888",
    "58e97c99-f377-4ef1-81d5-4ad5522b5fd8": "e1c51358-fe3e-4203-a4a2-3b6b20c9734e",
    "b3ca044e-a358-4d68-9883-aaa2941aca99": "8456efd3-0c04-4089-8740-5b7238535a65",
    "00091344-1ea4-4f37-b789-01750ba6988c": "8456efd3-0c04-4089-8740-5b7238535a65",
    "8c1c5410-9f39-4805-8c9d-63a07706358f": "6e9fc069-257d-4bc4-b4a7-750514d32743",
    "21c56779-b449-4d20-adfc-eece0e1ad74b": "6e9fc069-257d-4bc4-b4a7-750514d32743",
    "de32eafd-aaee-4662-9444-c1befb41bde2": "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5",
    "34e1ae55-27f8-4950-8877-7a03be5fb181": "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5",
    "9bd77860-9b31-4b7b-96ad-2564017315bf": "b74263e4-0f92-46c6-bcf8-c11d5efe2959",
    "ef6cfc9f-8c5d-44ac-9aad-de6a2ea0ae03": "b74263e4-0f92-46c6-bcf8-c11d5efe2959",
    "7dc26449-db21-4e09-ba37-28f2958506a6": "4b83307d-7788-50ff-8d1f-1861915bdb9d",
    "c052f164-cdf6-409a-a0cb-853ba0f0f55a": "4b83307d-7788-50ff-8d1f-1861915bdb9d",
    "6f327760-8c5c-417c-9b61-836a98287e0c": "e85af946-2e25-47b7-83e1-bebcebeac611",
    "b322da9c-a2e2-4058-9e4e-f59a6970bd69": "e6a6f1bf-9d40-40c3-aa9f-c77ba21578c0",
    "d450596f-894d-49e0-966a-fd39ed4c4c64": "85b5f61b-320b-4be3-814a-b76b2bfafc82",
    "85dd8b5f-eaa4-4af3-a628-cce9e77c9a03": "617d9eb1-ef36-4f82-86e0-a65ae07b96c6",
    "fbdb3e18-a8ef-4fb3-9183-dffd60bd0984": "86d50b16-4808-41af-b83b-b338274318b2",
    "8d368fc1-9470-4be2-8d66-90e836cbb051": "1b4db7eb-4057-5ddf-91e0-36dec72071f5",
}

#: kms-wire-protocol.md 7.2 KMS item table: KMS ID -> (protocol, N, retail, preview).
SPEC_KMS_ITEMS = {
    "212a64dc-43b1-4d3d-a30c-2fc69d2095c6": (4, 25, False, False),
    "7fde5219-fbfa-484a-82c9-34d1ad53e856": (4, 25, False, False),
    "3c40b358-5948-45af-923b-53d21fcc7e79": (5, 25, False, False),
    "bbb97b3b-8ca4-4a28-9717-89fabd42c4ac": (5, 25, True, False),
    "cb8fc780-2c05-495a-9710-85afffc904d7": (6, 25, False, False),
    "6d646890-3606-461a-86ab-598bb84ace82": (6, 25, True, False),
    "5f94a0bb-d5a0-4081-a685-5819418b2fe0": (5, 25, False, True),
    "58e2134f-8e11-4d17-9cb2-91069c151148": (6, 25, False, False),
    "969fe3c0-a3ec-491a-9f25-423605deb365": (6, 25, False, False),
    "11b15659-e603-4cf1-9c1f-f0ec01b81888": (6, 25, False, False),
    "d27cd636-1962-44e9-8b4f-27b6c23efb85": (6, 25, False, False),
    "7ba0bf23-d0f5-4072-91d9-d55af5a481b6": (6, 25, False, False),
    "e1c51358-fe3e-4203-a4a2-3b6b20c9734e": (6, 25, True, False),
    "33e156e4-b76f-4a52-9f91-f641dd95ac48": (4, 5, False, False),
    "8fe53387-3087-4447-8985-f75132215ac9": (4, 5, False, False),
    "8a21fdf3-cbc5-44eb-83f3-fe284e6680a7": (4, 5, False, False),
    "0fc6ccaf-ff0e-4fae-9d08-4370785bf7ed": (4, 5, False, False),
    "ca87f5b6-cd46-40c0-b06d-8ecd57a4373f": (4, 5, False, False),
    "b2ca2689-a9a8-42d7-938d-cf8e9f201958": (4, 5, False, False),
    "8665cb71-468c-4aa3-a337-cb9bc9d5eaac": (5, 5, False, False),
    "8456efd3-0c04-4089-8740-5b7238535a65": (6, 5, False, False),
    "6e9fc069-257d-4bc4-b4a7-750514d32743": (6, 5, False, False),
    "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5": (6, 5, False, False),
    "6d5f5270-31ac-433e-b90a-39892923c657": (6, 5, False, True),
    "b74263e4-0f92-46c6-bcf8-c11d5efe2959": (6, 5, False, False),
    "4b83307d-7788-50ff-8d1f-1861915bdb9d": (6, 5, False, False),
    "cbdcb1ba-e093-4c81-a463-10775291fdf9": (6, 5, False, False),
    "e85af946-2e25-47b7-83e1-bebcebeac611": (4, 5, False, False),
    "e6a6f1bf-9d40-40c3-aa9f-c77ba21578c0": (5, 5, False, False),
    "aa4c7968-b9da-4680-92b6-acb25e2f866c": (5, 5, False, True),
    "85b5f61b-320b-4be3-814a-b76b2bfafc82": (6, 5, False, False),
    "617d9eb1-ef36-4f82-86e0-a65ae07b96c6": (6, 5, False, False),
    "86d50b16-4808-41af-b83b-b338274318b2": (6, 5, False, False),
    "1b4db7eb-4057-5ddf-91e0-36dec72071f5": (6, 5, False, False),
}


def _raw() -> dict:
    return json.loads(resources.files("emu").joinpath("data", "products.json").read_text(encoding="utf-8"))


# The packaged tables ------------------------------------------------------------------------------


def test_packaged_data_loads_and_validates():
    data = products.product_data()
    assert len(data.applications()) == 3
    assert len(data.kms_items()) == len(SPEC_KMS_ITEMS)
    assert len(data.skus()) > 80


def test_every_spec_kms_item_has_the_spec_protocol_threshold_and_flags():
    for kms_id, (protocol, threshold, retail, preview) in SPEC_KMS_ITEMS.items():
        item = products.kms_item(kms_id)
        assert (item.protocol, item.threshold, item.retail, item.preview) == (protocol, threshold, retail, preview), (
            item.name
        )


@pytest.mark.parametrize("sku_id,kms_id", SPEC_SKUS.items())
def test_every_spec_sku_resolves_by_guid_and_by_name(sku_id: str, kms_id: str):
    sku = products.lookup(sku_id)
    assert sku.id == uuid.UUID(sku_id)
    assert sku.kms_id == uuid.UUID(kms_id)
    assert products.lookup(sku.name) is sku
    assert products.lookup(sku.name.upper().replace(" ", "-")) is sku


def test_every_sku_resolves_by_its_own_name_and_aliases():
    for sku in products.all_skus():
        assert products.lookup(sku.name) is sku
        for alias in sku.aliases:
            assert products.lookup(alias) is sku


def test_guid_lookup_accepts_braces_and_upper_case():
    assert products.lookup("{2DE67392-B7A7-462A-B1CA-108DD189F588}").name == "Windows 10/11 Pro"


def test_gvlks_have_the_five_by_five_format():
    for sku in products.all_skus():
        if sku.gvlk is not None:
            assert GVLK_PATTERN.match(sku.gvlk), sku.name
    assert products.lookup("Windows 10 Enterprise").gvlk == "NPPR9-FWDCX-D2C8J-H872K-2YT43"
    assert products.lookup("Office Professional Plus 2019").gvlk == "NMMKJ-6RK4F-KMJVX-8D9MJ-6MWKP"


def test_home_edition_has_no_published_gvlk():
    assert products.lookup("Windows 10 Home").gvlk is None


def test_skus_inherit_application_protocol_and_threshold_from_their_kms_item():
    win10 = products.lookup("win10ent")
    assert (win10.app_id, win10.protocol, win10.threshold) == (WINDOWS_APP_ID, 6, 25)
    server = products.lookup("Windows Server 2012 R2 Datacenter")
    assert (server.app_id, server.protocol, server.threshold) == (WINDOWS_APP_ID, 6, 5)
    o2010 = products.lookup("Office Professional Plus 2010")
    assert (o2010.app_id, o2010.protocol, o2010.threshold) == (OFFICE2010_APP_ID, 4, 5)
    o2013 = products.lookup("Office Professional Plus 2013")
    assert (o2013.app_id, o2013.protocol, o2013.threshold) == (OFFICE2013_APP_ID, 5, 5)


def test_application_lookup_names_the_family():
    assert products.application(OFFICE2013_APP_ID).name == "Office 2013+"
    assert products.application(str(WINDOWS_APP_ID)).min_active_clients == 50


# Validation at load -------------------------------------------------------------------------------


def test_duplicate_guid_in_data_is_rejected_at_load():
    raw = _raw()
    raw["skus"].append(dict(raw["skus"][0], name="Copy of the first SKU"))
    with pytest.raises(UsageError, match="also used by"):
        ProductData(raw)


def test_sku_with_unknown_kms_id_is_rejected_at_load():
    raw = _raw()
    raw["skus"][0]["kms"] = "00000000-0000-0000-0000-000000000001"
    with pytest.raises(UsageError, match="not in the KMS item table"):
        ProductData(raw)


def test_malformed_gvlk_is_rejected_at_load():
    raw = _raw()
    raw["skus"][0]["gvlk"] = "ABCDE-12345"
    with pytest.raises(UsageError, match="GVLK"):
        ProductData(raw)


# Forgiving names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query,expected",
    [
        ("win10ent", "Windows 10/11 Enterprise"),
        ("Windows 10 Enterprise", "Windows 10/11 Enterprise"),
        ("w10 enterprise", "Windows 10/11 Enterprise"),
        ("WINDOWS_11_ENTERPRISE", "Windows 10/11 Enterprise"),
        ("win11 pro", "Windows 10/11 Pro"),
        ("win10 edu", "Windows 10/11 Education"),
        ("win10 ltsc 2021", "Windows 10/11 Enterprise LTSC 2019/2021/2024"),
        ("win81 ent", "Windows 8.1 Enterprise"),
        ("win7 pro", "Windows 7 Professional"),
        ("srv2019 dc", "Windows Server 2019 Datacenter"),
        ("server 2022 std", "Windows Server 2022 Standard"),
        ("srv2012std", "Windows Server 2012 Standard"),
        ("Windows Server 2012 R2 Standard", "Windows Server 2012 R2 Standard"),
        ("ws2025 datacenter", "Windows Server 2025 Datacenter"),
        ("o2019", "Office Professional Plus 2019"),
        ("office2019", "Office Professional Plus 2019"),
        ("Office Professional Plus 2019", "Office Professional Plus 2019"),
        ("office 2016 proplus", "Office Professional Plus 2016"),
        ("o2024 std", "Office LTSC Standard 2024"),
        ("visio pro 2021", "Visio LTSC Professional 2021"),
        ("project std 2013", "Project Standard 2013"),
    ],
)
def test_forgiving_names_resolve(query: str, expected: str):
    assert products.lookup(query).name == expected


def test_ambiguous_name_raises_usage_error_listing_candidates():
    with pytest.raises(UsageError) as caught:
        products.lookup("Windows Server 2019")
    message = str(caught.value)
    assert "ambiguous" in message
    for name in ("Windows Server 2019 Standard", "Windows Server 2019 Datacenter"):
        assert name in message


def test_unknown_name_raises_usage_error_with_close_matches():
    with pytest.raises(UsageError) as caught:
        products.lookup("windoze 10 pro")
    assert "did you mean" in str(caught.value)
    assert "Windows 10/11 Pro" in str(caught.value)


def test_unknown_guid_raises_usage_error_and_says_what_it_is():
    with pytest.raises(UsageError, match="KMS counted ID"):
        products.lookup("58e2134f-8e11-4d17-9cb2-91069c151148")
    with pytest.raises(UsageError, match="unknown SKU ID"):
        products.lookup("00000000-0000-0000-0000-000000000009")


def test_unknown_kms_id_raises_usage_error():
    with pytest.raises(UsageError, match="unknown KMS counted ID"):
        products.kms_item("00000000-0000-0000-0000-000000000009")


def test_empty_name_raises_usage_error():
    with pytest.raises(UsageError):
        products.lookup("  -- ")


def test_describe_kms_id_names_the_sku_then_the_group_then_the_guid():
    sku = products.lookup("Office Professional Plus 2019")
    assert products.describe_kms_id(sku.kms_id, sku.id) == "Office Professional Plus 2019"
    assert products.describe_kms_id(sku.kms_id, uuid.UUID(int=5)) == "Office 2019"
    unknown = uuid.UUID(int=7)
    assert products.describe_kms_id(unknown, None) == f"unknown KMS ID {unknown}"


def test_kms_item_or_none_returns_none_for_unknown_ids():
    assert products.kms_item_or_none(uuid.UUID(int=7)) is None
    assert products.kms_item_or_none(uuid.UUID("8456efd3-0c04-4089-8740-5b7238535a65")).name == "Windows Server 2012 R2"
