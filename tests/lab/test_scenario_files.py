"""Scenario files: every mistake is one UsageError naming the file, table and key; the bundled ones load;
the expectations judge recorded runs correctly (no root needed here)."""

from __future__ import annotations

import json

import pytest

from emu.cli import main
from emu.clock import ScaledClock, parse_clock_spec
from emu.errors import UsageError
from emu.lab.bundled import bundled_names, bundled_text
from emu.lab.expect import evaluate
from emu.lab.report import summary_lines, write_junit, write_plot
from emu.lab.scenario import load_scenario, parse_scenario
from emu.lab.timeline import RunLog, load_run

MINIMAL = """
name = "mini"
[clock]
scale = 3600
duration = "2d"
[[dns]]
name = "dns"
zone = "kms.test"
[[host]]
name = "kms1"
publish = [{ zone = "kms.test", priority = 0, weight = 100 }]
[[clients]]
name = "office"
count = 3
domain = "kms.test"
"""


def test_a_minimal_scenario_gets_one_segment_and_the_documented_defaults():
    s = parse_scenario(MINIMAL)
    assert [seg.name for seg in s.segments] == ["lan"]
    assert s.hosts[0].dns == "dns" and s.hosts[0].publish[0].priority == 0
    assert s.groups[0].products[0][0].threshold == 25
    assert s.duration == 2 * 86400 and s.scale == 3600
    assert s.namespaces == 1 + 1 + 1 + 3  # switch, dns, host, three clients each in its own


@pytest.mark.parametrize(
    "change, words",
    [
        (("count = 3", "count = 0"), "count must be 1..2000"),
        (('domain = "kms.test"\n', 'domain = "other.test"\n'), "served by no [[dns]]"),
        (('duration = "2d"', 'duration = "soon"'), "duration"),
        (("scale = 3600", "scale = 0"), "scale must be"),
        (('name = "kms1"', 'name = "KMS 1"'), "a-z, 0-9"),
        (("priority = 0", "priority = 70000"), "0..65535"),
        (('zone = "kms.test"\n[[host]]', 'zone = "kms.test"\ncolour = "red"\n[[host]]'), "unknown key(s) colour"),
    ],
)
def test_every_mistake_names_the_table_and_key(change, words):
    old, new = change
    assert old in MINIMAL
    with pytest.raises(UsageError) as info:
        parse_scenario(MINIMAL.replace(old, new, 1), "mine.toml")
    assert words in str(info.value) and "mine.toml" in str(info.value)


def test_events_must_name_a_party_of_the_right_kind_and_fall_inside_the_run():
    def base_format(do: str, target: str) -> str:
        return MINIMAL + f'[[event]]\nat = "1d"\ndo = "{do}"\ntarget = "{target}"\n'

    with pytest.raises(UsageError, match="kill needs a host"):
        parse_scenario(base_format(do="kill", target="dns"))
    with pytest.raises(UsageError, match="do 'explode'"):
        parse_scenario(base_format(do="explode", target="kms1"))
    with pytest.raises(UsageError, match="loss needs percent"):
        parse_scenario(base_format(do="loss", target="office"))
    with pytest.raises(UsageError, match="after the end"):
        parse_scenario(base_format(do="kill", target="kms1").replace('at = "1d"', 'at = "3d"'))
    assert parse_scenario(base_format(do="kill", target="kms1")).events[0].at == 86400


def test_expectations_refuse_missing_and_unknown_keys():
    with pytest.raises(UsageError, match="activated-by needs at"):
        parse_scenario(MINIMAL + '[[expect]]\nkind = "activated-by"\n')
    with pytest.raises(UsageError, match="takes no colour"):
        parse_scenario(MINIMAL + '[[expect]]\nkind = "tables-match"\ncolour = 1\n')
    with pytest.raises(UsageError, match="kind 'vibes'"):
        parse_scenario(MINIMAL + '[[expect]]\nkind = "vibes"\n')


def test_too_many_namespaces_are_refused_with_the_way_out():
    with pytest.raises(UsageError, match="shared_namespace = true"):
        parse_scenario(MINIMAL.replace("count = 3", "count = 300"))
    assert parse_scenario(MINIMAL.replace("count = 3", "count = 300\nshared_namespace = true")).namespaces == 4


def test_every_bundled_scenario_loads_and_has_expectations():
    names = bundled_names()
    assert {"counting", "failover", "host-outage", "dns-down", "lossy-branch", "year-500"} <= set(names)
    for name in names:
        s = load_scenario(name)
        assert s.expectations and s.description and s.namespaces <= 250
    with pytest.raises(UsageError, match="bundled: "):
        bundled_text("no-such")


def test_a_product_mix_is_assigned_by_share():
    s = parse_scenario(
        MINIMAL.replace(
            "count = 3", 'count = 10\nproducts = { "Windows 10/11 Enterprise" = 4, "Windows Server 2022 Standard" = 1 }'
        )
    )
    thresholds = [s.groups[0].product_of(i).threshold for i in range(10)]
    assert thresholds.count(25) == 8 and thresholds.count(5) == 2


def test_a_scaled_clock_is_the_same_in_every_process_that_reads_its_spec():
    clock = ScaledClock(3600, origin=1_000_000.0, epoch=1_767_225_600.0)
    again = parse_clock_spec(clock.spec())
    assert (again.scale, again.origin, again.epoch) == (clock.scale, clock.origin, clock.epoch)
    assert abs(again.now() - clock.now()) < 3600 * 0.05
    assert clock.real_delay(7200) == 2.0
    with pytest.raises(ValueError, match="scale must be a number"):
        parse_clock_spec("scale=fast")
    with pytest.raises(ValueError, match="give scale"):
        parse_clock_spec("origin=5")


