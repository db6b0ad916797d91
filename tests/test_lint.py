"""Static checks over the whole tree: ruff's formatter and linter, and the import-linter layer contracts.

ruff, mypy and import-linter are in the ``test`` extra (scripts/test installs them), so these never skip.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ["emu", "tests", "scripts"]  # ruff.toml adds the extensionless scripts/make-*


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True)


def test_whole_tree_passes_ruff_lint():
    result = _run("ruff", "check", "--no-cache", "--output-format", "concise", *TREE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_whole_tree_is_ruff_formatted():
    result = _run("ruff", "format", "--no-cache", "--check", *TREE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_linter_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout
