"""Linux network namespaces for emu: create, wire with veth pairs, address, run things inside, clean up.

Namespaces and links are made with iproute2 (``ip``, through subprocess: the same commands as the
docs, no forking helper processes as pyroute2's namespace helpers do, docs/howto-run-a-lab.md). Every resource is
a context manager that deletes what it made even when the body fails; deleting a namespace also
removes the veth ends inside it (and their peers).

Checksum and segmentation offloads are turned off on the veths emu creates (docs/howto-run-a-lab.md):
with offloads on, the kernel hands the sniffer frames whose TCP checksum is only a partial sum,
and the pcap would be full of "bad checksum" frames. ``ethtool -K`` is used when installed; without
it the same features are switched off with pyroute2's ethtool ioctl, from a thread that entered the
namespace.

A callable runs inside a namespace in a throwaway thread that ``setns``-es into it (namespaces are
per thread), so sockets it creates stay there; processes are started with ``ip netns exec`` so
they also see the namespace's ``/etc/netns/NAME`` and ``/sys``.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); without it :class:`ScenarioError` says so.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from emu.errors import ScenarioError, UsageError

__all__ = [
    "OFFLOAD_FEATURES",
    "PREFIX",
    "VethLink",
    "add_address",
    "add_bridge",
    "add_veth",
    "attach_to_bridge",
    "batch",
    "create",
    "delete",
    "disable_offloads",
    "exists",
    "namespace",
    "offloads",
    "popen_in",
    "random_name",
    "require_netns_support",
    "run_in",
    "thread_in",
    "veth_link",
]

T = TypeVar("T")

#: Prefix of the names emu gives its namespaces and links (so a cleanup never touches others').
PREFIX = "emu-"
#: Seconds any one ``ip`` command may take.
IP_TIMEOUT = 10.0
#: Seconds a process inside a namespace gets to exit after SIGTERM when the namespace is deleted.
KILL_GRACE = 3.0
#: Features switched off by :func:`disable_offloads`, by their ``ethtool -k`` names.
OFFLOAD_FEATURES = (
    "tx-checksum-ipv4",
    "tx-checksum-ip-generic",
    "tx-checksum-ipv6",
    "tx-checksum-sctp",
    "rx-checksum",
    "tx-tcp-segmentation",
    "tx-tcp6-segmentation",
    "tx-generic-segmentation",
    "rx-gro",
    "tx-udp-segmentation",
)
_MAX_IFNAME = 15  # IFNAMSIZ - 1


def require_netns_support() -> None:
    """Raise :class:`ScenarioError` unless namespaces can be made here (root and ``ip``)."""
    if os.geteuid() != 0:
        raise ScenarioError("network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN): run emu as root")
    if shutil.which("ip") is None:
        raise ScenarioError("network namespaces need iproute2's `ip` (Debian package iproute2)")


def random_name(kind: str = "t") -> str:
    """``emu-<kind>-<6 hex>``: a name no other run will pick."""
    return f"{PREFIX}{kind}-{secrets.token_hex(3)}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except FileNotFoundError as exc:
        raise ScenarioError("iproute2's `ip` is not installed (Debian package iproute2)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ScenarioError(f"`ip {' '.join(args)}` did not finish within {IP_TIMEOUT:g} s") from exc
    if check and done.returncode != 0:
        raise ScenarioError(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done


def add_bridge(ns: str, name: str) -> None:
    """Create a bridge ``name`` inside namespace ``ns`` and bring it up."""
    _check_ifname(name)
    _ip("-n", ns, "link", "add", name, "type", "bridge")
    _ip("-n", ns, "link", "set", name, "up")


def attach_to_bridge(ns: str, ifname: str, bridge: str) -> None:
    """Make interface ``ifname`` (in ``ns``) a port of ``bridge`` (in the same namespace)."""
    _ip("-n", ns, "link", "set", ifname, "master", bridge)


def exists(name: str) -> bool:
    """Whether a named namespace exists (``ip netns list``)."""
    return any(line.split()[0] == name for line in _ip("netns", "list").stdout.splitlines() if line.strip())


def create(name: str) -> None:
    """Create namespace ``name`` with its loopback up.

    Raises:
        UsageError: the name is empty or has a slash or whitespace.
        ScenarioError: not root, or it exists already, or ``ip`` fails.
    """
    if not name or "/" in name or any(c.isspace() for c in name) or name in (".", ".."):
        raise UsageError(f"{name!r} is not a usable namespace name")
    require_netns_support()
    if exists(name):
        raise ScenarioError(f"network namespace {name} exists already (delete it with `ip netns del {name}`)")
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
    except ScenarioError:
        delete(name)
        raise


def _pids_in(name: str) -> list[int]:
    done = _ip("netns", "pids", name, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def delete(name: str) -> None:
    """Stop the processes still running in ``name`` (SIGTERM, then SIGKILL), then delete it.

    Only processes inside this namespace are signalled, each by pid; a namespace that is already
    gone is not an error.
    """
    if not exists(name):
        return
    pids = _pids_in(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while pids and time.monotonic() < deadline:
        pids = _pids_in(name)
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _ip("netns", "del", name, check=False)


@contextlib.contextmanager
def namespace(name: str | None = None) -> Iterator[str]:
    """A new namespace for the ``with`` body (a random ``emu-t-*`` name by default); always deleted."""
    name = name or random_name()
    create(name)
    try:
        yield name
    finally:
        delete(name)


def _check_ifname(name: str) -> None:
    if not name or len(name) > _MAX_IFNAME or "/" in name or any(c.isspace() for c in name):
        raise UsageError(f"{name!r} is not an interface name (1..{_MAX_IFNAME} characters, no '/' or spaces)")


def add_veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair with end ``if_a`` in ``ns_a`` and ``if_b`` in ``ns_b``, both up.

    The pair is created straight into the namespaces, so nothing appears in the root namespace.
    """
    for name in (if_a, if_b):
        _check_ifname(name)
    _ip("link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    _ip("-n", ns_a, "link", "set", if_a, "up")
    _ip("-n", ns_b, "link", "set", if_b, "up")


def add_address(ns: str, ifname: str, cidr: str) -> None:
    """Put ``cidr`` (``10.213.0.1/30``, ``fd00:213::1/64``) on ``ifname`` in ``ns``.

    IPv6 addresses are added with ``nodad`` so they are usable at once.

    Raises:
        UsageError: ``cidr`` is not an interface address.
    """
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise UsageError(f"{cidr!r} is not an address/prefix: {exc}") from None
    extra = ["nodad"] if iface.version == 6 else []
    _ip("-n", ns, "addr", "add", str(iface), "dev", ifname, *extra)


_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    """setns(2) for the calling thread (``os.setns`` exists only from Python 3.12)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise ScenarioError(f"setns into a network namespace failed: {os.strerror(err)}")


def run_in(ns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` in a thread that entered namespace ``ns``; return its result.

    Sockets ``fn`` creates belong to ``ns`` for their whole life. Exceptions propagate.
    """
    path = f"/var/run/netns/{ns}"
    if not os.path.exists(path):
        raise ScenarioError(f"no network namespace {ns} (ip netns list)")
    result: list[T] = []
    error: list[BaseException] = []

    def enter_and_call() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=enter_and_call, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def batch(commands: Sequence[str], ns: str | None = None) -> None:
    """Run many ``ip`` commands in one process (``ip [-n NS] -batch -``): building a 200-namespace lab
    costs a few processes instead of a thousand.

    Raises:
        ScenarioError: ``ip`` is missing, or a command failed (the message names it).
    """
    if not commands:
        return
    argv = ["ip", *(["-n", ns] if ns else []), "-batch", "-"]
    try:
        done = subprocess.run(
            argv, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=IP_TIMEOUT * 4
        )
    except FileNotFoundError as exc:
        raise ScenarioError("iproute2's `ip` is not installed (Debian package iproute2)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ScenarioError(f"`{' '.join(argv)}` did not finish within {IP_TIMEOUT * 4:g} s") from exc
    if done.returncode != 0:
        raise ScenarioError(f"`{' '.join(argv)}` failed: {done.stderr.strip()[-400:] or done.returncode}")


def thread_in(ns: str, target: Callable[[], None], name: str = "") -> threading.Thread:
    """A started daemon thread that enters namespace ``ns`` and runs ``target`` there (its sockets stay in ``ns``).

    An exception in ``target`` is logged by the threading module; ``target`` should report its own.
    """
    path = f"/var/run/netns/{ns}"
    if not os.path.exists(path):
        raise ScenarioError(f"no network namespace {ns} (ip netns list)")

    def enter_and_run() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        target()

    thread = threading.Thread(target=enter_and_run, name=name or f"netns-{ns}", daemon=True)
    thread.start()
    return thread


def popen_in(ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` inside ``ns`` with ``ip netns exec`` (so ``/etc/netns/NS`` applies)."""
    if not exists(ns):
        raise ScenarioError(f"no network namespace {ns} (ip netns list)")
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)


def _pyroute2_ethtool() -> Any:
    """pyroute2's Ethtool (the ``lab`` extra), used where the ethtool program is not installed."""
    try:
        from pyroute2.ethtool import Ethtool
    except ImportError:
        raise ScenarioError(
            "reading or changing offloads needs the ethtool program or pyroute2: apt-get install ethtool, "
            "or pip install 'emu[lab]'"
        ) from None
    return Ethtool()


def _ethtool_features(ifname: str) -> dict[str, bool]:
    tool = _pyroute2_ethtool()
    try:
        features = tool.get_features(ifname)
        for name in OFFLOAD_FEATURES:
            if name in features.features:
                features.features[name].enable = False
        tool.set_features(ifname, features)
        after = tool.get_features(ifname).features
        return {name: bool(after[name].enable) for name in OFFLOAD_FEATURES if name in after}
    finally:
        tool.close()


def offloads(ns: str, ifname: str) -> dict[str, bool]:
    """The offload features of :data:`OFFLOAD_FEATURES` on ``ifname`` in ``ns`` and whether each is on."""

    def read() -> dict[str, bool]:
        tool = _pyroute2_ethtool()
        try:
            now = tool.get_features(ifname).features
            return {name: bool(now[name].enable) for name in OFFLOAD_FEATURES if name in now}
        finally:
            tool.close()

    return run_in(ns, read)


def disable_offloads(ns: str, ifname: str) -> None:
    """Turn checksum and segmentation offloads off on ``ifname`` in ``ns`` (``ethtool -K`` equivalent).

    Raises:
        ScenarioError: a checksum offload is still on afterwards (the driver refuses to change it).
    """
    if shutil.which("ethtool"):
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "ethtool",
                "-K",
                ifname,
                "tx",
                "off",
                "rx",
                "off",
                "tso",
                "off",
                "gso",
                "off",
                "gro",
                "off",
            ],
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT,
        )
        if done.returncode != 0:
            raise ScenarioError(f"ethtool -K {ifname} in {ns} failed: {done.stderr.strip()}")
        state = offloads(ns, ifname)
    else:  # no ethtool binary (Debian package ethtool): the same ioctl through pyroute2
        state = run_in(ns, _ethtool_features, ifname)
    still_on = [name for name, on in state.items() if on and "checksum" in name]
    if still_on:
        raise ScenarioError(
            f"{ifname} in {ns}: cannot turn off {', '.join(still_on)}; captures would carry bad checksums"
        )


@dataclass(frozen=True, slots=True)
class VethLink:
    """Two namespaces joined by a veth pair, with an address at each end.

    Attributes:
        ns_a, ns_b: namespace names.
        if_a, if_b: the veth ends (``if_a`` in ``ns_a``).
        addr_a, addr_b: their addresses (no prefix length).
    """

    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    addr_a: str
    addr_b: str


@contextlib.contextmanager
def veth_link(
    subnet: str = "10.213.0.0/30", *, names: tuple[str, str] | None = None, no_offloads: bool = True
) -> Iterator[VethLink]:
    """Two fresh namespaces joined by a veth pair on ``subnet`` (first two hosts), offloads off.

    Both namespaces (and with them the veths and every process left inside) are deleted on exit,
    also when building fails half way.

    Raises:
        UsageError: ``subnet`` has fewer than two host addresses.
    """
    try:
        net = ipaddress.ip_network(subnet, strict=False)
    except ValueError as exc:
        raise UsageError(f"{subnet!r} is not a network: {exc}") from None
    hosts = _first_two(net)
    ns_a, ns_b = names or (random_name("a"), random_name("b"))
    link = VethLink(ns_a, ns_b, "veth0", "veth1", str(hosts[0]), str(hosts[1]))
    made: list[str] = []
    try:
        for ns in (ns_a, ns_b):
            create(ns)
            made.append(ns)
        add_veth(ns_a, link.if_a, ns_b, link.if_b)
        add_address(ns_a, link.if_a, f"{link.addr_a}/{net.prefixlen}")
        add_address(ns_b, link.if_b, f"{link.addr_b}/{net.prefixlen}")
        if no_offloads:
            disable_offloads(ns_a, link.if_a)
            disable_offloads(ns_b, link.if_b)
        yield link
    finally:
        for ns in reversed(made):
            delete(ns)


def _first_two(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[Any]:
    """The first two host addresses of ``net``."""
    out = []
    for host in net.hosts():
        out.append(host)
        if len(out) == 2:
            return out
    raise UsageError(f"{net} has fewer than two host addresses")
