"""The KMS client life cycle as a sans-IO state machine (docs/kms-client.md).

A :class:`ClientLifecycle` knows when the client must talk to a host and which host to try; it
never touches a socket. A driver (``emu.net.kms_client``, the scenarios, the tests) asks it what to
do with :meth:`ClientLifecycle.poll`, performs the action (a DNS discovery or one exchange), and
reports the outcome back. Time is always passed in; :meth:`ClientLifecycle.next_deadline` says
when to call again.

States::

    UNLICENSED --(answer, count >= threshold)--> ACTIVATED --(renewal due)--> ACTIVATED ...
        |  ^                                           |
        |  +-- (answer below threshold) -- WAITING     +--(180 days without renewal)--> EXPIRED
        +--(no host answers: retry every 2 hours)
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field

from emu.errors import UsageError
from emu.kms.products import Sku
from emu.wire.kms import LicenseStatus, RequestBase, Version

__all__ = [
    "DAY",
    "DEFAULT_BINDING_EXPIRATION",
    "HOUR",
    "MINUTE",
    "Action",
    "Activated",
    "Answered",
    "AttemptFailed",
    "BelowThreshold",
    "ClientEvent",
    "ClientLifecycle",
    "ClientPolicy",
    "ClientState",
    "Discover",
    "Exchange",
    "ExchangeAttempted",
    "Expired",
    "Failover",
    "HostAddress",
    "HostError",
    "Outcome",
    "Rediscovery",
    "RequestTemplate",
    "Unreachable",
    "VerificationFailed",
]

#: BindingExpiration of a client in its grace period: 30 days in minutes (docs/kms-wire-protocol.md, vlmcs ``-g``).
DEFAULT_BINDING_EXPIRATION = 43200
_ZERO_GUID = uuid.UUID(int=0)

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """The client's timers and host-choice switches (docs/kms-client.md). All seconds.

    Attributes:
        renewal_interval: how often an activated client renews (7 days).
        retry_interval: how soon a client retries after a failure or below threshold (2 hours).
        validity: how long one activation lasts without renewal (180 days).
        obey_host_intervals: use the activation/renewal intervals the host's response carries
            (the documented behaviour) instead of the two above.
        cache_host: remember the host that answered and use it for later renewals (5).
    """

    renewal_interval: float = 7 * DAY
    retry_interval: float = 2 * HOUR
    validity: float = 180 * DAY
    obey_host_intervals: bool = True
    cache_host: bool = True

    def __post_init__(self) -> None:
        for name in ("renewal_interval", "retry_interval", "validity"):
            if getattr(self, name) <= 0:
                raise UsageError(f"client policy {name} must be positive, got {getattr(self, name)}")


class ClientState(enum.Enum):
    """Licence state of the emulated client."""

    UNLICENSED = "unlicensed"  # grace period: never activated (or fell out), trying
    WAITING = "waiting"  # a host answered, but its count is below the threshold
    ACTIVATED = "activated"
    EXPIRED = "expired"  # was activated, 180 days passed without a renewal


@dataclass(frozen=True, slots=True, order=True)
class HostAddress:
    """A KMS host as the client dials it."""

    host: str
    port: int = 1688

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    """The request fields that describe *what* a client is (docs/kms-wire-protocol.md).

    The per-request fields (CMID, ClientTime, and for a life cycle LicenseStatus and
    BindingExpiration) are filled in by :meth:`base` or :meth:`ClientLifecycle.request_base`.
    """

    version: Version
    app_id: uuid.UUID
    sku_id: uuid.UUID
    kms_id: uuid.UUID
    required_client_count: int
    workstation_name: str
    vm: bool = False
    license_status: int = LicenseStatus.OOB_GRACE
    binding_expiration: int = DEFAULT_BINDING_EXPIRATION
    previous_cmid: uuid.UUID = _ZERO_GUID

    @classmethod
    def of(
        cls, sku: Sku, workstation_name: str, *, version: Version | None = None, required: int | None = None
    ) -> RequestTemplate:
        """A client of ``sku``: its protocol version and threshold unless given otherwise."""
        return cls(
            version=version or Version(sku.protocol),
            app_id=sku.app_id,
            sku_id=sku.id,
            kms_id=sku.kms_id,
            required_client_count=sku.threshold if required is None else required,
            workstation_name=workstation_name,
        )

    def base(
        self,
        cmid: uuid.UUID,
        client_time: int,
        *,
        license_status: int | None = None,
        binding_expiration: int | None = None,
    ) -> RequestBase:
        """The request base for one request (``client_time`` is a FILETIME)."""
        return RequestBase(
            version=self.version,
            vm_info=1 if self.vm else 0,
            license_status=LicenseStatus(self.license_status if license_status is None else license_status),
            binding_expiration=self.binding_expiration if binding_expiration is None else binding_expiration,
            app_id=self.app_id,
            sku_id=self.sku_id,
            kms_id=self.kms_id,
            cmid=cmid,
            required_client_count=self.required_client_count,
            client_time=client_time,
            previous_cmid=self.previous_cmid,
            workstation_name=self.workstation_name,
        )


# --- outcomes the driver reports -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answered:
    """The host answered with a response that passed verification."""

    count: int
    activation_interval: int  # minutes, from the response
    renewal_interval: int  # minutes, from the response
    epid: str = ""


@dataclass(frozen=True, slots=True)
class HostError:
    """The host answered with an HRESULT (or a DCE/RPC fault)."""

    hresult: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class VerificationFailed:
    """The host answered, but the response failed the named client-side checks (docs/kms-wire-protocol.md)."""

    failed_checks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unreachable:
    """No answer: connection refused, timed out, reset, or garbage instead of a PDU."""

    reason: str


Outcome = Answered | HostError | VerificationFailed | Unreachable

# --- actions the state machine asks for ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Discover:
    """Look up ``_vlmcs._tcp.<domain>`` and report the hosts, in RFC 2782 order, to :meth:`discovered`."""

    domain: str


@dataclass(frozen=True, slots=True)
class Exchange:
    """Send one activation request to ``host`` and report the outcome to :meth:`exchange_done`."""

    host: HostAddress
    renewal: bool


Action = Discover | Exchange

# --- events for scenarios and tests ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExchangeAttempted:
    at: float
    host: HostAddress
    renewal: bool


@dataclass(frozen=True, slots=True)
class Activated:
    at: float
    host: HostAddress
    count: int
    threshold: int
    valid_until: float
    renewal: bool


@dataclass(frozen=True, slots=True)
class BelowThreshold:
    at: float
    host: HostAddress
    count: int
    threshold: int
    retry_at: float


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    at: float
    reason: str
    retry_at: float


@dataclass(frozen=True, slots=True)
class Failover:
    at: float
    failed: HostAddress
    reason: str
    next_host: HostAddress | None


@dataclass(frozen=True, slots=True)
class Rediscovery:
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Expired:
    at: float


ClientEvent = ExchangeAttempted | Activated | BelowThreshold | AttemptFailed | Failover | Rediscovery | Expired


@dataclass(slots=True)
class _Attempt:
    """One activation attempt in progress: the hosts still to try, in order."""

    candidates: list[HostAddress]
    renewal: bool
    discovered: bool = False
    current: HostAddress | None = None
    last_failure: str = ""


@dataclass(slots=True)
class ClientLifecycle:
    """A KMS client's licence state and timers.

    Args:
        threshold: the client's required count (25 client OS, 5 server OS and Office).
        policy: timers and host-choice switches.
        static_host: a configured KMS host (no DNS); exclusive with ``domain``.
        domain: the DNS domain whose ``_vlmcs._tcp`` SRV records list the hosts.
        now: the time the client starts (it is due at once).
        cmid: the client machine ID, stable for the whole life cycle (a renewal sends the same).
    """

    threshold: int
    now: float
    cmid: uuid.UUID
    policy: ClientPolicy = field(default_factory=ClientPolicy)
    static_host: HostAddress | None = None
    domain: str | None = None
    state: ClientState = ClientState.UNLICENSED
    activated_at: float | None = None
    valid_until: float | None = None
    next_attempt: float | None = None
    cached_host: HostAddress | None = None
    last_count: int | None = None
    events: list[ClientEvent] = field(default_factory=list)
    _attempt: _Attempt | None = None

    def __post_init__(self) -> None:
        if (self.static_host is None) == (self.domain is None):
            raise UsageError("a KMS client needs exactly one of a static host or a DNS domain")
        if self.threshold < 1:
            raise UsageError(f"required client count must be at least 1, got {self.threshold}")
        self.next_attempt = self.now

    # -- timers --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has something to do next (None while an attempt waits on the driver)."""
        if self._attempt is not None:
            return None
        times = [t for t in (self.next_attempt, self._expiry_deadline()) if t is not None]
        return min(times) if times else None

    def _expiry_deadline(self) -> float | None:
        if self.state is ClientState.ACTIVATED and self.valid_until is not None:
            return self.valid_until
        return None

    def _check_expiry(self, now: float) -> None:
        if self.state is ClientState.ACTIVATED and self.valid_until is not None and now >= self.valid_until:
            self.state = ClientState.EXPIRED
            self.events.append(Expired(self.valid_until))

    # -- the driver loop -----------------------------------------------------------------------

    def poll(self, now: float) -> Action | None:
        """What the driver must do now: a discovery, an exchange, or nothing (wait for the deadline)."""
        self._check_expiry(now)
        if self._attempt is None:
            if self.next_attempt is None or now < self.next_attempt:
                return None
            self._attempt = self._start_attempt(now)
        return self._next_action(now)

    def _start_attempt(self, now: float) -> _Attempt:
        renewal = self.state is ClientState.ACTIVATED
        if self.static_host is not None:
            return _Attempt([self.static_host], renewal)
        if self.policy.cache_host and self.cached_host is not None:
            return _Attempt([self.cached_host], renewal)
        return _Attempt([], renewal)

    def _next_action(self, now: float) -> Action | None:
        attempt = self._attempt
        assert attempt is not None
        if attempt.candidates:
            attempt.current = attempt.candidates[0]
            self.events.append(ExchangeAttempted(now, attempt.current, attempt.renewal))
            return Exchange(attempt.current, attempt.renewal)
        if self.domain is not None and not attempt.discovered:
            attempt.discovered = True
            return Discover(self.domain)
        self._fail_attempt(now, attempt.last_failure or "no KMS host found")
        return None

    def discovered(self, hosts: list[HostAddress], now: float) -> Action | None:
        """Report the hosts a :class:`Discover` found, already in RFC 2782 order."""
        attempt = self._require_attempt("discovered")
        attempt.candidates = list(hosts)
        if not hosts:
            attempt.last_failure = f"no _vlmcs._tcp SRV records for {self.domain}"
        return self._next_action(now)

    def exchange_done(self, host: HostAddress, outcome: Outcome, now: float) -> Action | None:
        """Report how the :class:`Exchange` with ``host`` went; returns the next action, if any."""
        attempt = self._require_attempt("exchange_done")
        if attempt.current != host:
            raise UsageError(f"exchange_done for {host}, but the client is talking to {attempt.current}")
        attempt.candidates.pop(0)
        attempt.current = None
        if isinstance(outcome, Answered):
            self._answered(host, outcome, now, attempt.renewal)
            return None
        reason = _describe(outcome)
        attempt.last_failure = f"{host}: {reason}"
        if host == self.cached_host:
            # The cached host failed: forget it and find the hosts again through DNS (5).
            self.cached_host = None
            if self.domain is not None and not attempt.discovered:
                self.events.append(Rediscovery(now, f"cached host {host} failed: {reason}"))
        next_host = attempt.candidates[0] if attempt.candidates else None
        if next_host is not None or (self.domain is not None and not attempt.discovered):
            self.events.append(Failover(now, host, reason, next_host))
        return self._next_action(now)

    def _require_attempt(self, what: str) -> _Attempt:
        if self._attempt is None:
            raise UsageError(f"{what}() called while no activation attempt is in progress")
        return self._attempt

    # -- results -------------------------------------------------------------------------------

    def _interval(self, minutes: int, fallback: float) -> float:
        if self.policy.obey_host_intervals and minutes > 0:
            return minutes * MINUTE
        return fallback

    def _answered(self, host: HostAddress, answer: Answered, now: float, renewal: bool) -> None:
        self._attempt = None
        self.last_count = answer.count
        if self.policy.cache_host:
            self.cached_host = host
        if answer.count >= self.threshold:
            self.state = ClientState.ACTIVATED
            self.activated_at = now
            self.valid_until = now + self.policy.validity
            self.next_attempt = now + self._interval(answer.renewal_interval, self.policy.renewal_interval)
            self.events.append(Activated(now, host, answer.count, self.threshold, self.valid_until, renewal))
        else:
            if self.state is not ClientState.ACTIVATED:
                self.state = ClientState.WAITING
            self.next_attempt = now + self._interval(answer.activation_interval, self.policy.retry_interval)
            self.events.append(BelowThreshold(now, host, answer.count, self.threshold, self.next_attempt))

    def _fail_attempt(self, now: float, reason: str) -> None:
        self._attempt = None
        self.next_attempt = now + self.policy.retry_interval
        self.events.append(AttemptFailed(now, reason, self.next_attempt))

    # -- request fields ------------------------------------------------------------------------

    @property
    def license_status(self) -> int:
        """LicenseStatus for the request (docs/kms-wire-protocol.md): 1 licensed while activated, else 2 (OOB grace)."""
        return 1 if self.state is ClientState.ACTIVATED else 2

    def binding_expiration(self, now: float) -> int:
        """Minutes until the current status expires (docs/kms-wire-protocol.md): remaining validity, or 30 days of grace."""
        if self.state is ClientState.ACTIVATED and self.valid_until is not None:
            return max(0, int((self.valid_until - now) // MINUTE))
        return 43200

    def request_base(self, template: RequestTemplate, client_time: int, now: float) -> RequestBase:
        """The request this client sends now: its CMID, its licence state, ``client_time`` (FILETIME)."""
        return template.base(
            self.cmid,
            client_time,
            license_status=self.license_status,
            binding_expiration=self.binding_expiration(now),
        )

    def drain_events(self) -> list[ClientEvent]:
        """The events since the last call (oldest first)."""
        events, self.events = self.events, []
        return events


def _describe(outcome: Outcome) -> str:
    if isinstance(outcome, HostError):
        return f"host error 0x{outcome.hresult:08X}" + (f" ({outcome.detail})" if outcome.detail else "")
    if isinstance(outcome, VerificationFailed):
        return "response failed verification: " + ", ".join(outcome.failed_checks)
    if isinstance(outcome, Unreachable):
        return f"unreachable ({outcome.reason})"
    return "answered"
