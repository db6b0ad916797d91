"""An emulated MAK client's licensing state on disk (the JSON file of ``emu client mak --state`` and of the
clients VAMT manages): read, and written atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from emu.errors import UsageError
from emu.mak import client as mak

__all__ = ["load_state", "save_state"]


def load_state(path: Path, hardware_id: str | None = None, generation: str | None = None) -> mak.ClientLicense:
    """The machine's state from ``path``; a new machine (a random hardware ID unless given) if missing.

    Raises:
        UsageError: the file is not a state file.
    """
    if not path.exists():
        return mak.new_license(hardware_id or f"emu-hw-{uuid.uuid4()}", generation or "win8+")
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        return mak.ClientLicense(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--state {path}: not an emu MAK client state file ({exc})") from None


def save_state(path: Path, state: mak.ClientLicense) -> None:
    """Write the state atomically.

    Raises:
        UsageError: the file cannot be written.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(asdict(state), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"--state {path}: cannot write it ({exc.strerror})") from None
