"""KMS host key groups: which editions a KMS host key (CSVLK) activates, and on which OS it can run.

Microsoft documents each Windows host key group ("Volume License for Windows Server 2019", ...) with
the host OS versions it can be installed on and the editions it activates, plus a table of updates a
host OS needs before it activates newer clients; Office host keys activate their own version of
Office. The groups live in ``emu/data/products.json`` beside the products (docs/kms-host-keys.md).

Coverage is checked the way the wire allows: by the request's KMS counted ID. A group covers the KMS
counted IDs of the editions the planning page lists. Windows 11 editions send the KMS counted IDs of
their Windows 10 twins, so a Windows Server 2019 host activates them too (inferred, docs/kms-host-keys.md).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache

from emu.errors import UsageError
from emu.kms import products

__all__ = [
    "HostKeyGroup",
    "HostKeySetup",
    "HostOs",
    "RequiredUpdate",
    "groups_activating",
    "host_key_group",
    "host_key_groups",
    "host_key_setup",
    "host_os",
    "host_oses",
    "required_updates",
]


@dataclass(frozen=True, slots=True)
class HostOs:
    """An OS a KMS host can run on, with the build its ePIDs claim.

    Attributes:
        name: e.g. "Windows Server 2019".
        build: the OS build (an entry of emu.kms.epid.HOST_BUILDS).
        server: a server OS (a host on a client OS activates client editions only).
    """

    name: str
    build: int
    server: bool


@dataclass(frozen=True, slots=True)
class HostKeyGroup:
    """One KMS host key group.

    Attributes:
        name: short name, e.g. "Windows Server 2019", "Office LTSC 2021".
        title: Microsoft's name, e.g. "Volume License for Windows Server 2019".
        app_id: the application whose clients it counts.
        csvlk: the emu.kms.epid CSVLK whose ePID the host sends for this group's products.
        hosted_on: host OS versions the key can be installed on (empty: not documented; Office 2010,
            2013 and LTSC 2024).
        kms_ids: the KMS counted IDs it activates.
        documented: the editions as the documentation lists them.
        source: id of the products.json source that documents it.
    """

    name: str
    title: str
    app_id: uuid.UUID
    csvlk: str
    hosted_on: tuple[str, ...]
    kms_ids: frozenset[uuid.UUID]
    documented: tuple[str, ...]
    source: str

    @property
    def is_windows(self) -> bool:
        return self.app_id == products.WINDOWS_APP_ID


@dataclass(frozen=True, slots=True)
class RequiredUpdate:
    """A row of the "KMS host required updates" table.

    Attributes:
        host_os: the host's OS.
        clients: the client OS versions it cannot activate without the update.
        update: the update (KB number and date) as documented.
        kms_ids: the KMS counted IDs of those clients.
    """

    host_os: str
    clients: tuple[str, ...]
    update: str
    kms_ids: frozenset[uuid.UUID]


@dataclass(frozen=True, slots=True)
class HostKeySetup:
    """What a host with these key groups on this OS covers.

    Attributes:
        groups: the key groups installed.
        host_os: the OS the host runs (``None``: not said; only Office groups).
        kms_ids: the KMS counted IDs the host activates.
        csvlk_by_kms_id: the CSVLK (by emu.kms.epid name) whose ePID answers each covered KMS ID.
        host_build: the build the ePIDs claim (the host OS's; ``None`` when no host OS is known).
        refusals: why an uncovered KMS ID is refused, where there is more to say than "not covered"
            (a missing update, a client-OS host).
    """

    groups: tuple[HostKeyGroup, ...]
    host_os: HostOs | None
    kms_ids: frozenset[uuid.UUID]
    csvlk_by_kms_id: dict[uuid.UUID, str]
    host_build: int | None
    refusals: dict[uuid.UUID, str]


class _Tables:
    def __init__(self) -> None:
        raw = products.raw_data()
        data = products.product_data()
        kms_by_name = {item.name: item for item in data.kms_items()}
        apps_by_name = {app.name: app for app in data.applications()}

        def kms_ids(names: list[str], where: str) -> frozenset[uuid.UUID]:
            out: set[uuid.UUID] = set()
            for name in names:
                if name not in kms_by_name:
                    raise UsageError(f"product data: {where} names unknown KMS item {name!r}")
                out.add(kms_by_name[name].id)
            return frozenset(out)

        self.oses = {o["name"]: HostOs(o["name"], int(o["build"]), bool(o["server"])) for o in raw["host_os"]}
        self.client_os = {name: kms_ids(items, f"client_os {name!r}") for name, items in raw["client_os"].items()}
        self.groups = tuple(
            HostKeyGroup(
                name=g["name"],
                title=g["title"],
                app_id=apps_by_name[g["app"]].id,
                csvlk=g["csvlk"],
                hosted_on=tuple(g["hosted_on"]),
                kms_ids=kms_ids(g["activates"], f"host key group {g['name']!r}"),
                documented=tuple(g["documented"]),
                source=g["source"],
            )
            for g in raw["host_key_groups"]
        )
        self.updates = tuple(
            RequiredUpdate(
                u["host_os"],
                tuple(u["clients"]),
                u["update"],
                frozenset().union(*(self.client_os[c] for c in u["clients"])),
            )
            for u in raw["required_updates"]
        )
        for group in self.groups:
            for name in group.hosted_on:
                if name not in self.oses:
                    raise UsageError(f"product data: host key group {group.name!r} names unknown host OS {name!r}")
        self.server_kms_ids = frozenset(
            item.id for item in data.kms_items() if item.app_id == products.WINDOWS_APP_ID and item.threshold == 5
        )


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    return _Tables()


def _key(text: str) -> frozenset[str]:
    words = set(products.normalise_name(text)) - {"volume", "license", "licence", "host", "key", "kms"}
    return frozenset(words)


def host_key_groups() -> tuple[HostKeyGroup, ...]:
    """Every host key group emu models (Windows first, then Office)."""
    return _tables().groups


def host_key_group(name: str) -> HostKeyGroup:
    """The group with this name ("Windows Server 2019", "Volume License for Windows Server 2019",
    "ws2019", "Office LTSC 2021", ...; case and spacing do not matter).

    Raises:
        UsageError: an unknown name; the message lists the groups.
    """
    wanted = _key(name)
    for group in _tables().groups:
        if wanted in (_key(group.name), _key(group.title)):
            return group
    known = ", ".join(repr(g.name) for g in _tables().groups)
    raise UsageError(f"unknown host key group {name!r}; known: {known}")


def host_oses() -> tuple[HostOs, ...]:
    """The host OS versions the documentation names."""
    return tuple(_tables().oses.values())


def host_os(name: str) -> HostOs:
    """The host OS with this name (forgiving spelling). Raises UsageError listing the known ones."""
    wanted = frozenset(products.normalise_name(name))
    for entry in _tables().oses.values():
        if frozenset(products.normalise_name(entry.name)) == wanted:
            return entry
    known = ", ".join(repr(o) for o in _tables().oses)
    raise UsageError(f"unknown host OS {name!r}; known: {known}")


def required_updates(os_name: str) -> tuple[RequiredUpdate, ...]:
    """The rows of the required-updates table for a host OS."""
    return tuple(u for u in _tables().updates if u.host_os == host_os(os_name).name)


def groups_activating(kms_id: uuid.UUID) -> tuple[HostKeyGroup, ...]:
    """The host key groups that activate a KMS counted ID."""
    return tuple(g for g in _tables().groups if kms_id in g.kms_ids)


def host_key_setup(
    group_names: tuple[str, ...] | list[str], os_name: str | None = None, unpatched: bool = False
) -> HostKeySetup:
    """The coverage, ePID keys and build of a host with these key groups installed on this OS.

    Args:
        group_names: host key group names; at most one Windows group (a host holds one Windows key).
        os_name: the host's OS; it must be one the Windows group can be hosted on. Default: the
            newest OS the Windows group can be hosted on.
        unpatched: the host OS lacks every update the "KMS host required updates" table lists for
            it, so the clients of those rows are refused (0xC004F042), as on such a host.

    Raises:
        UsageError: an unknown group or OS, two Windows groups, an OS the key cannot be hosted on,
            or ``unpatched`` without a host OS.
    """
    groups = tuple(dict.fromkeys(host_key_group(name) for name in group_names))
    windows = [g for g in groups if g.is_windows]
    if len(windows) > 1:
        names = " and ".join(repr(g.name) for g in windows)
        raise UsageError(f"a KMS host holds one Windows host key at a time, not {names}")
    chosen: HostOs | None = host_os(os_name) if os_name else None
    if windows:
        group = windows[0]
        if chosen is None:
            chosen = host_os(group.hosted_on[0])
        elif chosen.name not in group.hosted_on:
            raise UsageError(
                f"the {group.title} key cannot be hosted on {chosen.name}; it can be hosted on: "
                + ", ".join(group.hosted_on)
            )
    for group in groups:
        if chosen is not None and group.hosted_on and chosen.name not in group.hosted_on:
            raise UsageError(
                f"the {group.title} cannot be hosted on {chosen.name}; it can be hosted on: "
                + ", ".join(group.hosted_on)
            )
    if unpatched and chosen is None:
        raise UsageError("an unpatched host needs a host OS (give --host-os or a Windows host key group)")
    covered: set[uuid.UUID] = set()
    csvlks: dict[uuid.UUID, str] = {}
    for group in groups:
        covered |= group.kms_ids
        for kms_id in group.kms_ids:
            csvlks.setdefault(kms_id, group.csvlk)
    refusals: dict[uuid.UUID, str] = {}
    if chosen is not None and not chosen.server:
        for kms_id in covered & _tables().server_kms_ids:
            refusals[kms_id] = f"a KMS host on a client OS ({chosen.name}) activates client editions only"
        covered -= _tables().server_kms_ids
    if unpatched and chosen is not None:
        for update in required_updates(chosen.name):
            for kms_id in covered & update.kms_ids:
                refusals[kms_id] = f"host OS {chosen.name} lacks {update.update}"
            covered -= update.kms_ids
    return HostKeySetup(
        groups=groups,
        host_os=chosen,
        kms_ids=frozenset(covered),
        csvlk_by_kms_id={k: v for k, v in csvlks.items() if k in covered},
        host_build=chosen.build if chosen is not None else None,
        refusals=refusals,
    )


def product_record(sku: products.Sku) -> dict[str, object]:
    """Every field emu knows of an edition, as plain JSON values (``emu client products --json``,
    ``emu explain``): IDs, application, KMS item, protocol, threshold, published keys with their
    source, what is not confirmed, and the host key groups that activate it."""
    data = products.product_data()
    item = data.kms_item(sku.kms_id)
    source = next((s for s in data.sources() if s.id == sku.gvlk_source), None)
    return {
        "name": sku.name,
        "aliases": list(sku.aliases),
        "sku_id": str(sku.id),
        "kms_id": str(sku.kms_id),
        "kms_item": item.name,
        "app_id": str(sku.app_id),
        "application": data.application(sku.app_id).name,
        "protocol": sku.protocol,
        "threshold": sku.threshold,
        "gvlk": sku.gvlk,
        "gvlks": list(sku.gvlks),
        "gvlk_source": None if source is None else {"title": source.title, "url": source.url, "date": source.date},
        "retail": item.retail,
        "preview": item.preview,
        "note": sku.note,
        "host_key_groups": [g.name for g in groups_activating(sku.kms_id)],
    }
