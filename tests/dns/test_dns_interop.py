"""Real tools against emu's server: BIND nsupdate and dig, Knot knsupdate and kdig (dns.md 4.1)."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import threading

import pytest
from dns_testing import KEY_NAME, SECRET, ZONE_TEXT, key_file_text, require_tool

from emu.dns.zone import load_master_file
from emu.net.dns_server import DnsServer

pytestmark = pytest.mark.interop

TOOL_TIMEOUT = 20


class ServerThread:
    """emu's DnsServer on its own event loop in a thread, so blocking tools can talk to it."""

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self.server: DnsServer | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.server = DnsServer([load_master_file(ZONE_TEXT, "kms.test")], **self.kwargs)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self.server is not None:
                asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def zone(self):
        return self.server.resolver.zone("kms.test")


@pytest.fixture
def emu_server(key):
    with ServerThread(listen=[("127.0.0.1", 0)], keys=[key]) as running:
        yield running


@pytest.fixture
def key_path(tmp_path):
    path = tmp_path / "kms1.key"
    path.write_text(key_file_text())
    return path


def nsupdate(script: str, *args: str) -> subprocess.CompletedProcess:
    tool = require_tool("nsupdate")
    return subprocess.run([tool, *args], input=script, capture_output=True, text=True, timeout=TOOL_TIMEOUT)


def _server_line(running: ServerThread) -> str:
    host, port = running.server.addresses[0]
    return f"server {host} {port}\n"


@pytest.mark.parametrize("transport", [[], ["-v"]], ids=["udp", "tcp"])
def test_nsupdate_signed_add_with_zone_discovery(emu_server, key_path, transport):
    script = _server_line(emu_server) + "update add _vlmcs._tcp.kms.test. 600 SRV 0 0 1688 kms2.kms.test.\nsend\n"
    result = nsupdate(script, "-k", str(key_path), *transport)
    assert result.returncode == 0, result.stderr
    targets = {str(r.target) for r in emu_server.zone().rrset("_vlmcs._tcp.kms.test.", 33).rdatas}
    assert "kms2.kms.test." in targets


@pytest.mark.parametrize(
    "lines, expected",
    [
        ("prereq yxdomain missing.kms.test.\nupdate add a.kms.test. 60 A 10.0.0.1\n", "NXDOMAIN"),
        ("prereq nxdomain kms1.kms.test.\nupdate add a.kms.test. 60 A 10.0.0.1\n", "YXDOMAIN"),
        ("prereq nxrrset kms1.kms.test. A\nupdate add a.kms.test. 60 A 10.0.0.1\n", "YXRRSET"),
        ("prereq yxrrset kms1.kms.test. TXT\nupdate add a.kms.test. 60 A 10.0.0.1\n", "NXRRSET"),
        ("prereq yxrrset kms1.kms.test. A 10.9.9.9\nupdate add a.kms.test. 60 A 10.0.0.1\n", "NXRRSET"),
        ("zone other.test.\nupdate add a.other.test. 60 A 10.0.0.1\n", "NOTAUTH"),
        ("zone kms.test.\nupdate add a.notkms.test. 60 A 10.0.0.1\n", "NOTZONE"),
    ],
    ids=["nxdomain", "yxdomain", "yxrrset", "nxrrset", "nxrrset-value", "notauth", "notzone"],
)
def test_nsupdate_sees_each_negative_rcode(emu_server, key_path, lines, expected):
    result = nsupdate(_server_line(emu_server) + lines + "send\n", "-k", str(key_path))
    assert result.returncode != 0
    assert f"update failed: {expected}" in result.stderr, result.stderr


def test_nsupdate_unsigned_is_refused(emu_server):
    result = nsupdate(_server_line(emu_server) + "update add a.kms.test. 60 A 10.0.0.1\nsend\n")
    assert "update failed: REFUSED" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "secret, name, expected",
    [(b"\x00" * 32, KEY_NAME, "BADSIG"), (SECRET, "unknown-key", "BADKEY")],
    ids=["badsig", "badkey"],
)
def test_nsupdate_with_wrong_key_gets_notauth_with_tsig_error(emu_server, tmp_path, secret, name, expected):
    path = tmp_path / "wrong.key"
    path.write_text(key_file_text(name, secret))
    result = nsupdate(
        _server_line(emu_server) + "zone kms.test.\nupdate add a.kms.test. 60 A 10.0.0.1\nsend\n", "-k", str(path)
    )
    assert f"NOTAUTH({expected})" in result.stderr, result.stderr


