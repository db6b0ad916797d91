"""Scenario runs in network namespaces (root): every party in its own namespace, one shared scaled clock,
events on the timeline, expectations judged, and nothing left behind, also after a failure or SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from emu.lab.scenario import load_scenario, parse_scenario
from emu.lab.scenario_run import ScenarioRun

EMU = [sys.executable, "-m", "emu"]
HAVE_NETNS = os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("iptables") is not None
needs_netns = pytest.mark.skipif(not HAVE_NETNS, reason="needs root, iproute2's ip and iptables")

#: Two hosts, five clients each in its own namespace, on two segments; kms1 killed on day 1, the branch cut
#: off for half a day, the clients' clocks skewed. 3 virtual days at one virtual day per real second.
TWO_SEGMENTS = """
name = "two-segments"
title = "test"
[clock]
scale = 86400
duration = "3d"
[[segment]]
name = "hq"
subnet = "10.213.31.0/24"
[[segment]]
name = "branch"
subnet = "10.213.32.0/24"
[[dns]]
name = "dns"
segment = "hq"
zone = "kms.test"
[[host]]
name = "kms1"
segment = "hq"
key_groups = ["Windows Server 2019"]
publish = [{ zone = "kms.test", priority = 0, weight = 100 }]
[[host]]
name = "kms2"
segment = "hq"
key_groups = ["Windows Server 2019"]
publish = [{ zone = "kms.test", priority = 10, weight = 100 }]
[[clients]]
name = "staff"
segment = "branch"
count = 5
product = "Windows Server 2019 Standard"
domain = "kms.test"
arrive_over = "1h"
retry_interval = "1h"
renewal_interval = "10h"
[[event]]
at = "1d"
do = "kill"
target = "kms1"
[[event]]
at = "1d12h"
do = "partition"
target = "branch"
[[event]]
at = "2d"
do = "heal"
target = "branch"
[[event]]
at = "2d1h"
do = "skew"
target = "staff"
offset = "-5h"
[[event]]
at = "2d2h"
do = "dns-down"
target = "dns"
[[event]]
at = "2d3h"
do = "dns-up"
target = "dns"
[[expect]]
kind = "never-below-threshold"
[[expect]]
kind = "activated-by"
at = "6h"
[[expect]]
kind = "failover-within"
host = "kms1"
[[expect]]
kind = "tables-match"
"""


def _lab_namespaces(lab_id: str) -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(lab_id)]


@needs_netns
def test_a_two_segment_scenario_runs_every_party_in_its_namespace_and_judges_the_run():
    lines: list[str] = []
    run = ScenarioRun(parse_scenario(TWO_SEGMENTS), on_line=lines.append).run()
    s = run.scenario
    assert s["namespaces"] == 1 + 1 + 3 + 5  # switch, router, dns + two hosts, five clients
    assert not _lab_namespaces(s["lab"]), "the run's namespaces were not removed"
    verdicts = {e["kind"]: e for e in run.expectations}
    assert all(e["passed"] for e in run.expectations), [e["message"] for e in run.expectations]
    exchanges = run.exchanges
    # every client is its own machine: five CMIDs, the answers came from the hq segment across the router
    assert len({r["cmid"] for r in exchanges}) == 5
    assert {r["host"] for r in exchanges if r["status"] == "activated"} <= {"kms1", "kms2"}
    # before the kill kms1 answers; after it the clients fail over to kms2 (the record says so)
    assert all(r["host"] == "kms1" for r in exchanges if r["at"] < 86400 and r["status"] != "unreachable")
    assert "reached another host" in verdicts["failover-within"]["message"]
    # the partition is on the timeline and nothing is answered while it lasts
    events = [(r["action"], r["target"]) for r in run.of_type("event")]
    assert events == [
        ("kill", "kms1"),
        ("partition", "branch"),
        ("heal", "branch"),
        ("skew", "staff"),
        ("dns-down", "dns"),
        ("dns-up", "dns"),
    ]
    assert "serving" in run.of_type("event")[-1]["detail"]
    cut = [r for r in exchanges if 1.5 * 86400 + 600 < r["at"] < 2 * 86400 - 600]
    assert all(r["status"] == "unreachable" for r in cut)
    # the tables were read on the shared clock at the end, and the DNS changes were watched
    assert {r["host"] for r in run.of_type("table")} == {"kms1", "kms2"}
    assert any("kms1.kms.test" in r["targets"] for r in run.of_type("dns"))
    assert any("---- kill kms1" in line for line in lines)


@needs_netns
def test_a_failing_expectation_exits_1_with_its_exchanges_in_the_junit_file(tmp_path):
    scenario = tmp_path / "tight.toml"
    text = TWO_SEGMENTS.split("[[event]]")[0].replace('duration = "3d"', 'duration = "12h"')
    scenario.write_text(text + '[[expect]]\nname = "impossible"\nkind = "activated-by"\nat = "1m"\n')
    junit, saved, plot = tmp_path / "j.xml", tmp_path / "run.json", tmp_path / "run.png"
    done = subprocess.run(
        [*EMU, "lab", "run", str(scenario), "--junit", str(junit), "--json", str(saved), "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  impossible" in done.stdout and "0/5 activated" in done.stdout
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "1"
    failure = suite.find("testcase[@name='impossible']/failure")
    assert failure is not None and "staff-00" in (failure.text or "")
    assert json.loads(saved.read_text())["format"] == "emu-lab-run/1"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run([*EMU, "lab", "report", str(saved)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "FAIL  impossible" in again.stdout


@needs_netns
def test_sigterm_mid_run_tears_everything_down_and_exits_130(tmp_path):
    scenario = tmp_path / "long.toml"
    scenario.write_text(TWO_SEGMENTS.replace("scale = 86400", "scale = 3600"))
    proc = subprocess.Popen(
        [*EMU, "lab", "run", str(scenario), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        lab_id = first.split()[2].rstrip(":")
        assert lab_id.startswith("emu-lab-")
        deadline = time.monotonic() + 30
        while len(_lab_namespaces(lab_id)) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    assert "removed" in out
    assert not _lab_namespaces(lab_id)


#: Bundled scenarios run fast enough for the suite at these scales (virtual seconds per real second); the
#: rest (failover: the two-segment test above kills a host too; lossy-branch: timeouts are real time; dns-down: a
#: restarted server takes half a real second to serve; year-500, host-outage: a minute or more) are run by hand
#: (docs/scenarios.md gives their times).
FAST_SCALES = {
    "counting": 86400,
    "adba": 86400,
    "order": 86400,
    "mak-runs-out": 86400,
    "seventh-host": 43200,
    "vamt-branch": 3600,
}


@needs_netns
@pytest.mark.parametrize("name", sorted(FAST_SCALES))
def test_bundled_scenario_holds_its_expectations(name, tmp_path):
    import dataclasses

    scenario = dataclasses.replace(load_scenario(name), scale=FAST_SCALES[name])
    capture = tmp_path / "captures" if name == "counting" else None
    run = ScenarioRun(scenario, capture=capture).run()
    failed = [f"{e['name']}: {e['message']}" for e in run.expectations if not e["passed"]]
    assert not failed
    assert not _lab_namespaces(run.scenario["lab"])
    if name == "order":  # each client's paths in the documented order: adba, a failed KMS lookup, then mak
        first = [r for r in run.records if r.get("client") == "members-001" and r["type"] in ("exchange", "lookup")]
        first.sort(key=lambda r: r["at"])
        assert [r.get("path", "lookup") for r in first][:4] == ["adba", "adba", "lookup", "mak"]
    if capture is not None:  # the segment's pcap holds exactly the exchanges the run recorded
        done = subprocess.run(
            [*EMU, "decode", "--json", str(capture / "lan.pcap")], capture_output=True, text=True, timeout=120
        )
        records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        summary = records[-1]
        # One emu capture process per segment records the bridge; a sniffer on a saturated 2-core machine may
        # still miss a little, never invent: at most 5 % fewer exchanges than the run made, none damaged.
        assert 0.95 * len(run.exchanges) <= summary["exchanges"] <= len(run.exchanges), summary
        assert summary["errors"] == 0


@needs_netns
def test_lab_clean_keeps_the_namespaces_of_a_run_that_is_still_alive(capsys):
    from emu.cli import main
    from emu.lab import owner
    from emu.net import netns

    lab_id = netns.random_name("lab")
    name = f"{lab_id}-x"
    netns.create(name)
    owner.claim(lab_id)  # this test process plays the running emu lab run
    try:
        assert main(["lab", "clean"]) == 0
        assert netns.exists(name) and f"keeping {name}" in capsys.readouterr().out
        owner.release(lab_id)
        assert main(["lab", "clean"]) == 0
        assert not netns.exists(name)
    finally:
        owner.release(lab_id)
        netns.delete(name)
