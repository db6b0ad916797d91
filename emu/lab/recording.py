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

    def exchange(self, client: FleetClient, at: float, result: ExchangeResult) -> None:
        response = result.kms_response
        host = self.addresses.get(result.host.host)
        with self.lock:
            self.log.exchange(
                at=round(at, 3),
                client=client.live.name,
                group=client.group,
                cmid=str(client.live.lifecycle.cmid),
                host=host,
                address=str(result.host),
                status=result.status.value,
                count=result.count,
                threshold=client.live.lifecycle.threshold,
                app=application_name(client.live.template),
                hresult=result.hresult,
                detail=result.detail,
                epid=getattr(response, "epid", None),
                path="kms",
            )

    def adba(self, client: FleetClient, at: float, where: str | None, result: AdbaResult) -> None:
        failed = next((c for c in result.checks if not c.ok), None)
        detail = (
            f"{failed.name}: {failed.detail}"
            if failed
            else f"activated by {result.checks[-2].detail if len(result.checks) > 1 else 'ADBA'}"
        )
        with self.lock:
            self.log.exchange(
                at=round(at, 3),
                client=client.live.name,
                group=client.group,
                cmid=str(client.live.lifecycle.cmid),
                host=self.addresses.get(where.rsplit(":", 1)[0]) if where else None,
                address=where,
                status="activated" if result.activated else "adba-failed",
                count=None,
                threshold=client.live.lifecycle.threshold,
                app=application_name(client.live.template),
                hresult=result.hresult,
                detail=detail,
                path="adba",
            )

    def mak(self, client: FleetClient, at: float, url: str, code: int, detail: str) -> None:
        service = next((name for name, u in self.services.items() if u == url), None)
        with self.lock:
            self.log.exchange(
                at=round(at, 3),
                client=client.live.name,
                group=client.group,
                cmid=str(client.live.lifecycle.cmid),
                host=service,
                address=url,
                status="activated" if code == 0 else "mak-failed",
                count=None,
                threshold=client.live.lifecycle.threshold,
                app=application_name(client.live.template),
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
