"""emu vamt: proxy activation of emu MAK clients, with the emu-cil file carried to a connected machine."""

from __future__ import annotations

import pytest

from emu.cli import main
from emu.cli.client_mak import load_state, save_state
from emu.mak import cil
from emu.mak import client as mak
from emu.mak.keys import KeyKind, make_key
from emu.net.actsvc import ActivationService, ServiceConfig
from emu.net.actsvc_store import LedgerStore
from emu.rng import seeded


@pytest.fixture
def service(tmp_path):
    store = LedgerStore(tmp_path / "ledger.db")
    svc = ActivationService(store, ServiceConfig())
    svc.start()
    yield svc
    svc.stop()
    store.close()


def test_a_disconnected_branch_is_activated_by_proxy_with_a_cil_file_carried_across(service, tmp_path, capsys):
    key = service.store.add_key(make_key(KeyKind.MAK, seeded(1)), "Windows", 2).key
    branch = tmp_path / "branch"
    branch.mkdir()
    for n in range(3):
        save_state(branch / f"pc{n}.json", mak.new_license(f"hw-pc{n}"))
    clients = ["--clients", str(branch)]
    assert main(["vamt", "discover", *clients]) == 0
    assert capsys.readouterr().out.count("no key") == 3
    assert main(["vamt", "install-mak", key, *clients]) == 0
    db, carried = str(tmp_path / "branch.cil"), str(tmp_path / "usb.cil")
    assert main(["vamt", "collect", *clients, "--cil", db]) == 0
    assert main(["vamt", "export", "--cil", db, "--out", carried, "--proxy-data-only"]) == 0
    exported = cil.parse_cil((tmp_path / "usb.cil").read_bytes())
    assert len(exported) == 3 and all(e.name is None for e in exported)
    # on the connected machine
    url = ["--actsvc", service.url]
    assert main(["vamt", "remaining", "--cil", carried, *url]) == 0
    assert "remaining=2" in capsys.readouterr().out
    assert main(["vamt", "acquire", "--cil", carried, *url]) == 1  # the third machine: the MAK ran out
    captured = capsys.readouterr()
    assert "acquired 2 confirmation IDs in one batch; 1 refused" in captured.out
    assert "0xC004C020" in captured.err
    assert main(["vamt", "remaining", "--cil", carried, *url]) == 0
    assert "remaining=0" in capsys.readouterr().out
    # back in the branch
    assert main(["vamt", "import", carried, "--cil", db]) == 0
    assert main(["vamt", "apply", "--cil", db, *clients]) == 0
    states = [load_state(branch / f"pc{n}.json") for n in range(3)]
    assert sorted(s.activated for s in states) == [False, True, True]
    rec = service.store.record(key)
    assert rec is not None and rec.used == 2 and {a.channel for a in service.store.activations(key)} == {"batch"}


def test_vamt_usage_errors_are_one_line(tmp_path, capsys):
    assert main(["vamt", "discover", "--clients", str(tmp_path / "none")]) == 2
    (tmp_path / "bad.cil").write_text("<nope/>")
    assert main(["vamt", "acquire", "--cil", str(tmp_path / "bad.cil"), "--actsvc", "http://127.0.0.1:9"]) == 2
    assert "not an emu-cil file" in capsys.readouterr().err


def test_acquire_against_an_unreachable_service_is_one_line(tmp_path, capsys):
    entry = cil.CilEntry("hw", "pc", "pid", "ABCDE", "1" * 63)
    (tmp_path / "x.cil").write_bytes(cil.write_cil([entry]))
    assert main(["vamt", "acquire", "--cil", str(tmp_path / "x.cil"), "--actsvc", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_cil_round_trips_and_merges_cids_by_computer_and_iid():
    a = cil.CilEntry("id-1", "pc1", "pid", "ABCDE", "1" * 63)
    b = cil.CilEntry("id-2", None, "pid", "ABCDE", "2" * 63)
    assert cil.parse_cil(cil.write_cil([a, b])) == [a, b]
    acquired = [cil.CilEntry("id-1", None, "pid", "ABCDE", "1" * 63, cid="9" * 48)]
    merged = cil.merge_cids([a, b], acquired)
    assert merged[0].cid == "9" * 48 and merged[0].name == "pc1" and merged[1].cid is None
