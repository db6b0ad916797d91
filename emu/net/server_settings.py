"""The KMS server's settings and the interfaces it works with: what it listens on, how long it waits, what
it counts, and what it needs of a host, a store and a service. :mod:`emu.net.kms_server` runs them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from emu.errors import UsageError
from emu.kms.count_cache import Recorded
from emu.kms.host import HostAnswer
from emu.net.address import parse_host_port
from emu.net.host_store import ClientSeen

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_PORT",
    "SHUTDOWN_GRACE",
    "SUMMARY_INTERVAL",
    "ActivationHandler",
    "ServerConfig",
    "ServerStats",
    "Service",
    "Store",
    "parse_listen",
]

#: TCP port of KMS (docs/kms-wire-protocol.md 1.1).
DEFAULT_PORT = 1688
#: Seconds a connection may stay silent before the host closes it (vlmcsd's default, docs/kms-wire-protocol.md 8.5).
DEFAULT_IDLE_TIMEOUT = 30.0
#: Connections served at once; further ones are accepted, logged and closed at once.
DEFAULT_MAX_CONNECTIONS = 1024
#: Seconds :meth:`KmsServer.stop` waits for open connections to flush their last answers.
SHUTDOWN_GRACE = 2.0
#: Seconds between two summary log lines (exchanges, activations, refusals) when exchanges are not logged one by one.
SUMMARY_INTERVAL = 60.0


def parse_listen(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """A ``--listen`` value → (host, port); ``:PORT`` listens on every IPv4 address.

    Raises:
        UsageError: the text is not an address and port.
    """
    return parse_host_port(text, default_port, default_host="0.0.0.0")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Socket-level settings of the host (the KMS rules are in :class:`emu.kms.host.HostConfig`).

    Attributes:
        listen: (address, port) pairs; IPv6 addresses are bound IPv6-only.
        idle_timeout: seconds of silence after which a connection is closed (0: never).
        max_connections: connections served at once; more are closed on arrival.
        ndr64: negotiate NDR64 when offered (docs/kms-wire-protocol.md 2.5).
        btfn: answer Bind Time Feature Negotiation (docs/kms-wire-protocol.md 2.5).
        json_log: write each exchange's log line as one JSON object.
        log_exchanges: log one line per exchange (peer, product, CMID, count, result). Off by default:
            formatting a record per exchange costs about a sixth of the host's time under load; a summary
            line every :data:`SUMMARY_INTERVAL` seconds says how many exchanges there were instead.
        reuse_port: bind with ``SO_REUSEPORT`` so worker processes share the port (:mod:`emu.net.host_runner`).
        worker: this process's worker index (``--workers``), named in exchange log lines.
    """

    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", DEFAULT_PORT),)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    ndr64: bool = True
    btfn: bool = True
    json_log: bool = False
    log_exchanges: bool = False
    reuse_port: bool = False
    worker: int | None = None

    def __post_init__(self) -> None:
        if self.idle_timeout < 0:
            raise UsageError(f"idle timeout must be 0 (none) or positive seconds, not {self.idle_timeout}")
        if self.max_connections < 1:
            raise UsageError(f"max connections must be at least 1, not {self.max_connections}")
        if not self.listen:
            raise UsageError("the host needs at least one listen address")


@dataclass
class ServerStats:
    """Counters of what the server did since it started (tests, status, benchmarks)."""

    connections: int = 0
    exchanges: int = 0
    refusals: int = 0
    faults: int = 0
    closed_bad_input: int = 0
    refused_connections: int = 0
    idle_closed: int = 0
    internal_errors: int = 0
    commits: int = 0


class ActivationHandler(Protocol):
    """What the server needs of a host: :class:`emu.kms.host.KmsHost`, or a recorded host
    (:class:`emu.pcap.replay_server.CapturedHost`) answering with captured responses.

    The :class:`HostAnswer` is a response, an HRESULT error stub, or (``answer.fault`` set) a
    DCE/RPC fault with that status, which the server has the connection's association build."""

    def handle_request(self, kms_request: bytes, now: float) -> HostAnswer: ...


class Store(Protocol):
    """What the server needs of a store (:class:`emu.net.host_store.HostStore`): batches under a write lock."""

    def begin_batch(self) -> bool: ...

    def write_changes(self, changes: list[Recorded], seen: list[ClientSeen]) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class Service(Protocol):
    """Something started once the host listens and stopped before it closes (DNS publishing)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
