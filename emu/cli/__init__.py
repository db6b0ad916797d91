"""The ``emu`` command line: one subcommand per module of this package.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` as the default. Errors that are the user's to fix (:class:`UsageError`,
:class:`ScenarioError`, any :class:`EmuError`) print one line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from emu import __version__
from emu.errors import EmuError

__all__ = ["main", "build_parser"]

#: Command modules, in the order ``emu --help`` lists them.
COMMAND_MODULES = (
    "emu.cli.demo",
    "emu.cli.decode",
    "emu.cli.client",
    "emu.cli.dns",
    "emu.cli.host",
    "emu.cli.replay",
    "emu.cli.wireshark",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emu",
        description="Packet-level emulator of Windows volume activation (KMS) and its DNS. "
        "A lab and testing tool.",
    )
    parser.add_argument("--version", action="version", version=f"emu {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ...)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EmuError as exc:
        print(f"emu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
