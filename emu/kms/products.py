"""Product data: applications, KMS counted IDs (product groups) and SKUs with their public GVLKs.

The data lives in ``emu/data/products.json`` (docs/products.md: applications, KMS counted IDs, every
edition with a GVLK Microsoft publishes, each key with the page that publishes it) and is loaded and
validated once, on first use. Everything here is read-only.

Lookups take a GUID (any common spelling, braces optional) or a forgiving product name:
``lookup("win10ent")``, ``lookup("Windows 10 Enterprise")``, ``lookup("srv2019 dc")``, ``lookup("o2019")``.
"""

from __future__ import annotations

import difflib
import json
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from emu.errors import UsageError
from emu.kms.count_cache import CAPACITY_FACTOR

__all__ = [
    "GVLK_PATTERN",
    "OFFICE2010_APP_ID",
    "OFFICE2013_APP_ID",
    "WINDOWS_APP_ID",
    "Application",
    "KmsItem",
    "ProductData",
    "Sku",
    "Source",
    "all_applications",
    "all_kms_items",
    "all_skus",
    "application",
    "describe_kms_id",
    "kms_item",
    "kms_item_or_none",
    "lookup",
    "normalise_name",
    "product_data",
    "raw_data",
    "search",
    "sku_by_gvlk",
    "sku_by_id",
    "sources",
]

#: The three application IDs (docs/products.md).
WINDOWS_APP_ID = uuid.UUID("55c92734-d682-4d71-983e-d6ec3f16059f")
OFFICE2010_APP_ID = uuid.UUID("59a52881-a989-479d-af46-f275c6370663")
OFFICE2013_APP_ID = uuid.UUID("0ff1ce15-a989-479d-af46-f275c6370663")

#: Five groups of five product-key characters, as Microsoft prints GVLKs.
GVLK_PATTERN = re.compile(r"^[0-9A-Z]{5}(?:-[0-9A-Z]{5}){4}$")

_DATA_FILE = "products.json"


@dataclass(frozen=True, slots=True)
class Application:
    """An application family (field AppID): the unit a KMS host counts clients in.

    Attributes:
        id: the AppID GUID.
        name: "Windows", "Office 2010" or "Office 2013+".
        min_active_clients: the size of a charged client table: ``CAPACITY_FACTOR`` (emu.kms.count_cache)
            x the highest threshold of the application's groups (50 for Windows, 10 for Office); derived,
            so the table size has one home.
    """

    id: uuid.UUID
    name: str
    min_active_clients: int


@dataclass(frozen=True, slots=True)
class Source:
    """A published list the product data was checked against (named in products.json with its date).

    Attributes:
        id: short name used by the SKUs (``gvlk_source``).
        title: the page's title.
        url: where Microsoft publishes it.
        date: the page's date as the source states it.
        note: how the list was read.
    """

    id: str
    title: str
    url: str
    date: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class KmsItem:
    """A KMS counted ID (field KMSID): a product group that one CSVLK covers (docs/products.md).

    Attributes:
        id: the KMS counted ID GUID.
        name: product group name, e.g. "Windows 10/11 2015 (Volume)".
        app_id: the application the group belongs to.
        protocol: the KMS protocol major version its clients speak (4, 5 or 6).
        threshold: N, the client count the client needs (25 client OS, 5 server OS and Office).
        retail: a retail group that a genuine host does not activate.
        preview: a pre-release group that a genuine host does not activate.
        csvlk: name of the CSVLK whose ePID answers it (vlmcsd's ePID index), see ``emu.kms.epid``.
    """

    id: uuid.UUID
    name: str
    app_id: uuid.UUID
    protocol: int
    threshold: int
    retail: bool
    preview: bool
    csvlk: str


