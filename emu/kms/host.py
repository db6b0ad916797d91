"""The KMS host's decisions as a sans-IO object (docs/kms-host.md; docs/kms-wire-protocol.md).

:meth:`KmsHost.handle_request` takes the bytes of one KMS request message and the time, and returns
the response bytes (or the HRESULT that refuses it), the change it made to the client table (for the
store to commit before the answer goes out) and the fields for the exchange's log line. No sockets,
no clock of its own, no entropy of its own: all are injected.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from emu.clock import filetime_to_unix
from emu.errors import KmsError, UsageError
from emu.hresults import E_INVALID_DATA, E_INVALID_TIMESTAMP, E_KMS_ID_MISMATCH, E_KMS_NOT_ACTIVATED, describe
from emu.kms import epid as _epid
from emu.kms import host_keys, products
from emu.kms.count_cache import CountCache, CountPolicy, Recorded
from emu.kms.faults import FaultPlan, FaultRule
from emu.kms.messages import OpenedRequest, build_response, open_request
from emu.kms.profiles import PROFILES, PYKMS_EPID_BUILDS
from emu.rng import Rng

__all__ = [
    "DEFAULT_ACTIVATION_INTERVAL",
    "DEFAULT_HOST_BUILD",
    "DEFAULT_LCID",
    "DEFAULT_RENEWAL_INTERVAL",
    "E_INVALID_DATA",
    "E_INVALID_TIMESTAMP",
    "E_KMS_ID_MISMATCH",
    "MAX_REQUIRED_CLIENT_COUNT",
    "MAX_TIME_SKEW",
    "HostAnswer",
    "HostConfig",
    "KmsHost",
    "default_kms_ids",
    "resolve_kms_ids",
]

#: Minutes a client not yet activated waits before retrying (docs/kms-host.md: 2 hours).
DEFAULT_ACTIVATION_INTERVAL = 120
#: Minutes between renewals of an activated client (docs/kms-host.md: 7 days).
DEFAULT_RENEWAL_INTERVAL = 10080
#: Largest client clock skew a genuine host accepts when the check is on (docs/kms-wire-protocol.md: 4 hours).
MAX_TIME_SKEW = 4 * 3600.0
#: Largest RequiredClientCount a host accepts (docs/kms-wire-protocol.md: vlmcsd refuses N-policy > 1000).
MAX_REQUIRED_CLIENT_COUNT = 1000
#: Host OS build the ePIDs claim by default (Windows Server 2025, docs/kms-wire-protocol.md platform id 03612).
DEFAULT_HOST_BUILD = 26100
#: LCID in the ePIDs by default (en-US).
DEFAULT_LCID = 1033


#: CSVLKs whose product groups are not in the default coverage: the China Government key is a
#: separate host key (docs/kms-wire-protocol.md), not part of a Windows Server CSVLK.
_NOT_DEFAULT_CSVLKS = frozenset({"WinChinaGov"})


def default_kms_ids() -> frozenset[uuid.UUID]:
    """What the default host key covers: a current Windows Server CSVLK plus the Office CSVLKs.

    That is every volume (non-retail, non-preview) Windows group from Vista to Server 2025 and every
    volume Office group (2010 and 2013+); retail, preview and China Government groups are refused with
    0xC004F042, as vlmcsd ``-K3`` refuses them (docs/kms-wire-protocol.md).
    """
    return frozenset(
        item.id
        for item in products.all_kms_items()
        if not item.retail and not item.preview and item.csvlk not in _NOT_DEFAULT_CSVLKS
    )


def resolve_kms_ids(
    kms_ids: list[str] | tuple[str, ...] = (), product_names: list[str] | tuple[str, ...] = ()
) -> frozenset[uuid.UUID] | None:
    """The coverage set given on a command line or in a config file (``None`` when both are empty).

    Args:
        kms_ids: KMS counted IDs as GUID text (unknown GUIDs are allowed: a lab may invent products).
        product_names: product (SKU) names or SKU GUIDs; each adds the KMS counted ID its clients send.

    Raises:
        UsageError: a text that is not a GUID, or a product name the product data does not know.
    """
    if not kms_ids and not product_names:
        return None
    out: set[uuid.UUID] = set()
    for text in kms_ids:
        try:
            out.add(uuid.UUID(text.strip()))
        except ValueError:
            raise UsageError(f"--kms-id {text!r} is not a GUID (use --product NAME for a product name)") from None
    for name in product_names:
        out.add(products.lookup(name).kms_id)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Every number and switch of the host's behaviour, named as in the docs and the CLI.

    Attributes:
        activation_interval: minutes, sent to clients (VLActivationInterval).
        renewal_interval: minutes, sent to clients (VLRenewalInterval).
        kms_ids: the KMS counted IDs the host key covers; others get 0xC004F042. With host key
            groups these are added to what the groups cover.
        host_key_groups: KMS host key groups installed (docs/kms-host-keys.md), e.g. "Windows Server
            2019", "Office LTSC 2021"; none: the host activates every volume product emu knows.
        host_os: the OS the host runs (default: the newest the Windows key group can be hosted on).
        unpatched: the host OS lacks the updates the required-updates table lists for it.
        host_build: OS build the ePIDs claim (``None``: the host OS's build with key groups, else 26100).
        lcid: language the ePIDs claim.
        hwid: the 8-byte hardware ID sent in V6 responses.
        epids: fixed ePIDs per CSVLK name (overrides generation).
        check_time_skew: refuse clients whose clock is off by more than ``max_time_skew``.
        max_time_skew: seconds (4 hours).
        count_policy: the client table's rules (30-day records, capacity 2 x threshold).
        max_required_count: RequiredClientCount above this is refused with 0x8007000D.
        faults: fault-injection rules (:mod:`emu.kms.faults`), first match wins; none by default.
        key_activated: the host's KMS host key is activated (``emu host serve --csvlk``: by the lab activation
            service, docs/mak.md); False: every request is refused with 0xC004F041, as a real host whose key is
            not activated makes its clients fail.
        profile: ``"emu"`` (default), or ``"vlmcsd"``/``"py-kms"`` to show that implementation's traits
            (:mod:`emu.kms.profiles`): a fixed count of 2 x the threshold, and for py-kms a new ePID in every
            response, V4 answers after 1 s and no answer to an unknown version.
    """

    activation_interval: int = DEFAULT_ACTIVATION_INTERVAL
    renewal_interval: int = DEFAULT_RENEWAL_INTERVAL
    kms_ids: frozenset[uuid.UUID] | None = None
    host_key_groups: tuple[str, ...] = ()
    host_os: str | None = None
    unpatched: bool = False
    host_build: int | None = None
    lcid: int = DEFAULT_LCID
    hwid: bytes = _epid.DEFAULT_HWID
    epids: dict[str, str] = field(default_factory=dict)
    check_time_skew: bool = False
    max_time_skew: float = MAX_TIME_SKEW
    count_policy: CountPolicy = field(default_factory=CountPolicy)
    max_required_count: int = MAX_REQUIRED_CLIENT_COUNT
    faults: tuple[FaultRule, ...] = ()
    profile: str = "emu"
    key_activated: bool = True

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise UsageError(f"profile {self.profile!r}: use one of {', '.join(PROFILES)}")
        if not 0 < self.activation_interval < 2**32 or not 0 < self.renewal_interval < 2**32:
            raise UsageError("activation and renewal intervals are minutes between 1 and 2^32-1")
        if len(self.hwid) != 8:
            raise UsageError(f"HwId must be 8 bytes (16 hex digits), got {len(self.hwid)}")
        if self.host_build is not None:
            _epid.host_build(self.host_build)  # raises UsageError naming the known builds
        if self.host_key_groups or self.host_os or self.unpatched:
            host_keys.host_key_setup(self.host_key_groups, self.host_os, self.unpatched)  # raises UsageError
        if not 1 <= self.lcid <= 0xFFFF:
            raise UsageError(f"LCID {self.lcid} is not a Windows language id (1-65535)")
        for name, text in self.epids.items():
            _epid.csvlk(name)  # raises UsageError naming the known CSVLKs
            if not _epid.parse_epid(text).well_formed or len(text) > 63:
                raise UsageError(
                    f"ePID {text!r} for {name} is not in the PPPPP-GGGGG-KKK-KKKKKK-03-LLLL-BBBB.0000-DDDYYYY format"
                )
        if self.max_time_skew <= 0 or self.max_required_count < 1:
            raise UsageError("max_time_skew must be positive seconds and max_required_count at least 1")


