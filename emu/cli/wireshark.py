"""``emu wireshark``: install or locate the KMS Lua dissector shipped with emu.

The dissector (``emu/data/wireshark/kms.lua``) names the KMS fields inside the DCE/RPC
RequestActivation stub and decrypts v5/v6 (their keys are public). Wireshark loads Lua plugins
from the personal plugin folder, ``~/.local/lib/wireshark/plugins`` on Linux and macOS
(``%APPDATA%\\Wireshark\\plugins`` on Windows); ``install`` copies the file there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib import resources
from pathlib import Path

from emu.errors import UsageError

__all__ = ["dissector_source", "install", "personal_plugin_dir", "register"]

#: File name of the dissector, in the package and once installed.
DISSECTOR_NAME = "kms.lua"


def dissector_source() -> Path:
    """Path of the packaged ``kms.lua``."""
    path = Path(str(resources.files("emu") / "data" / "wireshark" / DISSECTOR_NAME))
    if not path.is_file():
        raise UsageError(f"{path}: the packaged dissector is missing (reinstall emu)")
    return path


def personal_plugin_dir() -> Path:
    """Wireshark's personal Lua plugin folder for this user and platform."""
    if sys.platform.startswith("win"):
        return Path(os.environ.get("APPDATA", Path.home())) / "Wireshark" / "plugins"
    return Path.home() / ".local" / "lib" / "wireshark" / "plugins"


def install(target_dir: Path | None = None) -> Path:
    """Copy the dissector into ``target_dir`` (default: the personal plugin folder); return its new path.

    Raises:
        UsageError: the folder cannot be created or written.
    """
    folder = Path(target_dir) if target_dir is not None else personal_plugin_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copyfile(dissector_source(), folder / DISSECTOR_NAME))
    except OSError as exc:
        raise UsageError(f"cannot install the dissector into {folder}: {exc}") from exc


def _run(args: argparse.Namespace) -> int:
    if args.action == "path":
        print(dissector_source())
        return 0
    dest = install(Path(args.dir) if args.dir else None)
    print(f"installed {dest}")
    print("restart Wireshark, or try it now: tshark -r CAPTURE.pcap -Y kms -V")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emu wireshark`` to the command line."""
    parser = subparsers.add_parser(
        "wireshark",
        help="install the KMS Lua dissector for Wireshark/tshark",
        description="Install (or print the path of) the Lua dissector that shows KMS fields "
        "(kms.cmid, kms.count, kms.epid, ...) inside DCE/RPC, decrypting v5/v6.",
    )
    parser.add_argument(
        "action",
        choices=("install", "path"),
        help="install: copy into the plugin folder; path: print the packaged file",
    )
    parser.add_argument("--dir", help="plugin folder to install into (default: ~/.local/lib/wireshark/plugins)")
    parser.set_defaults(func=_run)
