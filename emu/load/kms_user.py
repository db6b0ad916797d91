"""emu's KMS client as a Locust user: one emulated machine per user, on Locust's (distributed) engine.

Each user is one client machine: a CMID drawn once when it starts (stable for its life), a workstation
name, one product from ``--kms-products`` (users take them in turn), and a kept-alive TCP connection to
the target (reopened after an error; ``--kms-new-connection`` opens one per exchange, as ``vlmcs -T``).
Every exchange is the real protocol, built and checked by emu's sans-IO layers: bind (NDR32, as Windows
offers it, plus NDR64 and bind-time feature negotiation unless turned off), the activation request of
the product's protocol version, and the response verified with every check emu's client makes.

The outcome of each exchange goes to Locust's statistics as a request of type ``KMS`` named after the
outcome: ``activated``, ``below-threshold``, ``hresult 0x...`` (a refusal: a failure), ``fault 0x...``,
``verification-failed``, ``protocol-error``, ``timeout``, ``connection-error``; the response time is the exchange's.

Without ``--kms-life-cycle`` users send one activation after another (a load test). With it, each user
follows the documented client timers on a scaled clock: after activation it comes back after the renewal
interval the host sent, before activation after the activation (retry) interval, and after a failure
after the 2-hour retry; ``--kms-time-scale S`` makes one real second S virtual seconds (default 3600:
an hour a second, so the 7-day renewal is 168 s). ClientTime in the requests stays the real time, which
the host's clock expects.

This module imports Locust (and so gevent's monkey patching): it is only ever loaded by Locust itself,
through the locustfile that ``emu load`` hands it.
"""

from __future__ import annotations

import itertools
import socket
import time
import uuid
from typing import Any

from locust import User, events, task

from emu.clock import unix_to_filetime
from emu.errors import ProtocolError
from emu.hresults import describe
from emu.kms import products
from emu.kms.client import RequestTemplate
from emu.kms.messages import build_request, verify_response
from emu.rng import system_rng
from emu.rpc.client import BindAccepted, ClientAssociation, FaultReceived, Reply, SendAlterContext
from emu.wire.kms import RequestBase

__all__ = ["DEFAULT_PRODUCTS", "DEFAULT_TIME_SCALE", "FAILURE_RETRY_MINUTES", "KmsClientUser", "Outcome"]

#: Products users take in turn when ``--kms-products`` is not given.
DEFAULT_PRODUCTS = "win10ent"
#: Virtual seconds per real second for ``--kms-life-cycle``.
DEFAULT_TIME_SCALE = 3600.0
#: Minutes a client waits after a failed exchange before it tries again (the documented 2-hour retry).
FAILURE_RETRY_MINUTES = 120
#: Seconds to wait for the host at each step.
TIMEOUT = 5.0

_user_numbers = itertools.count()


def _add_options(parser: Any) -> None:
    """emu's options on Locust's command line (``emu load`` sets them; workers receive them from the master)."""
    parser.add_argument("--kms-products", default=DEFAULT_PRODUCTS, help="comma-separated product names")
    parser.add_argument("--kms-life-cycle", action="store_true", default=False, help="follow renewal/retry timers")
    parser.add_argument("--kms-time-scale", type=float, default=DEFAULT_TIME_SCALE, help="virtual s per real s")
    parser.add_argument("--kms-new-connection", action="store_true", default=False, help="one connection per exchange")
    parser.add_argument("--kms-no-ndr64", action="store_true", default=False, help="offer NDR32 only")


events.init_command_line_parser.add_listener(_add_options)  # type: ignore[no-untyped-call]


class Outcome(Exception):
    """An exchange that did not end in an answer from the host (a Locust failure)."""


