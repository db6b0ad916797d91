"""emu decode --json writes the same text whether orjson or the standard library encodes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emu.pcap import json_lines
from emu.pcap.decode import DecodeSummary, iter_records
from emu.pcap.json_lines import json_line, standard_json_line

PCAPS = Path(__file__).resolve().parents[2] / "pcaps"


def _documents() -> list[object]:
    """Every record (and the summary) of the sample captures, as --json renders them."""
    out: list[object] = []
    for path in sorted(PCAPS.glob("*.pcap")):
        for record in iter_records(path):
            out.append(record.to_json())
    return out


def test_orjson_is_installed_by_the_projects_scripts():
    assert json_lines.orjson_active(), "the fast extra (orjson) is part of emu[test]"


def test_both_encoders_write_identical_lines_for_every_sample_record():
    documents = _documents()
    assert any(isinstance(d, dict) and d.get("record") == "summary" for d in documents)
    assert len(documents) > 20
    for document in documents:
        assert json_line(document) == standard_json_line(document)
        assert json.loads(json_line(document)) == document


@pytest.mark.parametrize(
    "document",
    [
        {"workstation": "pc\udc80"},  # a lone surrogate, as a hostile capture's name decodes
        {"big": 2**70},
        {1: "an integer key"},
        {"text": 'ünïcødé \u2603 \n\t"quoted"', "float": 0.1, "neg": -5, "none": None, "list": [True, False]},
    ],
)
def test_documents_orjson_refuses_or_formats_alike_come_out_as_the_standard_encoder_writes_them(document):
    assert json_line(document) == standard_json_line(document)


def test_a_summary_is_one_line():
    line = json_line(DecodeSummary("x.pcap").to_json())
    assert line.endswith("\n") and line.count("\n") == 1
