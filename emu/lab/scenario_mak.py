"""The MAK side of a scenario: the lab activation service (``[[actsvc]]``, an ``emu actsvc serve`` with its
lab keys), KMS hosts that activate their host key there, and MAK clients (online, or managed by VAMT
across a disconnected branch). docs/scenarios.md describes the keys; docs/mak.md the service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emu.errors import UsageError
from emu.lab.toml_table import Table, tables

__all__ = ["MAK_MODES", "ActsvcSpec", "LabKey", "check_mak_references", "parse_actsvcs"]

#: How a MAK group activates: each client online by itself, all through VAMT (proxy activation), or online as
#: the last path after ADBA and KMS failed (the group then also has a KMS domain or host).
MAK_MODES = ("online", "vamt", "fallback")


@dataclass(frozen=True, slots=True)
class LabKey:
    """A lab key the service's ledger holds from the start (``emu actsvc keys add``)."""

    name: str
    kind: str  # "mak" or "csvlk"
    limit: int | None
    group: str


@dataclass(frozen=True, slots=True)
class ActsvcSpec:
    """An ``emu actsvc serve`` (HTTP, port 8080) and its keys, by the names the scenario uses for them."""

    name: str
    segment: str
    keys: tuple[LabKey, ...]


def parse_actsvcs(data: dict[str, Any], source: str, segment_of: Any) -> tuple[ActsvcSpec, ...]:
    """Read every ``[[actsvc]]``.

    Raises:
        UsageError: a bad key entry (the message names it).
    """
    found = []
    for table in tables(data, "actsvc", source):
        name = table.name()
        keys = []
        for n, item in enumerate(table.get("keys", [], kind=list)):
            entry = Table(item, f"{table.where} keys #{n + 1}")
            kind = str(entry.get("kind", "mak", kind=str))
            if kind not in ("mak", "csvlk"):
                raise UsageError(f"{entry.where}: kind must be mak or csvlk")
            limit = entry.get("limit", None, kind=int)
            if kind == "mak" and (limit is None or limit < 1):
                raise UsageError(f"{entry.where}: a MAK needs limit = N (its number of activations)")
            if kind == "csvlk" and limit is not None:
                raise UsageError(f"{entry.where}: a KMS host key's limit is fixed (6 hosts x 10 activations)")
            keys.append(LabKey(entry.name(), kind, limit, str(entry.get("group", "Windows", kind=str))))
            entry.done()
        found.append(ActsvcSpec(name, segment_of(table), tuple(keys)))
        table.done()
    return tuple(found)


def check_mak_references(source: str, actsvcs: tuple[ActsvcSpec, ...], hosts: Any, groups: Any) -> None:
    """Every host's ``csvlk`` and every group's ``mak`` names a key of the named (or only) service.

    Raises:
        UsageError: naming the host or group.
    """
    services = {s.name: s for s in actsvcs}

    def key_of(owner: str, service: str | None, key: str, kind: str) -> None:
        if not services:
            raise UsageError(f"{source}: {owner} names key {key!r} but the scenario has no [[actsvc]]")
        spec = services.get(service) if service else next(iter(services.values()))
        if spec is None:
            raise UsageError(f"{source}: {owner}: actsvc {service!r} is not an [[actsvc]] of the scenario")
        found = next((k for k in spec.keys if k.name == key), None)
        if found is None or found.kind != kind:
            raise UsageError(f"{source}: {owner}: {spec.name} has no {kind} key named {key!r}")

    for host in hosts:
        if host.csvlk is not None:
            key_of(f"host {host.name}", host.actsvc, host.csvlk, "csvlk")
    for group in groups:
        if group.mak is not None:
            key_of(f"group {group.name}", group.actsvc, group.mak, "mak")
            if group.domain_member and group.mak_mode != "fallback":
                raise UsageError(
                    f'{source}: group {group.name}: a domain member uses its MAK only with mak_mode = "fallback"'
                )


def group_mak_fields(table: Table) -> dict[str, Any]:
    """The MAK keys of a ``[[clients]]`` table: ``mak``, ``mak_mode``, ``actsvc``."""
    mode = str(table.get("mak_mode", "online", kind=str))
    if mode not in MAK_MODES:
        raise UsageError(f"{table.where}: mak_mode must be one of {', '.join(MAK_MODES)}")
    return {"mak": table.get("mak", None, kind=str), "mak_mode": mode, "actsvc": table.get("actsvc", None, kind=str)}
