"""The lab activation service on loopback: emu's client, curl and zeep against one SQLite ledger."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys

import pytest

from emu.mak import batch
from emu.mak import client as mak
from emu.mak.errors import ActivationError
from emu.mak.ids import parse_iid
from emu.mak.keys import KeyKind, extended_pid, make_key
from emu.net.actsvc import ActivationService, ServiceConfig
from emu.net.actsvc_client import batch_call, online_activate
from emu.net.actsvc_store import LedgerStore
from emu.net.labtls import make_lab_certificates
from emu.rng import seeded

CURL = "/usr/bin/curl"


@pytest.fixture
def store(tmp_path):
    s = LedgerStore(tmp_path / "ledger.db")
    yield s
    s.close()


@pytest.fixture
def service(store):
    svc = ActivationService(store, ServiceConfig())
    svc.start()
    yield svc
    svc.stop()


def _machine(key: str, hw: str, seed: int = 1) -> mak.ClientLicense:
    return mak.install_key(mak.new_license(hw), key, seeded(seed))


def _code(exc: pytest.ExceptionInfo[ActivationError]) -> int:
    return exc.value.code


def test_independent_online_activation_counts_until_the_mak_runs_out(service, store):
    key = store.add_key(make_key(KeyKind.MAK, seeded(1)), "Windows", 2).key
    for n in range(2):
        state = _machine(key, f"hw-{n}")
        cid = online_activate(service.url, key, mak.current_iid(state))
        assert mak.apply_cid(state, cid).activated
    with pytest.raises(ActivationError) as exc:
        online_activate(service.url, key, mak.current_iid(_machine(key, "hw-9")))
    assert _code(exc) == 0xC004C020
    rec = store.record(key)
    assert rec is not None and rec.used == 2 and len(store.activations(key)) == 2


def test_blocked_unknown_and_foreign_keys_are_refused_with_their_codes(service, store):
    rng = seeded(2)
    key = store.add_key(make_key(KeyKind.MAK, rng), "Windows", 5).key
    iid = mak.current_iid(_machine(key, "hw"))
    stranger = make_key(KeyKind.MAK, rng)
    with pytest.raises(ActivationError) as exc:
        online_activate(service.url, stranger, mak.current_iid(_machine(stranger, "hw")))
    assert _code(exc) == 0xC004C001
    other = store.add_key(make_key(KeyKind.MAK, rng), "Windows", 5).key
    with pytest.raises(ActivationError) as exc:
        online_activate(service.url, other, iid)  # the IID belongs to the first key
    assert _code(exc) == 0xC004F07E
    store.block(key)
    with pytest.raises(ActivationError) as exc:
        online_activate(service.url, key, iid)
    assert _code(exc) == 0xC004C003


def test_a_seventh_kms_host_and_an_eleventh_activation_get_0xC004C008(service, store):
    csvlk = store.add_key(make_key(KeyKind.CSVLK, seeded(3)), "Windows Server 2025", 60).key
    for n in range(6):
        online_activate(service.url, csvlk, mak.current_iid(_machine(csvlk, f"host-{n}")), "host")
    with pytest.raises(ActivationError) as exc:
        online_activate(service.url, csvlk, mak.current_iid(_machine(csvlk, "host-7")), "host")
    assert _code(exc) == 0xC004C008
    for n in range(9):  # host-0 is reactivated 9 times (a new install each time)
        online_activate(service.url, csvlk, mak.current_iid(_machine(csvlk, "host-0", seed=10 + n)), "host")
    with pytest.raises(ActivationError) as exc:
        online_activate(service.url, csvlk, mak.current_iid(_machine(csvlk, "host-0", seed=99)), "host")
    assert _code(exc) == 0xC004C008


def test_an_adba_forest_activation_counts_as_one_host_of_its_csvlk(service, store):
    csvlk = store.add_key(make_key(KeyKind.CSVLK, seeded(4)), "Windows Server 2025", 60).key
    for n in range(5):
        online_activate(service.url, csvlk, mak.current_iid(_machine(csvlk, f"host-{n}")), "host")
    online_activate(service.url, csvlk, mak.current_iid(_machine(csvlk, "forest:kms.test")), "forest")
    with pytest.raises(ActivationError) as exc:
        online_activate(service.url, csvlk, mak.current_iid(_machine(csvlk, "host-6")), "host")
    assert _code(exc) == 0xC004C008


def test_a_mak_given_for_a_host_activation_is_0xC004F07D(service, store):
    key = store.add_key(make_key(KeyKind.MAK, seeded(5)), "Windows", 5).key
    with pytest.raises(ActivationError) as exc:
        online_activate(service.url, key, mak.current_iid(_machine(key, "h")), "host")
    assert _code(exc) == 0xC004F07D


def test_batch_activation_gives_cids_and_remaining_counts_and_short_codes(service, store):
    key = store.add_key(make_key(KeyKind.MAK, seeded(6)), "Windows", 2).key
    pid = extended_pid(key)
    machines = [_machine(key, f"vamt-{n}") for n in range(3)]
    results = batch_call(
        service.url, batch.BatchRequest(1, tuple(batch.BatchItem(pid, mak.current_iid(m)) for m in machines))
    )
    assert [r.error for r in results] == [None, None, 0x7F]
    assert results[2].hresult == 0xC004C020
    assert mak.apply_cid(machines[0], results[0].cid or "").activated
    (left,) = batch_call(service.url, batch.BatchRequest(2, (batch.BatchItem(pid),)))
    assert left.remaining == 0
    bad_iid = mak.current_iid(machines[0])[:-1] + "0"
    if bad_iid == mak.current_iid(machines[0]):
        bad_iid = bad_iid[:-1] + "1"
    (bad,) = batch_call(service.url, batch.BatchRequest(1, (batch.BatchItem(pid, bad_iid),)))
    assert (bad.error, bad.hresult) == (0x90, 0xC004F04D)
    store.block(key)
    (blocked,) = batch_call(service.url, batch.BatchRequest(2, (batch.BatchItem(pid),)))
    assert (blocked.error, blocked.hresult) == (0x67, 0xC004C003)
    (unknown,) = batch_call(
        service.url, batch.BatchRequest(2, (batch.BatchItem("00000-00000-000-000000-03-1033-9999.0000-0012026"),))
    )
    assert (unknown.error, unknown.hresult) == (0x68, 0xC004C001)


def test_a_bad_digest_is_a_soap_fault_and_the_service_keeps_serving(service, store):
    key = store.add_key(make_key(KeyKind.MAK, seeded(7)), "Windows", 2).key
    req = batch.BatchRequest(2, (batch.BatchItem(extended_pid(key)),))
    with pytest.raises(batch.BatchFault, match="Digest"):
        batch_call(service.url, req, digest_key=b"not the lab key")
    assert batch_call(service.url, req)[0].remaining == 2


def test_the_user_can_set_the_digest_key(store):
    svc = ActivationService(store, ServiceConfig(digest_key=b"\x01" * 64))
    svc.start()
    try:
        req = batch.BatchRequest(2, (batch.BatchItem("x"),))
        with pytest.raises(batch.BatchFault):
            batch_call(svc.url, req)
        assert batch_call(svc.url, req, digest_key=b"\x01" * 64)[0].hresult == 0xC004C001
    finally:
        svc.stop()


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CURL, "-s", "-S", "--max-time", "10", *args], capture_output=True, text=True, check=False)


def test_curl_posts_a_batchactivate_envelope_and_gets_a_cid(service, store):
    key = store.add_key(make_key(KeyKind.MAK, seeded(8)), "Windows", 2).key
    state = _machine(key, "curl")
    body = batch.build_envelope(batch.BatchRequest(1, (batch.BatchItem(extended_pid(key), mak.current_iid(state)),)))
    out = _curl(
        "-H",
        "Content-Type: text/xml; charset=utf-8",
        "-H",
        f'SOAPAction: "{batch.SOAP_ACTION}"',
        "--data-binary",
        body.decode(),
        service.url + batch.BATCH_PATH,
    )
    (result,) = batch.parse_response(out.stdout.encode())
    assert mak.apply_cid(state, result.cid or "").activated


@pytest.mark.parametrize(
    "path,data,status",
    [
        (batch.BATCH_PATH, "<garbage", "500"),
        (batch.BATCH_PATH, "", "500"),
        ("/emu/1/activate", "<ActivateRequest xmlns='urn:emu:actsvc:1'/>", "400"),
        ("/emu/1/activate", "\x01\x02", "400"),
        ("/nowhere", "x", "404"),
    ],
)
def test_bad_input_gets_a_fault_or_400_and_the_service_keeps_serving(service, store, path, data, status, caplog):
    out = _curl("-o", "/dev/null", "-w", "%{http_code}", "--data-binary", data, service.url + path)
    assert out.stdout == status
    key = store.add_key(make_key(KeyKind.MAK, seeded(9)), "Windows", 1).key
    assert online_activate(service.url, key, mak.current_iid(_machine(key, "after")))


def test_zeep_calls_batchactivate_through_the_services_wsdl(service, store):
    import zeep

    key = store.add_key(make_key(KeyKind.MAK, seeded(10)), "Windows", 3).key
    raw = batch.build_request_xml(batch.BatchRequest(2, (batch.BatchItem(extended_pid(key)),)))
    import hashlib
    import hmac

    digest = base64.b64encode(hmac.new(batch.LAB_DIGEST_KEY, raw, hashlib.sha256).digest()).decode()
    client = zeep.Client(service.url + batch.BATCH_PATH + "?WSDL")
    client.service._binding_options["address"] = service.url + batch.BATCH_PATH
    answer = client.service.BatchActivate(request={"Digest": digest, "RequestXml": base64.b64encode(raw).decode()})
    text = answer if isinstance(answer, str) else answer.ResponseXml  # zeep unwraps a one-field result
    assert "<ActivationRemaining>3</ActivationRemaining>" in text


def test_phone_activation_uses_the_same_ledger(store, tmp_path):
    key = store.add_key(make_key(KeyKind.MAK, seeded(11)), "Windows", 1).key
    first = _machine(key, "phone-1")
    cid = store.activate(mak.current_iid(first), 0.0, channel="phone")
    assert mak.apply_cid(first, cid).activated
    with pytest.raises(ActivationError) as exc:
        store.activate(mak.current_iid(_machine(key, "phone-2")), 0.0, channel="phone")
    assert _code(exc) == 0xC004C020


def test_tls_with_lab_certificates_for_emus_client_and_curl(store, tmp_path):
    certs = make_lab_certificates(tmp_path / "tls")
    svc = ActivationService(store, ServiceConfig(certfile=certs.cert, keyfile=certs.key))
    svc.start()
    try:
        assert svc.url.startswith("https://")
        key = store.add_key(make_key(KeyKind.MAK, seeded(12)), "Windows", 3).key
        assert online_activate(svc.url, key, mak.current_iid(_machine(key, "tls")), cafile=certs.ca)
        out = _curl("--cacert", str(certs.ca), svc.url + batch.BATCH_PATH + "?WSDL")
        assert out.returncode == 0 and "BatchActivate" in out.stdout
        refused = _curl(svc.url + batch.BATCH_PATH + "?WSDL")  # without the lab CA: not trusted
        assert refused.returncode != 0
    finally:
        svc.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_ledger_survives_sigkill_of_the_service(tmp_path):
    ledger = tmp_path / "ledger.db"
    key = LedgerStore(ledger).add_key(make_key(KeyKind.MAK, seeded(13)), "Windows", 5).key
    port = _free_port()
    cmd = [sys.executable, "-m", "emu", "actsvc", "serve", "--listen", f"127.0.0.1:{port}", "--state", str(ledger)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and "activation service on" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        for n in range(3):
            online_activate(url, key, mak.current_iid(_machine(key, f"k-{n}")))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    store = LedgerStore(ledger)
    rec = store.record(key)
    assert rec is not None and rec.used == 3 and len(store.activations(key)) == 3
    store.close()


def test_cli_keys_phone_and_client_mak_round_trip(tmp_path, capsys):
    from emu.cli import main

    led, st = str(tmp_path / "l.db"), str(tmp_path / "c.json")
    assert main(["actsvc", "keys", "add", "--state", led, "--kind", "mak", "--limit", "1"]) == 0
    key = capsys.readouterr().out.strip()
    assert main(["client", "mak", "install", key, "--state", st, "--generation", "win7"]) == 0
    assert main(["client", "mak", "iid", "--state", st]) == 0
    iid = capsys.readouterr().out.strip().splitlines()[-1]
    parse_iid(iid)
    assert main(["actsvc", "phone", iid, "--state", led]) == 0
    cid = capsys.readouterr().out.strip()
    assert main(["client", "mak", "apply-cid", cid, "--state", st]) == 0
    assert main(["client", "mak", "status", "--state", st]) == 0
    assert "licensed (permanent)" in capsys.readouterr().out
    assert main(["actsvc", "phone", iid, "--state", led]) == 1  # the MAK has no activation left
    assert "0xC004C020" in capsys.readouterr().err
    assert main(["client", "mak", "install", "EMUM1-AAAAA-AAAAA-AAAAA-AAAAA", "--state", st]) == 1
    assert "0xC004F050" in capsys.readouterr().err
    for _ in range(3):
        assert main(["client", "mak", "rearm", "--state", st]) == 0
    assert main(["client", "mak", "rearm", "--state", st]) == 1
    assert "0xC004D307" in capsys.readouterr().err
    assert main(["client", "mak", "install", "NPPR9-FWDCX-D2C8J-H872K-2YT43", "--state", st]) == 0
    assert "GVLK" in capsys.readouterr().out
    assert main(["actsvc", "keys", "block", key, "--state", led]) == 0
    assert main(["actsvc", "keys", "list", "--state", led]) == 0
    assert "BLOCKED" in capsys.readouterr().out
    assert main(["actsvc", "serve", "--listen", "nonsense", "--state", led]) == 2
    assert main(["actsvc", "keys", "add", "--state", led, "--kind", "mak"]) == 2


def test_a_post_without_content_length_gets_411_and_a_huge_one_413(service):
    host, port = service.address
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /emu/1/activate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 411")
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /emu/1/activate HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")
    out = _curl("-o", "/dev/null", "-w", "%{http_code}", service.url + batch.BATCH_PATH + "?WSDL")
    assert out.stdout == "200"
