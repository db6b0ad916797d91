"""emu lab: the rules a lab run is checked against, the command line's refusals, and (as root) whole
activation networks in network namespaces: failover, counts per host, the capture, and teardown
that leaves nothing behind, also when the run fails or is interrupted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from emu.cli import main
from emu.errors import UsageError
from emu.lab.network import ClientOutcome, HostTable, Lab, LabRules, client_cmid

EMU = [sys.executable, "-m", "emu"]
HAVE_NETNS = os.geteuid() == 0 and shutil.which("ip") is not None
SERVER_2019 = "Windows Server 2019 Standard"  # threshold 5, table 10
APP_WINDOWS = uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f")


def _outcome(
    index: int, host: str | None, count: int | None, status: str, failed: tuple[str, ...] = ()
) -> ClientOutcome:
    return ClientOutcome(index, client_cmid(1, index), host, count, 5, status, failed)


# --- the rules (no root needed) -------------------------------------------------------------------


def test_rules_accept_counts_rising_on_the_lowest_priority_host_and_activation_at_the_threshold():
    rules = LabRules([("kms1", 0), ("kms2", 10)], threshold=5)
    for i in range(1, 5):
        assert rules.check(_outcome(i, "kms1", i, "waiting")) == []
    assert rules.check(_outcome(5, "kms1", 5, "activated")) == []
    assert rules.check(_outcome(6, "kms1", 6, "activated")) == []


def test_rules_refuse_a_higher_priority_host_while_the_lower_one_runs():
    rules = LabRules([("kms1", 0), ("kms2", 10)], threshold=5)
    problems = rules.check(_outcome(1, "kms2", 1, "waiting"))
    assert any("the rules choose among kms1" in p for p in problems)


def test_rules_refuse_a_wrong_count_and_an_activation_below_the_threshold():
    rules = LabRules([("kms1", 0)], threshold=5)
    assert any("rules give 1" in p for p in rules.check(_outcome(1, "kms1", 2, "waiting")))
    assert any("expected waiting" in p for p in rules.check(_outcome(2, "kms1", 2, "activated")))


def test_rules_require_failover_from_a_stopped_lower_priority_host():
    rules = LabRules([("kms1", 0), ("kms2", 10)], threshold=5)
    rules.stop("kms1")
    assert any("no failover seen" in p for p in rules.check(_outcome(1, "kms2", 1, "waiting")))
    assert rules.check(_outcome(2, "kms2", 2, "waiting", failed=("kms1",))) == []
    assert any(
        "running but did not answer" in p for p in rules.check(_outcome(3, "kms2", 3, "waiting", failed=("kms2",)))
    )


def test_rules_cap_the_count_at_twice_the_threshold():
    rules = LabRules([("kms1", 0)], threshold=5)
    for i in range(1, 13):
        want = min(i, 10)
        assert rules.check(_outcome(i, "kms1", want, "waiting" if want < 5 else "activated")) == [], i


def test_rules_expect_no_answer_once_every_host_is_stopped():
    rules = LabRules([("kms1", 0)], threshold=5)
    rules.stop("kms1")
    assert rules.check(_outcome(1, None, None, "unreachable", ("kms1",))) == []
    assert rules.check(_outcome(2, "kms1", 1, "waiting")) != []


def test_rules_compare_a_host_table_with_the_clients_that_reached_it():
    rules = LabRules([("kms1", 0), ("kms2", 10)], threshold=5)
    rules.check(_outcome(1, "kms1", 1, "waiting"))
    row = {"app_id": str(APP_WINDOWS), "count": 1, "capacity": 10, "application": "Windows"}
    assert rules.check_table(HostTable("kms1", (row,)), APP_WINDOWS) == []
    assert rules.check_table(HostTable("kms2", (row,)), APP_WINDOWS) == ["kms2 table holds 1 clients; the rules give 0"]


def test_each_client_is_one_machine_with_a_fixed_cmid_per_seed():
    assert client_cmid(7, 1) == client_cmid(7, 1)
    assert len({client_cmid(7, i) for i in range(1, 101)}) == 100
    assert client_cmid(7, 1) != client_cmid(8, 1)


# --- the command line's refusals (before anything is built) -------------------------------------


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--stop-host", "1"], "go together"),
        (["--stop-host", "3", "--at-client", "1"], "hosts 1..2"),
        (["--clients", "3", "--stop-host", "1", "--at-client", "4"], "clients 1..3"),
        (["--priorities", "0,10,20"], "one number per host"),
        (["--weights", "1,x"], "comma-separated numbers"),
        (["--product", "no such product at all"], ""),
    ],
)
def test_lab_run_refuses_bad_options_with_one_line_and_status_2(argv, message):
    done = subprocess.run([*EMU, "lab", "run", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("emu: error:") and message in done.stderr and "Traceback" not in done.stderr


def test_lab_run_without_ip_says_to_install_iproute2():
    if os.geteuid() != 0:
        pytest.skip("as a user the root check comes first")
    done = subprocess.run(
        [*EMU, "lab", "run"], capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": "/nonexistent"}
    )
    assert done.returncode == 2 and "iproute2" in done.stderr, done.stderr


def test_lab_run_as_a_user_says_it_needs_root(monkeypatch, capsys):
    # In-process, as a user id other than 0: no need for a second account that can read the checkout
    # (a clone in a mode-700 folder under /root is not readable by nobody).
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["lab", "run"]) == 2
    assert "need root" in capsys.readouterr().err


def test_lab_api_refuses_misuse_before_and_after_start():
    lab = Lab(SERVER_2019)
    with pytest.raises(UsageError, match="inside `with Lab"):
        lab.add_host()
    with pytest.raises(UsageError, match="started lab"):
        lab.activate(1)


# --- whole labs in namespaces (root) --------------------------------------------------------------


def _left_over(lab_id: str) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    return [n for n in names if n.startswith("emu-lab-") and n.startswith(lab_id)]


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_NETNS, reason="needs root and iproute2's ip")
def test_two_hosts_eight_clients_fail_over_to_priority_10_when_priority_0_is_killed(tmp_path: Path):
    pcap = tmp_path / "lab.pcap"
    started = time.monotonic()
    outcomes: list[ClientOutcome] = []
    with Lab(SERVER_2019, seed=11, capture=pcap) as lab:
        kms1 = lab.add_host(priority=0, weight=100)
        kms2 = lab.add_host(priority=10, weight=50)
        lab.start()
        rules = LabRules([(h.name, h.priority) for h in lab.hosts], lab.threshold)
        problems: list[str] = []
        for index in range(1, 9):
            if index == 4:
                lab.stop_host(1)
                rules.stop(kms1.name)
            outcomes.append(lab.activate(index))
            problems += rules.check(outcomes[-1])
        tables = [lab.host_table(h.index) for h in lab.hosts]
        problems += [p for t in tables for p in rules.check_table(t, lab.sku.app_id)]
        lab.finish_capture()
        namespaces, workdir, procs = lab.namespaces, lab.workdir, lab.processes
    assert problems == []
    assert [o.host for o in outcomes] == [kms1.name] * 3 + [kms2.name] * 5
    assert [o.failover for o in outcomes] == [False] * 3 + [True] * 5
    assert all(o.failed_over_from == (kms1.name,) for o in outcomes[3:])
    assert [o.count for o in outcomes] == [1, 2, 3, 1, 2, 3, 4, 5]
    assert [o.status for o in outcomes] == ["waiting"] * 7 + ["activated"]
    assert [o.exit_code for o in outcomes] == [3] * 7 + [0]
    assert len({o.cmid for o in outcomes}) == 8
    assert [t.count(APP_WINDOWS) for t in tables] == [3, 5]

    # teardown: nothing of the lab is left
    assert len(namespaces) == 5 and _left_over(lab.id) == []
    assert workdir is not None and not workdir.exists()
    assert all(p.poll() is not None for p in procs)

    # the capture on the bridge: every KMS response decodes and verifies ...
    decoded = subprocess.run([*EMU, "decode", "--json", str(pcap)], capture_output=True, text=True, timeout=60)
    records = [json.loads(line) for line in decoded.stdout.splitlines()]
    responses = [r for r in records if r.get("ptype") == "response"]
    assert decoded.returncode == 0, decoded.stdout[-2000:]
    assert [r["response"]["count"] for r in responses] == [1, 2, 3, 1, 2, 3, 4, 5]
    assert all(r["response"]["verified"] for r in responses)
    # ... and the DNS side is there too: both hosts' signed UPDATEs and the clients' SRV queries
    from emu.pcap.dns_decode import dns_records

    dns = dns_records(pcap)
    updates = [r for r in dns if r["kind"] == "update"]
    assert {u["updates"][0].split()[-1] for u in updates} >= {"kms1.kms.test.", "kms2.kms.test."}
    assert all(u["tsig"]["key"] == "kms-lab-key." for u in updates)
    assert all(r["rcode"] == "NOERROR" for r in dns if r["kind"] == "update-response")
    srv_answers = [
        r
        for r in dns
        if r["kind"] == "response"
        and r["question"] == ["_vlmcs._tcp.kms.test. SRV"]
        and r["src"].startswith("10.213.0.2:")
    ]
    assert len(srv_answers) >= 8 and all(len(r["answers"]) == 2 for r in srv_answers[-8:])
    assert time.monotonic() - started < 20


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_NETNS, reason="needs root and iproute2's ip")
def test_a_failing_body_still_removes_every_namespace_process_and_file():
    with pytest.raises(RuntimeError, match="injected"), Lab(SERVER_2019, ipv6=False) as lab:
        lab.add_host()
        lab.start()
        assert lab.activate(1).status == "waiting"
        namespaces, workdir, procs = lab.namespaces, lab.workdir, lab.processes
        assert all(_left_over(lab.id).count(ns) == 1 for ns in namespaces)
        raise RuntimeError("injected failure")
    assert _left_over(lab.id) == []
    assert workdir is not None and not workdir.exists()
    assert procs and all(p.poll() is not None for p in procs)


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_NETNS, reason="needs root and iproute2's ip")
def test_a_failure_while_building_removes_what_was_built_so_far():
    lab = Lab(SERVER_2019)
    with pytest.raises(UsageError, match="priority and weight"), lab:
        lab.add_host(priority=0)
        lab.add_host(priority=70000)
    assert lab.namespaces and _left_over(lab.id) == []


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_NETNS, reason="needs root and iproute2's ip")
def test_emu_lab_run_prints_the_timeline_and_exits_0_when_the_run_matches_the_rules():
    done = subprocess.run(
        [
            *EMU,
            "lab",
            "run",
            "--product",
            SERVER_2019,
            "--clients",
            "6",
            "--stop-host",
            "1",
            "--at-client",
            "3",
            "--no-ipv6",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    lab_id = lines[0].split()[2].rstrip(":")
    clients = [line.split() for line in lines if line.startswith("client ")]
    assert [(c[4], c[6], c[7]) for c in clients] == [
        ("kms1", "1/5", "waiting"),
        ("kms1", "2/5", "waiting"),
        ("kms2", "1/5", "waiting"),
        ("kms2", "2/5", "waiting"),
        ("kms2", "3/5", "waiting"),
        ("kms2", "4/5", "waiting"),
    ]
    assert [("failover" in " ".join(c)) for c in clients] == [False, False, True, True, True, True]
    assert any(line.startswith("---- kms1 killed") for line in lines)
    assert any("kms1   (killed) Windows 2 client(s)" in line for line in lines)
    assert any("kms2   (running) Windows 4 client(s)" in line for line in lines)
    assert lines[-1] == "all 6 client(s) and 2 table(s) match the rules"
    assert _left_over(lab_id) == []


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_NETNS, reason="needs root and iproute2's ip")
def test_emu_lab_run_stopped_by_sigterm_tears_everything_down_and_exits_130():
    proc = subprocess.Popen(
        [*EMU, "lab", "run", "--clients", "200", "--no-ipv6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(60, proc.kill)  # the reads below block; this bounds them
    watchdog.start()
    try:
        first = proc.stdout.readline()  # printed before the namespaces of the hosts are made
        lab_id = first.split()[2].rstrip(":")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until clients run: the lab is fully up
            line = proc.stdout.readline()
            if line.startswith("client ") or not line:
                break
        assert _left_over(lab_id), "the lab should be up"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out[-500:] + err[-500:]
    assert "interrupted" in out
    assert _left_over(lab_id) == []


@pytest.mark.netns
def test_lab_clean_deletes_leftover_lab_namespaces_and_nothing_else():
    from emu.net import netns

    if not HAVE_NETNS:
        pytest.skip("needs root and iproute2's ip")
    netns.require_netns_support()  # root with ip: any failure here is a real one
    leftover = "emu-lab-" + netns.random_name("x")[-6:] + "-cl"
    other = netns.random_name("t")
    netns.create(leftover)
    netns.create(other)
    try:
        assert main(["lab", "clean", "--dry-run"]) == 0 and netns.exists(leftover)
        assert main(["lab", "clean"]) == 0
        assert not netns.exists(leftover) and netns.exists(other)
    finally:
        for name in (leftover, other):
            if netns.exists(name):
                netns.delete(name)
