"""A whole emulated activation network in Linux network namespaces: DNS server, KMS hosts, clients.

A :class:`Lab` (the quick lab; scenarios are :mod:`emu.lab.scenario_run`) gives every party its own network
namespace and runs the real ``emu`` commands there, so the wire carries what separate machines exchange:

* a "switch" namespace holding the bridge ``br0`` (nothing is added to the root namespace);
* ``dns``: ``emu dns serve`` authoritative for ``kms.test``, updates signed with a TSIG key the lab
  writes to its temporary directory;
* ``kms1`` .. ``kmsN``: ``emu host serve --publish kms.test,PRIO,WEIGHT`` each, which add their own
  ``_vlmcs._tcp`` SRV and A/AAAA records by RFC 2136 update;
* ``cl``: the clients, one ``emu client activate .kms.test`` process per client (each a distinct
  machine: a fixed CMID derived from the lab's seed), which find the hosts through SRV (RFC 2782
  order) and fail over to the next target when one does not answer.

Every namespace is joined to the bridge by a veth pair, addressed in ``10.213.0.0/24`` and
``fd00:213::/64`` (they exist only inside the lab), with checksum and segmentation offloads off so
a capture on the bridge carries valid checksums (docs/howto-run-a-lab.md). Names are ``emu-lab-<6 hex>-<role>``.

:class:`emu.lab.rules.LabRules` is the prediction the run is checked against.

Everything the lab made (processes, namespaces and with them the veths and bridge, the temporary
directory) is removed when the ``with`` block ends, also when it ends by an exception or Ctrl-C.
Needs root and iproute2; without them :class:`ScenarioError` says so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from emu.errors import EmuError, ScenarioError, UsageError
from emu.kms import products
from emu.lab import owner
from emu.lab.parties import STOP_GRACE, reap
from emu.lab.rules import (
    ClientOutcome,
    HostTable,
    LabHost,
    LabRules,
    address_in,
    client_cmid,
    outcome_of_report,
    prefix_of,
)
from emu.net import netns
from emu.rng import seeded

__all__ = [
    "CLIENT_TIMEOUT",
    "LAB_DOMAIN",
    "LAB_KEY_NAME",
    "MAX_CLIENTS",
    "MAX_HOSTS",
    "SRV_WAIT",
    "SUBNET4",
    "SUBNET6",
    "ClientOutcome",
    "HostTable",
    "Lab",
    "LabHost",
    "LabRules",
    "client_cmid",
]

log = logging.getLogger(__name__)

#: The zone the lab's DNS server is authoritative for and the hosts publish in.
LAB_DOMAIN = "kms.test"
#: Name of the TSIG key the hosts sign their updates with.
LAB_KEY_NAME = "kms-lab-key"
#: The lab's networks; they exist only inside its namespaces.
SUBNET4 = "10.213.0.0/24"
SUBNET6 = "fd00:213::/64"
#: Host part of each role's address (kmsN is ``_HOST_BASE + N``).
_DNS_HOST, _HOST_BASE, _CLIENTS_HOST = 2, 10, 200
#: Limits (addresses .11 .. .60 for hosts; one client process after another).
MAX_HOSTS = 50
MAX_CLIENTS = 1000
#: Seconds to wait for the DNS server to answer and for every host's SRV record to be visible.
SRV_WAIT = 15.0
#: Seconds one ``emu client activate`` may take.
CLIENT_TIMEOUT = 30.0
#: Seconds ``emu host status`` may take.
STATUS_TIMEOUT = 15.0
#: Seconds after the last exchange before the capture stops (the closing FIN/ACKs).
CAPTURE_SETTLE = 0.3
_POLL = 0.1
_BRIDGE = "br0"
_NODE_IF = "eth0"
_EMU = (sys.executable, "-m", "emu")

_ZONE = """$ORIGIN {domain}.
$TTL 3600
@    IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
@    NS  ns1
ns1  A   {dns4}
"""


# --- the lab --------------------------------------------------------------------------------------


class Lab:
    """The namespaces, processes and files of one lab run; a context manager that always cleans up.

    Use::

        with Lab("Windows Server 2019 Standard") as lab:
            lab.add_host(priority=0, weight=100)
            lab.add_host(priority=10, weight=50)
            lab.start()
            outcome = lab.activate(1)

    Args:
        product: the clients' product (any name :func:`emu.kms.products.lookup` understands).
        seed: seeds the clients' CMIDs, workstation names and IVs.
        capture: write the bridge's DNS and KMS traffic here (started by :meth:`start`).
        ipv6: also address every node in :data:`SUBNET6` (hosts publish AAAA too).
        on_line: receives the capture's live summary lines.

    Raises:
        ScenarioError: not root, no ``ip``, or building the topology failed.
        UsageError: an unknown product.
    """

    def __init__(
        self,
        product: str = "Windows 10/11 Enterprise",
        *,
        seed: int = 2026,
        capture: Path | str | None = None,
        ipv6: bool = True,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.sku = products.lookup(product)
        self.seed = seed
        self.capture_path = Path(capture) if capture is not None else None
        self.ipv6 = ipv6
        self.on_line = on_line
        self.id = netns.random_name("lab")
        self.switch = f"{self.id}-sw"
        self.dns_ns = f"{self.id}-dns"
        self.clients_ns = f"{self.id}-cl"
        self.dns_address = address_in(SUBNET4, _DNS_HOST)
        self.dns_address6 = address_in(SUBNET6, _DNS_HOST) if ipv6 else None
        self.clients_address = address_in(SUBNET4, _CLIENTS_HOST)
        self.hosts: list[LabHost] = []
        self.workdir: Path | None = None
        self.capture_lines: list[str] = []
        self.capture_frames = 0
        self.srv_visible_after: float | None = None
        self._namespaces: list[str] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._started = False
        self._closed = False
        self._capture_thread: threading.Thread | None = None
        self._capture_stop = threading.Event()
        self._capture_error: list[BaseException] = []

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The namespaces made so far (switch first)."""
        return tuple(self._namespaces)

    @property
    def processes(self) -> tuple[subprocess.Popen[bytes], ...]:
        """The lab's long-running processes (DNS server, hosts) started so far."""
        return tuple(self._procs.values())

    @property
    def threshold(self) -> int:
        return self.sku.threshold

    # -- building ---------------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        netns.require_netns_support()
        owner.claim(self.id)
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.id}-"))
            self._new_namespace(self.switch)
            netns.add_bridge(self.switch, _BRIDGE)
            self._attach(self.dns_ns, "dns", self.dns_address, self.dns_address6)
            self._attach(
                self.clients_ns, "cl", self.clients_address, address_in(SUBNET6, _CLIENTS_HOST) if self.ipv6 else None
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(quiet=exc is not None)

    def _new_namespace(self, name: str) -> None:
        netns.create(name)
        self._namespaces.append(name)

    def _attach(self, ns: str, role: str, address: str, address6: str | None) -> None:
        """Namespace ``ns`` with ``eth0`` on the bridge (port ``p-<role>``), addressed, offloads off."""
        self._new_namespace(ns)
        port = f"p-{role}"
        netns.add_veth(self.switch, port, ns, _NODE_IF)
        netns.attach_to_bridge(self.switch, port, _BRIDGE)
        netns.add_address(ns, _NODE_IF, f"{address}/{prefix_of(SUBNET4)}")
        if address6 is not None:
            netns.add_address(ns, _NODE_IF, f"{address6}/{prefix_of(SUBNET6)}")
        netns.disable_offloads(ns, _NODE_IF)
        netns.disable_offloads(self.switch, port)

    def add_host(self, priority: int = 0, weight: int = 100, *, port: int = 1688) -> LabHost:
        """Add a KMS host ``kms<N>.kms.test`` publishing SRV ``priority weight port`` (before :meth:`start`).

        Raises:
            UsageError: after start, too many hosts, or priority/weight outside 0..65535.
            ScenarioError: its namespace could not be made.
        """
        if self.workdir is None or self._closed:
            raise UsageError("add hosts inside `with Lab(...) as lab:`")
        if self._started:
            raise UsageError("add every host before lab.start()")
        if len(self.hosts) >= MAX_HOSTS:
            raise UsageError(f"a lab holds at most {MAX_HOSTS} hosts")
        if not (0 <= priority <= 0xFFFF and 0 <= weight <= 0xFFFF and 0 < port <= 0xFFFF):
            raise UsageError(
                f"SRV priority and weight are 0..65535 and the port 1..65535, not {priority}, {weight}, {port}"
            )
        index = len(self.hosts) + 1
        host = LabHost(
            index=index,
            name=f"kms{index}.{LAB_DOMAIN}",
            namespace=f"{self.id}-kms{index}",
            address=address_in(SUBNET4, _HOST_BASE + index),
            address6=address_in(SUBNET6, _HOST_BASE + index) if self.ipv6 else None,
            port=port,
            priority=priority,
            weight=weight,
            state=self.workdir / f"host{index}.db",
        )
        self._attach(host.namespace, f"kms{index}", host.address, host.address6)
        self.hosts.append(host)
        return host

    # -- starting ---------------------------------------------------------------------------------

    def _spawn(self, key: str, ns: str, argv: list[str]) -> subprocess.Popen[bytes]:
        assert self.workdir is not None
        logfile = open(self.workdir / f"{key}.log", "wb")  # noqa: SIM115 (closed in stop())
        self._logs[key] = logfile
        proc = netns.popen_in(ns, [*_EMU, *argv], stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT)
        self._procs[key] = proc
        return proc

    def log_tail(self, key: str, lines: int = 5) -> str:
        """The last lines a lab process (``dns``, ``kms1``, ...) wrote."""
        if self.workdir is None:
            return ""
        try:
            text = (self.workdir / f"{key}.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def _write_config(self) -> tuple[Path, Path]:
        assert self.workdir is not None
        zone = self.workdir / f"{LAB_DOMAIN}.zone"
        zone.write_text(_ZONE.format(domain=LAB_DOMAIN, dns4=self.dns_address))
        key = self.workdir / "lab.key"
        secret = base64.b64encode(os.urandom(32)).decode()
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f'key "{LAB_KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n')
        return zone, key

    def start(self) -> None:
        """Start the capture (if asked), the DNS server and every host; return once each host's SRV
        record is visible to the clients' namespace.

        Raises:
            UsageError: no host was added, or already started.
            ScenarioError: a process died, or the records did not appear within :data:`SRV_WAIT` s.
        """
        if not self.hosts:
            raise UsageError("add at least one host (lab.add_host) before lab.start()")
        if self._started or self._closed:
            raise UsageError("lab.start() runs once, inside the with block")
        self._started = True
        zone, key = self._write_config()
        if self.capture_path is not None:
            self._start_capture(self.capture_path)
        listen = [f"{self.dns_address}:53"] + ([f"[{self.dns_address6}]:53"] if self.dns_address6 else [])
        self._spawn(
            "dns",
            self.dns_ns,
            [
                "dns",
                "serve",
                *(a for addr in listen for a in ("--listen", addr)),
                "--zone",
                f"{LAB_DOMAIN}={zone}",
                "--tsig-key",
                str(key),
            ],
        )
        started = time.monotonic()
        self._wait_for(lambda: self._query_srv() is not None, "the DNS server to answer", ["dns"])
        for host in self.hosts:
            listen = [f"{host.address}:{host.port}"] + ([f"[{host.address6}]:{host.port}"] if host.address6 else [])
            self._spawn(
                f"kms{host.index}",
                host.namespace,
                [
                    "host",
                    "serve",
                    *(a for addr in listen for a in ("--listen", addr)),
                    "--state",
                    str(host.state),
                    "--product",
                    self.sku.name,
                    "--publish",
                    f"{LAB_DOMAIN},{host.priority},{host.weight}",
                    "--dns-server",
                    f"{self.dns_address}:53",
                    "--tsig-key",
                    str(key),
                    "--host-name",
                    host.name,
                ],
            )
        wanted = {h.name for h in self.hosts}
        self._wait_for(
            lambda: wanted <= (self._query_srv() or set()),
            "every host's SRV record",
            [f"kms{h.index}" for h in self.hosts],
        )
        self.srv_visible_after = time.monotonic() - started

    def _wait_for(self, ready: Callable[[], bool], what: str, keys: list[str]) -> None:
        """Poll ``ready`` until true, at most :data:`SRV_WAIT` s; fail at once when a process exits."""
        deadline = time.monotonic() + SRV_WAIT
        while True:
            for key in keys:
                code = self._procs[key].poll()
                if code is not None:
                    raise ScenarioError(
                        f"{key} exited with status {code} while waiting for {what}: {self.log_tail(key)}"
                    )
            if ready():
                return
            if time.monotonic() >= deadline:
                tails = "; ".join(f"{k}: {self.log_tail(k, 2)}" for k in keys)
                raise ScenarioError(f"timed out after {SRV_WAIT:g} s waiting for {what} ({tails})")
            time.sleep(_POLL)

    def _query_srv(self) -> set[str] | None:
        """SRV targets of ``_vlmcs._tcp.kms.test`` as the clients' namespace sees them (None: no answer)."""
        from emu.net.dns_client import query
        from emu.wire.dns import canonical_name

        def ask() -> set[str] | None:
            try:
                answer = asyncio.run(
                    query(f"_vlmcs._tcp.{LAB_DOMAIN}", "SRV", (self.dns_address, 53), rng=seeded(0), timeout=0.5)
                )
            except EmuError:
                return None
            return {canonical_name(str(rr.rdata.target)).rstrip(".") for rr in answer.answers if rr.rtype == 33}

        return netns.run_in(self.clients_ns, ask)

    # -- capture ----------------------------------------------------------------------------------

    def _start_capture(self, path: Path) -> None:
        from emu.pcap.live import CaptureOptions, capture

        options = CaptureOptions(interface=_BRIDGE, output=path, dns=True, netns=self.switch)
        listening = threading.Event()

        def record() -> None:
            try:
                result = capture(options, on_line=self._capture_line, stop=self._capture_stop, started=listening)
                self.capture_frames = result.frames
            except BaseException as exc:  # reported by the thread that waits for it
                self._capture_error.append(exc)
                listening.set()

        self._capture_thread = threading.Thread(target=record, name=f"{self.id}-capture", daemon=True)
        self._capture_thread.start()
        if not listening.wait(SRV_WAIT) or self._capture_error:
            self._stop_capture()
            error = self._capture_error[0] if self._capture_error else None
            raise ScenarioError(f"the capture on {_BRIDGE} in {self.switch} did not start: {error or 'timed out'}")

    def _capture_line(self, line: str) -> None:
        self.capture_lines.append(line)
        if self.on_line is not None:
            self.on_line(line)

    def _stop_capture(self) -> None:
        thread = self._capture_thread
        if thread is None:
            return
        self._capture_stop.set()
        thread.join(STOP_GRACE + 5)
        self._capture_thread = None

    def finish_capture(self) -> int:
        """Stop the capture now (after the closing segments settle); return the frames written."""
        if self._capture_thread is not None:
            time.sleep(CAPTURE_SETTLE)
            self._stop_capture()
        if self._capture_error:
            raise ScenarioError(f"the capture failed: {self._capture_error[0]}")
        return self.capture_frames

    # -- running ----------------------------------------------------------------------------------

    def host(self, index: int) -> LabHost:
        """Host ``index`` (1-based).

        Raises:
            UsageError: no such host.
        """
        if not 1 <= index <= len(self.hosts):
            raise UsageError(f"there is no host {index}: the lab has hosts 1..{len(self.hosts)}")
        return self.hosts[index - 1]

    def _host_by_address(self, text: str) -> str | None:
        address = text.rsplit(":", 1)[0].strip("[]")
        return next((h.name for h in self.hosts if address in (h.address, h.address6)), None)

    def activate(self, index: int) -> ClientOutcome:
        """Run client ``index`` (1-based) once from the clients' namespace: ``emu client activate .kms.test``.

        Raises:
            UsageError: before :meth:`start`, or ``index`` outside 1..:data:`MAX_CLIENTS`.
            ScenarioError: the client printed no JSON report.
        """
        if not self._started or self._closed:
            raise UsageError("lab.activate() needs a started lab (lab.start())")
        if not 1 <= index <= MAX_CLIENTS:
            raise UsageError(f"client numbers are 1..{MAX_CLIENTS}, not {index}")
        cmid = client_cmid(self.seed, index)
        argv = [
            *_EMU,
            "client",
            "activate",
            f".{LAB_DOMAIN}",
            "--dns-server",
            f"{self.dns_address}:53",
            "--product",
            self.sku.name,
            "-n",
            "1",
            "-c",
            str(cmid),
            "--seed",
            str(self.seed * 1000 + index),
            "--workstation",
            f"ws{index:03d}.{LAB_DOMAIN}",
            "--json",
        ]
        began = time.monotonic()
        proc = netns.popen_in(
            self.clients_ns, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            out, err = proc.communicate(timeout=CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=STOP_GRACE)
            return ClientOutcome(
                index,
                cmid,
                None,
                None,
                self.threshold,
                "error",
                (),
                -1,
                f"no answer within {CLIENT_TIMEOUT:g} s",
                time.monotonic() - began,
            )
        seconds = time.monotonic() - began
        try:
            report = json.loads(out)
        except ValueError:
            raise ScenarioError(
                f"client {index} printed no JSON report (exit {proc.returncode}): "
                f"{err.decode(errors='replace').strip()[-300:]}"
            ) from None
        return outcome_of_report(index, cmid, report, self.threshold, proc.returncode, seconds, self._host_by_address)

    def stop_host(self, index: int) -> None:
        """Kill host ``index`` with SIGKILL: it stops answering at once and, unlike a clean stop,
        leaves its SRV record behind, so clients must fail over.

        Raises:
            UsageError: no such host, or not started.
        """
        host = self.host(index)
        proc = self._procs.get(f"kms{host.index}")
        if proc is None:
            raise UsageError("lab.stop_host() needs a started lab")
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(STOP_GRACE)

    def host_table(self, index: int) -> HostTable:
        """Host ``index``'s client table, read with ``emu host status --state ... --json``.

        Raises:
            ScenarioError: the command failed or printed no JSON.
        """
        host = self.host(index)
        try:
            done = subprocess.run(
                [*_EMU, "host", "status", "--state", str(host.state), "--json"],
                capture_output=True,
                text=True,
                timeout=STATUS_TIMEOUT,
            )
            data = json.loads(done.stdout)
        except (subprocess.TimeoutExpired, ValueError) as exc:
            raise ScenarioError(f"emu host status for {host.name} failed: {exc}") from exc
        return HostTable(host.name, tuple(data.get("applications", [])), dict(data.get("epids", {})))

    # -- teardown ---------------------------------------------------------------------------------

    def close(self, quiet: bool = False) -> None:
        """Stop the capture and every process, delete every namespace and the temporary directory.

        Safe to call twice. Each step runs even when an earlier one fails; unless ``quiet`` the
        first failure is raised afterwards as :class:`ScenarioError`.
        """
        if self._closed:
            return
        self._closed = True
        problems: list[str] = []
        with contextlib.suppress(Exception):
            self._stop_capture()
        # hosts first (they withdraw their records while DNS still runs), then the DNS server
        order = [k for k in self._procs if k != "dns"] + [k for k in self._procs if k == "dns"]
        for key in order:
            proc = self._procs[key]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for key in order:
            reap(self._procs[key])
        for handle in self._logs.values():
            handle.close()
        for ns in reversed(self._namespaces):
            try:
                netns.delete(ns)
            except EmuError as exc:
                problems.append(f"{ns}: {exc}")
        left = [ns for ns in self._namespaces if _exists(ns)]
        if left:
            problems.append(f"namespaces still present: {', '.join(left)} (ip netns del NAME)")
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        owner.release(self.id)
        if problems:
            log.warning("lab teardown: %s", "; ".join(problems))
            if not quiet:
                raise ScenarioError(f"lab teardown incomplete: {'; '.join(problems)}")


def _exists(ns: str) -> bool:
    try:
        return netns.exists(ns)
    except EmuError:
        return False
