"""`emu host serve --publish`: the host's own SRV/A records appear in emu's DNS server, clients find
the host through them, and SIGTERM withdraws exactly those records (kms-behaviour.md 5)."""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import sys
import time

import dns.message
import dns.query
import dns.rdatatype
import pytest

ZONE = """$ORIGIN kms.test.
$TTL 3600
@    IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
@    NS  ns1
ns1  A   127.0.0.1
other IN A 127.0.0.9
_vlmcs._tcp 600 IN SRV 10 0 1688 other
"""


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _srv(port: int) -> set[str]:
    answer = dns.query.udp(dns.message.make_query("_vlmcs._tcp.kms.test.", "SRV"), "127.0.0.1", port=port, timeout=2)
    return {rr.to_text() for rrset in answer.answer for rr in rrset}


def _wait_until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (OSError, dns.exception.DNSException):
            pass
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_host_publishes_itself_is_discovered_and_withdraws_only_its_records(tmp_path):
    secret = base64.b64encode(bytes(range(32))).decode()
    (tmp_path / "kms.key").write_text(f'key "kms-host-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n')
    (tmp_path / "kms.test.zone").write_text(ZONE)
    dns_port, kms_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    emu = [sys.executable, "-m", "emu"]
    dns_proc = subprocess.Popen(
        emu
        + [
            "dns",
            "serve",
            "--listen",
            f"127.0.0.1:{dns_port}",
            "--zone",
            f"kms.test={tmp_path / 'kms.test.zone'}",
            "--tsig-key",
            str(tmp_path / "kms.key"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    host_proc = None
    try:
        assert _wait_until(lambda: _srv(dns_port)), "DNS server did not come up"
        before = _srv(dns_port)
        host_proc = subprocess.Popen(
            emu
            + [
                "host",
                "serve",
                "--listen",
                f"127.0.0.1:{kms_port}",
                "--publish",
                "kms.test,0,100",
                "--dns-server",
                f"127.0.0.1:{dns_port}",
                "--tsig-key",
                str(tmp_path / "kms.key"),
                "--host-name",
                "kms1.kms.test",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        mine = f"0 100 {kms_port} kms1.kms.test."
        assert _wait_until(lambda: mine in _srv(dns_port)), "the host's SRV record never appeared"
        assert _srv(dns_port) == before | {mine}
        client = subprocess.run(
            emu
            + [
                "client",
                "activate",
                ".kms.test",
                "--dns-server",
                f"127.0.0.1:{dns_port}",
                "-l",
                "srv2019 std",
                "-n",
                "1",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert client.returncode == 3, client.stdout + client.stderr  # found via SRV (priority 0 first), count 1 < 5
        host_proc.send_signal(signal.SIGTERM)
        assert host_proc.wait(timeout=10) == 0
        assert _srv(dns_port) == before  # its own record withdrawn, the other host's kept
    finally:
        for proc in (host_proc, dns_proc):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
