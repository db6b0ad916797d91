"""A scenario's network: one namespace per party, one bridge per LAN segment, a router between segments.

Layout (every name starts ``emu-lab-<6 hex>-``, so ``emu lab clean`` finds leftovers):

* ``sw``: the switch, one bridge ``brN`` per segment; every other namespace has a veth port on it;
* ``rt``: the router (only with two or more segments), one leg ``legN`` per segment at the segment's
  first address, forwarding between them; every party's default route points at it;
* one namespace per DNS server, KMS host and client (or per client group with ``shared_namespace``),
  each with ``eth0`` at the next free address of its segment.

Namespaces, veths and addresses are made with a handful of ``ip -batch`` runs (a 50-namespace
topology in well under 3 s; ``scripts/bench lab`` measures it). Impairments: loss, delay and jitter
with tc netem on the link's two ends when the kernel has netem (checked once, at build); without it
loss falls back to iptables' ``statistic`` match and delay is refused. Partitions drop every packet
with iptables, in the party's namespace or, for a segment, on the router's leg.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from emu.errors import EmuError, ScenarioError, UsageError
from emu.net import netns

__all__ = ["Node", "Topology", "TopologyPlan", "plan_topology"]

log = logging.getLogger(__name__)
_TOOL_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Node:
    """One namespace on a segment: who lives there, its port on the switch, its address."""

    key: str  # the party (or ``group-N`` for one client of a group)
    namespace: str
    segment: str
    port: str  # its veth end in the switch namespace
    address: str
    prefix: int
    gateway: str | None


@dataclass
class TopologyPlan:
    """Every namespace and address of a scenario, before anything is made."""

    lab_id: str
    switch: str
    router: str | None
    segments: dict[str, ipaddress.IPv4Network]
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def namespaces(self) -> list[str]:
        return [self.switch, *([self.router] if self.router else []), *(n.namespace for n in self.nodes.values())]

    def bridge(self, segment: str) -> str:
        return f"br{list(self.segments).index(segment)}"

    def leg(self, segment: str) -> str:
        return f"leg{list(self.segments).index(segment)}"


def plan_topology(
    lab_id: str, segments: dict[str, ipaddress.IPv4Network], parties: list[tuple[str, str]]
) -> TopologyPlan:
    """Addresses for ``parties`` (``(key, segment)`` in order) on ``segments``.

    Raises:
        UsageError: more parties on a segment than its subnet holds.
    """
    routed = len(segments) > 1
    plan = TopologyPlan(lab_id, f"{lab_id}-sw", f"{lab_id}-rt" if routed else None, dict(segments))
    next_host = dict.fromkeys(segments, 2)
    for n, (key, segment) in enumerate(parties):
        subnet = segments[segment]
        host = next_host[segment]
        if host >= subnet.num_addresses - 1:
            raise UsageError(f"segment {segment} ({subnet}) has no address left for {key}: give it a larger subnet")
        next_host[segment] = host + 1
        plan.nodes[key] = Node(
            key=key,
            namespace=f"{lab_id}-{key}",
            segment=segment,
            port=f"p{n}",
            address=str(subnet[host]),
            prefix=subnet.prefixlen,
            gateway=str(subnet[1]) if routed else None,
        )
    return plan


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_TOOL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise ScenarioError(f"{what} needs `{argv[0]}`, which is not installed") from None
    except subprocess.TimeoutExpired:
        raise ScenarioError(f"`{' '.join(argv)}` did not finish within {_TOOL_TIMEOUT:g} s") from None


class Topology:
    """The namespaces of a :class:`TopologyPlan`, built by :meth:`build` and always removed by :meth:`remove`."""

    def __init__(self, plan: TopologyPlan) -> None:
        self.plan = plan
        self.made: list[str] = []
        self.netem: bool | None = None
        self._impaired: set[tuple[str, str]] = set()
        self.build_seconds = 0.0
        self.remove_seconds = 0.0

    # -- building ------------------------------------------------------------------------------------

    def build(self, *, offloads_off: bool = False) -> None:
        """Make every namespace, bridge, veth, address and route; check for netem.

        Raises:
            ScenarioError: not root, no iproute2, or a command failed (whatever was made is removed).
        """
        netns.require_netns_support()
        began = time.monotonic()
        plan = self.plan
        try:
            self.made = list(plan.namespaces)
            netns.batch([f"netns add {ns}" for ns in self.made])
            root = [
                f"link add {n.port} netns {plan.switch} type veth peer name eth0 netns {n.namespace}"
                for n in plan.nodes.values()
            ]
            if plan.router:
                root += [
                    f"link add r{i} netns {plan.switch} type veth peer name {plan.leg(s)} netns {plan.router}"
                    for i, s in enumerate(plan.segments)
                ]
            netns.batch(root)
            switch = ["link set lo up"]
            for i, segment in enumerate(plan.segments):
                bridge = plan.bridge(segment)
                switch += [f"link add {bridge} type bridge", f"link set {bridge} up"]
                if plan.router:
                    switch += [f"link set r{i} master {bridge}", f"link set r{i} up"]
            for n in plan.nodes.values():
                switch += [f"link set {n.port} master {plan.bridge(n.segment)}", f"link set {n.port} up"]
            netns.batch(switch, plan.switch)
            if plan.router:
                legs = ["link set lo up"]
                for segment, subnet in plan.segments.items():
                    legs += [
                        f"addr add {subnet[1]}/{subnet.prefixlen} dev {plan.leg(segment)}",
                        f"link set {plan.leg(segment)} up",
                    ]
                netns.batch(legs, plan.router)
                self.sysctl(plan.router, "net.ipv4.ip_forward=1")
            procs = []
            for n in plan.nodes.values():
                lines = ["link set lo up", f"addr add {n.address}/{n.prefix} dev eth0", "link set eth0 up"]
                if n.gateway:
                    lines.append(f"route add default via {n.gateway}")
                procs.append(
                    (
                        n,
                        subprocess.Popen(
                            ["ip", "-n", n.namespace, "-batch", "-"],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            text=True,
                        ),
                    )
                )
                assert procs[-1][1].stdin is not None
                procs[-1][1].stdin.write("\n".join(lines) + "\n")
                procs[-1][1].stdin.close()
            for n, proc in procs:
                assert proc.stderr is not None
                error = proc.stderr.read()
                if proc.wait(_TOOL_TIMEOUT) != 0:
                    raise ScenarioError(f"addressing {n.namespace} failed: {error.strip()}")
            if offloads_off:
                for n in plan.nodes.values():
                    netns.disable_offloads(n.namespace, "eth0")
                    netns.disable_offloads(plan.switch, n.port)
            self.netem = self._has_netem()
        except BaseException:
            self.remove()
            raise
        self.build_seconds = time.monotonic() - began

    def sysctl(self, ns: str, setting: str) -> None:
        """Set a sysctl (``name=value``) inside namespace ``ns``."""
        done = _run(["ip", "netns", "exec", ns, "sysctl", "-qw", setting], "the router")
        if done.returncode != 0:
            raise ScenarioError(f"sysctl {setting} in {ns} failed: {done.stderr.strip()}")

    def _has_netem(self) -> bool:
        """Whether tc netem works here (loaded or loadable ``sch_netem``); tried on the switch's loopback."""
        if shutil.which("tc") is None:
            return False
        done = _run(["tc", "-n", self.plan.switch, "qdisc", "add", "dev", "lo", "root", "netem", "loss", "0%"], "netem")
        if done.returncode != 0:
            return False
        _run(["tc", "-n", self.plan.switch, "qdisc", "del", "dev", "lo", "root"], "netem")
        return True

    # -- impairments -----------------------------------------------------------------------------------

    def _links(self, target: str) -> list[tuple[str, str]]:
        """The (namespace, interface) pairs whose egress carries ``target``'s traffic (both directions)."""
        plan = self.plan
        if target in plan.segments:
            if plan.router:
                index = list(plan.segments).index(target)
                return [(plan.router, plan.leg(target)), (plan.switch, f"r{index}")]
            nodes = [n for n in plan.nodes.values() if n.segment == target]
        else:
            nodes = [n for n in plan.nodes.values() if n.key == target or n.key.startswith(f"{target}-")]
        if not nodes:
            raise UsageError(f"nothing in the lab is called {target!r}")
        return [pair for n in nodes for pair in ((n.namespace, "eth0"), (plan.switch, n.port))]

    def impair(self, target: str, *, loss: float = 0.0, delay: float = 0.0, jitter: float = 0.0) -> str:
        """Loss (percent) and delay/jitter (seconds) on ``target``'s links; returns how (``netem`` or ``iptables``).

        Raises:
            ScenarioError: delay asked without netem, or the tool failed.
        """
        links = self._links(target)
        if self.netem:
            args = []
            if delay:
                args += ["delay", f"{delay * 1000:g}ms"] + ([f"{jitter * 1000:g}ms"] if jitter else [])
            if loss:
                args += ["loss", f"{loss:g}%"]
            for ns, dev in links:
                done = _run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem", *args], "netem")
                if done.returncode != 0:
                    raise ScenarioError(f"tc netem on {dev} in {ns} failed: {done.stderr.strip()}")
                self._impaired.add((ns, dev))
            return "netem"
        if delay or jitter:
            raise ScenarioError("this kernel has no tc netem (sch_netem): delay and jitter cannot be emulated here")
        for ns, dev in links:
            rule = [
                "-o",
                dev,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                f"{loss / 100:.4f}",
                "-j",
                "DROP",
            ]
            self._iptables(ns, "-A", "OUTPUT", *rule)
            self._iptables(ns, "-A", "FORWARD", *rule)
        return "iptables"

    def clear(self, target: str) -> None:
        """Remove loss and delay from ``target``'s links."""
        for ns, dev in self._links(target):
            if (ns, dev) in self._impaired:
                _run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], "netem")
                self._impaired.discard((ns, dev))
            for chain in ("OUTPUT", "FORWARD"):
                self._delete_matching(ns, chain, f"-o {dev} -m statistic")

    def partition(self, target: str, cut: bool) -> None:
        """Cut ``target`` (a party or a segment) off, or (``cut=False``) reconnect it.

        Raises:
            ScenarioError: iptables is missing or failed.
        """
        verb = "-I" if cut else "-D"
        plan = self.plan
        if target in plan.segments and plan.router:
            leg = plan.leg(target)
            for rule in (("-i", leg), ("-o", leg)):
                self._iptables(plan.router, verb, "FORWARD", *rule, "-j", "DROP", quiet=not cut)
            return
        for ns, dev in self._links(target):
            if ns == plan.switch:
                continue
            for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
                self._iptables(ns, verb, chain, flag, dev, "-j", "DROP", quiet=not cut)

    def _iptables(self, ns: str, *rule: str, quiet: bool = False) -> None:
        done = _run(["ip", "netns", "exec", ns, "iptables", "-w", *rule], "partitions and iptables loss")
        if done.returncode != 0 and not quiet:
            raise ScenarioError(f"iptables {' '.join(rule)} in {ns} failed: {done.stderr.strip()}")

    def _delete_matching(self, ns: str, chain: str, needle: str) -> None:
        listing = _run(["ip", "netns", "exec", ns, "iptables", "-w", "-S", chain], "iptables")
        for line in listing.stdout.splitlines():
            if needle in line and line.startswith("-A "):
                self._iptables(ns, "-D", *line.split()[1:], quiet=True)

    # -- teardown ------------------------------------------------------------------------------------

    def remove(self) -> list[str]:
        """Delete every namespace this topology made (their veths and bridges go with them); returns the
        names that could not be deleted. Processes inside must have been stopped by their owner first;
        any left are stopped by PID (:func:`emu.net.netns.delete`)."""
        began = time.monotonic()
        left: list[str] = []
        if self.made:
            with contextlib.suppress(EmuError):
                netns.batch([f"netns del {ns}" for ns in reversed(self.made) if netns.exists(ns)])
            for ns in self.made:
                try:
                    if netns.exists(ns):
                        netns.delete(ns)
                except EmuError as exc:
                    log.warning("could not delete %s: %s", ns, exc)
                    left.append(ns)
        self.made = []
        self.remove_seconds = time.monotonic() - began
        return left
