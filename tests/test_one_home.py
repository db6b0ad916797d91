"""One home per fact: each protocol fact below is written in exactly one module of emu; the rest import it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "emu"


def _modules_containing(pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if regex.search(p.read_text(encoding="utf-8"))
    )


@pytest.mark.parametrize(
    "fact,pattern,home",
    [
        ("licensing error names", r'"SL_E_[A-Z_]+"|"SL_REMAPPING_[A-Z_]+"', "hresults.py"),
        ("the FILETIME epoch", r"116444736000000000", "clock.py"),
        ("DCE/RPC fault status names", r'"nca_s_[a-z_]+"', "wire/rpc/names.py"),
        ("the units of durations", r'"w":\s*604', "durations.py"),
        ("the record lifetime of the client table", r"30 \* DAY", "kms/count_cache.py"),
    ],
)
def test_a_fact_is_written_in_one_module(fact: str, pattern: str, home: str) -> None:
    assert _modules_containing(pattern) == [home], f"{fact} must live in emu/{home} only"
