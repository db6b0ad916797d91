"""The client's ADBA step, sans-IO over :class:`emu.adba.ops.LdapOps` (docs/adba.md "The client").

Documented: bind, read the rootDSE's configurationNamingContext, look in the Activation Objects
container, verify the object's licence, activate for 180 days, retry every 7 days, at restart and at
expiry; no object or no DC -> fall back to KMS. Inferred: the match is "the client's KMS counted ID is
one of msSPP-KMSIds". emu-defined: the exact request (one-level search with
``(&(objectClass=msSPP-ActivationObject)(msSPP-KMSIds=<ID>))``) and the licence format.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from emu.adba.admin import READ_ATTRIBUTES, ActivationObject
from emu.adba.forest import container_dn
from emu.adba.licence import LicenceError, verify_licence
from emu.adba.ops import LdapOps
from emu.ldap import messages as m

__all__ = ["RENEWAL", "VALIDITY", "AdbaResult", "AdbaState", "Check", "adba_attempt", "kms_id_filter"]

DAY = 86400.0
VALIDITY = 180 * DAY
RENEWAL = 7 * DAY
AO_NOT_FOUND = 0xC004F081
DC_NOT_FOUND = 0x8007054B  # ERROR_NO_SUCH_DOMAIN


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class AdbaResult:
    """One ADBA attempt: ``activated`` or not; ``fallback`` True means "go on to KMS"."""

    activated: bool
    checks: tuple[Check, ...]
    hresult: int = 0
    activation_object: ActivationObject | None = None
    valid_until: float | None = None

    @property
    def fallback(self) -> bool:
        return not self.activated

    def as_dict(self) -> dict[str, object]:
        return {
            "path": "adba",
            "activated": self.activated,
            "hresult": f"0x{self.hresult:08X}",
            "object": self.activation_object.dn if self.activation_object else None,
            "valid_until": self.valid_until,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }


def kms_id_filter(kms_id: uuid.UUID) -> m.FilterT:
    """The search filter for objects enabling ``kms_id`` (binary equality on bytes_le)."""
    return m.And((m.Equality("objectClass", b"msSPP-ActivationObject"), m.Equality("msSPP-KMSIds", kms_id.bytes_le)))


def adba_attempt(
    ops: LdapOps, *, kms_id: uuid.UUID, forest: str, now: float, bind_name: str = "", password: str = ""
) -> AdbaResult:
    """Bind, read the rootDSE, search the container, verify the licence; never raises for directory answers."""
    checks: list[Check] = []

    def fail(name: str, detail: str, hresult: int = AO_NOT_FOUND) -> AdbaResult:
        checks.append(Check(name, False, detail))
        return AdbaResult(False, tuple(checks), hresult)

    result = ops.bind(bind_name, password)
    if result.code != 0:
        return fail("bind", f"result {result.code} {result.message}".strip())
    checks.append(Check("bind", True, bind_name or "anonymous"))
    entries, result = ops.search(m.SearchRequest("", 0, m.Present("objectClass"), ("configurationNamingContext",)))
    if result.code != 0 or not entries or not entries[0].get("configurationNamingContext"):
        return fail("rootdse", f"no configurationNamingContext (result {result.code})")
    config_nc = entries[0].get("configurationNamingContext")[0].decode("utf-8", "replace")
    checks.append(Check("rootdse", True, config_nc))
    container = container_dn(config_nc)
    entries, result = ops.search(m.SearchRequest(container, 1, kms_id_filter(kms_id), READ_ATTRIBUTES))
    if result.code != 0:
        return fail("search", f"{container}: result {result.code} {result.message}".strip())
    checks.append(Check("search", True, f"{len(entries)} object(s) for KMS ID {kms_id}"))
    if not entries:
        return fail("object", f"no activation object lists KMS ID {kms_id}")
    problems: list[str] = []
    for entry in entries:
        ao = ActivationObject.from_entry(entry)
        if kms_id not in ao.kms_ids:
            problems.append(f"{ao.dn}: KMS ID not in msSPP-KMSIds")
            continue
        blob = ao.licences.get("Online") or ao.licences.get("Phone")
        if blob is None:
            problems.append(f"{ao.dn}: no online or phone licence")
            continue
        try:
            lic = verify_licence(blob)
        except LicenceError as exc:
            problems.append(f"{ao.dn}: {exc}")
            continue
        if kms_id not in lic.kms_ids or lic.forest.lower() != forest.lower() or lic.sku_id != ao.sku_id:
            problems.append(f"{ao.dn}: licence issued for another forest, SKU or KMS ID")
            continue
        checks.append(Check("object", True, ao.dn))
        checks.append(Check("licence", True, f"emu-licence/1 {lic.kind}, forest {lic.forest}"))
        return AdbaResult(True, tuple(checks), 0, ao, now + VALIDITY)
    checks.append(Check("object", True, f"{len(entries)} candidate(s)"))
    return fail("licence", "; ".join(problems))


@dataclass
class AdbaState:
    """A client's ADBA activation over time: valid 180 days from the last success, a retry every 7 days,
    and at each restart; leaving the domain makes it unactivated at the next restart (documented)."""

    activated_until: float | None = None
    next_attempt: float = 0.0
    domain_member: bool = True
    history: list[str] = field(default_factory=list)

    def activated(self, now: float) -> bool:
        return self.domain_member and self.activated_until is not None and now < self.activated_until

    def due(self, now: float) -> bool:
        """Whether an ADBA attempt is due (reactivation interval reached, or expired)."""
        return self.domain_member and now >= self.next_attempt

    def record(self, result: AdbaResult, now: float) -> None:
        self.next_attempt = now + RENEWAL
        if result.activated:
            self.activated_until = result.valid_until
            self.history.append(f"{now:.0f} adba activated until {result.valid_until:.0f}")
        else:
            self.history.append(f"{now:.0f} adba failed 0x{result.hresult:08X}")

    def restart(self, now: float, *, domain_member: bool) -> None:
        """An (emulated) restart: attempt at once; leaving the domain drops the ADBA activation."""
        self.domain_member = domain_member
        self.next_attempt = now
        if not domain_member:
            self.activated_until = None
            self.history.append(f"{now:.0f} left the domain: not activated")