@dataclass(frozen=True, slots=True)
class HostAnswer:
    """What the host decided for one request.

    Attributes:
        response: the KMS response message, or None when refused.
        hresult: 0, or the HRESULT that goes into the response stub.
        change: the table change to commit before answering (None when nothing changed).
        request: the decoded request (None when it could not be read).
        count: the count sent (0 when refused).
        reason: why the request was refused ("" when answered).
        fault: answer with a DCE/RPC fault of this NCA status instead of a response (docs/kms-wire-protocol.md);
            None for a response. :class:`KmsHost` faults only when a fault-injection rule says so (its
            other faults come from the RPC layer); a recorded host replays the faults it was captured sending.
        drop: close the connection instead of answering (fault injection).
        delay: seconds to hold the answer back (fault injection).
        injected: the fault-injection rule that shaped this answer ("" when none did).
    """

    response: bytes | None
    hresult: int
    change: Recorded | None
    request: OpenedRequest | None
    count: int = 0
    epid: str = ""
    reason: str = ""
    fault: int | None = None
    drop: bool = False
    delay: float = 0.0
    injected: str = ""

    @property
    def ok(self) -> bool:
        """The request was answered with a count (whatever the count)."""
        return self.hresult == 0 and self.fault is None

    @property
    def activated(self) -> bool:
        """The count sent meets the client's own threshold, so the client activates."""
        return self.ok and self.request is not None and self.count >= self.request.base.required_client_count

    def log_fields(self) -> dict[str, Any]:
        """The fields of the exchange's log line (peer is added by the server)."""
        fields: dict[str, Any] = {}
        if self.request is not None:
            base = self.request.base
            fields["version"] = f"{self.request.version.major}.{self.request.version.minor}"
            fields["product"] = products.describe_kms_id(base.kms_id, base.sku_id)
            fields["cmid"] = str(base.cmid)
            fields["workstation"] = base.workstation_name
            fields["required"] = base.required_client_count
        fields["count"] = self.count
        if self.activated:
            fields["result"] = "activated"
        elif self.ok:
            fields["result"] = "below-threshold"
        elif self.fault is not None:
            fields["result"] = f"fault 0x{self.fault:08X}"
        else:
            fields["result"] = describe(self.hresult)
        if self.reason:
            fields["reason"] = self.reason
        if self.injected:
            fields["fault_injected"] = self.injected
        return fields


