"""Static checks that catch real bugs: undefined names, unused imports, syntax errors (pyflakes rules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_code_has_no_undefined_names_or_unused_imports():
    pytest.importorskip("ruff", reason="ruff is in the test extra; scripts/test installs it")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F,E9", "--output-format", "concise",
         "emu", "tests", "scripts", "scripts/make-pcaps"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
