"""The slice of the Active Directory schema emu's directory enforces: the msSPP classes and attributes that
ADBA adds (docs/adba.md "Schema", documented), plus the generic classes an AD-shaped tree needs.

Result codes for violations follow what Samba 4.17 answered in the lab (docs/adba.md "Schema
enforcement"): a value out of range is invalidAttributeSyntax (21), a missing mandatory attribute is
objectClassViolation (65), a wrong parent is namingViolation (64). What Windows AD answers for the range
case is not known; these are Samba's codes, not verified against Windows.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ATTRIBUTES",
    "CLASSES",
    "MSSPP_ATTRIBUTES",
    "MSSPP_CLASSES",
    "AttributeType",
    "ObjectClass",
    "ResultCode",
    "attribute",
    "object_class",
]


class ResultCode:
    """RFC 4511 resultCode values emu's directory answers with."""

    SUCCESS = 0
    OPERATIONS_ERROR = 1
    PROTOCOL_ERROR = 2
    SIZE_LIMIT_EXCEEDED = 4
    COMPARE_FALSE = 5
    COMPARE_TRUE = 6
    AUTH_METHOD_NOT_SUPPORTED = 7
    STRONGER_AUTH_REQUIRED = 8
    NO_SUCH_ATTRIBUTE = 16
    UNDEFINED_ATTRIBUTE_TYPE = 17
    CONSTRAINT_VIOLATION = 19
    ATTRIBUTE_OR_VALUE_EXISTS = 20
    INVALID_ATTRIBUTE_SYNTAX = 21
    NO_SUCH_OBJECT = 32
    INVALID_DN_SYNTAX = 34
    INVALID_CREDENTIALS = 49
    INSUFFICIENT_ACCESS_RIGHTS = 50
    UNWILLING_TO_PERFORM = 53
    NAMING_VIOLATION = 64
    OBJECT_CLASS_VIOLATION = 65
    NOT_ALLOWED_ON_NON_LEAF = 66
    NOT_ALLOWED_ON_RDN = 67
    ENTRY_ALREADY_EXISTS = 68
    OTHER = 80


@dataclass(frozen=True)
class AttributeType:
    """An attribute: ``syntax`` is "octet" (binary, exact match) or "text" (case-insensitive match);
    ``lo``/``hi`` bound the length of each value (bytes for octet, characters for text)."""

    name: str
    oid: str
    syntax: str = "text"
    single: bool = True
    lo: int | None = None
    hi: int | None = None
    system: bool = False  # set by the directory itself (objectGUID, whenCreated, ...)


@dataclass(frozen=True)
class ObjectClass:
    name: str
    oid: str
    superior: str | None
    must: tuple[str, ...] = ()
    may: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()  # possible superiors (structural classes)


_MB5 = 5_242_880
MSSPP_ATTRIBUTES: tuple[AttributeType, ...] = (
    AttributeType("msSPP-CSVLKSkuId", "1.2.840.113556.1.4.2081", "octet", True, 16, 16),
    AttributeType("msSPP-KMSIds", "1.2.840.113556.1.4.2082", "octet", False, 16, 16),
    AttributeType("msSPP-InstallationId", "1.2.840.113556.1.4.2083", "text", True, None, 512),
    AttributeType("msSPP-ConfirmationId", "1.2.840.113556.1.4.2084", "text", True, None, 512),
    AttributeType("msSPP-OnlineLicense", "1.2.840.113556.1.4.2085", "octet", True, None, _MB5),
    AttributeType("msSPP-PhoneLicense", "1.2.840.113556.1.4.2086", "octet", True, None, _MB5),
    AttributeType("msSPP-ConfigLicense", "1.2.840.113556.1.4.2087", "octet", True, None, _MB5),
    AttributeType("msSPP-IssuanceLicense", "1.2.840.113556.1.4.2088", "octet", True, None, _MB5),
    AttributeType("msSPP-CSVLKPid", "1.2.840.113556.1.4.2105", "text", True, None, 512),
    AttributeType("msSPP-CSVLKPartialProductKey", "1.2.840.113556.1.4.2106", "text", True, 5, 5),
)

