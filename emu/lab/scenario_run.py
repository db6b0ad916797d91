"""Running a scenario: build its network, start its servers on the shared clock, run its clients and events,
record everything, read the hosts' tables, check the expectations, and tear it all down.

Time: the run's :class:`emu.clock.ScaledClock` is fixed before the first process starts, with its
zero a little in the future (setup takes real seconds, which would be virtual days at a large
scale); the clients start at zero. Every process gets the same ``--clock``. Virtual times in the
records count from zero; a ``--capture``'s packet timestamps stay real.

Everything made (namespaces, processes, files) is removed when :meth:`ScenarioRun.run` returns or
raises, Ctrl-C and SIGTERM included (the CLI turns SIGTERM into KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emu.clock import ScaledClock
from emu.durations import parse_duration
from emu.errors import EmuError, ScenarioError
from emu.kms.client import HostAddress
from emu.kms.count_cache import CAPACITY_FACTOR
from emu.lab import owner
from emu.lab.expect import evaluate
from emu.lab.fleet import Fleet
from emu.lab.parties import Party, Processes, srv_targets
from emu.lab.recording import Recorder
from emu.lab.scenario import Event, Scenario
from emu.lab.scenario_mak_run import MakSetup, wait_listening
from emu.lab.timeline import RunLog, day_text
from emu.lab.topology import Topology, plan_topology
from emu.net import netns
from emu.net.dc_runner import LDAP_SERVICE
from emu.rng import seeded

__all__ = ["SETUP_ALLOWANCE", "ScenarioRun"]

log = logging.getLogger(__name__)

#: Real seconds allowed per server process for setup before the clock's zero.
SETUP_ALLOWANCE = 0.8
#: Real seconds a capture process gets to start, and to finish at the end.
CAPTURE_START = 15.0
#: Real seconds between two progress lines.
PROGRESS_EVERY = 1.0
_STATUS_TIMEOUT = 20.0
_EMU = (sys.executable, "-m", "emu")


class ScenarioRun:
    """One run of a scenario.

    Args:
        scenario: what to run.
        seed: seeds the clients' CMIDs and IVs.
        capture: a directory: one pcap per segment (``SEGMENT.pcap``) of its bridge's traffic.
        on_line: receives the progress and timeline lines as they happen.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int = 2026,
        capture: Path | None = None,
        on_line: Callable[[str], None] | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.capture = capture
        self.say = on_line or (lambda line: None)
        self.progress = on_progress or (lambda line: None)
        self.log = RunLog()
        self._lock = threading.Lock()
        self.topology: Topology | None = None
        self.processes: Processes | None = None
        self.fleet: Fleet | None = None
        self.clock: ScaledClock | None = None
        self._addresses: dict[str, str] = {}
        self._captures: list[subprocess.Popen[str]] = []
        self.setup_seconds = 0.0
        self.mak: MakSetup | None = None

    # -- the run -----------------------------------------------------------------------------------------

    def run(self) -> RunLog:
        """Run the scenario to its end; return the records with the expectations checked.

        Raises:
            ScenarioError: the network or a server could not be set up.
        """
        began = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="emu-lab-"))
        try:
            self._setup(workdir)
            self._play()
            self._finish()
        finally:
            self._teardown(workdir)
        self.log.summary["wall_seconds"] = round(time.monotonic() - began, 2)
        self.log.summary["setup_seconds"] = round(self.setup_seconds, 2)
        results = evaluate(self.log, self.log.scenario["expectations"])
        self.log.expectations = [r.to_json() for r in results]
        return self.log

    def _setup(self, workdir: Path) -> None:
        s = self.scenario
        started = time.monotonic()
        parties = [(d.name, d.segment) for d in s.dns] + [(d.name, d.segment) for d in s.dcs]
        parties += [(a.name, a.segment) for a in s.actsvcs]
        parties += [(h.name, h.segment) for h in s.hosts]
        client_keys: dict[str, list[str]] = {}
        for group in s.groups:
            keys = [group.name] if group.shared_namespace else [f"{group.name}-{i + 1}" for i in range(group.count)]
            client_keys[group.name] = keys
            parties += [(k, group.segment) for k in keys]
        plan = plan_topology(netns.random_name("lab"), {seg.name: seg.subnet for seg in s.segments}, parties)
        owner.claim(plan.lab_id)
        self.topology = Topology(plan)
        self.topology.build(offloads_off=self.capture is not None)
        for spec in s.dns:  # a stopped DNS server's "port unreachable" reaches every client at once
            self.topology.sysctl(plan.nodes[spec.name].namespace, "net.ipv4.icmp_ratelimit=0")
        servers = len(s.dns) + len(s.dcs) + len(s.actsvcs) + sum(1 for h in s.hosts if h.start)
        if self.capture is not None:  # before the clock starts: a sniffer takes a moment to listen
            self._start_captures(plan)
        self.clock = ScaledClock(s.scale, time.time() + 1.0 + SETUP_ALLOWANCE * servers, s.epoch)
        processes = Processes(workdir, self.clock.spec())
        self.processes = processes
        processes.write_key(seeded(self.seed + 17).bytes(32))
        self._describe(plan, client_keys)
        for spec in s.dns:
            party = processes.add_dns(spec, plan.nodes[spec.name])
            self._start_dns(party, spec.zones)
        for dc in s.dcs:
            party = processes.add_dc(dc, plan.nodes[dc.name], plan.nodes[dc.dns])
            self._start_dc(party)
        self.mak = MakSetup(s, processes, self.seed)
        self.mak.start_services(
            plan.nodes, lambda party, ns, address, port: wait_listening(processes, party, ns, address, port)
        )
        for n, host in enumerate(s.hosts):
            dns = plan.nodes[host.dns] if host.dns else None
            party = processes.add_host(host, plan.nodes[host.name], dns, self.mak.host_flags(host, n + 1))
            if host.start:
                self._start_host(party)
        self.recorder = Recorder(self.log, self._addresses, self.mak.urls)
        r = self.recorder
        self.fleet = Fleet(self.clock, s.duration, self.seed, r.exchange, r.lookup, r.adba, r.mak)
        index = 1
        for group in s.groups:
            dns_address = plan.nodes[group.dns].address if group.dns else None
            static = HostAddress(plan.nodes[group.host].address, 1688) if group.host else None
            if group.mak is not None and group.mak_mode != "fallback":
                static = HostAddress("0.0.0.0", 1688)  # never dialled: a MAK client does not use KMS
            self.fleet.add_group(
                group,
                [plan.nodes[k].namespace for k in client_keys[group.name]],
                dns_server=(dns_address, 53) if dns_address else None,
                static_host=static,
                first_index=index,
            )
            if group.mak is not None:
                for client in self.fleet.clients:
                    if client.group == group.name and client.mak is None:
                        number = int(client.live.name.rsplit("-", 1)[1])
                        client.mak = self.mak.mak_path(group, number, workdir / f"vamt-{group.name}")
                        client.mak.next_attempt = client.live.lifecycle.now
            index += group.count
        self.log.scenario["clients"] = [
            {
                "name": c.live.name,
                "group": c.group,
                "cmid": str(c.live.lifecycle.cmid),
                "product": c.live.template.sku_id and _sku_name(c.live.template.sku_id),
                "threshold": c.live.lifecycle.threshold,
            }
            for c in self.fleet.clients
        ]
        self.setup_seconds = time.monotonic() - started
        late = self.clock.now()
        if late < 0:
            time.sleep(-late / self.clock.scale)
        else:
            self.say(
                f"setup took {self.setup_seconds:.1f} s, {day_text(late)} of virtual time late (the clients start now)"
            )

    def _describe(self, plan: Any, client_keys: dict[str, list[str]]) -> None:
        s = self.scenario
        self._addresses = {n.address: key for key, n in plan.nodes.items()}
        self.log.scenario = {
            "name": s.name,
            "title": s.title,
            "scale": s.scale,
            "duration": s.duration,
            "epoch": s.epoch,
            "validity": 180 * 86400.0,
            "slack": s.scale * 1.5,
            "lab": plan.lab_id,
            "namespaces": len(plan.namespaces),
            "hosts": [
                {
                    "name": h.name,
                    "address": plan.nodes[h.name].address,
                    "segment": h.segment,
                    "key_groups": list(h.key_groups),
                }
                for h in s.hosts
            ],
            "dns": [{"name": d.name, "address": plan.nodes[d.name].address, "zones": list(d.zones)} for d in s.dns],
            "dcs": [{"name": d.name, "address": plan.nodes[d.name].address, "forest": d.forest} for d in s.dcs],
            "groups": [{"name": g.name, "count": g.count, "segment": g.segment} for g in s.groups],
            "events": [{"at": e.at, "action": e.action, "target": e.target, **e.options} for e in s.events],
            "expectations": [{"kind": x.kind, "name": x.name, **x.options} for x in s.expectations],
        }
        self.say(
            f"emu lab {plan.lab_id}: scenario {s.name} ({s.title}): {len(s.hosts)} host(s), {len(s.dns)} DNS server(s), "
            f"{s.clients} client(s), {len(plan.namespaces)} namespaces, built in {self.topology.build_seconds if self.topology else 0:.2f} s"
        )
        self.say(
            f"  clock: 1 real second = {s.scale / 3600:g} virtual hour(s); {s.duration / 86400:g} virtual days take "
            f"{s.duration / s.scale:.0f} s"
        )

    def _start_dns(self, party: Party, zones: tuple[str, ...]) -> None:
        assert self.processes is not None
        self.processes.start(party)
        server = (party.node.address, 53)
        self.processes.wait_ready(
            party, lambda: netns.run_in(party.node.namespace, srv_targets, zones[0], server) is not None
        )

    def _start_dc(self, party: Party) -> None:
        assert self.processes is not None and self.topology is not None
        self.processes.start(party)
        spec = next(d for d in self.scenario.dcs if d.name == party.name)
        server = (self.topology.plan.nodes[spec.dns].address, 53)

        def published() -> bool:
            targets = netns.run_in(party.node.namespace, srv_targets, spec.forest, server, 0.5, LDAP_SERVICE)
            return bool(targets)

        self.processes.wait_ready(party, published)

    def _start_host(self, party: Party) -> None:
        assert self.processes is not None
        self.processes.start(party)
        spec = next(h for h in self.scenario.hosts if h.name == party.name)
        if spec.dns is None:
            self.processes.wait_ready(party, lambda: _listening(party.node.namespace, party.node.address))
            return
        dns = next(d for d in self.scenario.dns if d.name == spec.dns)
        zone = spec.publish[0].zone
        server = (self.topology.plan.nodes[dns.name].address, 53) if self.topology else ("", 0)

        def published() -> bool:
            targets = netns.run_in(party.node.namespace, srv_targets, zone, server)
            return targets is not None and f"{party.name}.{zone}" in targets

        self.processes.wait_ready(party, published)

    # -- recording ---------------------------------------------------------------------------------------

    def _event(self, at: float, action: str, target: str, detail: str) -> None:
        with self._lock:
            self.log.event(round(at, 3), action, target, detail)
        self.say(f"{day_text(at)}  ---- {action} {target}: {detail}")

    # -- playing the timeline ------------------------------------------------------------------------------

    def _play(self) -> None:
        assert self.clock is not None and self.fleet is not None
        clock, s = self.clock, self.scenario
        self.fleet.start()
        pending = list(s.events)
        zones = [(d, z) for d in s.dns for z in d.zones]
        seen_dns: dict[str, set[str] | None] = {}
        dns_step = max(600.0, s.scale * 0.05)
        next_dns = 0.0
        next_progress = time.monotonic()
        while True:
            now = clock.now()
            while pending and pending[0].at <= now:
                self._apply(pending.pop(0), now)
            if now >= next_dns:
                for spec, zone in zones:
                    self._watch_dns(spec.name, zone, seen_dns, now)
                next_dns = now + dns_step
            self._check_crashes(now)
            if time.monotonic() >= next_progress:
                self.progress(self._progress_line(now, len(s.events) - len(pending)))
                next_progress = time.monotonic() + PROGRESS_EVERY
            if now >= s.duration:
                break
            upcoming = min([s.duration, next_dns] + ([pending[0].at] if pending else []))
            time.sleep(min(max(clock.real_delay(upcoming - clock.now()), 0.001), 0.2))
        self.fleet.join()

    def _progress_line(self, now: float, events_done: int) -> str:
        activated = {r["client"] for r in self.log.records if r["type"] == "exchange" and r["status"] == "activated"}
        exchanges = sum(1 for r in self.log.records if r["type"] == "exchange")
        return (
            f"{day_text(now)} / {self.scenario.duration / 86400:g} days  activated {len(activated)}/{self.scenario.clients}  "
            f"exchanges {exchanges}  events {events_done}/{len(self.scenario.events)}"
        )

    def _watch_dns(self, name: str, zone: str, seen: dict[str, set[str] | None], now: float) -> None:
        assert self.processes is not None
        party = self.processes.parties[name]
        if not party.running:
            return
        targets = netns.run_in(party.node.namespace, srv_targets, zone, (party.node.address, 53), 0.3)
        if targets is None or seen.get(zone) == targets:
            return
        seen[zone] = targets
        with self._lock:
            self.log.dns(round(now, 3), zone, sorted(targets))
        self.say(
            f"{day_text(now)}  dns  _vlmcs._tcp.{zone}: {', '.join(sorted(t.split('.')[0] for t in targets)) or 'no SRV record'}"
        )

    def _check_crashes(self, now: float) -> None:
        assert self.processes is not None
        for party in self.processes.parties.values():
            if party.proc is not None and party.proc.poll() is not None and not party.expected_exit:
                party.expected_exit = True
                self._event(
                    now,
                    "crashed",
                    party.name,
                    f"exited with {party.proc.returncode}: {self.processes.log_tail(party.name, 2)}",
                )

    def _apply(self, event: Event, now: float) -> None:
        """Carry out one event (its problems are recorded as the event's detail, the run goes on)."""
        assert self.processes is not None and self.topology is not None and self.fleet is not None
        target, o = event.target, event.options
        try:
            party = self.processes.parties.get(target)
            if event.action in ("stop", "kill", "dns-down") and party is not None:
                party.expected_exit = True
                self.processes.signal(party, signal.SIGKILL if event.action == "kill" else signal.SIGTERM)
                detail = "SIGKILL (its SRV record stays)" if event.action == "kill" else "SIGTERM"
            elif event.action in ("start", "dns-up", "key-change") and party is not None:
                if event.action == "key-change":
                    self.processes.signal(party, signal.SIGTERM)
                    spec = next(h for h in self.scenario.hosts if h.name == target)
                    dns = self.topology.plan.nodes[spec.dns] if spec.dns else None
                    groups = tuple(str(g) for g in o.get("key_groups", spec.key_groups))
                    party.argv = self.processes.host_argv(spec, party.node, dns, groups)
                party.expected_exit = False
                if party.kind == "dns":
                    spec_dns = next(d for d in self.scenario.dns if d.name == target)
                    self._start_dns(party, spec_dns.zones)
                elif party.kind == "dc":
                    self._start_dc(party)
                else:
                    self._start_host(party)
                ready = self.clock.now() if self.clock else now
                detail = (
                    f"{'started again' if party.starts > 1 else 'started'} (pid {party.proc.pid if party.proc else '?'}), serving "
                    f"{(ready - now) / 60:.0f} virtual min later (process start-up takes real time)"
                )
            elif event.action in ("delete-object", "add-object") and party is not None:
                detail = self._object_event(party, event.action, str(o["group"]))
            elif event.action.startswith("vamt-") and self.mak is not None:
                detail, activated = self.mak.vamt_event(
                    event, self.processes.workdir, self._namespace_of, self.fleet.clients
                )
                for name in activated:
                    client = next(c for c in self.fleet.clients if c.live.name == name)
                    self.recorder.mak(
                        client, now, client.mak.url if client.mak else "", 0, "CID deposited by VAMT (proxy activation)"
                    )
            elif event.action in ("partition", "heal"):
                self.topology.partition(target, event.action == "partition")
                detail = "every packet to and from it dropped" if event.action == "partition" else "reconnected"
            elif event.action in ("loss", "delay"):
                how = self.topology.impair(
                    target,
                    loss=float(o.get("percent", 0)),
                    delay=parse_duration(o["delay"], "delay") if "delay" in o else 0.0,
                    jitter=parse_duration(o["jitter"], "jitter") if "jitter" in o else 0.0,
                )
                detail = f"{event.describe()} with {how}"
            elif event.action == "clear":
                self.topology.clear(target)
                detail = "loss and delay removed"
            elif event.action == "skew":
                text = str(o["offset"])
                seconds = parse_duration(text.lstrip("+-"), "offset") * (-1 if text.startswith("-") else 1)
                detail = f"{self.fleet.skew(target, seconds)} clients' clocks off by {text}"
            else:
                detail = "nothing to do"
        except EmuError as exc:
            detail = f"failed: {exc}"
        except (OSError, subprocess.SubprocessError) as exc:  # a tool that failed: the run goes on, the event says so
            log.warning("event %s failed", event.describe(), exc_info=True)
            detail = f"failed: {exc}"
        self._event(now, event.action, target, detail)

    def _object_event(self, party: Party, action: str, group: str) -> str:
        """``emu adba delete`` or ``emu adba activate-online`` against the DC, from its own namespace."""
        from emu.activation.csvlk import lab_key_for_group

        spec = next(d for d in self.scenario.dcs if d.name == party.name)
        server = ["--server", f"{party.node.address}:389", "--domain", spec.forest]
        name = f"{group} (emu lab)"
        if action == "delete-object":
            argv = ["adba", "delete", name, *server]
        else:
            argv = ["adba", "activate-online", lab_key_for_group(group), "--name", name, *server]
        done = subprocess.run(
            ["ip", "netns", "exec", party.node.namespace, *_EMU, *argv],
            capture_output=True,
            text=True,
            timeout=_STATUS_TIMEOUT,
            check=False,
        )
        text = (done.stdout.strip() or done.stderr.strip()).splitlines()
        return ("" if done.returncode == 0 else f"failed ({done.returncode}): ") + (text[-1] if text else "")

    def _namespace_of(self, name: str) -> str:
        """The namespace of a party, or of a group's (first) client."""
        assert self.topology is not None
        nodes = self.topology.plan.nodes
        return (nodes[name] if name in nodes else nodes[f"{name}-1"]).namespace

    # -- the end ---------------------------------------------------------------------------------------------

    def _finish(self) -> None:
        assert self.clock is not None and self.processes is not None
        now = self.clock.now()
        for host in self.scenario.hosts:
            party = self.processes.parties[host.name]
            state = self.processes.workdir / f"{host.name}.db"
            if not state.exists():
                continue
            try:
                done = subprocess.run(
                    [*_EMU, "host", "status", "--state", str(state), "--clock", self.clock.spec(), "--json"],
                    capture_output=True,
                    text=True,
                    timeout=_STATUS_TIMEOUT,
                    check=False,
                )
                data = json.loads(done.stdout)
            except (subprocess.TimeoutExpired, ValueError) as exc:
                self._event(now, "status-failed", host.name, str(exc))
                continue
            apps = [
                {"application": a["application"], "count": a["count"], "capacity": a["capacity"]}
                for a in data.get("applications", [])
            ]
            with self._lock:
                self.log.table(round(now, 3), host.name, apps)
            state_text = "running" if party.running else "down"
            rows = "; ".join(f"{a['application']} {a['count']}/{a['capacity']}" for a in apps) or "empty"
            self.say(f"{day_text(now)}  table {host.name} ({state_text}): {rows}")
        exchanges = self.log.exchanges
        self.log.summary.update(
            {
                "exchanges": len(exchanges),
                "activated_clients": len({r["client"] for r in exchanges if r["status"] == "activated"}),
                "clients": self.scenario.clients,
                "unanswered": sum(1 for r in exchanges if r["status"] not in ("activated", "below-threshold")),
                "capacity_factor": CAPACITY_FACTOR,
            }
        )

    def _start_captures(self, plan: Any) -> None:
        """One ``emu capture`` process per segment, on its bridge in the switch namespace: a process of its own,
        so the sniffer never waits for the clients' threads (in this process it missed packets under load)."""
        assert self.capture is not None
        self.capture.mkdir(parents=True, exist_ok=True)
        for segment in plan.segments:
            output = self.capture / f"{segment}.pcap"
            argv = [*_EMU, "capture", "--netns", plan.switch, "-i", plan.bridge(segment), "-w", str(output), "--dns"]
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            self._captures.append(proc)
            assert proc.stderr is not None
            ready, _, _ = select.select([proc.stderr], [], [], CAPTURE_START)
            line = proc.stderr.readline() if ready else ""
            if not line.startswith("capturing on"):
                raise ScenarioError(f"the capture on segment {segment} did not start: {line.strip() or 'no answer'}")

    def _stop_captures(self) -> None:
        for proc in self._captures:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # it drains what the kernel still holds, then exits
        for proc in self._captures:
            try:
                proc.wait(CAPTURE_START)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        self._captures = []

    def _teardown(self, workdir: Path) -> None:
        if self.fleet is not None:
            with contextlib.suppress(Exception):
                self.fleet.join(5)
        if self.processes is not None:
            with contextlib.suppress(Exception):
                self.processes.close()
        self._stop_captures()
        if self.topology is not None:
            left = self.topology.remove()
            if left:
                log.warning("namespaces left behind: %s (emu lab clean)", ", ".join(left))
            self.log.summary["teardown_seconds"] = round(self.topology.remove_seconds, 2)
            owner.release(self.topology.plan.lab_id)
        shutil.rmtree(workdir, ignore_errors=True)


def _listening(namespace: str, address: str) -> bool:
    import socket

    def connect() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.3)
            return sock.connect_ex((address, 1688)) == 0

    return netns.run_in(namespace, connect)


def _sku_name(sku_id: Any) -> str:
    from emu.kms import products

    try:
        return products.sku_by_id(sku_id).name
    except EmuError:
        return str(sku_id)
