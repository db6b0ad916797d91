"""`emu client products`: the product table a user picks --product names from (vlmcs -x)."""

from __future__ import annotations

import json

from emu.cli import main


def test_products_filter_by_words_shows_threshold_protocol_and_gvlk(capsys):
    assert main(["client", "products", "server", "2022"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0].strip() for line in out] == [
        "Windows Server 2022 Datacenter",
        "Windows Server 2022 Standard",
        "Windows Server 2022 Datacenter: Azure Edition",
    ]
    assert all(" v6 " in line and "N=5" in line for line in out)
    assert "WX4NM-KYWYW-QJJR4-XV3QB-6VM33" in out[0]  # Microsoft's published GVLK


def test_products_json_lines_carry_the_guids(capsys):
    assert main(["client", "products", "windows", "10/11", "enterprise", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ent = next(r for r in rows if r["name"] == "Windows 10/11 Enterprise")
    assert (ent["sku_id"], ent["kms_id"], ent["threshold"]) == (
        "73111121-5638-40f6-bc11-f1d7b0d64300",
        "58e2134f-8e11-4d17-9cb2-91069c151148",
        25,
    )


def test_products_with_no_match_says_so_and_exits_1(capsys):
    assert main(["client", "products", "no-such-product"]) == 1
    assert "no product matches" in capsys.readouterr().err


def test_products_takes_the_same_names_as_product(capsys):
    assert main(["client", "products", "win10"]) == 0
    names = [line.split("  ")[0].strip() for line in capsys.readouterr().out.splitlines()]
    assert "Windows 10/11 Enterprise" in names
    assert all("10" in name for name in names)
    assert main(["client", "products", "W269N-WFGWX-YVC9B-4J6C9-T83GX"]) == 0
    assert capsys.readouterr().out.startswith("Windows 10/11 Pro ")


def test_products_json_lists_every_field(capsys):
    assert main(["client", "products", "--json", "Windows Server Standard, version 1709"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["gvlks"] == ["PTXN8-JFHJM-4WC78-MPCBR-9W4KR", "DPCNP-XQFKJ-BJF7R-FRC8D-GF6G4"]
    assert row["kms_item"] == "Windows Server 2016"
    assert row["gvlk_source"]["date"] == "2024-10-01"
    assert row["host_key_groups"] == [
        "Windows Server 2025",
        "Windows Server 2022",
        "Windows Server 2019",
        "Windows Server 2016",
    ]
    assert {"sku_id", "app_id", "application", "protocol", "threshold", "note", "retail", "preview"} <= set(row)
