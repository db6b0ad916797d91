"""Every command and subcommand: a bad argument or file is one line naming what and why, exit status 2,
never a traceback. New commands add their rows to BAD_INPUTS."""

from __future__ import annotations

import pytest

from emu.cli import COMMAND_MODULES, main

#: (argv, a words the one line must contain)
BAD_INPUTS: list[tuple[list[str], str]] = [
    (["no-such-command"], "invalid choice"),
    (["demo", "--clients", "0"], "--clients"),
    (["diagnose", "127.0.0.1", "--product", "no such product"], "no such product"),
    (["diagnose", "127.0.0.1", "--timeout", "soon"], "--timeout"),
    (["decode", "/nonexistent/capture.pcap"], "/nonexistent/capture.pcap"),
    (["capture", "-i", "lo", "-w", "/tmp/x.pcap", "--count", "0"], "--count"),
    (["client", "activate", "127.0.0.1:99999"], "99999"),
    (["client", "activate", "127.0.0.1", "--product", "no such product"], "no such product"),
    (["client", "grab", "127.0.0.1", "--format", "xml"], "xml"),
    (["client", "products", "--json", "--no-such-flag"], "--no-such-flag"),
    (["dns", "serve"], "--zone"),
    (["dns", "serve", "--zone", "kms.test=/nonexistent.zone"], "/nonexistent.zone"),
    (["dns", "dump", "--zone", "nonsense"], "nonsense"),
    (["host", "serve", "--listen", "not an address"], "not an address"),
    (["host", "serve", "--config", "/nonexistent.toml"], "/nonexistent.toml"),
    (["host", "serve", "--fault", "explode"], "explode"),
    (["host", "status", "--state", "/nonexistent.sqlite"], "/nonexistent.sqlite"),
    (["host", "status", "--state", "x", "--format", "xml"], "xml"),
    (["lab", "run", "--clients", "0"], "--clients"),
    (["lab", "clean", "--no-such-flag"], "--no-such-flag"),
    (["probe"], "HOST"),
    (["probe", "--pcap", "/nonexistent.pcap"], "/nonexistent.pcap"),
    (["load"], "KMS host"),
    (["load", "127.0.0.1", "--users", "0"], "--users"),
    (["replay", "/nonexistent.pcap", "--target", "127.0.0.1:1688"], "/nonexistent.pcap"),
    (["watch"], "--pcap"),
    (["watch", "-i", "lo"], "--duration"),
    (["wireshark", "no-such-action"], "no-such-action"),
    (["explain", "no such thing at all"], "no such thing at all"),
    (["conform", "kms-host"], "KMS host"),
    (["--log-level", "LOUD", "host", "status", "--state", "x"], "LOUD"),
    (["dc", "serve", "--listen", "127.0.0.1:99999"], "99999"),
    (["dc", "import", "/nonexistent.ldif"], "--state"),
    (["adba", "list"], "--server"),
    (["actsvc", "serve"], "--state"),
    (["actsvc", "phone"], "--state"),
    (["vamt", "discover"], "--clients"),
    (["vamt", "import", "--cil", "/nonexistent.xml", "/nonexistent.json"], "/nonexistent.xml"),
]


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors exit through SystemExit
        return int(exc.code or 0)


@pytest.mark.parametrize("argv,words", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_a_bad_argument_is_one_line_and_exit_2(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert words in lines[0] and "Traceback" not in captured.err + captured.out


def test_every_command_has_a_bad_input_row() -> None:
    commands = {m.rsplit(".", 1)[1] for m in COMMAND_MODULES}
    covered = {argv[0] for argv, _ in BAD_INPUTS}
    assert commands - covered == set()