class KmsHost:
    """A KMS host: validates requests, counts clients, builds responses.

    The ePIDs of every CSVLK the covered products need are settled when the host is made (given
    ones first, then restored ones, then generated), so a store can save them once at start and a
    restarted host answers with the same ePIDs: the host's lifetime is its state's lifetime.

    Args:
        config: behaviour settings.
        rng: randomness for IVs, salts and generated ePIDs.
        started: UTC Unix seconds the host came up (dates its generated ePIDs).
        cache: a restored client table (from the store); a fresh one by default.
        epids: ePIDs restored from the store, per CSVLK name.
    """

    def __init__(
        self,
        config: HostConfig,
        rng: Rng,
        started: float,
        cache: CountCache | None = None,
        epids: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.rng = rng
        #: why an uncovered KMS ID is refused, where the key groups say more than "not covered".
        self.refusals: dict[uuid.UUID, str] = {}
        self._csvlk_by_kms_id: dict[uuid.UUID, str] = {}
        build = config.host_build
        if config.host_key_groups or config.host_os or config.unpatched:
            setup = host_keys.host_key_setup(config.host_key_groups, config.host_os, config.unpatched)
            self.kms_ids = setup.kms_ids | (config.kms_ids or frozenset())
            self.refusals = dict(setup.refusals)
            self._csvlk_by_kms_id = dict(setup.csvlk_by_kms_id)
            build = build if build is not None else setup.host_build
        else:
            self.kms_ids = config.kms_ids if config.kms_ids is not None else default_kms_ids()
        #: the OS build the ePIDs claim.
        self.host_build = build if build is not None else DEFAULT_HOST_BUILD
        self.cache = cache if cache is not None else CountCache(config.count_policy)
        #: fault-injection rules (docs/operations.md, "Fault injection"); empty: a well-behaved host.
        self.faults = FaultPlan(list(config.faults), rng)
        self._today = _dt.datetime.fromtimestamp(started, _dt.UTC).date()
        #: ePID per CSVLK, stable for the host's lifetime (docs/kms-wire-protocol.md "-r1"); configured ones win.
        self.epids: dict[str, str] = {}
        self.epids.update(dict(epids or {}))
        self.epids.update(config.epids)
        for kms_id in sorted(self.kms_ids):
            self.epid_for(kms_id)
        newest = max((rec.last_request for rec in self.cache.records()), default=started)
        self._latest = max(started, newest)

    def next_deadline(self) -> float | None:
        """When the next client record expires unless renewed (``None``: the table is empty)."""
        return self.cache.next_expiry()

    def _monotonic(self, now: float) -> float:
        """The table never sees time go backwards: a wall clock that steps back is held still."""
        if now > self._latest:
            self._latest = now
        return self._latest

    def epid_for(self, kms_id: uuid.UUID) -> str:
        """The ePID this host sends for a KMS counted ID (one per CSVLK, generated once)."""
        group_csvlk = self._csvlk_by_kms_id.get(kms_id)
        csvlk = _epid.csvlk(group_csvlk) if group_csvlk else _epid.csvlk_for_kms_id(kms_id)
        name = csvlk.name
        existing = self.epids.get(name)
        if existing is None:
            existing = _epid.generate_epid(csvlk, self.host_build, self.config.lcid, self.rng, self._today)
            self.epids[name] = existing
        return existing

    def handle_request(self, kms_request: bytes, now: float) -> HostAnswer:
        """Answer one KMS request message at UTC time ``now`` (Unix seconds)."""
        try:
            request = open_request(kms_request)
        except KmsError as exc:
            if self.config.profile == "py-kms":  # py-kms fails on what it cannot read and closes
                return HostAnswer(None, E_INVALID_DATA, None, None, reason=str(exc), drop=True)
            return HostAnswer(None, exc.wire_code or E_INVALID_DATA, None, None, reason=str(exc))
        base = request.base
        refusal = self._refusal(request, now)
        if refusal is not None:
            hresult, reason = refusal
            return HostAnswer(None, hresult, None, request, reason=reason)
        rule = self.faults.for_request(base.app_id, base.sku_id, base.kms_id, base.cmid) if self.faults else None
        if rule is not None and rule.action in ("refuse", "rpc-fault", "drop-request"):
            return HostAnswer(
                None,
                rule.hresult,
                None,
                request,
                reason=f"fault injected: {rule.text}",
                fault=rule.status if rule.action == "rpc-fault" else None,
                drop=rule.action == "drop-request",
                injected=rule.text,
            )
        recorded = self.cache.record(base.app_id, base.cmid, base.required_client_count, self._monotonic(now))
        epid = self.epid_for(base.kms_id)
        count = recorded.count
        delay = 0.0
        if self.config.profile != "emu":  # an emulator's fixed answer: 2 x the client's threshold
            count = max(2 * base.required_client_count, 1)
        if self.config.profile == "py-kms":
            build = self.rng.choice(PYKMS_EPID_BUILDS)
            epid = _epid.generate_epid(
                _epid.csvlk_for_kms_id(base.kms_id), build, self.config.lcid, self.rng, self._today
            )
            delay = 1.0 if request.version.major == 4 else 0.0
        if rule is not None and rule.action == "low-count":
            count = min(count, max(base.required_client_count - 1, 0))
        tamper = (
            rule.action.removeprefix("corrupt-") if rule is not None and rule.action.startswith("corrupt-") else None
        )
        response = build_response(
            request,
            epid=epid,
            count=count,
            activation_interval=self.config.activation_interval,
            renewal_interval=self.config.renewal_interval,
            hwid=self.config.hwid,
            rng=self.rng,
            tamper=tamper,
        )
        if rule is None:
            return HostAnswer(response, 0, recorded, request, count=count, epid=epid, delay=delay)
        delay = rule.delay if rule.action == "delay" else delay
        return HostAnswer(response, 0, recorded, request, count=count, epid=epid, delay=delay, injected=rule.text)

    def _refusal(self, request: OpenedRequest, now: float) -> tuple[int, str] | None:
        base = request.base
        if not self.config.key_activated:
            return E_KMS_NOT_ACTIVATED, "this host's KMS host key is not activated (emu host serve --csvlk)"
        # py-kms answers any threshold; vlmcsd and emu refuse one above 1000
        if base.required_client_count > self.config.max_required_count and self.config.profile != "py-kms":
            return (
                E_INVALID_DATA,
                f"required client count {base.required_client_count} > {self.config.max_required_count}",
            )
        if base.kms_id not in self.kms_ids:
            why = self.refusals.get(base.kms_id)
            if why is None and self.config.host_key_groups:
                names = ", ".join(self.config.host_key_groups)
                why = f"not activated by host key group {names} (docs/kms-host-keys.md)"
            return E_KMS_ID_MISMATCH, f"KMS ID {base.kms_id} is not covered by this host's key" + (
                f": {why}" if why else ""
            )
        item = products.kms_item_or_none(base.kms_id)
        if item is not None and item.app_id != base.app_id:
            return E_KMS_ID_MISMATCH, f"application {base.app_id} does not match KMS ID {base.kms_id}"
        if self.config.check_time_skew:
            skew = filetime_to_unix(base.client_time) - now
            if abs(skew) > self.config.max_time_skew:
                return E_INVALID_TIMESTAMP, f"client clock off by {skew / 3600:+.1f} h"
        return None
