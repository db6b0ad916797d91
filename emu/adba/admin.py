"""The forest-side ADBA roles of slmgr and VAMT over LDAP: create an activation object (online or by
phone), list and delete objects (docs/adba.md "Creating, listing and deleting objects").

Documented: the name is at most 40 characters (0xC004F082); ``delete`` takes a DN when the argument
contains ``,cn=`` and an RDN under the container otherwise, and checks the class before deleting; a
missing container reads as ERROR_DS_NO_SUCH_OBJECT (0x80072030) when listing or deleting and as
SL_E_VL_AD_SCHEMA_VERSION_NOT_SUPPORTED (0xC004F083) when creating. emu-defined: licences and IDs (see
``emu.adba.licence`` and ``emu.adba.labsigner``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from emu.adba import schema as sc
from emu.adba.dn import DnError, split_dn
from emu.adba.forest import container_dn
from emu.adba.ops import LdapOps
from emu.errors import EmuError
from emu.ldap import messages as m

__all__ = [
    "MAX_NAME",
    "READ_ATTRIBUTES",
    "ActivationObject",
    "AdbaAdminError",
    "CsvlkInfo",
    "config_nc",
    "create_object",
    "delete_object",
    "list_objects",
    "object_dn",
]

MAX_NAME = 40
AO_CLASS = "msSPP-ActivationObject"
READ_ATTRIBUTES = (
    "cn",
    "displayName",
    "distinguishedName",
    "objectClass",
    "msSPP-CSVLKSkuId",
    "msSPP-KMSIds",
    "msSPP-CSVLKPid",
    "msSPP-CSVLKPartialProductKey",
    "msSPP-OnlineLicense",
    "msSPP-PhoneLicense",
    "msSPP-ConfigLicense",
    "msSPP-IssuanceLicense",
    "msSPP-InstallationId",
    "msSPP-ConfirmationId",
)


class AdbaAdminError(EmuError):
    """An ADBA forest operation failed; ``hresult`` is what slmgr would report."""

    def __init__(self, hresult: int, message: str) -> None:
        super().__init__(f"0x{hresult:08X}: {message}")
        self.hresult = hresult


@dataclass(frozen=True)
class CsvlkInfo:
    """What an activation object records about the CSVLK that created it."""

    sku_id: uuid.UUID
    kms_ids: tuple[uuid.UUID, ...]
    epid: str
    partial_key: str


@dataclass(frozen=True)
class ActivationObject:
    """An activation object as read back from a directory."""

    dn: str
    name: str
    sku_id: uuid.UUID | None
    kms_ids: tuple[uuid.UUID, ...]
    pid: str
    partial_key: str
    licences: dict[str, bytes]

    @classmethod
    def from_entry(cls, entry: m.SearchResultEntry) -> ActivationObject:
        def text(name: str) -> str:
            vals = entry.get(name)
            return vals[0].decode("utf-8", "replace") if vals else ""

        sku = entry.get("msSPP-CSVLKSkuId")
        licences = {
            kind: entry.get(f"msSPP-{kind}License")[0]
            for kind in ("Online", "Phone", "Config", "Issuance")
            if entry.get(f"msSPP-{kind}License")
        }
        return cls(
            entry.dn,
            text("displayName") or text("cn"),
            uuid.UUID(bytes_le=sku[0]) if sku and len(sku[0]) == 16 else None,
            tuple(uuid.UUID(bytes_le=v) for v in entry.get("msSPP-KMSIds") if len(v) == 16),
            text("msSPP-CSVLKPid"),
            text("msSPP-CSVLKPartialProductKey"),
            licences,
        )


def config_nc(ops: LdapOps) -> str:
    """The forest's configurationNamingContext, read from the rootDSE."""
    entries, result = ops.search(m.SearchRequest("", 0, m.Present("objectClass"), ("configurationNamingContext",)))
    if result.code != 0 or not entries or not entries[0].get("configurationNamingContext"):
        raise AdbaAdminError(0x80072030, f"rootDSE has no configurationNamingContext (result {result.code})")
    return entries[0].get("configurationNamingContext")[0].decode()


def _container_exists(ops: LdapOps, container: str) -> bool:
    _, result = ops.search(m.SearchRequest(container, 0, m.Present("objectClass"), ("1.1",)))
    return result.code == 0


