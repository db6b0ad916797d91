"""emu type-checks: ``python -m mypy emu`` with the [mypy] configuration of setup.cfg (strict).

The cache lives in the repository's (git-ignored) .mypy_cache, so a warm run takes well under a
second and a cold one a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_emu_passes_mypy():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "setup.cfg"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "emu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
