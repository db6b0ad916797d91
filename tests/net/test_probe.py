"""``emu probe``: the traits of known implementations tell emu's host from its vlmcsd and py-kms profiles,
live over loopback and from the reference captures between the independent implementations."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from emu_testing import requires_vectors, vector_files

from emu.kms.host import HostConfig, KmsHost
from emu.kms.profiles import Observations, classify, emu_assoc_group, is_emu_assoc_group
from emu.net.kms_server import KmsServer, ServerConfig
from emu.net.probe import ProbeReport, probe_host
from emu.pcap.probe_pcap import probe_capture
from emu.rng import seeded


def _probe(profile: str) -> ProbeReport:
    async def go() -> ProbeReport:
        host = KmsHost(HostConfig(profile=profile), seeded(1), 1_750_000_000.0)
        async with KmsServer(host, ServerConfig(listen=(("127.0.0.1", 0),)), rng=seeded(2)) as server:
            return await probe_host(server.addresses[0], timeout=3.0, rng=seeded(3))

    return asyncio.run(go())


@pytest.mark.parametrize("profile", ["emu", "vlmcsd", "py-kms"])
def test_a_live_probe_names_the_profile_the_host_shows(profile: str) -> None:
    report = _probe(profile)
    assert report.verdict.behaves_like == profile, report.as_dict()
    assert report.verdict.confidence >= 0.5


def test_the_live_probe_records_the_evidence_of_each_trait() -> None:
    obs = _probe("py-kms").observations
    assert obs.counting == "fixed" and obs.epid_per_request is True and obs.keeps_connection is False
    assert obs.ndr32_with_ndr64 is True and obs.bad_version == "close" and obs.unknown_opnum == "answer"
    assert obs.refuses_large_n is False and obs.v4_delay is not None and obs.v4_delay >= 0.9
    emu = _probe("emu").observations
    assert emu.counting == "distinct-cmids" and emu.unknown_opnum == "fault" and emu.fault_call_id == "request"
    assert emu.assoc_groups and all(is_emu_assoc_group(g) for g in emu.assoc_groups)


def test_emu_marks_its_association_groups() -> None:
    assert emu_assoc_group(7) == 0x454D0007 and is_emu_assoc_group(0x454DFFFF) and not is_emu_assoc_group(0x1063BF3F)


def test_too_little_evidence_or_a_tie_is_unknown_not_a_guess() -> None:
    assert classify(Observations(btfn=True)).behaves_like == "unknown"
    tie = classify(Observations(btfn=True, keeps_connection=True, bad_version="hresult", assoc_groups=[0x12345678]))
    assert tie.behaves_like == "unknown" and "vlmcsd" in tie.candidates and "Windows" in tie.candidates


def _server_of(capture: Path) -> str:
    parts = capture.name.split("-")
    server = parts[2] if parts[0] == "edge" else parts[1]
    return {"pykms": "py-kms", "vlmcsd": "vlmcsd"}[server]


@requires_vectors
@pytest.mark.parametrize("capture", vector_files(), ids=lambda p: p.name)
def test_reference_captures_are_classified_as_their_server(capture: Path) -> None:
    verdict = probe_capture(capture).verdict
    server = _server_of(capture)
    if verdict.behaves_like == "unknown":
        # A capture of refusals only shows nothing that tells vlmcsd from Windows: a tie, never a wrong name.
        assert verdict.candidates and server in verdict.candidates.split(" or "), verdict
        assert capture.name.startswith("edge-vlmcs-vlmcsd-") and (
            "badversion" in capture.name or "k3-unknown" in capture.name
        )
    else:
        assert verdict.behaves_like == server, verdict


@requires_vectors
def test_the_command_judges_a_capture_and_prints_json() -> None:
    capture = next(p for p in vector_files() if p.name == "vlmcs-pykms-v6-ndr32-win10ent.pcap")
    run = subprocess.run(
        [sys.executable, "-m", "emu", "probe", "--pcap", str(capture), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["behaves_like"] == "py-kms"


def test_an_unreachable_host_is_exit_3_and_a_missing_file_exit_2(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "emu", "probe", "127.0.0.1:9", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 3 and "cannot reach" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "emu", "probe", "--pcap", str(tmp_path / "none.pcap")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "no such file" in run.stderr
