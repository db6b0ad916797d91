"""The README's main job: the demo's story holds (counts 1..24 wait, the 25th activates everyone)."""

from __future__ import annotations

import asyncio

import pytest

from emu.cli import main
from emu.errors import UsageError
from emu.sim.demo import DemoSettings, run_demo


def test_demo_thirty_clients_activate_once_the_25th_arrives():
    lines: list[str] = []
    report = asyncio.run(run_demo(DemoSettings(), out=lines.append))
    assert report.activated == report.clients == 30
    assert report.threshold == 25
    waiting = [text for _, _, text in report.timeline if "waiting" in text]
    assert [int(t.split()[1].split("/")[0]) for t in waiting] == list(range(1, 25))
    activated = [(at, name) for at, name, text in report.timeline if "ACTIVATED" in text]
    assert report.first_activation_by_threshold == 24 * 60.0  # the 25th client, one minute apart
    assert activated[0] == (24 * 60.0, "WS025.kms.test")
    # 30 first requests + one 2-hour retry for each of the 24 waiting clients.
    assert report.exchanges == 54
    assert report.host_count == 30
    assert report.srv_records_after_stop == 0  # the publisher withdrew its record
    assert any("the count reaches the threshold" in line for line in lines)


def test_demo_below_threshold_when_too_few_clients():
    report = asyncio.run(run_demo(DemoSettings(clients=3, hours=3), out=lambda line: None))
    assert report.activated == 0
    assert [int(t.split()[1].split("/")[0]) for _, _, t in report.timeline] == [1, 2, 3, 3, 3, 3]


def test_demo_cli_exit_code_says_whether_everyone_activated(capsys):
    assert main(["demo", "--clients", "5", "--product", "Windows Server 2019 Standard", "--hours", "3"]) == 0
    out = capsys.readouterr().out
    assert "5/5 clients activated" in out


def test_demo_rejects_nonsense_settings():
    with pytest.raises(UsageError):
        DemoSettings(clients=0)


def test_a_large_demo_serves_clients_due_within_the_window_together_and_keeps_the_counting_rules():
    settings = DemoSettings(clients=150, hours=6)
    assert settings.batch_window == 600.0  # ten arrival gaps of 60 s
    report = asyncio.run(run_demo(settings, out=lambda line: None))
    assert report.activated == 150 and report.host_count == 50  # capped at twice the threshold
    timeline = [(at, name, text) for at, name, text in report.timeline]
    first = {}
    for at, name, _ in timeline:
        first.setdefault(name, at)
    for name, at in first.items():
        arrival = (int(name[2:5]) - 1) * 60.0
        assert arrival <= at <= arrival + settings.batch_window, (name, at)
    counts = [int(text.split()[1].split("/")[0]) for _, _, text in timeline]
    assert all(c < 25 for c, (_, _, t) in zip(counts, timeline) if "waiting" in t)
    assert all(c >= 25 for c, (_, _, t) in zip(counts, timeline) if "ACTIVATED" in t)


def test_demo_window_zero_serves_each_client_exactly_at_its_deadline():
    report = asyncio.run(run_demo(DemoSettings(clients=120, hours=1, window=0.0), out=lambda line: None))
    firsts = {}
    for at, name, _ in report.timeline:
        firsts.setdefault(name, at)
    assert all(at == (int(name[2:5]) - 1) * 60.0 for name, at in firsts.items())
