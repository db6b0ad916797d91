"""Fault injection for emu's KMS host: rules that make it misbehave on purpose, to test clients.

A rule is one action and the requests it applies to, written on one line (``--fault``, repeatable; a
``faults = [...]`` list in the host's TOML; a scenario's host):

    ACTION[=VALUE][,product=NAME][,application=NAME][,cmid=GUID][,percent=P]

Actions:

=================== ==========================================================================
``refuse=HRESULT``  answer with that HRESULT instead of a response (e.g. ``refuse=0xC004F074``)
``low-count``       answer, but with a count one below the client's threshold, so it never activates
``drop-after-bind`` close the connection right after the bind_ack (before any request)
``drop-request``    close the connection when a request arrives, without answering
``delay=SECONDS``   answer after this many seconds (e.g. ``delay=2.5``)
``rpc-fault=STATUS`` answer with a DCE/RPC fault of this NCA status (default 0x1C010002)
``corrupt-hash``    V5/V6: the SHA-256 of the salt is wrong; V4: the MAC is wrong
``corrupt-hmac``    V6: the HMAC is wrong (V4/V5: as ``corrupt-hash``)
=================== ==========================================================================

Conditions (all optional; all given must hold): the request's product (any name emu's product matcher
knows; the rule applies to that edition's SKU ID), its application (``Windows``,
``Office 2010``, ``Office 2013+``), its CMID, and ``percent`` (the rule fires for that share of the
requests that match the rest, drawn from the host's random source). ``drop-after-bind`` happens before
any request is seen, so it takes ``percent`` only.

The first rule that matches a request fires; the host counts the client first in every case (the
client did ask), except ``refuse``, ``rpc-fault`` and ``drop-request``, which a real host that fails
this way would not have recorded either. Rules are sans-IO: the server carries out drops and delays.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from emu.errors import UsageError
from emu.kms import products
from emu.rng import Rng

__all__ = ["ACTIONS", "REQUEST_ACTIONS", "FaultPlan", "FaultRule", "parse_fault"]

#: Every action, with whether it takes a value.
ACTIONS: dict[str, bool] = {
    "refuse": True,
    "low-count": False,
    "drop-after-bind": False,
    "drop-request": False,
    "delay": True,
    "rpc-fault": True,
    "corrupt-hash": False,
    "corrupt-hmac": False,
}
#: Actions that apply to an activation request (all but drop-after-bind).
REQUEST_ACTIONS = frozenset(ACTIONS) - {"drop-after-bind"}
#: nca_s_op_rng_error: the default status of ``rpc-fault``.
_DEFAULT_FAULT_STATUS = 0x1C010002
_CONDITIONS = ("product", "application", "cmid", "percent")


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One parsed rule (see the module docstring for the text form)."""

    text: str
    action: str
    hresult: int = 0
    delay: float = 0.0
    status: int = 0
    sku_ids: frozenset[uuid.UUID] | None = None
    app_id: uuid.UUID | None = None
    cmid: uuid.UUID | None = None
    percent: float = 100.0

    def matches(self, app_id: uuid.UUID, sku_id: uuid.UUID, kms_id: uuid.UUID, cmid: uuid.UUID) -> bool:
        """The request's identity meets every condition of the rule (``percent`` aside)."""
        if self.app_id is not None and app_id != self.app_id:
            return False
        if self.cmid is not None and cmid != self.cmid:
            return False
        return self.sku_ids is None or sku_id in self.sku_ids


def _number(text: str, what: str, rule: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"--fault {rule!r}: {what} {text!r} is not a number (e.g. 0xC004F074)") from None


def _application_id(name: str, rule: str) -> uuid.UUID:
    """The AppID of an application named as in emu's product data ("Windows", "Office 2013+"), or its GUID."""
    squash = name.lower().replace(" ", "").replace("+", "")
    for app in products.all_applications():
        if squash in (app.name.lower().replace(" ", "").replace("+", ""), str(app.id)):
            return app.id
    known = ", ".join(a.name for a in products.all_applications())
    raise UsageError(f"--fault {rule!r}: unknown application {name!r}; known: {known}")


