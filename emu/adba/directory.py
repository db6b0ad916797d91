"""An AD-shaped directory in memory: entries, schema checks, and the four LDAP data operations.

Sans-IO: time (``wall``) and GUIDs (``new_guid``) are injected; every change is reported as a
:class:`Change` so that the I/O layer can commit it (SQLite) before the answer goes out. Errors are
:class:`DirectoryError` carrying the LDAP resultCode to send.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from emu.adba import schema as sc
from emu.adba.dn import DnError, is_under, normalise_dn, parent_dn, rdn_of, split_dn
from emu.errors import ProtocolError
from emu.ldap import messages as m

__all__ = ["Attrs", "Change", "Directory", "DirectoryError", "Entry"]

Attrs = Sequence[tuple[str, Sequence[bytes]]]
R = sc.ResultCode


class DirectoryError(ProtocolError):
    """An operation refused; ``wire_code`` is the LDAP resultCode, ``matched_dn`` the deepest existing DN."""

    def __init__(self, code: int, message: str, matched_dn: str = "") -> None:
        super().__init__(message, wire_code=code)
        self.code = code
        self.matched_dn = matched_dn


@dataclass
class Entry:
    """One directory entry: ``attrs`` maps the lower-case name to (schema spelling, values)."""

    dn: str
    attrs: dict[str, tuple[str, list[bytes]]] = field(default_factory=dict)

    def values(self, name: str) -> list[bytes]:
        return self.attrs.get(name.lower(), ("", []))[1]

    def first_text(self, name: str) -> str | None:
        vals = self.values(name)
        return vals[0].decode("utf-8", "replace") if vals else None

    def classes(self) -> set[str]:
        return {v.decode("utf-8", "replace").lower() for v in self.values("objectClass")}

    def as_attrs(self) -> tuple[tuple[str, tuple[bytes, ...]], ...]:
        return tuple((disp, tuple(vals)) for disp, vals in self.attrs.values())


@dataclass(frozen=True)
class Change:
    """What an operation changed: the entry's new content (``entry``) or its deletion (``entry`` None)."""

    dn: str
    entry: Entry | None


def generalized_time(wall: float) -> bytes:
    """AD's GeneralizedTime form, ``YYYYMMDDHHMMSS.0Z``."""
    return _dt.datetime.fromtimestamp(wall, _dt.UTC).strftime("%Y%m%d%H%M%S.0Z").encode()