@dataclass(frozen=True, slots=True)
class Sku:
    """An edition (field ActID / SKU ID) with the KMS counted ID its clients send.

    Attributes:
        id: the SKU (activation) ID GUID.
        name: the edition's name.
        kms_id: the KMS counted ID a client of this SKU sends.
        app_id: the application ID a client of this SKU sends.
        gvlks: the published GVLKs of the edition, newest first (two for an edition whose key changed,
            e.g. Windows Server Standard 1709 and 1803); empty where Microsoft publishes none.
        protocol: the KMS protocol major version the client speaks (from its KMS item).
        threshold: the client count the client needs (from its KMS item).
        aliases: extra names the forgiving lookup accepts.
        gvlk_source: id of the :class:`Source` that publishes the GVLK (``None``: no Microsoft page does).
        note: what is not confirmed about the entry ("" when nothing is in doubt).
    """

    id: uuid.UUID
    name: str
    kms_id: uuid.UUID
    app_id: uuid.UUID
    gvlks: tuple[str, ...]
    protocol: int
    threshold: int
    aliases: tuple[str, ...] = ()
    gvlk_source: str | None = None
    note: str = ""

    @property
    def gvlk(self) -> str | None:
        """The current published GVLK (the first), or ``None``."""
        return self.gvlks[0] if self.gvlks else None


# --------------------------------------------------------------------------------------------------
# Forgiving names

#: Abbreviations and spellings mapped to the token used in product names.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "w": ("windows",),
    "win": ("windows",),
    "windows": ("windows",),
    "ent": ("enterprise",),
    "enterprise": ("enterprise",),
    "pro": ("professional",),
    "professional": ("professional",),
    "edu": ("education",),
    "education": ("education",),
    "dc": ("datacenter",),
    "datacenter": ("datacenter",),
    "datacentre": ("datacenter",),
    "std": ("standard",),
    "standard": ("standard",),
    "srv": ("server",),
    "svr": ("server",),
    "server": ("server",),
    "o": ("office",),
    "off": ("office",),
    "office": ("office",),
    "proplus": ("professional", "plus"),
    "ltsc": ("ltsc",),
    "ltsb": ("ltsb",),
    "81": ("8", "1"),
    "ws": ("windows", "server"),
    "workstation": ("workstations",),
    "workstations": ("workstations",),
}
#: Words that carry no meaning in a product name.
_NOISE = {"for", "edition", "microsoft", "the", "version", "and"}
_TOKEN = re.compile(r"r2|[a-z]+|\d+")


