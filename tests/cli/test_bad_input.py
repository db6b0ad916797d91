"""Every subcommand: a bad argument or file is one line on stderr naming what and why, exit 2, no traceback.

BAD_INPUT has one row per subcommand (the leaves of ``emu --help``). A new subcommand gets a row here:
``test_every_subcommand_has_a_bad_input_row`` fails until it does.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from emu.cli import build_parser, main

MISSING = "/nonexistent/emu-missing"

#: subcommand -> arguments that are wrong (a missing or malformed file, an impossible value).
BAD_INPUT: dict[str, list[str]] = {
    "adba activate-online": ["adba", "activate-online", "KEY", "--timeout", "soon"],
    "adba get-iid": ["adba", "get-iid"],
    "adba apply-cid": ["adba", "apply-cid", "KEY", "1", "--timeout", "soon"],
    "adba list": ["adba", "list", "--server", "127.0.0.1:notaport"],
    "adba delete": ["adba", "delete", "CN=x", "--server", "127.0.0.1:notaport"],
    "adba lab-key": ["adba", "lab-key", "No Such Group"],
    "adba cid": ["adba", "cid"],
    "dc serve": ["dc", "serve", "--listen", "nope:notaport"],
    "dc export": ["dc", "export", "--state", f"{MISSING}/dc.sqlite"],
    "dc import": ["dc", "import", f"{MISSING}.ldif"],
    "demo": ["demo", "--product", "No Such Product"],
    "diagnose": ["diagnose", "--time-offset", "soon"],
    "decode": ["decode", f"{MISSING}.pcap"],
    "capture": ["capture", "-i", "lo", "-w", f"{MISSING}/out.pcap", "--port", "70000"],
    "client mak install": ["client", "mak", "install", "--state", "{garbage}", "KEY"],
    "client mak activate": ["client", "mak", "activate", "--state", "{garbage}", "--actsvc", "nope"],
    "client mak iid": ["client", "mak", "iid", "--state", "{garbage}"],
    "client mak apply-cid": ["client", "mak", "apply-cid", "--state", "{garbage}", "1"],
    "client mak rearm": ["client", "mak", "rearm", "--state", f"{MISSING}/client.json"],
    "client mak status": ["client", "mak", "status", "--state", "{garbage}"],
    "client activate": ["client", "activate", "127.0.0.1:9", "--product", "No Such Product"],
    "client grab": ["client", "grab", "127.0.0.1:notaport"],
    "client products": ["client", "products", "--no-such-option"],
    "conform kms-host": ["conform", "kms-host", "--only", "no.such.rule", "127.0.0.1:9"],
    "conform kms-client": ["conform", "kms-client", "--only", "no.such.rule", "--run", "true"],
    "conform dns": ["conform", "dns", "--tsig-key", f"{MISSING}.key", "127.0.0.1:9"],
    "dns serve": ["dns", "serve", "--zone", f"kms.test={MISSING}.zone"],
    "dns dump": ["dns", "dump", "--zone", f"kms.test={MISSING}.zone"],
    "explain": ["explain", "0xZZZZ"],
    "host serve": ["host", "serve", "--config", f"{MISSING}.toml"],
    "host status": ["host", "status", "--state", f"{MISSING}.sqlite"],
    "lab run": ["lab", "run", "--hosts", "0"],
    "lab clean": ["lab", "clean", "--no-such-option"],
    "lab list": ["lab", "list", "--no-such-option"],
    "lab show": ["lab", "show", "no-such-scenario"],
    "lab report": ["lab", "report", "{garbage}"],
    "probe": ["probe", "--pcap", f"{MISSING}.pcap"],
    "load": ["load", "127.0.0.1:9", "--users", "0"],
    "replay": ["replay", f"{MISSING}.pcap", "--target", "127.0.0.1:9"],
    "watch": ["watch", "--pcap", f"{MISSING}.pcap"],
    "wireshark": ["wireshark", "uninstall"],
    "actsvc serve": ["actsvc", "serve", "--state", f"{MISSING}/a.sqlite", "--listen", "nope:notaport"],
    "actsvc phone": ["actsvc", "phone", "--state", f"{MISSING}/a.sqlite", "1"],
    "actsvc keys add": ["actsvc", "keys", "add", "--state", f"{MISSING}/a.sqlite"],
    "actsvc keys list": ["actsvc", "keys", "list", "--state", f"{MISSING}/a.sqlite"],
    "actsvc keys block": ["actsvc", "keys", "block", "--state", f"{MISSING}/a.sqlite", "KEY"],
    "vamt discover": ["vamt", "discover", "--clients", MISSING],
    "vamt install-mak": ["vamt", "install-mak", "--clients", MISSING, "KEY"],
    "vamt collect": ["vamt", "collect", "--clients", MISSING, "--cil", f"{MISSING}.cil"],
    "vamt remaining": ["vamt", "remaining", "--cil", f"{MISSING}.cil", "--actsvc", "nope"],
    "vamt acquire": ["vamt", "acquire", "--cil", f"{MISSING}.cil", "--actsvc", "nope"],
    "vamt apply": ["vamt", "apply", "--cil", f"{MISSING}.cil", "--clients", MISSING],
    "vamt export": ["vamt", "export", "--cil", f"{MISSING}.cil", "--out", f"{MISSING}/x.cil"],
    "vamt import": ["vamt", "import", "--cil", f"{MISSING}.cil", f"{MISSING}.cil"],
}
#: Commands whose module changes the interpreter (Locust patches the standard library): run in a child.
IN_A_CHILD = {"load"}


def _leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield " ".join(prefix)
    for group in groups:
        for name, sub in group.choices.items():
            yield from _leaves(sub, (*prefix, name))


def test_every_subcommand_has_a_bad_input_row():
    assert sorted(_leaves(build_parser())) == sorted(BAD_INPUT)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    if argv[0] in IN_A_CHILD:
        proc = subprocess.run([sys.executable, "-m", "emu", *argv], capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stderr
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(command, tmp_path, capsys):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("garbage{")
    argv = [arg.replace("{garbage}", str(garbage)) for arg in BAD_INPUT[command]]
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0]


#: Flags of an existing subcommand whose bad values need their own case (the row above covers one per leaf).
BAD_FLAGS = {
    "client activate --act-type": ["client", "activate", "--domain-member", "--forest", "kms.test", "--act-type", "9"],
    "client activate --act-type alone": ["client", "activate", "--act-type", "ad"],
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag_values_are_one_line_and_exit_2(case, capsys):
    code, err = _run(BAD_FLAGS[case], capsys)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], err
