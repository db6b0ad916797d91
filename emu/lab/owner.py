"""Which process runs a lab: ``/run/emu-lab/<lab id>`` holds the PID of the ``emu lab run`` that made the lab's
namespaces, so ``emu lab clean`` removes only labs whose run is gone (a SIGKILLed run's leftovers), never
one that is still running next to it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["OWNER_DIR", "claim", "lab_of", "owner", "release"]

#: Where the owner files live (tmpfs: they vanish at reboot, as the namespaces do).
OWNER_DIR = Path("/run/emu-lab")


def claim(lab_id: str) -> None:
    """Record this process as the owner of ``lab_id`` (best effort: without /run the lab still works)."""
    with contextlib.suppress(OSError):
        OWNER_DIR.mkdir(parents=True, exist_ok=True)
        (OWNER_DIR / lab_id).write_text(f"{os.getpid()}\n")


def release(lab_id: str) -> None:
    with contextlib.suppress(OSError):
        (OWNER_DIR / lab_id).unlink()


def owner(lab_id: str) -> int | None:
    """The PID of the live process that owns ``lab_id`` (None: no owner file, or its process is gone)."""
    try:
        pid = int((OWNER_DIR / lab_id).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def lab_of(namespace: str) -> str:
    """``emu-lab-1a2b3c`` of a namespace ``emu-lab-1a2b3c-kms1``."""
    parts = namespace.split("-")
    return "-".join(parts[:3])
