"""Fuzz the KMS host over real loopback sockets (bounded): hostile bytes cost only their connection.

One server runs in a background thread for the module; each hypothesis example opens its own TCP
connection, sends random or mutated bytes, and reads until the host answers-and-waits or closes
(bounded by a short timeout). Afterwards a well-behaved client is still served, and the host logged
no internal error.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kms_host_peer import kms_request, running_host, session

from emu.rng import seeded
from emu.rpc.client import ClientAssociation, Reply

#: Examples per fuzz test, and the read timeout per example (seconds): bounded in count and time.
EXAMPLES = 60
READ_TIMEOUT = 0.3


class _HostThread:
    """A KmsServer on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop_event: asyncio.Event | None = None
        self.server = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("fuzz host did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_event = asyncio.Event()
            async with running_host(idle_timeout=2.0) as server:
                self.server = server
                self.ready.set()
                await self.stop_event.wait()

        self.loop.run_until_complete(main())

    @property
    def addr(self) -> tuple[str, int]:
        return self.server.addresses[0]  # type: ignore[union-attr]

    def close(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


@pytest.fixture(scope="module")
def host():
    h = _HostThread()
    yield h
    h.close()


def _valid_stream() -> bytes:
    rng = seeded(21)
    client = ClientAssociation(offer_ndr64=True, offer_btfn=True)
    bind = client.bind()
    # Answer the bind locally so the client can build a request on NDR64's context as well.
    from emu.rpc.association import ServerAssociation
    from emu.rpc.client import SendAlterContext

    local = ServerAssociation()
    stream = bind
    pending = [bind]
    while pending:  # bind, and the alter_context NDR32 needs when NDR64 wins (spec 2.5)
        for action in local.receive_data(pending.pop()):
            for event in client.receive_data(action.data):  # type: ignore[union-attr]
                if isinstance(event, SendAlterContext):
                    stream += event.data
                    pending.append(event.data)
    return stream + client.request(kms_request(rng, major=6)) + client.request(kms_request(rng, major=6))


VALID = _valid_stream()


def _poke(addr: tuple[str, int], data: bytes) -> None:
    """Send ``data`` on a fresh connection and read until the host closes it or goes quiet.

    A reset or a read timeout is an acceptable end (the host may drop a hostile peer or wait for
    more); any other failure propagates and fails the example."""
    with socket.create_connection(addr, timeout=2) as sock:
        sock.settimeout(READ_TIMEOUT)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # the host answers what it has, then closes on EOF
            deadline = time.monotonic() + READ_TIMEOUT * 3
            while time.monotonic() < deadline:
                if not sock.recv(65536):
                    return  # the host closed it
        except (TimeoutError, ConnectionResetError, BrokenPipeError):
            return


def _still_serves(host: _HostThread) -> None:
    """A well-behaved client gets a valid answer right after the hostile input."""
    rng = seeded(23)
    future = asyncio.run_coroutine_threadsafe(session(host.addr, [kms_request(rng)]), host.loop)
    (reply,) = future.result(10)
    assert isinstance(reply, Reply) and reply.hresult == 0, reply
    assert host.server is not None and host.server.stats.internal_errors == 0


_FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@_FUZZ_SETTINGS
@given(data=st.binary(min_size=1, max_size=600))
def test_random_bytes_cost_only_their_connection(host, data):
    _poke(host.addr, data)
    _still_serves(host)


@_FUZZ_SETTINGS
@given(
    flips=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=6),
    cut=st.integers(1, len(VALID)),
)
def test_mutated_client_streams_cost_only_their_connection(host, flips, cut):
    data = bytearray(VALID)
    for index, xor in flips:
        data[index] ^= xor
    _poke(host.addr, bytes(data[:cut]))
    _still_serves(host)


def test_after_the_fuzzing_the_host_still_serves_and_had_no_internal_error(host):
    # Runs after the fuzz tests in file order (and alone, it checks a fresh host the same way).
    message = kms_request(seeded(22))
    future = asyncio.run_coroutine_threadsafe(session(host.addr, [message]), host.loop)
    (reply,) = future.result(10)
    assert isinstance(reply, Reply) and reply.hresult == 0
    assert host.server.stats.internal_errors == 0