def parse_fault(text: str) -> FaultRule:
    """A rule from its text form.

    Raises:
        UsageError: an unknown action or condition, a missing or bad value (the message names it).
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise UsageError("--fault: empty rule; e.g. refuse=0xC004F074,product=win10ent,percent=50")
    action, _, value = parts[0].partition("=")
    action = action.strip().lower()
    if action not in ACTIONS:
        raise UsageError(f"--fault {text!r}: unknown action {action!r}; actions: {', '.join(ACTIONS)}")
    fields: dict[str, object] = {"text": text, "action": action}
    if action == "refuse":
        if not value:
            raise UsageError(f"--fault {text!r}: refuse needs an HRESULT, e.g. refuse=0xC004F074")
        fields["hresult"] = _number(value, "HRESULT", text) & 0xFFFFFFFF
        if fields["hresult"] == 0:
            raise UsageError(f"--fault {text!r}: refuse=0 is success, not a refusal")
    elif action == "delay":
        try:
            fields["delay"] = float(value)
        except ValueError:
            raise UsageError(f"--fault {text!r}: delay needs seconds, e.g. delay=2.5") from None
        if not 0 < float(value) <= 600:
            raise UsageError(f"--fault {text!r}: delay must be between 0 and 600 seconds")
    elif action == "rpc-fault":
        fields["status"] = _number(value, "status", text) if value else _DEFAULT_FAULT_STATUS
    elif value:
        raise UsageError(f"--fault {text!r}: {action} takes no value")
    for part in parts[1:]:
        key, sep, val = part.partition("=")
        key, val = key.strip().lower(), val.strip()
        if not sep or key not in _CONDITIONS or not val:
            raise UsageError(f"--fault {text!r}: {part!r} is not one of {', '.join(c + '=...' for c in _CONDITIONS)}")
        if action == "drop-after-bind" and key != "percent":
            raise UsageError(
                f"--fault {text!r}: drop-after-bind happens before a request is seen; only percent applies"
            )
        if key == "product":
            sku = products.lookup(val)
            fields["sku_ids"] = frozenset({sku.id})
        elif key == "application":
            fields["app_id"] = _application_id(val, text)
        elif key == "cmid":
            try:
                fields["cmid"] = uuid.UUID(val)
            except ValueError:
                raise UsageError(f"--fault {text!r}: cmid {val!r} is not a GUID") from None
        else:
            try:
                percent = float(val.removesuffix("%"))
            except ValueError:
                raise UsageError(f"--fault {text!r}: percent {val!r} is not a number") from None
            if not 0 < percent <= 100:
                raise UsageError(f"--fault {text!r}: percent must be above 0 and at most 100")
            fields["percent"] = percent
    return FaultRule(**fields)  # type: ignore[arg-type]


class FaultPlan:
    """The host's rules, in order; decides which one (if any) fires for a bind or a request."""

    def __init__(self, rules: list[FaultRule], rng: Rng) -> None:
        self.rules = tuple(rules)
        self.rng = rng
        self._bind_rules = tuple(r for r in self.rules if r.action == "drop-after-bind")
        self._request_rules = tuple(r for r in self.rules if r.action in REQUEST_ACTIONS)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def _fires(self, rule: FaultRule) -> bool:
        return rule.percent >= 100 or self.rng.random() * 100 < rule.percent

    def at_bind(self) -> FaultRule | None:
        """The drop-after-bind rule that fires for a new association, if any."""
        for rule in self._bind_rules:
            if self._fires(rule):
                return rule
        return None

    def for_request(self, app_id: uuid.UUID, sku_id: uuid.UUID, kms_id: uuid.UUID, cmid: uuid.UUID) -> FaultRule | None:
        """The first request rule that matches and fires, if any."""
        for rule in self._request_rules:
            if rule.matches(app_id, sku_id, kms_id, cmid) and self._fires(rule):
                return rule
        return None