def test_nsupdate_replace_and_delete_forms(emu_server, key_path):
    script = (
        _server_line(emu_server)
        + 'update delete kms1.kms.test. AAAA\nupdate add kms1.kms.test. 60 TXT "hello"\nsend\n'
        + "update delete www.kms.test.\nsend\n"
    )
    result = nsupdate(script, "-k", str(key_path))
    assert result.returncode == 0, result.stderr
    zone = emu_server.zone()
    assert zone.rrset("kms1.kms.test.", 28) is None and zone.rrset("kms1.kms.test.", 16) is not None
    assert zone.node("www.kms.test.") is None


def _dig(running, *args):
    tool = require_tool("dig")
    host, port = running.server.addresses[0]
    return subprocess.run(
        [tool, f"@{host}", "-p", str(port), "+norec", *args], capture_output=True, text=True, timeout=TOOL_TIMEOUT
    ).stdout


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_dig_srv_with_additional(emu_server, transport):
    out = _dig(emu_server, transport, "_vlmcs._tcp.kms.test.", "SRV")
    assert "status: NOERROR" in out and "flags: qr aa;" in out
    assert "0 0 1688 kms1.kms.test." in out and "fd00::1" in out


def test_dig_nxdomain_and_signed_query(emu_server, key_path):
    assert "status: NXDOMAIN" in _dig(emu_server, "missing.kms.test.", "A")
    out = _dig(emu_server, "-k", str(key_path), "kms1.kms.test.", "A")
    assert "status: NOERROR" in out and "TSIG" in out and "WARNING" not in out


def _knot(tool_name, running, *args, script=None):
    tool = require_tool(tool_name)
    return subprocess.run([tool, *args], input=script, capture_output=True, text=True, timeout=TOOL_TIMEOUT)


def _ytext(name=KEY_NAME, secret=SECRET):
    return f"hmac-sha256:{name}:{base64.b64encode(secret).decode()}"


def test_kdig_signed_query_verifies(emu_server):
    host, port = emu_server.server.addresses[0]
    result = _knot("kdig", emu_server, f"@{host}", "-p", str(port), "-y", _ytext(), "_vlmcs._tcp.kms.test.", "SRV")
    assert "status: NOERROR" in result.stdout and "WARNING" not in result.stdout + result.stderr, (
        result.stdout + result.stderr
    )


@pytest.mark.parametrize(
    "lines, expected",
    [
        ("prereq nxrrset kms1.kms.test. A\nupdate add a.kms.test. 60 A 10.0.0.1\n", "YXRRSET"),
        ("prereq yxdomain missing.kms.test.\nupdate add a.kms.test. 60 A 10.0.0.1\n", "NXDOMAIN"),
        ("update add a.notkms.test. 60 A 10.0.0.1\n", "NOTZONE"),
    ],
    ids=["yxrrset", "nxdomain", "notzone"],
)
def test_knsupdate_negative_rcodes(emu_server, lines, expected):
    host, port = emu_server.server.addresses[0]
    script = f"server {host} {port}\nzone kms.test.\n{lines}send\n"
    result = _knot("knsupdate", emu_server, "-y", _ytext(), script=script)
    assert expected in result.stdout + result.stderr, result.stdout + result.stderr


def test_knsupdate_signed_add(emu_server):
    host, port = emu_server.server.addresses[0]
    script = f"server {host} {port}\nzone kms.test.\nupdate add kms7.kms.test. 60 A 10.0.0.7\nsend\n"
    result = _knot("knsupdate", emu_server, "-y", _ytext(), script=script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert emu_server.zone().rrset("kms7.kms.test.", 1) is not None
