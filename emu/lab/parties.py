"""The server processes of a scenario: ``emu dns serve`` and ``emu host serve``, each in its namespace, on the
scenario's shared clock; started, stopped (SIGTERM), killed (SIGKILL) and started again by PID.

A restarted host keeps its SQLite state (its table and ePIDs survive, as on a real host); a restarted
DNS server replays its journal (every accepted update survives).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from emu.errors import EmuError, ScenarioError
from emu.lab.scenario import DcSpec, DnsSpec, HostSpec
from emu.lab.scenario_mak import ActsvcSpec
from emu.lab.topology import Node
from emu.net import netns
from emu.rng import seeded

__all__ = ["ACTSVC_PORT", "KEY_NAME", "READY_WAIT", "STOP_GRACE", "Party", "Processes", "reap", "srv_targets"]

#: Where a scenario's activation service listens (HTTP).
ACTSVC_PORT = 8080

#: The TSIG key every host of a scenario signs its updates with.
KEY_NAME = "emu-lab-key"
#: Seconds a server gets to answer after it is started.
READY_WAIT = 20.0
#: Seconds a process gets after SIGTERM before SIGKILL.
STOP_GRACE = 3.0
_EMU = (sys.executable, "-m", "emu")


def reap(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """Wait up to ``grace`` seconds for a signalled ``proc`` (one this lab started) to exit, then SIGKILL it
    and wait once more."""
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)


_ZONE = """$ORIGIN {zone}.
$TTL 3600
@    IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
@    NS  ns1
ns1  A   {address}
"""


def srv_targets(
    zone: str, server: tuple[str, int], timeout: float = 0.5, service: str = "_vlmcs._tcp"
) -> set[str] | None:
    """SRV targets of ``SERVICE.ZONE`` at ``server`` (None: no answer). Call it inside a namespace."""
    from emu.net.dns_client import query
    from emu.wire.dns import canonical_name

    try:
        answer = asyncio.run(query(f"{service}.{zone}", "SRV", server, rng=seeded(0), timeout=timeout))
    except EmuError:
        return None
    return {canonical_name(str(rr.rdata.target)).rstrip(".") for rr in answer.answers if rr.rtype == 33}


@dataclass
class Party:
    """A server of the scenario: its spec, where it lives, its argv and its current process."""

    name: str
    kind: str  # "dns", "dc" or "host"
    node: Node
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    starts: int = 0
    expected_exit: bool = False  # stopped or killed by an event (not a crash)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Processes:
    """Every server process of one run, keyed by party name."""

    workdir: Path
    clock_spec: str
    parties: dict[str, Party] = field(default_factory=dict)

    def key_file(self) -> Path:
        return self.workdir / "lab.key"

    def write_key(self, secret: bytes) -> None:
        import base64
        import os

        fd = os.open(self.key_file(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            text = base64.b64encode(secret).decode()
            handle.write(f'key "{KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{text}";\n}};\n')

    def add_dns(self, spec: DnsSpec, node: Node) -> Party:
        zones = []
        for zone in spec.zones:
            path = self.workdir / f"{spec.name}-{zone}.zone"
            path.write_text(_ZONE.format(zone=zone, address=node.address))
            zones += ["--zone", f"{zone}={path}"]
        argv = ["dns", "serve", "--listen", f"{node.address}:53", *zones, "--tsig-key", str(self.key_file())]
        argv += ["--state", str(self.workdir / f"{spec.name}.journal"), "--clock", self.clock_spec]
        if spec.srv_max_age is not None:
            argv += ["--srv-max-age", f"{spec.srv_max_age:g}"]
        party = Party(spec.name, "dns", node, argv)
        self.parties[spec.name] = party
        return party

    def add_dc(self, spec: DcSpec, node: Node, dns: Node) -> Party:
        argv = ["dc", "serve", "--listen", f"{node.address}:389", "--forest", spec.forest]
        argv += ["--state", str(self.workdir / f"{spec.name}.sqlite"), "--clock", self.clock_spec]
        for group in spec.objects:
            argv += ["--seed-group", group]
        argv += ["--publish", f"{dns.address}:53", "--tsig-key", str(self.key_file()), "--address", node.address]
        party = Party(spec.name, "dc", node, argv)
        self.parties[spec.name] = party
        return party

    def add_actsvc(self, spec: ActsvcSpec, node: Node) -> tuple[Party, dict[str, str]]:
        """The service's party, with its ledger holding the scenario's keys; returns them by name.

        Raises:
            ScenarioError: ``emu actsvc keys add`` failed.
        """
        ledger = self.workdir / f"{spec.name}.ledger"
        keys: dict[str, str] = {}
        for key in spec.keys:
            argv = [*_EMU, "actsvc", "keys", "add", "--state", str(ledger), "--kind", key.kind, "--group", key.group]
            if key.limit is not None:
                argv += ["--limit", str(key.limit)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=READY_WAIT, check=False)
            if done.returncode != 0 or not done.stdout.strip():
                raise ScenarioError(f"{spec.name}: emu actsvc keys add failed: {done.stderr.strip()}")
            keys[key.name] = done.stdout.split()[0]
        argv = ["actsvc", "serve", "--listen", f"{node.address}:{ACTSVC_PORT}", "--state", str(ledger)]
        party = Party(spec.name, "actsvc", node, argv)
        self.parties[spec.name] = party
        return party, keys

    def host_argv(self, spec: HostSpec, node: Node, dns: Node | None, key_groups: tuple[str, ...]) -> list[str]:
        argv = ["host", "serve", "--listen", f"{node.address}:1688", "--state", str(self.workdir / f"{spec.name}.db")]
        argv += ["--clock", self.clock_spec]
        for group in key_groups:
            argv += ["--host-key-group", group]
        if spec.activation_interval is not None:
            argv += ["--activation-interval", str(spec.activation_interval)]
        if spec.renewal_interval is not None:
            argv += ["--renewal-interval", str(spec.renewal_interval)]
        if spec.check_time_skew:
            argv.append("--check-time-skew")
        if spec.publish and dns is not None:
            zone = spec.publish[0].zone
            for p in spec.publish:
                argv += ["--publish", f"{p.zone},{p.priority},{p.weight}"]
            argv += ["--dns-server", f"{dns.address}:53", "--tsig-key", str(self.key_file())]
            argv += ["--host-name", f"{spec.name}.{zone}"]
        return argv

    def add_host(self, spec: HostSpec, node: Node, dns: Node | None, extra: list[str] | None = None) -> Party:
        """A host; ``extra``: more flags (its host key and service: ``--csvlk KEY --actsvc URL --hwid HEX``)."""
        argv = self.host_argv(spec, node, dns, spec.key_groups) + (extra or [])
        party = Party(spec.name, "host", node, argv)
        self.parties[spec.name] = party
        return party

    # -- life cycle ------------------------------------------------------------------------------------

    def start(self, party: Party) -> None:
        """Start ``party``'s process in its namespace (its output appended to ``NAME.log``)."""
        if party.running:
            return
        if party.log is None:
            party.log = open(self.workdir / f"{party.name}.log", "ab")  # noqa: SIM115 (closed in close())
        party.proc = netns.popen_in(
            party.node.namespace,
            [*_EMU, *party.argv],
            stdin=subprocess.DEVNULL,
            stdout=party.log,
            stderr=subprocess.STDOUT,
        )
        party.starts += 1

    def wait_ready(self, party: Party, ready: Callable[[], bool]) -> None:
        """Poll ``ready`` until true; fail at once if the process exits.

        Raises:
            ScenarioError: it exited or did not get ready within :data:`READY_WAIT` s (with its log's tail).
        """
        deadline = time.monotonic() + READY_WAIT
        while True:
            if party.proc is None or party.proc.poll() is not None:
                code = party.proc.returncode if party.proc else None
                raise ScenarioError(f"{party.name} exited with status {code}: {self.log_tail(party.name)}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise ScenarioError(f"{party.name} was not ready within {READY_WAIT:g} s: {self.log_tail(party.name)}")
            time.sleep(0.05)

    def signal(self, party: Party, signum: int) -> None:
        """Send ``signum`` to ``party``'s process (by PID) and wait for it to exit."""
        proc = party.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        reap(proc)

    def log_tail(self, name: str, lines: int = 4) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def close(self) -> None:
        """Stop every process: hosts first (they withdraw their records while DNS still runs), then DNS."""
        order = [p for p in self.parties.values() if p.kind != "dns"] + [
            p for p in self.parties.values() if p.kind == "dns"
        ]
        for party in order:
            self.signal(party, signal.SIGTERM)
        for party in order:
            if party.log is not None:
                party.log.close()
                party.log = None
