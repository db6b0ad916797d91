"""The ``emu`` entry point: command registry, lazy imports, log level, errors as one line."""

from __future__ import annotations

import subprocess
import sys

from emu.cli import COMMAND_MODULES, build_parser, main


def _commands(parser):
    return set(parser._subparsers._group_actions[0].choices)  # argparse keeps them here


def test_every_command_module_registers_its_command():
    assert _commands(build_parser()) == {name.rsplit(".", 1)[1] for name in COMMAND_MODULES}


def test_naming_a_command_loads_only_its_module():
    assert _commands(build_parser(["decode", "x.pcap"])) == {"decode"}
    assert _commands(build_parser(["--log-level", "INFO", "host", "status"])) == {"host"}


def test_log_level_before_the_command_reaches_host_serve():
    args = build_parser(["--log-level", "DEBUG", "host", "serve"]).parse_args(["--log-level", "DEBUG", "host", "serve"])
    assert args.log_level == "DEBUG"


def test_a_host_process_does_not_import_scapy_or_the_dns_server():
    code = (
        "import sys; from emu.cli import build_parser; build_parser(['host', 'serve']);"
        "print(sorted(m for m in ('scapy', 'emu.net.dns_server', 'emu.pcap.kms_decode') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_user_errors_are_one_line_and_exit_2(capsys):
    assert main(["decode", "/nonexistent/capture.pcap"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emu: error:") and err.count("\n") == 1