# --- expectations on recorded runs --------------------------------------------------------------------


def _run_log() -> RunLog:
    log = RunLog(
        scenario={
            "name": "t",
            "duration": 10 * 86400.0,
            "slack": 60.0,
            "hosts": [{"name": "kms1"}, {"name": "kms2"}],
            "groups": [{"name": "g", "count": 2}],
            "clients": [
                {"name": "g-001", "group": "g", "cmid": "a", "threshold": 2},
                {"name": "g-002", "group": "g", "cmid": "b", "threshold": 2},
            ],
        }
    )

    def ex(at, client, host, status, count):
        cmid = "a" if client == "g-001" else "b"
        log.exchange(
            at=at,
            client=client,
            group="g",
            cmid=cmid,
            host=host,
            address=host,
            status=status,
            count=count,
            threshold=2,
            app="Windows",
            detail="",
        )

    ex(100, "g-001", "kms1", "below-threshold", 1)
    ex(200, "g-002", "kms1", "activated", 2)
    ex(7300, "g-001", "kms1", "activated", 2)
    log.event(86400, "kill", "kms1", "SIGKILL")
    log.dns(50, "kms.test", ["kms1.kms.test", "kms2.kms.test"])
    ex(86500, "g-001", "kms1", "unreachable", None)
    ex(86500.5, "g-001", "kms2", "below-threshold", 1)
    log.dns(90000, "kms.test", ["kms2.kms.test"])
    log.table(10 * 86400, "kms1", [{"application": "Windows", "count": 2, "capacity": 4}])
    log.table(10 * 86400, "kms2", [{"application": "Windows", "count": 1, "capacity": 4}])
    return log


def _verdicts(log: RunLog, *expectations: dict) -> list:
    return evaluate(log, [{"name": e["kind"], **e} for e in expectations])


def test_expectations_pass_on_a_run_that_follows_the_rules():
    results = _verdicts(
        _run_log(),
        {"kind": "never-below-threshold"},
        {"kind": "activated-by", "at": "3h"},
        {"kind": "tables-match"},
        {"kind": "failover-within", "host": "kms1", "within": "1h"},
        {"kind": "srv-withdrawn-within", "host": "kms1", "within": "2h"},
        {"kind": "count", "host": "kms2", "at": "2d", "max": 1},
    )
    assert [(r.name, r.passed) for r in results if not r.passed] == []


def test_a_failing_expectation_carries_the_exchanges_that_show_it():
    log = _run_log()
    log.exchange(
        at=300,
        client="g-002",
        group="g",
        cmid="b",
        host="kms2",
        address="kms2",
        status="activated",
        count=1,
        threshold=2,
        app="Windows",
        detail="early",
    )
    below, late, tables, aged = _verdicts(
        log,
        {"kind": "never-below-threshold"},
        {"kind": "activated-by", "at": "150s"},
        {"kind": "tables-match"},
        {"kind": "srv-withdrawn-within", "host": "kms1", "within": "10m"},
    )
    assert not below.passed and below.evidence[0]["detail"] == "early"
    assert not late.passed and "g-001" in late.message
    assert not tables.passed and "kms2 Windows: table holds 1, expected 2" in tables.message
    assert not aged.passed and "gone 1.0 h after" in aged.message


def test_a_saved_run_reports_plots_and_writes_junit_again(tmp_path, capsys):
    log = _run_log()
    log.scenario["expectations"] = [
        {"kind": "never-below-threshold", "name": "below"},
        {"kind": "activated-by", "name": "early", "at": "150s"},
    ]
    log.expectations = [r.to_json() for r in evaluate(log, log.scenario["expectations"])]
    path = tmp_path / "run.json"
    log.save(path)
    assert load_run(path).exchanges == log.exchanges
    code = main(["lab", "report", str(path), "--plot", str(tmp_path / "p.png"), "--junit", str(tmp_path / "j.xml")])
    out = capsys.readouterr().out
    assert code == 1 and "PASS  below" in out and "FAIL  early" in out
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    junit = (tmp_path / "j.xml").read_text()
    assert 'failures="1"' in junit and "g-001" in junit
    assert "kms1" in "\n".join(summary_lines(log))
    write_plot(log, tmp_path / "again.png")
    write_junit(log, tmp_path / "again.xml")


def test_a_file_that_is_not_a_saved_run_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": "something"}))
    with pytest.raises(UsageError, match="not a run saved"):
        load_run(path)


def test_emu_lab_list_and_show(capsys):
    assert main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    assert "failover" in out and "year-500" in out
    assert main(["lab", "show", "counting"]) == 0
    assert 'name = "counting"' in capsys.readouterr().out


def test_the_quick_labs_flags_are_refused_with_a_scenario(capsys):
    assert main(["lab", "run", "failover", "--hosts", "3"]) == 2
    assert "--hosts describes the quick lab" in capsys.readouterr().err


def test_a_mak_group_uses_kms_only_as_the_fallback_order_says():
    base = MINIMAL + '[[actsvc]]\nname = "svc"\nkeys = [{ name = "m", kind = "mak", limit = 5 }]\n'
    mixed = base.replace('domain = "kms.test"\n', 'domain = "kms.test"\nmak = "m"\n', 1)
    with pytest.raises(UsageError, match='mak_mode = "fallback" tries KMS first'):
        parse_scenario(mixed)
    group = parse_scenario(mixed.replace('mak = "m"\n', 'mak = "m"\nmak_mode = "fallback"\n')).groups[0]
    assert (group.mak, group.mak_mode, group.domain) == ("m", "fallback", "kms.test")
    with pytest.raises(UsageError, match="has no mak key named 'x'"):
        parse_scenario(mixed.replace('mak = "m"', 'mak = "x"\nmak_mode = "fallback"'))
