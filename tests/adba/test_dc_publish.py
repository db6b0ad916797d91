"""``emu dc serve --publish`` registers ``_ldap._tcp.dc._msdcs.kms.test`` SRV + A with RFC 2136 + TSIG in
``emu dns serve``, and ``emu client activate --adba`` finds the DC that way and activates."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from dc_process import DcProcess, free_port

ZONE = """$ORIGIN kms.test.
$TTL 3600
@            IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
@            NS   ns1
ns1          A    127.0.0.1
"""


def _free_udp_tcp_port() -> int:
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def test_published_dc_is_located_by_srv_and_activates_the_client(tmp_path: Path):
    zone = tmp_path / "kms.zone"
    zone.write_text(ZONE)
    key = tmp_path / "dc.key"
    key.write_text(f'key "dc1" {{\n\talgorithm hmac-sha256;\n\tsecret "{base64.b64encode(b"k" * 32).decode()}";\n}};\n')
    dns_port = _free_udp_tcp_port()
    dns = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emu",
            "dns",
            "serve",
            "--zone",
            f"kms.test={zone}",
            "--listen",
            f"127.0.0.1:{dns_port}",
            "--tsig-key",
            str(key),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dc = None
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", dns_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        dc = DcProcess(
            tmp_path / "dc.sqlite",
            "--seed-group",
            "Windows",
            "--publish",
            f"127.0.0.1:{dns_port}",
            "--tsig-key",
            str(key),
            "--address",
            "127.0.0.1",
        )
        argv = [
            sys.executable,
            "-m",
            "emu",
            "client",
            "activate",
            "--adba",
            "kms.test",
            "--dns-server",
            f"127.0.0.1:{dns_port}",
            "-l",
            "win10ent",
            "--json",
        ]
        for _ in range(50):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                break
            time.sleep(0.1)
        doc = json.loads(out.stdout)
        assert out.returncode == 0, out.stdout + out.stderr
        assert doc["activated"] and doc["checks"][0]["name"] == "dc-located"
        assert f"127.0.0.1:{dc.port}" in doc["checks"][0]["detail"]
    finally:
        if dc is not None:
            dc.stop()
        dns.terminate()
        dns.wait(10)
