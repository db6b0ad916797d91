"""pcaps/: every sample capture decodes to its sidecar, has a README line, and make-pcaps reproduces it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emu.net.kms_decode import decode_capture
from emu_testing import ROOT

PCAP_DIR = ROOT / "pcaps"
PCAPS = sorted(PCAP_DIR.glob("*.pcap"))


def test_sample_captures_exist():
    assert len(PCAPS) >= 7, "run scripts/make-pcaps"


@pytest.mark.parametrize("path", PCAPS, ids=lambda p: p.name)
def test_sample_capture_decodes_to_its_sidecar(path: Path):
    sidecar = json.loads(path.with_suffix(".json").read_text())
    decoded = decode_capture(path)
    assert decoded.conversations == sidecar["conversations"]
    assert list(decoded.kms_conversations) == sidecar["kms_conversations"]
    records = [p.to_json() for p in decoded.pdus] + [n.to_json() for n in decoded.notes]
    assert json.loads(json.dumps(records)) == sidecar["records"]
    assert decoded.ok


@pytest.mark.parametrize("path", PCAPS, ids=lambda p: p.name)
def test_sample_capture_has_a_readme_line(path: Path):
    assert f"| `{path.name}` |" in (PCAP_DIR / "README.md").read_text()


@pytest.mark.slow
def test_make_pcaps_reproduces_the_committed_files_byte_for_byte(tmp_path: Path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make-pcaps"), str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    for path in PCAPS:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
        assert (tmp_path / path.with_suffix(".json").name).read_bytes() == path.with_suffix(".json").read_bytes()
