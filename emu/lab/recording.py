"""Turning what a scenario's clients saw into the run's records (:class:`emu.lab.timeline.RunLog`): KMS
exchanges, ADBA and MAK attempts, and discoveries that found no host. The clients' threads call these; a
lock keeps the records whole."""

from __future__ import annotations

import threading

from emu.adba.client import AdbaResult
from emu.lab.fleet import application_name
from emu.lab.timeline import RunLog
from emu.net.kms_client import ExchangeResult
from emu.net.kms_fleet import FleetClient

__all__ = ["Recorder"]


class Recorder:
    """Appends the clients' records to ``log``.

    Args:
        log: the run's records.
        addresses: party name by IP address (the host, DC or service a record names).
        services: the activation services' URLs by name.
    """

    def __init__(self, log: RunLog, addresses: dict[str, str], services: dict[str, str]) -> None:
        self.log = log
        self.addresses = addresses
        self.services = services
        self.lock = threading.Lock()

    def _append(self, client: FleetClient, at: float, **fields: object) -> None:
        """One exchange record: who, when, and ``fields`` (host, address, status, count, hresult, detail, path)."""
        with self.lock:
            self.log.exchange(
                at=round(at, 3),
                client=client.live.name,
                group=client.group,
                cmid=str(client.live.lifecycle.cmid),
                threshold=client.live.lifecycle.threshold,
                app=application_name(client.live.template),
                **fields,
            )

    def exchange(self, client: FleetClient, at: float, result: ExchangeResult) -> None:
        """A KMS exchange."""
        self._append(
            client,
            at,
            host=self.addresses.get(result.host.host),
            address=str(result.host),
            status=result.status.value,
            count=result.count,
            hresult=result.hresult,
            detail=result.detail,
            epid=getattr(result.kms_response, "epid", None),
            path="kms",
        )

    def adba(self, client: FleetClient, at: float, where: str | None, result: AdbaResult) -> None:
        """An ADBA attempt (``where``: the DC asked, None when none was found)."""
        failed = next((c for c in result.checks if not c.ok), None)
        found = result.checks[-2].detail if len(result.checks) > 1 else "ADBA"
        self._append(
            client,
            at,
            host=self.addresses.get(where.rsplit(":", 1)[0]) if where else None,
            address=where,
            status="activated" if result.activated else "adba-failed",
            count=None,
            hresult=result.hresult,
            detail=f"{failed.name}: {failed.detail}" if failed else f"activated by {found}",
            path="adba",
        )

    def mak(self, client: FleetClient, at: float, url: str, code: int, detail: str) -> None:
        """A MAK activation attempt (``code`` -1: the service did not answer)."""
        self._append(
            client,
            at,
            host=next((name for name, u in self.services.items() if u == url), None),
            address=url,
            status="activated" if code == 0 else "mak-failed",
            count=None,
            hresult=code if code >= 0 else None,
            detail=detail,
            path="mak",
        )

    def lookup(self, client: FleetClient, at: float, domain: str, why: str) -> None:
        with self.lock:
            self.log.records.append(
                {
                    "type": "lookup",
                    "at": round(at, 3),
                    "client": client.live.name,
                    "group": client.group,
                    "domain": domain,
                    "detail": why,
                }
            )