class KmsClientUser(User):
    """One emulated KMS client machine (see the module docstring)."""

    #: Locust's pacing between tasks: none; the life cycle paces itself.
    wait_time = staticmethod(lambda: 0.0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        number = next(_user_numbers)
        names = [n.strip() for n in str(opts.kms_products).split(",") if n.strip()]
        self.sku = products.lookup(names[number % len(names)])
        self.cmid = uuid.uuid4()
        self.workstation = f"emu-load-{self.cmid.hex[:8]}.lab.test"
        self.rng = system_rng()
        self.address = _parse_target(str(self.host))
        self.sock: socket.socket | None = None
        self.assoc: ClientAssociation | None = None
        self.life_cycle = bool(opts.kms_life_cycle)
        self.scale = float(opts.kms_time_scale)
        self.new_connection = bool(opts.kms_new_connection)
        self.ndr64 = not bool(opts.kms_no_ndr64)
        self.next_due = time.monotonic()

    def on_stop(self) -> None:
        self._close()

    @task
    def activate(self) -> None:
        if self.life_cycle:
            delay = self.next_due - time.monotonic()
            if delay > 0:
                self._sleep(delay)
                return  # Locust calls the task again; a stop in between is honoured
        started = time.perf_counter()
        outcome, minutes, error = self._exchange()
        elapsed_ms = (time.perf_counter() - started) * 1000
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type="KMS",
            name=outcome,
            response_time=elapsed_ms,
            response_length=0,
            exception=error,
            context={"product": self.sku.name, "cmid": str(self.cmid)},
        )
        if self.life_cycle:
            self.next_due = time.monotonic() + minutes * 60 / self.scale

    # -- one exchange ---------------------------------------------------------------------------------

    def _exchange(self) -> tuple[str, int, Exception | None]:
        """(outcome name, minutes until the next attempt, the failure or None)."""
        try:
            if self.sock is None or self.new_connection:
                self._connect()
            message = build_request(self._base(), self.rng)
            assert self.assoc is not None
            self._send(self.assoc.request(message))
            event = self._wait_for((Reply, FaultReceived))
            if isinstance(event, FaultReceived):
                self._close()
                return f"fault 0x{event.status:08X}", FAILURE_RETRY_MINUTES, Outcome("RPC fault")
            assert isinstance(event, Reply)
            if event.hresult or event.kms_response is None:
                return f"hresult {describe(event.hresult)}", FAILURE_RETRY_MINUTES, Outcome("refused")
            verified = verify_response(message, event.kms_response)
            if not verified.ok or verified.message is None:
                failed = ", ".join(verified.failed)
                return "verification-failed", FAILURE_RETRY_MINUTES, Outcome(f"checks failed: {failed}")
            base = verified.message.base
            if base.count >= self.sku.threshold:
                return "activated", base.renewal_interval, None
            return "below-threshold", base.activation_interval, None
        except TimeoutError:
            self._close()
            return "timeout", FAILURE_RETRY_MINUTES, Outcome("timeout")
        except ProtocolError as exc:  # the host's bytes broke DCE/RPC or KMS: the client gives up on the connection
            self._close()
            return "protocol-error", FAILURE_RETRY_MINUTES, Outcome(str(exc))
        except (OSError, ConnectionError, Outcome) as exc:
            self._close()
            return "connection-error", FAILURE_RETRY_MINUTES, Outcome(str(exc) or type(exc).__name__)
        finally:
            if self.new_connection:
                self._close()

    def _base(self) -> RequestBase:
        return RequestTemplate.of(self.sku, self.workstation).base(self.cmid, unix_to_filetime(time.time()))

    def _connect(self) -> None:
        self._close()
        self.sock = socket.create_connection(self.address, timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.assoc = ClientAssociation(offer_ndr64=self.ndr64, offer_btfn=self.ndr64)
        self._send(self.assoc.bind())
        self._wait_for((BindAccepted,))

    def _send(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.sendall(data)

    def _wait_for(self, kinds: tuple[type, ...]) -> Any:
        assert self.sock is not None and self.assoc is not None
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the host closed the connection")
            for event in self.assoc.receive_data(data):
                if isinstance(event, SendAlterContext):
                    self._send(event.data)
                elif isinstance(event, kinds):
                    return event

    def _close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None
                self.assoc = None

    def _sleep(self, seconds: float) -> None:
        import gevent

        gevent.sleep(min(seconds, 1.0))


def _parse_target(text: str) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` → (host, port); Locust hands the target over as its --host."""
    from emu.net.address import parse_host_port

    return parse_host_port(text.removeprefix("kms://"), 1688)