def create_object(
    ops: LdapOps, *, name: str, info: CsvlkInfo, licences: dict[str, bytes], extra: dict[str, str] | None = None
) -> str:
    """Create an activation object named ``name`` under the container; returns its DN."""
    if len(name) > MAX_NAME:
        raise AdbaAdminError(0xC004F082, f"activation object name is {len(name)} characters; at most {MAX_NAME}")
    if not name.strip():
        raise AdbaAdminError(0xC004F082, "activation object name is empty")
    container = container_dn(config_nc(ops))
    if not _container_exists(ops, container):
        raise AdbaAdminError(0xC004F083, f"{container} does not exist: the forest schema does not support ADBA")
    dn = f"CN={_escape(name)},{container}"
    attrs: list[tuple[str, list[bytes]]] = [
        ("objectClass", [b"top", AO_CLASS.encode()]),
        ("cn", [name.encode()]),
        ("displayName", [name.encode()]),
        ("msSPP-CSVLKSkuId", [info.sku_id.bytes_le]),
        ("msSPP-KMSIds", [k.bytes_le for k in info.kms_ids]),
        ("msSPP-CSVLKPid", [info.epid.encode()]),
        ("msSPP-CSVLKPartialProductKey", [info.partial_key.encode()]),
    ]
    for kind, blob in licences.items():
        attrs.append((f"msSPP-{kind}License", [blob]))
    for attr, value in (extra or {}).items():
        attrs.append((attr, [value.encode()]))
    result = ops.add(dn, attrs)
    if result.code == sc.ResultCode.ENTRY_ALREADY_EXISTS:
        raise AdbaAdminError(0x80071392, f"an activation object named {name!r} already exists")
    if result.code == sc.ResultCode.OBJECT_CLASS_VIOLATION and "not in the schema" in result.message:
        raise AdbaAdminError(0xC004F083, "the forest schema has no msSPP-ActivationObject class")
    if result.code != 0:
        raise AdbaAdminError(0x80072020, f"the directory refused the object: result {result.code} {result.message}")
    return dn


def _escape(value: str) -> str:
    return "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)


def list_objects(ops: LdapOps) -> list[ActivationObject]:
    """Every activation object in the forest (``slmgr /ao-list``)."""
    container = container_dn(config_nc(ops))
    entries, result = ops.search(
        m.SearchRequest(container, 1, m.Equality("objectClass", AO_CLASS.encode()), READ_ATTRIBUTES)
    )
    if result.code == sc.ResultCode.NO_SUCH_OBJECT:
        raise AdbaAdminError(0x80072030, f"{container} does not exist (schema not supported)")
    if result.code not in (0, sc.ResultCode.SIZE_LIMIT_EXCEEDED):
        raise AdbaAdminError(
            0x80072030 if result.code == 32 else 0xC004F081, f"search failed: {result.code} {result.message}"
        )
    return [ActivationObject.from_entry(e) for e in entries]


def object_dn(target: str, container: str) -> str:
    """slmgr's rule: ``,cn=`` in the argument -> a DN; otherwise an RDN (``CN=`` optional) under the container."""
    if ",cn=" in target.lower():
        return target
    rdn = target if target.lower().startswith("cn=") else f"CN={_escape(target)}"
    return f"{rdn},{container}"


def delete_object(ops: LdapOps, target: str) -> str:
    """Delete an activation object by DN or RDN (``slmgr /del-ao``); the class is checked first."""
    container = container_dn(config_nc(ops))
    dn = object_dn(target, container)
    try:
        split_dn(dn)
    except DnError as exc:
        raise AdbaAdminError(0x80072032, f"{target!r} is not a DN: {exc}") from None
    entries, result = ops.search(m.SearchRequest(dn, 0, m.Present("objectClass"), ("objectClass",)))
    if result.code != 0 or not entries:
        raise AdbaAdminError(0x80072030, f"{dn} does not exist")
    classes = {v.decode("utf-8", "replace").lower() for v in entries[0].get("objectClass")}
    if AO_CLASS.lower() not in classes:
        raise AdbaAdminError(0xC004F081, f"{dn} is not an activation object (classes: {', '.join(sorted(classes))})")
    result = ops.delete(dn)
    if result.code != 0:
        raise AdbaAdminError(
            0x80072030 if result.code == 32 else 0xC004F081, f"delete failed: {result.code} {result.message}"
        )
    return dn
