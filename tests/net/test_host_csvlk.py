"""emu host serve --csvlk: the host activates its KMS host key first; unactivated it answers 0xC004F041."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from emu.cli.host_csvlk import activate_host
from emu.errors import UsageError
from emu.kms.host import HostConfig
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


def _settings(**values):
    base = {"csvlk": None, "actsvc": None, "actsvc_cafile": None, "csvlk_cid": None, "state": None}
    base.update(values)
    return base


def test_without_csvlk_the_host_config_is_unchanged():
    config = HostConfig()
    assert activate_host(_settings(), config) is config
    assert config.key_activated


def test_a_mak_or_a_bad_key_for_csvlk_is_a_usage_error():
    with pytest.raises(UsageError, match="KMS host key"):
        activate_host(_settings(csvlk=make_key(KeyKind.MAK, seeded(1))), HostConfig())
    with pytest.raises(UsageError, match="0xC004F050"):
        activate_host(_settings(csvlk="EMUK1-AAAAA-AAAAA-AAAAA-AAAAA"), HostConfig())


def test_the_host_activates_online_once_and_keeps_it_next_to_its_state(service, tmp_path):
    csvlk = service.store.add_key(make_key(KeyKind.CSVLK, seeded(2)), "Windows Server 2025", 60).key
    settings = _settings(csvlk=csvlk, actsvc=service.url, state=str(tmp_path / "host.db"))
    assert activate_host(settings, HostConfig()).key_activated
    assert activate_host(settings, HostConfig()).key_activated  # restart: no new activation
    assert service.store.record(csvlk).used == 1


def test_phone_activation_of_the_host_with_csvlk_cid(service, tmp_path):
    csvlk = service.store.add_key(make_key(KeyKind.CSVLK, seeded(3)), "Windows Server 2025", 60).key
    settings = _settings(csvlk=csvlk, state=str(tmp_path / "host.db"))
    assert not activate_host(settings, HostConfig()).key_activated
    from emu.cli.client_mak import load_state

    iid = mak.current_iid(load_state(tmp_path / "host.db.csvlk.json"))
    cid = service.store.activate(iid, 0.0, channel="phone")
    assert activate_host({**settings, "csvlk_cid": cid}, HostConfig()).key_activated


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_and_ask(tmp_path, *host_args: str) -> str:
    port = _free_port()
    cmd = [sys.executable, "-m", "emu", "host", "serve", "--listen", f"127.0.0.1:{port}", *host_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "serving KMS" in line:
                break
        out = subprocess.run(
            [sys.executable, "-m", "emu", "client", "activate", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout + out.stderr
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.slow
def test_a_seventh_kms_host_is_refused_and_answers_its_clients_0xC004F041(service, tmp_path):
    csvlk = service.store.add_key(make_key(KeyKind.CSVLK, seeded(4)), "Windows Server 2025", 60).key
    for n in range(6):
        iid = mak.current_iid(mak.install_key(mak.new_license(f"other-host-{n}"), csvlk, seeded(n)))
        service.store.activate(iid, 0.0, purpose="host")
    refused = _serve_and_ask(tmp_path, "--csvlk", csvlk, "--actsvc", service.url)
    assert "0xC004F041" in refused
    fresh = service.store.add_key(make_key(KeyKind.CSVLK, seeded(5)), "Windows Server 2025", 60).key
    answered = _serve_and_ask(tmp_path, "--csvlk", fresh, "--actsvc", service.url, "--state", str(tmp_path / "h.db"))
    assert "0xC004F041" not in answered and "count" in answered
