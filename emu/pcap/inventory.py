"""The activation inventory of a capture (``emu decode --summary``): hosts, clients, outcomes.

An operator's questions about a capture of their network: which KMS hosts answered (address, port,
the ePIDs and HwIds they sent), which clients asked for what (per application: CMID, workstation,
product, the count the host returned, whether that count reached the product's threshold so the
client activates) and how the exchanges ended. Built from the records of
:func:`emu.pcap.decode.iter_records` as they stream by; memory grows with distinct hosts and
clients, not with exchanges.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from emu.pcap.kms_records import CLIENT_TO_SERVER, DecodedPdu, KmsRequestInfo

__all__ = ["ClientEntry", "HostEntry", "Inventory"]


@dataclass(slots=True)
class HostEntry:
    """One KMS host seen answering: its endpoint and what identified it."""

    address: str
    epids: set[str] = field(default_factory=set)
    hwids: set[str] = field(default_factory=set)
    exchanges: int = 0


@dataclass(slots=True)
class ClientEntry:
    """One client (CMID) of one application: what it asked for and the last answer it got."""

    application: str
    cmid: str
    workstation: str = ""
    product: str = ""
    address: str = ""
    requests: int = 0
    count: int | None = None
    required: int | None = None
    activated: bool = False
    last_outcome: str = ""


@dataclass(slots=True)
class Inventory:
    """Accumulates :class:`DecodedPdu` records of a capture into hosts, clients and outcomes."""

    hosts: dict[str, HostEntry] = field(default_factory=dict)
    clients: dict[tuple[str, str], ClientEntry] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    _pending: dict[tuple[int, int | None], KmsRequestInfo] = field(default_factory=dict)

    def add(self, record: Any) -> None:
        """Take one record of the decode stream (anything but a KMS PDU is ignored)."""
        if not isinstance(record, DecodedPdu):
            return
        key = (record.conversation, record.call_id)
        if record.direction == CLIENT_TO_SERVER:
            if record.request is not None and record.request.cmid is not None:
                self._pending[key] = record.request
                self._client(record.request, record.src).requests += 1
            return
        if record.ptype not in ("response", "fault"):
            return
        request = self._pending.pop(key, None)
        host = self.hosts.get(record.src)
        if host is None:
            host = self.hosts[record.src] = HostEntry(record.src)
        host.exchanges += 1
        outcome = _outcome(record)
        self.outcomes[outcome] += 1
        resp = record.response
        if resp is not None and resp.epid is not None:
            host.epids.add(resp.epid)
            if resp.hwid:
                host.hwids.add(resp.hwid)
        if request is None:
            return
        client = self._client(request, record.dst)
        client.last_outcome = outcome
        if resp is not None and resp.count is not None:
            client.count = resp.count
            client.required = request.required_client_count
            client.activated = bool(
                resp.hresult == 0 and resp.verified is not False and resp.count >= (request.required_client_count or 0)
            )

    def _client(self, request: KmsRequestInfo, address: str) -> ClientEntry:
        app = request.application or request.app_id or "?"
        key = (app, request.cmid or "?")
        entry = self.clients.get(key)
        if entry is None:
            entry = self.clients[key] = ClientEntry(app, request.cmid or "?")
        entry.workstation = request.workstation or entry.workstation
        entry.product = request.product or request.sku_name or entry.product
        entry.address = address.rsplit(":", 1)[0]
        return entry

    # --- output -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The ``"inventory"`` record of ``emu decode --summary --json``."""
        return {
            "record": "inventory",
            "hosts": [
                {"address": h.address, "epids": sorted(h.epids), "hwids": sorted(h.hwids), "exchanges": h.exchanges}
                for h in sorted(self.hosts.values(), key=lambda h: h.address)
            ],
            "applications": {
                app: [_client_json(c) for c in clients] for app, clients in sorted(self._by_application().items())
            },
            "outcomes": dict(self.outcomes.most_common()),
        }

    def _by_application(self) -> dict[str, list[ClientEntry]]:
        out: dict[str, list[ClientEntry]] = {}
        for entry in sorted(self.clients.values(), key=lambda c: (c.application, c.workstation, c.cmid)):
            out.setdefault(entry.application, []).append(entry)
        return out

    def table(self) -> str:
        """Readable tables: hosts, then clients per application, then outcomes."""
        lines = ["KMS hosts:"]
        for h in sorted(self.hosts.values(), key=lambda h: h.address):
            lines.append(f"  {h.address}  {h.exchanges} exchange(s)")
            lines += [f"    ePID {e}" for e in sorted(h.epids)]
            lines += [f"    HwId {w}" for w in sorted(h.hwids)]
        if not self.hosts:
            lines.append("  (none answered)")
        for app, clients in sorted(self._by_application().items()):
            activated = sum(1 for c in clients if c.activated)
            lines.append(f"{app}: {len(clients)} client(s), {activated} activated")
            lines.append(f"  {'CMID':36}  {'workstation':24}  {'req':>4}  {'count':>5}  {'N':>3}  activated  product")
            for c in clients:
                count = "-" if c.count is None else str(c.count)
                required = "-" if c.required is None else str(c.required)
                lines.append(
                    f"  {c.cmid:36}  {c.workstation[:24]:24}  {c.requests:>4}  {count:>5}  {required:>3}  "
                    f"{'yes' if c.activated else 'no':9}  {c.product}"
                )
        lines.append("outcomes:")
        lines += [f"  {n:>6}  {name}" for name, n in self.outcomes.most_common()] or ["  (no exchange)"]
        return "\n".join(lines)

    def csv(self) -> str:
        """One CSV row per client (application, CMID, workstation, address, product, requests, count,
        required, activated, last outcome)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(
            [
                "application",
                "cmid",
                "workstation",
                "address",
                "product",
                "requests",
                "count",
                "required",
                "activated",
                "last_outcome",
            ]
        )
        for app, clients in sorted(self._by_application().items()):
            for c in clients:
                writer.writerow(
                    [
                        app,
                        c.cmid,
                        c.workstation,
                        c.address,
                        c.product,
                        c.requests,
                        "" if c.count is None else c.count,
                        "" if c.required is None else c.required,
                        "yes" if c.activated else "no",
                        c.last_outcome,
                    ]
                )
        return buf.getvalue()


def _outcome(record: DecodedPdu) -> str:
    if record.ptype == "fault":
        return f"fault 0x{record.fault_status or 0:08X} {record.fault_name or ''}".strip()
    resp = record.response
    if resp is None:
        return f"undecoded response: {record.error}"
    if resp.hresult:
        return f"0x{resp.hresult:08X} {resp.hresult_name}"
    if resp.verified is False:
        return "S_OK but failed checks: " + ", ".join(resp.failed_checks)
    return "S_OK"


def _client_json(c: ClientEntry) -> dict[str, Any]:
    return {
        "cmid": c.cmid,
        "workstation": c.workstation,
        "address": c.address,
        "product": c.product,
        "requests": c.requests,
        "count": c.count,
        "required": c.required,
        "activated": c.activated,
        "last_outcome": c.last_outcome,
    }
