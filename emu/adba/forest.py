"""A lab forest: the domain naming context, the configuration partition with CN=Services, the schema
container with the msSPP classes, an Administrator account, and the two ADBA containers that forest
updates 91 (CN=Microsoft SPP) and 92 (CN=Activation Objects) create (docs/adba.md "Where the objects
live"; documented). The rootDSE is computed, not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from emu.adba import schema as sc
from emu.adba.directory import Directory, generalized_time

__all__ = ["DEFAULT_ADMIN_PASSWORD", "Forest", "build_forest", "container_dn", "domain_dn"]

#: emu-defined lab password of CN=Administrator (never a real secret; override it with --admin-password).
DEFAULT_ADMIN_PASSWORD = "emu-lab-Passw0rd"

SPP_PREFIX = "CN=Microsoft SPP,CN=Services"
CONTAINER_PREFIX = "CN=Activation Objects," + SPP_PREFIX


def domain_dn(domain: str) -> str:
    """``kms.test`` -> ``DC=kms,DC=test``."""
    return ",".join(f"DC={label}" for label in domain.strip(".").split(".") if label)


def container_dn(config_nc: str) -> str:
    """Where activation objects live: under the forest's configuration naming context."""
    return f"{CONTAINER_PREFIX},{config_nc}"


@dataclass(frozen=True)
class Forest:
    """Names of a forest (one domain, the forest root)."""

    domain: str
    dc_host: str = "dc1"

    @property
    def base(self) -> str:
        return domain_dn(self.domain)

    @property
    def config_nc(self) -> str:
        return f"CN=Configuration,{self.base}"

    @property
    def schema_nc(self) -> str:
        return f"CN=Schema,{self.config_nc}"

    @property
    def container(self) -> str:
        return container_dn(self.config_nc)

    @property
    def admin_dn(self) -> str:
        return f"CN=Administrator,CN=Users,{self.base}"

    @property
    def dns_host_name(self) -> str:
        return f"{self.dc_host}.{self.domain}"

    def root_dse(self, wall: float, *, require_signing: bool) -> tuple[tuple[str, tuple[bytes, ...]], ...]:
        """The rootDSE attributes AD clients read (naming contexts, versions, functional levels)."""
        ncs = (self.base, self.config_nc, self.schema_nc)
        return (
            ("currentTime", (generalized_time(wall),)),
            ("dsServiceName", (f"CN=NTDS Settings,CN={self.dc_host.upper()},CN=Servers,{self.config_nc}".encode(),)),
            ("namingContexts", tuple(n.encode() for n in ncs)),
            ("defaultNamingContext", (self.base.encode(),)),
            ("rootDomainNamingContext", (self.base.encode(),)),
            ("configurationNamingContext", (self.config_nc.encode(),)),
            ("schemaNamingContext", (self.schema_nc.encode(),)),
            ("supportedLDAPVersion", (b"3", b"2")),
            ("supportedSASLMechanisms", (b"GSS-SPNEGO", b"GSSAPI") if require_signing else ()),
            ("dnsHostName", (self.dns_host_name.encode(),)),
            ("serverName", (f"CN={self.dc_host.upper()},CN=Servers,{self.config_nc}".encode(),)),
            ("isSynchronized", (b"TRUE",)),
            ("domainFunctionality", (b"4",)),
            ("forestFunctionality", (b"4",)),
            ("domainControllerFunctionality", (b"4",)),
            ("vendorName", (b"emu (emulated directory)",)),
        )


def build_forest(
    forest: Forest,
    *,
    wall: Callable[[], float],
    new_guid: Callable[[], bytes],
    schema_2012: bool = True,
    forest_prep: bool = True,
) -> Directory:
    """A fresh directory for ``forest``. ``schema_2012`` False: a pre-2012 schema (no msSPP classes);
    ``forest_prep`` False: forest updates 91/92 not applied (no ADBA containers)."""
    d = Directory(wall=wall, new_guid=new_guid, msspp_schema=schema_2012)
    oc = "objectClass"

    def add(dn: str, *attrs: tuple[str, list[bytes]]) -> None:
        d.add(dn, list(attrs), system=True)

    add(forest.base, (oc, [b"top", b"domainDNS"]))
    add(f"CN=Users,{forest.base}", (oc, [b"top", b"container"]))
    add(
        forest.admin_dn,
        (oc, [b"top", b"person", b"user"]),
        ("sAMAccountName", [b"Administrator"]),
        ("userPrincipalName", [f"Administrator@{forest.domain}".encode()]),
    )
    add(forest.config_nc, (oc, [b"top", b"configuration"]))
    add(forest.schema_nc, (oc, [b"top", b"dMD"]), ("objectVersion", [b"69" if schema_2012 else b"47"]))
    if schema_2012:
        for cls in sc.MSSPP_CLASSES:
            add(
                f"CN={cls.name.replace('msSPP-', 'ms-SPP-')},{forest.schema_nc}",
                (oc, [b"top", b"classSchema"]),
                ("governsID", [cls.oid.encode()]),
                ("lDAPDisplayName", [cls.name.encode()]),
            )
    add(f"CN=Services,{forest.config_nc}", (oc, [b"top", b"container"]))
    if forest_prep and schema_2012:
        add(f"{SPP_PREFIX},{forest.config_nc}", (oc, [b"top", b"container"]), ("showInAdvancedViewOnly", [b"TRUE"]))
        add(
            forest.container,
            (oc, [b"top", b"msSPP-ActivationObjectsContainer"]),
            ("showInAdvancedViewOnly", [b"TRUE"]),
        )
    return d
