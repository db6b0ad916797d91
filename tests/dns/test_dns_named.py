"""emu's updater (Publisher) against a real BIND named started by the test (dns.md 1.3)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import pytest
from dns_testing import KEY_NAME, SECRET, key_file_text, require_tool

from emu.dns.tsig import TsigKey
from emu.errors import DnsUpdateError, ScenarioError
from emu.net.dns_client import query
from emu.net.dns_discovery import discover_kms_hosts
from emu.net.dns_publisher import PublishDomain, Publisher
from emu.rng import seeded

pytestmark = pytest.mark.interop

ZONE = """$TTL 3600
@            IN SOA ns1.kms.test. hostmaster.kms.test. ( 1 3600 600 86400 300 )
@            NS   ns1.kms.test.
ns1          A    127.0.0.1
_vlmcs._tcp  600 IN SRV 0 0 1688 other.kms.test.
other        A    10.0.0.9
"""
STARTUP_SECONDS = 15


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def named(tmp_path):
    binary = require_tool("named")
    port = _free_port()
    (tmp_path / "kms.test.zone").write_text(ZONE)
    (tmp_path / "named.conf").write_text(
        key_file_text()
        + f"""
options {{
    directory "{tmp_path}";
    pid-file "{tmp_path}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
}};
controls {{ }};
zone "kms.test" {{
    type primary;
    file "kms.test.zone";
    update-policy {{ grant {KEY_NAME} zonesub ANY; }};
}};
"""
    )
    process = subprocess.Popen(
        [binary, "-g", "-c", str(tmp_path / "named.conf")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"named exited: {process.stdout.read()[-2000:]}")
            try:
                asyncio.run(query("kms.test.", "SOA", ("127.0.0.1", port), timeout=0.5))
                break
            except ScenarioError:
                if time.monotonic() > deadline:
                    pytest.fail("named did not answer within the startup time")
                time.sleep(0.1)  # bounded wait for the server socket
        yield ("127.0.0.1", port)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _srv(server):
    answer = asyncio.run(query("_vlmcs._tcp.kms.test.", "SRV", server))
    return sorted((str(rr.rdata.target), rr.rdata.priority, rr.rdata.weight) for rr in answer.answers if rr.rtype == 33)


def test_named_accepts_emus_publish_change_and_withdraw(named):
    key = TsigKey.make(KEY_NAME, SECRET)

    async def publish():
        publisher = Publisher(
            "kms1.kms.test",
            [PublishDomain("kms.test")],
            dns_server=named,
            key=key,
            addresses=("10.0.0.1",),
            rng=seeded(4),
        )
        await publisher.start()
        after_publish = await discover_kms_hosts("kms.test", named, seeded(1))
        await publisher.change(priority=5, weight=7)
        after_change = await query("_vlmcs._tcp.kms.test.", "SRV", named)
        await publisher.stop()
        return after_publish, after_change

    after_publish, after_change = asyncio.run(asyncio.wait_for(publish(), 30))
    assert ("10.0.0.1", 1688) in after_publish and ("10.0.0.9", 1688) in after_publish
    targets = sorted(
        (str(rr.rdata.target), rr.rdata.priority, rr.rdata.weight) for rr in after_change.answers if rr.rtype == 33
    )
    assert targets == [("kms1.kms.test.", 5, 7), ("other.kms.test.", 0, 0)]
    assert _srv(named) == [("other.kms.test.", 0, 0)]  # withdrawn; the other host's record is intact


def test_named_rejects_emus_update_signed_with_a_wrong_key(named):
    wrong = TsigKey.make(KEY_NAME, b"\x01" * 32)

    async def publish():
        publisher = Publisher(
            "kms1.kms.test", [PublishDomain("kms.test")], dns_server=named, key=wrong, rng=seeded(4), zone="kms.test"
        )
        with pytest.raises(DnsUpdateError) as info:
            await publisher.start()
        return info.value.wire_code

    assert asyncio.run(asyncio.wait_for(publish(), 30)) == 16  # BADSIG in the TSIG error field
