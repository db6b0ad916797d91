"""Wireshark: tshark dissects emu's pcaps cleanly, and the shipped Lua dissector names KMS fields right."""

from __future__ import annotations

import functools
import operator
import subprocess
from pathlib import Path

import pytest
from emu_testing import ROOT, TSHARK_ENV, require_tool, requires_vectors, vector_files

from emu.cli import main
from emu.cli.wireshark import dissector_source, install
from emu.pcap.kms_decode import decode_capture

PCAPS = sorted((ROOT / "pcaps").glob("*.pcap"))
LUA = dissector_source()
FIELDS = ("kms.direction", "kms.cmid", "kms.count", "kms.required_count", "kms.epid", "kms.hresult", "kms.workstation")


def _tshark_kms(tshark: str, path: Path) -> list[dict[str, str]]:
    out = subprocess.run(
        [
            tshark,
            "-n",
            "-X",
            f"lua_script:{LUA}",
            "-r",
            str(path),
            "-Y",
            "kms",
            "-T",
            "fields",
            "-E",
            "separator=\t",
            "-E",
            "occurrence=f",
            *functools.reduce(operator.iadd, (["-e", f] for f in FIELDS), []),
        ],
        capture_output=True,
        env=TSHARK_ENV,
        text=True,
        timeout=120,
        check=True,
    )
    assert "Lua: Error" not in out.stderr, out.stderr
    rows = [dict(zip(FIELDS, line.split("\t"))) for line in out.stdout.splitlines() if line.strip()]
    return rows


def _emu_kms(path: Path) -> list[dict[str, str]]:
    """What the dissector should show, from emu's own decoder, in the same order and format."""
    rows = []
    for pdu in decode_capture(path).pdus:
        if pdu.request is not None:
            row = {"kms.direction": "request"}
            if pdu.request.cmid is not None:
                row.update({"kms.cmid": pdu.request.cmid, "kms.required_count": str(pdu.request.required_client_count)})
            rows.append(row)
        elif pdu.response is not None:
            row = {"kms.direction": "response", "kms.hresult": f"0x{pdu.response.hresult:08x}"}
            if pdu.response.count is not None:
                row.update(
                    {"kms.cmid": pdu.response.cmid, "kms.count": str(pdu.response.count), "kms.epid": pdu.response.epid}
                )
            rows.append(row)
    return rows


def _compare(tshark: str, path: Path) -> int:
    got = _tshark_kms(tshark, path)
    want = _emu_kms(path)
    assert len(got) == len(want), f"{path.name}: tshark shows {len(got)} KMS stubs, emu decodes {len(want)}"
    for g, w in zip(got, want):
        for key, value in w.items():
            assert g[key] == value, f"{path.name}: {key} is {g[key]!r} in tshark, {value!r} in emu"
    return len(got)


@pytest.mark.interop
@pytest.mark.slow
@requires_vectors
def test_lua_dissector_matches_emu_decode_on_reference_captures():
    tshark = require_tool("tshark")
    shown = sum(_compare(tshark, path) for path in vector_files())
    assert shown >= 150


@pytest.mark.interop
@pytest.mark.skipif(not PCAPS, reason="pcaps/ not generated (scripts/make-pcaps)")
def test_lua_dissector_matches_emu_decode_on_sample_pcaps():
    tshark = require_tool("tshark")
    assert sum(_compare(tshark, path) for path in PCAPS) > 0


@pytest.mark.interop
@pytest.mark.skipif(not PCAPS, reason="pcaps/ not generated (scripts/make-pcaps)")
@pytest.mark.parametrize("path", PCAPS, ids=lambda p: p.name)
def test_tshark_dissects_sample_pcap_as_dcerpc_without_expert_errors(path):
    tshark = require_tool("tshark")
    out = subprocess.run(
        [
            tshark,
            "-n",
            "-r",
            str(path),
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-z",
            "expert,warn",
            "-q",
        ],
        capture_output=True,
        env=TSHARK_ENV,
        text=True,
        timeout=60,
        check=True,
    )
    report = out.stdout
    assert "Malformed" not in report and "Bad checksum" not in report and "Errors (" not in report, report
    protocols = subprocess.run(
        [tshark, "-n", "-r", str(path), "-T", "fields", "-e", "frame.protocols", "-Y", "tcp.len > 0 or udp"],
        capture_output=True,
        env=TSHARK_ENV,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert protocols and all("dcerpc" in p or "dns" in p for p in protocols), protocols


def test_wireshark_install_copies_the_dissector(tmp_path, capsys):
    assert main(["wireshark", "install", "--dir", str(tmp_path / "plugins")]) == 0
    installed = tmp_path / "plugins" / "kms.lua"
    assert installed.read_bytes() == LUA.read_bytes()
    assert "installed" in capsys.readouterr().out


def test_wireshark_install_into_unwritable_place_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    from emu.errors import UsageError

    with pytest.raises(UsageError, match="cannot install"):
        install(blocker / "plugins")


def test_a_second_copy_of_the_dissector_steps_aside_with_one_warning(tmp_path: Path) -> None:
    """After `emu wireshark install`, running tshark with -X lua_script: loads the dissector twice."""
    tshark = require_tool("tshark")
    plugins = tmp_path / ".local" / "lib" / "wireshark" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "kms.lua").write_bytes(LUA.read_bytes())
    env = {**TSHARK_ENV, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config")}
    sample = ROOT / "pcaps" / "emu-v6-ndr64-windows10.pcap"
    done = subprocess.run(
        [
            tshark,
            "-n",
            "-X",
            f"lua_script:{LUA}",
            "-r",
            str(sample),
            "-Y",
            "kms.count",
            "-T",
            "fields",
            "-e",
            "kms.count",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.strip() and "kms.lua" not in line] == ["26", "27"]
    said = done.stdout + done.stderr
    assert said.count("already loaded") == 1 and "Lua: Error" not in said and "two protocols" not in said