class Directory:
    """The tree plus the schema rules. ``msspp_schema`` False models a forest whose schema predates
    Windows Server 2012 (no msSPP classes: adding an activation object fails)."""

    def __init__(
        self,
        *,
        wall: Callable[[], float],
        new_guid: Callable[[], bytes],
        msspp_schema: bool = True,
    ) -> None:
        self._wall = wall
        self._new_guid = new_guid
        self.msspp_schema = msspp_schema
        self.entries: dict[str, Entry] = {}

    # ---- lookups ----------------------------------------------------------------------------------

    def get(self, dn: str) -> Entry | None:
        try:
            return self.entries.get(normalise_dn(dn))
        except DnError:
            return None

    def _matched(self, dn: str) -> str:
        rdns = split_dn(dn)
        for i in range(1, len(rdns) + 1):
            up = self.entries.get(",".join(f"{a.lower()}={v.lower()}" for a, v in rdns[i:]))
            if up is not None:
                return up.dn
        return ""

    def _key(self, dn: str) -> str:
        try:
            key = normalise_dn(dn)
        except DnError as exc:
            raise DirectoryError(R.INVALID_DN_SYNTAX, str(exc)) from None
        if not key:
            raise DirectoryError(R.UNWILLING_TO_PERFORM, "the rootDSE cannot be changed")
        return key

    def _class(self, name: str) -> sc.ObjectClass | None:
        cls = sc.object_class(name)
        if cls is not None and not self.msspp_schema and cls in sc.MSSPP_CLASSES:
            return None
        return cls

    def _attr(self, name: str) -> sc.AttributeType | None:
        at = sc.attribute(name)
        if at is not None and not self.msspp_schema and at in sc.MSSPP_ATTRIBUTES:
            return None
        return at

    # ---- schema -----------------------------------------------------------------------------------

    def _chain(self, names: Iterable[str]) -> list[sc.ObjectClass]:
        out: list[sc.ObjectClass] = []
        for name in names:
            cls = self._class(name)
            if cls is None:
                raise DirectoryError(R.OBJECT_CLASS_VIOLATION, f"objectClass {name!r} is not in the schema")
            while cls is not None and cls not in out:
                out.append(cls)
                cls = self._class(cls.superior) if cls.superior else None
        return out

    def _depth(self, cls: sc.ObjectClass) -> int:
        depth = 0
        while cls.superior and (up := self._class(cls.superior)) is not None and depth < 16:
            cls, depth = up, depth + 1
        return depth

    def _check(self, entry: Entry, parent: Entry | None, *, system: bool) -> None:
        chain = self._chain(v.decode("utf-8", "replace") for v in entry.values("objectClass"))
        if not chain:
            raise DirectoryError(R.OBJECT_CLASS_VIOLATION, "no objectClass")
        structural = max(chain, key=self._depth)
        must = {a.lower() for c in chain for a in c.must}
        allowed = must | {a.lower() for c in chain for a in c.may}
        for key, (disp, vals) in entry.attrs.items():
            at = self._attr(key)
            if at is None:
                raise DirectoryError(R.UNDEFINED_ATTRIBUTE_TYPE, f"attribute {disp!r} is not in the schema")
            if key not in allowed and not at.system:
                raise DirectoryError(
                    R.OBJECT_CLASS_VIOLATION, f"attribute {at.name} is not allowed in class {structural.name}"
                )
            if at.single and len(vals) > 1:
                raise DirectoryError(R.CONSTRAINT_VIOLATION, f"attribute {at.name} is single-valued")
            for v in vals:
                size = len(v) if at.syntax == "octet" else len(v.decode("utf-8", "replace"))
                if (at.lo is not None and size < at.lo) or (at.hi is not None and size > at.hi):
                    raise DirectoryError(
                        R.INVALID_ATTRIBUTE_SYNTAX,
                        f"value of {at.name} has length {size}, outside {at.lo or 0}..{at.hi}",
                    )
        missing = [a for a in must if not entry.values(a)]
        if missing:
            names = ", ".join(sorted(sc.ATTRIBUTES[a].name for a in missing))
            raise DirectoryError(R.OBJECT_CLASS_VIOLATION, f"mandatory attribute(s) missing: {names}")
        if parent is not None and structural.parents and not system:
            parent_classes = parent.classes()
            if not any(p.lower() in parent_classes for p in structural.parents):
                raise DirectoryError(
                    R.NAMING_VIOLATION,
                    f"a {structural.name} cannot be placed under {parent.dn} (allowed parents: "
                    f"{', '.join(structural.parents)})",
                )

    # ---- operations -------------------------------------------------------------------------------

    def add(self, dn: str, attrs: Attrs, *, system: bool = False) -> Change:
        """Add an entry; the directory sets name, distinguishedName, objectGUID, whenCreated/Changed."""
        key = self._key(dn)
        if key in self.entries:
            raise DirectoryError(R.ENTRY_ALREADY_EXISTS, f"{dn} already exists", dn)
        parent_key = normalise_dn(parent_dn(dn))
        parent = self.entries.get(parent_key) if parent_key else None
        if parent_key and parent is None and not system:
            raise DirectoryError(R.NO_SUCH_OBJECT, f"the parent of {dn} does not exist", self._matched(dn))
        entry = Entry(dn)
        for name, vals in attrs:
            at = self._attr(name)
            if at is not None and at.system and not system:
                raise DirectoryError(R.CONSTRAINT_VIOLATION, f"attribute {at.name} is set by the directory")
            disp = at.name if at else name
            existing = entry.attrs.get(name.lower(), (disp, []))[1]
            entry.attrs[name.lower()] = (disp, existing + [bytes(v) for v in vals])
        rdn_type, rdn_value = rdn_of(dn)
        rdn_attr = entry.values(rdn_type)
        if rdn_attr and rdn_attr[0].decode("utf-8", "replace").lower() != rdn_value.lower():
            raise DirectoryError(R.NAMING_VIOLATION, f"{rdn_type} does not match the RDN of {dn}")
        if not rdn_attr:
            at = self._attr(rdn_type)
            entry.attrs[rdn_type.lower()] = (at.name if at else rdn_type, [rdn_value.encode()])
        now = generalized_time(self._wall())
        for name, value in (
            ("name", rdn_value.encode()),
            ("distinguishedName", dn.encode()),
            ("objectGUID", self._new_guid()),
            ("whenCreated", now),
            ("whenChanged", now),
            ("instanceType", b"4"),
        ):
            entry.attrs.setdefault(name.lower(), (name, [value]))
        self._check(entry, parent, system=system)
        self.entries[key] = entry
        return Change(dn, entry)

    def delete(self, dn: str) -> Change:
        key = self._key(dn)
        entry = self.entries.get(key)
        if entry is None:
            raise DirectoryError(R.NO_SUCH_OBJECT, f"{dn} does not exist", self._matched(dn))
        if any(k.endswith("," + key) for k in self.entries):
            raise DirectoryError(R.NOT_ALLOWED_ON_NON_LEAF, f"{dn} has children")
        del self.entries[key]
        return Change(entry.dn, None)

    def modify(self, dn: str, changes: Sequence[m.Modification]) -> Change:
        key = self._key(dn)
        old = self.entries.get(key)
        if old is None:
            raise DirectoryError(R.NO_SUCH_OBJECT, f"{dn} does not exist", self._matched(dn))
        entry = Entry(old.dn, {k: (d, list(v)) for k, (d, v) in old.attrs.items()})
        rdn_type, _ = rdn_of(old.dn)
        for ch in changes:
            at = self._attr(ch.attribute)
            if at is None:
                raise DirectoryError(R.UNDEFINED_ATTRIBUTE_TYPE, f"attribute {ch.attribute!r} is not in the schema")
            if at.system or at.name.lower() in (rdn_type.lower(), "objectclass"):
                raise DirectoryError(
                    R.NOT_ALLOWED_ON_RDN if at.name.lower() == rdn_type.lower() else R.CONSTRAINT_VIOLATION,
                    f"attribute {at.name} cannot be modified here",
                )
            k = at.name.lower()
            cur = entry.attrs.get(k, (at.name, []))[1]
            vals = [bytes(v) for v in ch.values]
            if ch.operation == 0:
                dup = [v for v in vals if v in cur]
                if dup:
                    raise DirectoryError(R.ATTRIBUTE_OR_VALUE_EXISTS, f"{at.name} already has that value")
                cur = cur + vals
            elif ch.operation == 1:
                if not cur or any(v not in cur for v in vals):
                    raise DirectoryError(R.NO_SUCH_ATTRIBUTE, f"{at.name} has no such value")
                cur = [v for v in cur if v not in vals] if vals else []
            elif ch.operation == 2:
                cur = vals
            else:
                raise DirectoryError(R.PROTOCOL_ERROR, f"modify operation {ch.operation} does not exist")
            if cur:
                entry.attrs[k] = (at.name, cur)
            else:
                entry.attrs.pop(k, None)
        entry.attrs["whenchanged"] = ("whenChanged", [generalized_time(self._wall())])
        parent = self.entries.get(normalise_dn(parent_dn(old.dn)))
        self._check(entry, parent, system=True)
        self.entries[key] = entry
        return Change(entry.dn, entry)

    def search(self, req: m.SearchRequest) -> tuple[list[m.SearchResultEntry], int, str]:
        """Entries matching ``req`` and the resultCode (success, noSuchObject or sizeLimitExceeded)."""
        try:
            base_key = normalise_dn(req.base)
        except DnError as exc:
            raise DirectoryError(R.INVALID_DN_SYNTAX, str(exc)) from None
        base = self.entries.get(base_key)
        if base is None:
            raise DirectoryError(R.NO_SUCH_OBJECT, f"{req.base} does not exist", self._matched(req.base))
        depth = base_key.count(",") + 1
        out: list[m.SearchResultEntry] = []
        for key in sorted(self.entries, key=lambda k: (k.count(","), k)):
            if req.scope == 0 and key != base_key:
                continue
            if req.scope == 1 and not (key.endswith("," + base_key) and key.count(",") + 1 == depth + 1):
                continue
            if req.scope == 2 and not is_under(key, base_key):
                continue
            entry = self.entries[key]
            if not matches(entry, req.filter):
                continue
            if req.size_limit and len(out) >= req.size_limit:
                return out, R.SIZE_LIMIT_EXCEEDED, ""
            out.append(select(entry.dn, entry.as_attrs(), req.attributes, req.types_only))
        return out, R.SUCCESS, ""


