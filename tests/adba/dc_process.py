"""Start ``emu dc serve`` as a process for tests; stop it by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ADMIN = "CN=Administrator,CN=Users,DC=kms,DC=test"
PASSWORD = "emu-lab-Passw0rd"
CONTAINER = "CN=Activation Objects,CN=Microsoft SPP,CN=Services,CN=Configuration,DC=kms,DC=test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DcProcess:
    def __init__(self, state: Path, *extra: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.state = state
        self.log = state.with_suffix(".log")
        cmd = [
            sys.executable,
            "-m",
            "emu",
            "dc",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state",
            str(state),
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"emu dc serve exited: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("emu dc serve did not start within 15 s")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def write_ldap_pcap(path: Path, requests: list[object]) -> None:
    """A pcap of ``requests`` (emu.ldap messages) answered by emu's directory with a Windows object,
    framed as one TCP connection with handshake (client 40000 -> server 389)."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import wrpcap

    from emu.adba.session import LdapSession
    from emu.ldap import messages as m
    from emu.net.dc_runner import DcOptions, open_dsa, seed_activation_object

    dsa, _ = open_dsa(DcOptions())
    seed_activation_object(dsa, None, "Windows")
    session = LdapSession(dsa)
    c, s = ("127.0.0.1", 40000), ("127.0.0.1", 389)
    seq = {True: 1000, False: 5000}

    def frame(from_client: bool, flags: str, payload: bytes = b"") -> object:
        src, dst = (c, s) if from_client else (s, c)
        ack = seq[not from_client]
        pkt = IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq[from_client], ack=ack)
        if payload:
            pkt = pkt / payload
        seq[from_client] += len(payload) + (1 if "S" in flags or "F" in flags else 0)
        return pkt

    frames = [frame(True, "S")]
    seq[False] -= 0
    frames.append(frame(False, "SA"))
    frames.append(frame(True, "A"))
    for msg in requests:
        assert isinstance(msg, m.LdapMessage)
        frames.append(frame(True, "PA", m.encode_message(msg)))
        for r in session.handle(msg).responses:
            frames.append(frame(False, "PA", m.encode_message(r)))
    frames += [frame(True, "FA"), frame(False, "FA"), frame(True, "A")]
    wrpcap(str(path), frames)