_GENERIC_ATTRIBUTES: tuple[AttributeType, ...] = (
    AttributeType("objectClass", "2.5.4.0", "text", False),
    AttributeType("cn", "2.5.4.3", "text", True, 1, 64),
    AttributeType("dc", "0.9.2342.19200300.100.1.25", "text", True, 1, 255),
    AttributeType("name", "1.2.840.113556.1.4.1", "text", True, 1, 255, system=True),
    AttributeType("distinguishedName", "2.5.4.49", "text", True, system=True),
    AttributeType("objectGUID", "1.2.840.113556.1.4.2", "octet", True, 16, 16, system=True),
    AttributeType("objectCategory", "1.2.840.113556.1.4.782", "text", True, system=True),
    AttributeType("instanceType", "1.2.840.113556.1.2.1", "text", True, system=True),
    AttributeType("whenCreated", "1.2.840.113556.1.2.2", "text", True, system=True),
    AttributeType("whenChanged", "1.2.840.113556.1.2.3", "text", True, system=True),
    AttributeType("displayName", "1.2.840.113556.1.2.13", "text", True, 0, 256),
    AttributeType("description", "2.5.4.13", "text", False, 0, 1024),
    AttributeType("showInAdvancedViewOnly", "1.2.840.113556.1.2.169", "text", True),
    AttributeType("sAMAccountName", "1.2.840.113556.1.4.221", "text", True, 0, 256),
    AttributeType("userPrincipalName", "1.2.840.113556.1.4.656", "text", True, 0, 1024),
    AttributeType("lDAPDisplayName", "1.2.840.113556.1.2.460", "text", True, 1, 256),
    AttributeType("governsID", "1.2.840.113556.1.2.22", "text", True),
    AttributeType("attributeID", "1.2.840.113556.1.2.30", "text", True),
    AttributeType("objectVersion", "1.2.840.113556.1.2.76", "text", True),
)

ATTRIBUTES: dict[str, AttributeType] = {a.name.lower(): a for a in (*_GENERIC_ATTRIBUTES, *MSSPP_ATTRIBUTES)}

_ANY_PARENT = ("domainDNS", "container", "configuration", "organizationalUnit", "dMD")
MSSPP_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("msSPP-ActivationObjectsContainer", "1.2.840.113556.1.5.266", "top", parents=("container",)),
    ObjectClass(
        "msSPP-ActivationObject",
        "1.2.840.113556.1.5.267",
        "top",
        must=("msSPP-KMSIds", "msSPP-CSVLKSkuId", "msSPP-CSVLKPartialProductKey", "msSPP-CSVLKPid"),
        may=(
            "msSPP-IssuanceLicense",
            "msSPP-ConfigLicense",
            "msSPP-PhoneLicense",
            "msSPP-OnlineLicense",
            "msSPP-ConfirmationId",
            "msSPP-InstallationId",
        ),
        parents=("msSPP-ActivationObjectsContainer",),
    ),
)

_GENERIC_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass(
        "top",
        "2.5.6.0",
        None,
        must=("objectClass",),
        may=(
            "cn",
            "name",
            "distinguishedName",
            "objectGUID",
            "objectCategory",
            "instanceType",
            "whenCreated",
            "whenChanged",
            "displayName",
            "description",
            "showInAdvancedViewOnly",
        ),
    ),
    ObjectClass("domainDNS", "1.2.840.113556.1.5.67", "top", may=("dc",), parents=("domainDNS",)),
    ObjectClass("container", "1.2.840.113556.1.3.23", "top", must=("cn",), parents=_ANY_PARENT),
    ObjectClass("configuration", "1.2.840.113556.1.5.12", "top", must=("cn",), parents=("domainDNS",)),
    ObjectClass("organizationalUnit", "2.5.6.5", "top", parents=_ANY_PARENT),
    ObjectClass("dMD", "1.2.840.113556.1.3.9", "top", must=("cn",), may=("objectVersion",), parents=("configuration",)),
    ObjectClass(
        "classSchema", "1.2.840.113556.1.3.13", "top", must=("cn", "governsID", "lDAPDisplayName"), parents=("dMD",)
    ),
    ObjectClass(
        "attributeSchema",
        "1.2.840.113556.1.3.14",
        "top",
        must=("cn", "attributeID", "lDAPDisplayName"),
        parents=("dMD",),
    ),
    ObjectClass("person", "2.5.6.6", "top", must=("cn",)),
    ObjectClass(
        "user",
        "1.2.840.113556.1.5.9",
        "person",
        may=("sAMAccountName", "userPrincipalName"),
        parents=("container", "organizationalUnit", "domainDNS"),
    ),
)

CLASSES: dict[str, ObjectClass] = {c.name.lower(): c for c in (*_GENERIC_CLASSES, *MSSPP_CLASSES)}


def attribute(name: str) -> AttributeType | None:
    """The attribute type called ``name`` (case-insensitive), or None."""
    return ATTRIBUTES.get(name.lower())


def object_class(name: str) -> ObjectClass | None:
    """The class called ``name`` (case-insensitive), or None."""
    return CLASSES.get(name.lower())
