"""The MAK side of a scenario run: starting the activation services with their keys, the flags of hosts that
activate their host key, the MAK clients' state, and the VAMT events of a disconnected branch.

VAMT (proxy activation, documented): on the branch, VAMT installs the MAK on the machines and collects their
installation IDs into a CIL file; the file is carried to a machine that reaches the activation service,
which gets every CID in one BatchActivation call; carried back, VAMT deposits the CIDs. In a scenario the
three steps are events; the machines' licensing states are files VAMT manages (``emu vamt --clients DIR``),
and each step runs ``emu vamt`` in the namespace of the party the event names, so the branch's partition
decides what can reach the service.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from emu.errors import ScenarioError
from emu.lab.parties import ACTSVC_PORT, Party, Processes
from emu.lab.scenario import Event, Scenario
from emu.mak import client as mak
from emu.net.kms_fleet import FleetClient, MakPath
from emu.net.mak_state import load_state, save_state
from emu.rng import seeded

__all__ = ["MakSetup"]

_EMU = (sys.executable, "-m", "emu")
_TIMEOUT = 30.0
#: Real seconds VAMT waits for the service (a partitioned branch gets no answer at all).
SERVICE_TIMEOUT = 1.0


class MakSetup:
    """What a run keeps of its services and MAK groups."""

    def __init__(self, scenario: Scenario, processes: Processes, seed: int) -> None:
        self.scenario = scenario
        self.processes = processes
        self.seed = seed
        self.urls: dict[str, str] = {}
        self.keys: dict[str, dict[str, str]] = {}

    def start_services(self, nodes: dict[str, Any], wait: Any) -> None:
        """Add each service's keys to its ledger, start it and wait until it accepts connections."""
        for spec in self.scenario.actsvcs:
            node = nodes[spec.name]
            party, keys = self.processes.add_actsvc(spec, node)
            self.keys[spec.name] = keys
            self.urls[spec.name] = f"http://{node.address}:{ACTSVC_PORT}"
            self.processes.start(party)
            wait(party, node.namespace, node.address, ACTSVC_PORT)

    def _service(self, name: str | None) -> str:
        if name is not None:
            return name
        return self.scenario.actsvcs[0].name

    def host_flags(self, host: Any, index: int) -> list[str]:
        """``--csvlk KEY --actsvc URL --hwid HEX`` for a host with a host key (each host its own HwId, the
        identity the service counts against the key's six hosts)."""
        hwid = ["--hwid", seeded(self.seed * 977 + index).bytes(8).hex().upper()]
        if host.csvlk is None:
            return hwid
        service = self._service(host.actsvc)
        return ["--csvlk", self.keys[service][host.csvlk], "--actsvc", self.urls[service], *hwid]

    def mak_path(self, group: Any, index: int, state_dir: Path) -> MakPath:
        """A MAK client's licensing state: the group's MAK installed (online), or a fresh machine whose state
        file VAMT manages (vamt)."""
        service = self._service(group.actsvc)
        state = mak.new_license(f"emu-lab-hw-{self.seed}-{index}")
        if group.mak_mode == "fallback":
            return MakPath(self.urls[service], state, mode="fallback", key=self.keys[service][group.mak])
        if group.mak_mode == "online":
            state = mak.install_key(state, self.keys[service][group.mak], seeded(self.seed * 13 + index))
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            save_state(state_dir / f"{group.name}-{index:04d}.json", state)
        return MakPath(self.urls[service], state, mode=group.mak_mode)

    def vamt_event(
        self, event: Event, workdir: Path, namespace_of: Any, clients: list[FleetClient]
    ) -> tuple[str, list[str]]:
        """Carry out a ``vamt-*`` event; returns its detail and the clients it activated."""
        group = next(g for g in self.scenario.groups if g.name == event.target)
        if group.mak is None or group.mak_mode != "vamt":
            return f'{group.name} is not a VAMT-managed MAK group (mak_mode = "vamt")', []
        service = self._service(group.actsvc)
        state_dir = workdir / f"vamt-{group.name}"
        cil = workdir / f"{group.name}.cil"
        if event.action == "vamt-collect":
            key = self.keys[service][group.mak]
            self._vamt(namespace_of(group.name), ["install-mak", "--clients", str(state_dir), key])
            return self._vamt(namespace_of(group.name), ["collect", "--clients", str(state_dir), "--cil", str(cil)]), []
        if event.action == "vamt-acquire":
            via = str(event.options["via"])
            argv = ["acquire", "--cil", str(cil), "--actsvc", self.urls[service], "--timeout", str(SERVICE_TIMEOUT)]
            return self._vamt(namespace_of(via), argv), []
        detail = self._vamt(namespace_of(group.name), ["apply", "--cil", str(cil), "--clients", str(state_dir)])
        activated = []
        for client in clients:
            if client.group != group.name or client.mak is None:
                continue
            index = int(client.live.name.rsplit("-", 1)[1])
            path = state_dir / f"{group.name}-{index:04d}.json"
            state = load_state(path) if path.exists() else client.mak.state
            if state.activated and not client.mak.state.activated:
                activated.append(client.live.name)
            client.mak.state = state
        return detail, activated

    def _vamt(self, namespace: str, argv: list[str]) -> str:
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", namespace, *_EMU, "vamt", *argv],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"emu vamt {argv[0]} failed: no result within {_TIMEOUT:g} s"
        lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
        text = lines[-1] if lines else ""
        if done.returncode != 0:
            return f"emu vamt {argv[0]} failed ({done.returncode}): {text}"
        return f"emu vamt {argv[0]}: {text}"


def wait_listening(processes: Processes, party: Party, namespace: str, address: str, port: int) -> None:
    """Wait until ``party`` accepts TCP connections on ``address:port`` (seen from its namespace)."""
    import socket

    from emu.net import netns

    def connect() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.3)
            return sock.connect_ex((address, port)) == 0

    try:
        processes.wait_ready(party, lambda: netns.run_in(namespace, connect))
    except ScenarioError:
        raise