def normalise_name(text: str) -> tuple[str, ...]:
    """Canonical tokens of a product name: lower case, no punctuation, abbreviations expanded.

    ``"Win10 Ent"``, ``"windows-10-enterprise"`` and ``"Windows 10 Enterprise"`` give the same tokens.
    Letters and digits are split (``"o2019"`` -> ``office 2019``), except ``r2``.
    """
    out: list[str] = []
    for raw in _TOKEN.findall(text.lower()):
        if raw in _NOISE:
            continue
        out.extend(_SYNONYMS.get(raw, (raw,)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _NameIndexEntry:
    tokens: frozenset[str]
    sku: Sku


# --------------------------------------------------------------------------------------------------
# The loaded data


class ProductData:
    """The validated product tables with their indexes. Build it with :func:`product_data`.

    Raises:
        UsageError: at construction, if the tables are inconsistent (a duplicate GUID, a SKU whose
            KMS ID is unknown, a malformed GVLK, a KMS item of an unknown application).
    """

    def __init__(self, raw: dict[str, Any]) -> None:
        problems: list[str] = []
        seen: dict[uuid.UUID, str] = {}

        def guid(text: str, where: str) -> uuid.UUID:
            value = uuid.UUID(text)
            if value in seen:
                problems.append(f"{where}: GUID {value} is also used by {seen[value]}")
            seen[value] = where
            return value

        top = {k["app"]: 0 for k in raw["kms_items"]}
        for k in raw["kms_items"]:
            top[k["app"]] = max(top[k["app"]], int(k["threshold"]))
        apps = [
            Application(guid(a["id"], f"application {a['name']!r}"), a["name"], CAPACITY_FACTOR * top.get(a["name"], 0))
            for a in raw["applications"]
        ]
        self._apps: dict[uuid.UUID, Application] = {a.id: a for a in apps}
        apps_by_name = {a.name: a for a in apps}
        self._sources: dict[str, Source] = {
            src["id"]: Source(src["id"], src["title"], src["url"], src["date"], src.get("note", ""))
            for src in raw.get("sources", ())
        }

        self._kms: dict[uuid.UUID, KmsItem] = {}
        for k in raw["kms_items"]:
            app = apps_by_name.get(k["app"])
            if app is None:
                problems.append(f"KMS item {k['name']!r}: unknown application {k['app']!r}")
                continue
            item = KmsItem(
                id=guid(k["id"], f"KMS item {k['name']!r}"),
                name=k["name"],
                app_id=app.id,
                protocol=int(k["protocol"]),
                threshold=int(k["threshold"]),
                retail=bool(k.get("retail", False)),
                preview=bool(k.get("preview", False)),
                csvlk=k.get("csvlk", "Windows"),
            )
            if item.protocol not in (4, 5, 6):
                problems.append(f"KMS item {item.name!r}: protocol {item.protocol} is not 4, 5 or 6")
            self._kms[item.id] = item

        self._skus: dict[uuid.UUID, Sku] = {}
        self._by_gvlk: dict[str, Sku] = {}
        for s in raw["skus"]:
            kms_id = uuid.UUID(s["kms"])
            parent = self._kms.get(kms_id)
            if parent is None:
                problems.append(f"SKU {s['name']!r}: KMS ID {kms_id} is not in the KMS item table")
                continue
            gvlks = tuple(g for g in (s.get("gvlk"), *s.get("more_gvlks", ())) if g is not None)
            for gvlk in gvlks:
                if not GVLK_PATTERN.match(gvlk):
                    problems.append(f"SKU {s['name']!r}: GVLK {gvlk!r} is not XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")
                elif gvlk in self._by_gvlk:
                    problems.append(f"SKU {s['name']!r}: GVLK {gvlk} is also the key of {self._by_gvlk[gvlk].name!r}")
            source = s.get("gvlk_source")
            if source is not None and source not in self._sources:
                problems.append(f"SKU {s['name']!r}: gvlk_source {source!r} is not in the sources list")
            sku = Sku(
                id=guid(s["id"], f"SKU {s['name']!r}"),
                name=s["name"],
                kms_id=kms_id,
                app_id=parent.app_id,
                gvlks=gvlks,
                protocol=parent.protocol,
                threshold=parent.threshold,
                aliases=tuple(s.get("aliases", ())),
                gvlk_source=source,
                note=s.get("note", ""),
            )
            self._skus[sku.id] = sku
            for gvlk in gvlks:
                self._by_gvlk[gvlk] = sku

        names: dict[tuple[str, ...], str] = {}
        self._index: list[_NameIndexEntry] = []
        for sku in self._skus.values():
            for name in _spelled_out((sku.name, *sku.aliases)):
                key = tuple(sorted(normalise_name(name)))
                if key in names and names[key] != sku.name:
                    problems.append(f"SKU {sku.name!r}: name {name!r} is also a name of {names[key]!r}")
                names[key] = sku.name
                self._index.append(_NameIndexEntry(frozenset(key), sku))

        if problems:
            raise UsageError("product data is inconsistent:\n  " + "\n  ".join(problems))

    # Tables ---------------------------------------------------------------------------------------

    def applications(self) -> tuple[Application, ...]:
        return tuple(self._apps.values())

    def kms_items(self) -> tuple[KmsItem, ...]:
        return tuple(self._kms.values())

    def skus(self) -> tuple[Sku, ...]:
        return tuple(self._skus.values())

    def sources(self) -> tuple[Source, ...]:
        return tuple(self._sources.values())

    def find_gvlk(self, gvlk: str) -> Sku | None:
        """The SKU whose published GVLK this is (case and spaces ignored), or ``None``."""
        return self._by_gvlk.get(gvlk.strip().upper())

    # Lookups --------------------------------------------------------------------------------------

    def application(self, app_id: uuid.UUID | str) -> Application:
        """The application with this AppID. Raises UsageError if unknown."""
        key = _as_guid(app_id)
        try:
            return self._apps[key]
        except KeyError:
            known = ", ".join(f"{a.name} ({a.id})" for a in self._apps.values())
            raise UsageError(f"unknown application ID {key}; known: {known}") from None

    def kms_item(self, kms_id: uuid.UUID | str) -> KmsItem:
        """The product group with this KMS counted ID. Raises UsageError if unknown."""
        key = _as_guid(kms_id)
        try:
            return self._kms[key]
        except KeyError:
            raise UsageError(f"unknown KMS counted ID {key} (not in emu's product data)") from None

    def find_kms_item(self, kms_id: uuid.UUID) -> KmsItem | None:
        """The product group with this KMS counted ID, or ``None`` (for hosts that accept unknown IDs)."""
        return self._kms.get(kms_id)

    def find_sku(self, sku_id: uuid.UUID) -> Sku | None:
        """The SKU with this SKU ID, or ``None``."""
        return self._skus.get(sku_id)

    def sku_by_id(self, sku_id: uuid.UUID | str) -> Sku:
        """The SKU with this SKU ID. Raises UsageError if unknown."""
        key = _as_guid(sku_id)
        try:
            return self._skus[key]
        except KeyError:
            hint = ""
            if key in self._kms:
                hint = f"; {key} is the KMS counted ID of {self._kms[key].name!r}, not a SKU ID"
            elif key in self._apps:
                hint = f"; {key} is the application ID of {self._apps[key].name!r}, not a SKU ID"
            raise UsageError(f"unknown SKU ID {key}{hint}") from None

    def lookup(self, name_or_guid: str | uuid.UUID) -> Sku:
        """The SKU named by a GUID or a forgiving product name.

        Names are compared as token sets (see :func:`normalise_name`): a SKU matches when every word
        of the query is in its name or one of its aliases; among matches, the one with the fewest
        words beyond the query wins, and a tie is ambiguous.

        Raises:
            UsageError: for an unknown name (the message lists close matches) or an ambiguous one
                (the message lists the candidates).
        """
        if isinstance(name_or_guid, uuid.UUID) or _looks_like_guid(name_or_guid):
            return self.sku_by_id(name_or_guid)
        if GVLK_PATTERN.match(name_or_guid.strip().upper()):
            by_key = self.find_gvlk(name_or_guid)
            if by_key is None:
                raise UsageError(
                    f"{name_or_guid.strip()!r} is not a GVLK Microsoft publishes (see emu client products)"
                )
            return by_key
        query = frozenset(normalise_name(name_or_guid))
        if not query:
            raise UsageError(f"product name {name_or_guid!r} has no words to look up")
        best: dict[uuid.UUID, tuple[int, Sku]] = {}
        for entry in self._index:
            if query <= entry.tokens:
                extra = len(entry.tokens - query)
                previous = best.get(entry.sku.id)
                if previous is None or extra < previous[0]:
                    best[entry.sku.id] = (extra, entry.sku)
        if not best:
            raise UsageError(f"unknown product {name_or_guid!r}{self._close_matches(name_or_guid)}")
        ranked = sorted(best.values(), key=lambda pair: (pair[0], pair[1].name))
        fewest = ranked[0][0]
        winners = [sku for extra, sku in ranked if extra == fewest]
        if len(winners) == 1:
            return winners[0]
        shown = [sku.name for _, sku in ranked[:12]]
        more = f" and {len(ranked) - 12} more" if len(ranked) > 12 else ""
        raise UsageError(f"product name {name_or_guid!r} is ambiguous; candidates: {', '.join(shown)}{more}")

    def search(self, words: str) -> tuple[Sku, ...]:
        """Every SKU the words could mean, best match first (the same names and aliases as :meth:`lookup`).

        A GUID or a GVLK gives its one SKU; words give every SKU whose name or alias holds them all,
        ordered by how few words the name has beyond the query. ``"win10"`` finds every Windows 10
        edition; ``""`` finds everything.
        """
        text = words.strip()
        if not text:
            return self.skus()
        if _looks_like_guid(text):
            found = self.find_sku(_as_guid(text))
            return (found,) if found is not None else ()
        if GVLK_PATTERN.match(text.upper()):
            by_key = self.find_gvlk(text)
            return (by_key,) if by_key is not None else ()
        query = frozenset(normalise_name(text))
        best: dict[uuid.UUID, tuple[int, Sku]] = {}
        for entry in self._index:
            if query <= entry.tokens:
                extra = len(entry.tokens - query)
                previous = best.get(entry.sku.id)
                if previous is None or extra < previous[0]:
                    best[entry.sku.id] = (extra, entry.sku)
        return tuple(sku for _, sku in sorted(best.values(), key=lambda pair: (pair[0], pair[1].name)))

    def suggestions(self, text: str) -> str:
        """A hint for text that names nothing ("; did you mean: ..."), as the errors of :meth:`lookup` give."""
        return self._close_matches(text)

    def _close_matches(self, text: str) -> str:
        """A hint for an unknown name: correct each unknown word to the nearest known one."""
        vocabulary = sorted(set().union(*(e.tokens for e in self._index)))
        corrected: list[str] = []
        for token in normalise_name(text):
            if token in vocabulary:
                corrected.append(token)
                continue
            near = difflib.get_close_matches(token, vocabulary, n=1, cutoff=0.6)
            if not near:
                corrected = []
                break
            corrected.append(near[0])
        query = frozenset(corrected)
        ranked = sorted({(len(e.tokens - query), e.sku.name) for e in self._index if query and query <= e.tokens})
        names = list(dict.fromkeys(name for _, name in ranked))[:5]
        if not names:
            return "; give a SKU GUID or a name such as 'Windows 10 Enterprise' or 'Office Professional Plus 2019'"
        return "; did you mean: " + ", ".join(names)


_ALTERNATIVES = re.compile(r"\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?)+")


def _spelled_out(names: tuple[str, ...]) -> list[str]:
    """The names plus their variants with "a/b" version alternatives spelled out one by one.

    "Windows 10/11 Enterprise" is indexed as "Windows 10 Enterprise" and "Windows 11 Enterprise", so
    that "Windows 10 Enterprise" matches it exactly rather than as a superset.
    """
    out: list[str] = list(names)
    pending = list(names)
    while pending:
        name = pending.pop(0)
        match = _ALTERNATIVES.search(name)
        if match is None:
            if name not in out:
                out.append(name)
            continue
        for choice in match.group(0).split("/"):
            pending.append(name[: match.start()] + choice + name[match.end() :])
    return out


def _looks_like_guid(text: str) -> bool:
    return bool(
        re.fullmatch(
            r"\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?", text.strip()
        )
    )


def _as_guid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        raise UsageError(f"{value!r} is not a GUID (expected e.g. 55c92734-d682-4d71-983e-d6ec3f16059f)") from None


def _read_packaged() -> dict[str, Any]:
    text = resources.files("emu").joinpath("data", _DATA_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@lru_cache(maxsize=1)
def raw_data() -> dict[str, Any]:
    """The packaged products.json as parsed JSON, read once (emu.kms.host_keys reads its sections)."""
    return _read_packaged()


@lru_cache(maxsize=1)
def product_data() -> ProductData:
    """The packaged product tables, loaded and validated once."""
    return ProductData(raw_data())


# Module-level shortcuts over the packaged data -----------------------------------------------------


def lookup(name_or_guid: str | uuid.UUID) -> Sku:
    """See :meth:`ProductData.lookup`."""
    return product_data().lookup(name_or_guid)


def sku_by_id(sku_id: uuid.UUID | str) -> Sku:
    """See :meth:`ProductData.sku_by_id`."""
    return product_data().sku_by_id(sku_id)


def sku_by_gvlk(gvlk: str) -> Sku | None:
    """See :meth:`ProductData.find_gvlk`."""
    return product_data().find_gvlk(gvlk)


def search(words: str) -> tuple[Sku, ...]:
    """See :meth:`ProductData.search`."""
    return product_data().search(words)


def sources() -> tuple[Source, ...]:
    """The published lists the product data names, with their dates."""
    return product_data().sources()


def kms_item(kms_id: uuid.UUID | str) -> KmsItem:
    """See :meth:`ProductData.kms_item`."""
    return product_data().kms_item(kms_id)


def kms_item_or_none(kms_id: uuid.UUID) -> KmsItem | None:
    """The product group with this KMS counted ID, or ``None`` when the data does not know it."""
    return product_data().find_kms_item(kms_id)


def describe_kms_id(kms_id: uuid.UUID, sku_id: uuid.UUID | None = None) -> str:
    """A log-friendly name for what a request asks for: the SKU's name if known, else the group's, else the GUID."""
    data = product_data()
    if sku_id is not None:
        sku = data.find_sku(sku_id)
        if sku is not None and sku.kms_id == kms_id:
            return sku.name
    item = data.find_kms_item(kms_id)
    if item is not None:
        return item.name
    return f"unknown KMS ID {kms_id}"


def application(app_id: uuid.UUID | str) -> Application:
    """See :meth:`ProductData.application`."""
    return product_data().application(app_id)


def all_skus() -> tuple[Sku, ...]:
    """Every SKU of the packaged data, in file order."""
    return product_data().skus()


def all_kms_items() -> tuple[KmsItem, ...]:
    """Every KMS counted ID of the packaged data, in file order."""
    return product_data().kms_items()


def all_applications() -> tuple[Application, ...]:
    """The three applications (Windows, Office 2010, Office 2013+)."""
    return product_data().applications()
