"""`emu explain`: codes, symbolic names, GVLKs, GUIDs, host key groups and products; unknown input exits 2."""

from __future__ import annotations

import json

import pytest

from emu import hresults
from emu.cli import main
from emu.kms import products


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["explain", "--json", *argv]) == 0
    record: dict[str, object] = json.loads(capsys.readouterr().out)
    return record


@pytest.mark.parametrize(
    "spelling", ["0xC004F074", "c004f074", "-1073418124", "3221549172", "SL_E_VL_BINDING_SERVICE_UNAVAILABLE"]
)
def test_a_code_in_any_spelling_gives_its_entry_of_the_one_table(capsys, spelling: str) -> None:
    record = _json(capsys, spelling)
    entry = hresults.lookup(0xC004F074)
    assert entry is not None
    assert record == {
        "kind": "error",
        "code": "0xC004F074",
        "symbol": entry.symbol,
        "meaning": entry.meaning,
        "paths": list(entry.paths),
        "causes": list(entry.causes),
        "checks": list(entry.checks),
    }


def test_the_text_form_names_symbol_meaning_causes_and_checks(capsys) -> None:
    assert main(["explain", "0xC004F042"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0xC004F042  SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH")
    assert "causes:" in out and "check:" in out and "host key group" in out


def test_a_gvlk_gives_the_product_ids_threshold_protocol_and_host_key_groups(capsys) -> None:
    record = _json(capsys, "WX4NM-KYWYW-QJJR4-XV3QB-6VM33")
    assert record["kind"] == "product"
    assert record["name"] == "Windows Server 2022 Datacenter"
    assert record["sku_id"] == "ef6cfc9f-8c5d-44ac-9aad-de6a2ea0ae03"
    assert record["kms_id"] == "b74263e4-0f92-46c6-bcf8-c11d5efe2959"
    assert (record["threshold"], record["protocol"]) == (5, 6)
    assert record["host_key_groups"] == ["Windows Server 2025", "Windows Server 2022"]


def test_a_product_name_is_matched_as_product_is(capsys) -> None:
    assert _json(capsys, "win10ent")["sku_id"] == str(products.lookup("win10ent").id)
    assert _json(capsys, "Office", "2019")["name"] == "Office Professional Plus 2019"
    text_main = main(["explain", "Excel LTSC 2024"])
    assert text_main == 0
    out = capsys.readouterr().out
    assert "threshold:      5 clients" in out and "Office LTSC 2024" in out


def test_a_kms_counted_id_lists_its_editions(capsys) -> None:
    record = _json(capsys, "8449b1fb-f0ea-497a-99ab-66ca96e9a0f5")
    assert record["kind"] == "kms_item"
    assert "Windows Server Standard, version 1809, 1903, 1909, 2004, 20H2" in record["skus"]  # type: ignore[operator]


def test_a_host_key_group_says_what_it_activates_and_where_it_is_hosted(capsys) -> None:
    record = _json(capsys, "Volume License for Windows Server 2016")
    assert record["kind"] == "host_key_group"
    assert record["hosted_on"] == ["Windows Server 2016", "Windows Server 2012 R2", "Windows Server 2012"]
    assert "Windows 10 LTSB (2015 and 2016)" in record["activates"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("what", "words"),
    [
        ("0xC004F0FF", "close: 0xC004F083"),
        ("SL_E_VL_BINDING_SERVIC", "did you mean: SL_E_VL_BINDING_SERVICE_UNAVAILABLE"),
        ("W269N-WFGWX-YVC9B-4J6C9-T83GY", "not a GVLK Microsoft publishes"),
        ("windoes servr 2022 datacentr", "did you mean: Windows Server 2022 Datacenter"),
        ("00000000-1111-2222-3333-444444444444", "not a SKU ID, KMS counted ID"),
        ("Windows Server", "ambiguous"),
    ],
)
def test_unknown_or_ambiguous_input_exits_2_with_suggestions(capsys, what: str, words: str) -> None:
    assert main(["explain", what]) == 2
    err = capsys.readouterr().err
    assert words in err
    assert len(err.strip().splitlines()) == 1


def test_a_product_alias_wins_over_a_group_name_and_host_key_names_the_group(capsys) -> None:
    assert _json(capsys, "Office 2019")["kind"] == "product"
    assert _json(capsys, "Office 2019 host key")["kind"] == "host_key_group"
