"""``emu conform kms-client``: emu plays the host for ``emu client activate`` (started per scenario
with --run); the suite passes on it, and clients that break a rule fail that rule's cases only."""

from __future__ import annotations

import shlex
import sys

from conform_testing import failed_ids, verdicts

from emu.cli import main
from emu.conform.kms_client import KMS_CLIENT, run_client_suite
from emu.conform.runner import Options
from emu.rng import seeded

CMID = "7d4ac1c2-5b7e-4cf0-9d54-0a3f8c2b1e11"
EMU_CLIENT = f"{shlex.quote(sys.executable)} -m emu client activate {{host}}:{{port}} --timeout 1 --connect-timeout 1"


def _run(command: str, *only: str):
    return run_client_suite(("127.0.0.1", 0), command, Options(only=only), seeded(4), 2.0)


def test_every_client_case_names_a_known_probe_and_judge():
    KMS_CLIENT.validate()


def test_emu_client_passes_every_case():
    results = _run(f"{EMU_CLIENT} -n 2 -c {CMID}")
    assert failed_ids(results) == set(), [(r.case.id, r.evidence) for r in results if r.verdict.value == "fail"]
    v = verdicts(results)
    assert v["request.v4_mac"] == "skip"  # Windows 10 speaks V6
    assert [k for k, x in v.items() if x != "pass"] == ["request.v4_mac"]


def test_client_sending_a_wrong_threshold_and_workstation_fails_those_cases():
    results = _run(f"{EMU_CLIENT} -c {CMID} -r 3 -w bad_name!", "request")
    assert failed_ids(results) == {"request.required", "request.workstation"}


def test_v4_client_mac_is_judged():
    results = _run(f"{EMU_CLIENT} -l win7ent -c {CMID}", "request")
    v = verdicts(results)
    assert v["request.v4_mac"] == "pass" and v["request.encryption"] == "skip"
    assert v["request.cmid_stable"] == "inconclusive"  # one request only


def test_client_that_always_claims_success_fails_every_refusal_reaction():
    results = _run("true", "react")
    react = {c.id for c in KMS_CLIENT.cases if c.group == "react"}
    assert failed_ids(results) == react - {"react.activated"}


def test_list_prints_every_client_case(capsys):
    assert main(["conform", "kms-client", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(c.id in out for c in KMS_CLIENT.cases)


def test_without_run_the_normal_scenario_judges_a_client_started_by_the_user():
    import socket
    import subprocess
    import threading
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def user_starts_client() -> None:
        time.sleep(0.5)
        argv = [sys.executable, "-m", "emu", "client", "activate", f"127.0.0.1:{port}", "-c", CMID, "--timeout", "1"]
        subprocess.run(argv, capture_output=True, timeout=30, check=False)

    thread = threading.Thread(target=user_starts_client)
    thread.start()
    try:
        results = run_client_suite(("127.0.0.1", port), None, Options(), seeded(4), 2.0)
    finally:
        thread.join(30)
    v = verdicts(results)
    assert v["request.required"] == v["request.encryption"] == "pass"
    assert {v[c.id] for c in KMS_CLIENT.cases if c.group == "react"} == {"skip"}
    assert failed_ids(results) == set()
