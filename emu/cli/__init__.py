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
from collections.abc import Callable, Sequence
from typing import NoReturn

from emu import __version__
from emu.clock import ScaledClock
from emu.errors import EmuError

__all__ = ["build_parser", "main", "positive_int", "positive_seconds", "show_help"]

#: Values of ``--log-level``.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: Command modules, in the order ``emu --help`` lists them.
COMMAND_MODULES = (
    "emu.cli.adba",
    "emu.cli.dc",
    "emu.cli.demo",
    "emu.cli.diagnose",
    "emu.cli.decode",
    "emu.cli.capture",
    "emu.cli.client",
    "emu.cli.conform",
    "emu.cli.dns",
    "emu.cli.explain",
    "emu.cli.host",
    "emu.cli.lab",
    "emu.cli.probe",
    "emu.cli.load",
    "emu.cli.replay",
    "emu.cli.watch",
    "emu.cli.wireshark",
    "emu.cli.actsvc",
    "emu.cli.vamt",
)


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def positive_seconds(text: str) -> float:
    """An argparse ``type`` for timeouts and ages: a duration above zero (``2``, ``2.5s``, ``90m``, ``1h``)."""
    from emu.durations import parse_duration

    try:
        value = parse_duration(text, "duration")
    except EmuError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("duration: ")) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return value


def clock_spec(text: str) -> ScaledClock:
    """An argparse ``type`` for ``--clock``: a shared scaled clock (``scale=3600[,origin=UNIX][,epoch=UNIX]``)."""
    from emu.clock import parse_clock_spec

    try:
        return parse_clock_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: Help text of every ``--clock`` flag (host, DNS server, directory, status).
CLOCK_HELP = (
    "run on a shared scaled clock, scale=N[,origin=UNIX][,epoch=UNIX] (N virtual seconds per real second; "
    "emu lab run passes the same clock to every process of a scenario; default: the real clock)"
)


def show_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A ``func`` for a command group run without its subcommand: print the group's help, exit 2."""

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return usage


def _command_named(argv: Sequence[str]) -> str | None:
    """The subcommand word of ``argv`` (the first token that is not an option or its value)."""
    tokens = iter(argv)
    for token in tokens:
        if token == "--log-level":
            next(tokens, None)
        elif not token.startswith("-"):
            return token
    return None


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``PROG: error: WHAT (see PROG --help)``, exit 2.

    Every subcommand's parser is of this class too (``add_subparsers`` makes parsers of its parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv`` naming one command, only that command's module is imported
    (each pulls in its own protocol stack: a host need not load Scapy or the DNS server)."""
    parser = _Parser(
        prog="emu",
        description="Packet-level emulator of Windows volume activation (KMS) and its DNS. A lab and testing tool.",
    )
    parser.add_argument("--version", action="version", version=f"emu {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        help="logging level (DEBUG, INFO, WARNING, ...; default WARNING, INFO for 'host serve')",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _command_named(argv) if argv is not None else None
    modules: tuple[str, ...] = COMMAND_MODULES
    if wanted is not None and f"emu.cli.{wanted}" in COMMAND_MODULES:
        modules = (f"emu.cli.{wanted}",)
    for name in modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level_name = str(args.log_level or "WARNING").upper()
    if level_name not in LOG_LEVELS:
        print(f"emu: error: --log-level {args.log_level!r}: use one of {', '.join(LOG_LEVELS)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, level_name),
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
