"""The product table against Microsoft's published GVLK lists (tests/kms/published_gvlks.json).

A key missing from emu/data/products.json, a mistyped key, or an edition the product matcher cannot
find by the name Microsoft prints fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emu.errors import UsageError
from emu.kms import products

PUBLISHED = json.loads((Path(__file__).parent / "published_gvlks.json").read_text(encoding="utf-8"))
ROWS = PUBLISHED["keys"]


def test_published_lists_are_the_expected_size() -> None:
    counts: dict[str, int] = {}
    for row in ROWS:
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    assert counts == {"ms-windows": 78, "ms-office": 52, "ms-office2013": 15, "ms-office2010": 17}
    assert len({row["gvlk"] for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row["gvlk"] for row in ROWS])
def test_every_published_key_is_known_under_the_printed_edition_names(row: dict[str, object]) -> None:
    gvlk = str(row["gvlk"])
    sku = products.sku_by_gvlk(gvlk)
    assert sku is not None, f"{gvlk} ({row['editions']}) is not in emu/data/products.json"
    assert sku.gvlk_source == row["source"]
    editions = row["editions"]
    assert isinstance(editions, list)
    for edition in editions:
        assert products.lookup(edition) == sku, f"{edition!r} does not find {sku.name!r}"


def test_every_key_in_the_table_is_published_or_says_that_none_is() -> None:
    published = {row["gvlk"]: row["source"] for row in ROWS}
    for sku in products.all_skus():
        for gvlk in sku.gvlks:
            assert published.get(gvlk) == sku.gvlk_source, f"{sku.name}: {gvlk} is not on {sku.gvlk_source}"
        if not sku.gvlks:
            assert sku.gvlk_source is None


def test_the_data_file_names_each_source_with_its_date() -> None:
    by_id = {source.id: source for source in products.sources()}
    for source in PUBLISHED["sources"]:
        assert by_id[source["id"]].date == source["date"]
        assert by_id[source["id"]].url == source["url"]


def test_a_mistyped_key_is_not_taken_for_a_published_one() -> None:
    assert products.sku_by_gvlk("W269N-WFGWX-YVC9B-4J6C9-T83GY") is None
    with pytest.raises(UsageError, match="not a GVLK Microsoft publishes"):
        products.lookup("W269N-WFGWX-YVC9B-4J6C9-T83GY")