_OPERATIONAL = {"+"}


def select(
    dn: str, attrs: tuple[tuple[str, tuple[bytes, ...]], ...], wanted: Sequence[str], types_only: bool
) -> m.SearchResultEntry:
    """Attribute selection (RFC 4511 4.5.1.8): none or ``*`` -> all, ``1.1`` -> none, else by name."""
    names = {w.lower() for w in wanted}
    if "1.1" in names and len(names) == 1:
        chosen: tuple[tuple[str, tuple[bytes, ...]], ...] = ()
    elif not names or "*" in names:
        chosen = attrs
    else:
        chosen = tuple((a, v) for a, v in attrs if a.lower() in names)
    if types_only:
        chosen = tuple((a, ()) for a, _ in chosen)
    return m.SearchResultEntry(dn, chosen)


def _fold(at: sc.AttributeType | None, value: bytes) -> bytes:
    return value if at is not None and at.syntax == "octet" else value.lower()


def matches(entry: Entry, flt: m.FilterT) -> bool:
    """Evaluate a search filter (undefined counts as false); equality on octet syntax is exact bytes."""
    if isinstance(flt, m.And):
        return all(matches(entry, f) for f in flt.items)
    if isinstance(flt, m.Or):
        return any(matches(entry, f) for f in flt.items)
    if isinstance(flt, m.Not):
        return not matches(entry, flt.item)
    if isinstance(flt, m.Present):
        return bool(entry.values(flt.attribute))
    if isinstance(flt, m.Extensible):
        return False
    at = sc.attribute(flt.attribute)
    values = [_fold(at, v) for v in entry.values(flt.attribute)]
    if isinstance(flt, m.Substrings):
        for v in values:
            pos, ok = 0, True
            for kind, part in flt.parts:
                part = _fold(at, part)
                if kind == "initial":
                    ok = v.startswith(part)
                    pos = len(part)
                elif kind == "final":
                    ok = v.endswith(part) and len(v) - len(part) >= pos
                else:
                    found = v.find(part, pos)
                    ok = found >= 0
                    pos = found + len(part)
                if not ok:
                    break
            if ok:
                return True
        return False
    target = _fold(at, flt.value)
    if isinstance(flt, m.Equality | m.Approx):
        return target in values
    if isinstance(flt, m.GreaterOrEqual):
        return any(v >= target for v in values)
    return any(v <= target for v in values)
