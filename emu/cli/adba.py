"""``emu adba``: the forest-side ADBA roles of slmgr and VAMT (docs/adba.md "Creating, listing and
deleting objects"), against any LDAP directory (emu dc serve, Samba).

  activate-online KEY [--name NAME]   create an activation object (slmgr /ad-activation-online)
  get-iid KEY                         print the forest's installation ID (slmgr /ad-activation-get-iid)
  apply-cid KEY CID [--name NAME]     create the object from a confirmation ID (/ad-activation-apply-cid)
  list                                list the objects (slmgr /ao-list)
  delete DN-OR-RDN                    delete one (slmgr /del-ao)

KEY is an emu lab CSVLK (``emu adba lab-key GROUP`` prints one). Licences come from emu's local lab
signer; exit status 1 with the HRESULT on failure.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys

from emu.cli import show_help
from emu.errors import UsageError

__all__ = ["add_connection_args", "connect", "register"]


def add_connection_args(p: argparse.ArgumentParser) -> None:
    from emu.adba.forest import DEFAULT_ADMIN_PASSWORD

    g = p.add_argument_group("directory")
    g.add_argument("--server", metavar="HOST:PORT", help="LDAP server (default: locate a DC of --domain by DNS SRV)")
    g.add_argument("--domain", default="kms.test", help="forest root domain (default kms.test)")
    g.add_argument("--dns-server", metavar="ADDR:PORT", help="DNS server for locating the DC")
    g.add_argument("--bind-dn", help="account to bind as (default CN=Administrator,CN=Users,<domain>)")
    g.add_argument("--password", default=DEFAULT_ADMIN_PASSWORD, help="password (default: emu's lab password)")
    g.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")


def locate(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The DC addresses to try: --server, or SRV _ldap._tcp.dc._msdcs.<domain>."""
    import asyncio

    from emu.net.dc_runner import LDAP_SERVICE
    from emu.net.dns_discovery import discover_kms_hosts
    from emu.net.dns_server import parse_address
    from emu.rng import system_rng

    if args.server:
        return [parse_address(args.server, 389)]
    if not args.dns_server:
        raise UsageError("give --server HOST:PORT, or --dns-server to locate a DC of --domain")
    dns = parse_address(args.dns_server, 53)
    return asyncio.run(discover_kms_hosts(args.domain, dns, system_rng(), timeout=args.timeout, service=LDAP_SERVICE))


def connect(args: argparse.Namespace) -> object:
    """An LdapClient bound as --bind-dn."""
    from emu.adba.forest import Forest
    from emu.errors import ScenarioError
    from emu.net.ldap_client import LdapClient

    hosts = locate(args)
    if not hosts:
        raise ScenarioError(f"no domain controller found: no _ldap._tcp.dc._msdcs.{args.domain} SRV records")
    client = LdapClient(*hosts[0], timeout=args.timeout)
    result = client.bind(args.bind_dn or Forest(args.domain).admin_dn, args.password)
    if result.code != 0:
        client.close()
        raise ScenarioError(f"bind refused: LDAP result {result.code} {result.message}")
    return client


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "adba",
        help="create, list and delete ADBA activation objects (slmgr /ad-activation-*, /ao-list, /del-ao)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=show_help(parser))
    sub = parser.add_subparsers(dest="adba_command", metavar="SUBCOMMAND")
    p = sub.add_parser("activate-online", help="create an activation object (online forest activation)")
    p.add_argument("key", help="lab CSVLK")
    p.add_argument("--name", help="object name, at most 40 characters (default: the key's group)")
    add_connection_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_activate_online)
    p = sub.add_parser("get-iid", help="print the forest installation ID for phone activation")
    p.add_argument("key")
    p.add_argument("--domain", default="kms.test")
    p.set_defaults(func=_get_iid)
    p = sub.add_parser("apply-cid", help="create an activation object from a confirmation ID")
    p.add_argument("key")
    p.add_argument("cid")
    p.add_argument("--name")
    add_connection_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_apply_cid)
    p = sub.add_parser("list", help="list activation objects")
    add_connection_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)
    p = sub.add_parser("delete", help="delete an activation object by DN or RDN")
    p.add_argument("target", help="DN (contains ',CN=') or RDN under the container (CN= optional)")
    add_connection_args(p)
    p.set_defaults(func=_delete)
    p = sub.add_parser("lab-key", help="print the lab CSVLK of a CSVLK group (Windows, Office2016, ...)")
    p.add_argument("group")
    p.set_defaults(func=_lab_key)
    p = sub.add_parser(
        "cid", help="lab signer: the confirmation ID for an installation ID (stand-in for the activation service)"
    )
    p.add_argument("iid")
    p.set_defaults(func=_cid)


def _fail(exc: Exception) -> int:
    print(f"emu adba: {exc}", file=sys.stderr)
    return 1


def _create(args: argparse.Namespace, phone_cid: str | None) -> int:
    import time

    from emu.activation.csvlk import csvlk_info
    from emu.adba import admin
    from emu.adba.labsigner import IidCidError, LabSigner
    from emu.net.ldap_client import LdapClient
    from emu.rng import system_rng

    signer = LabSigner()
    try:
        info = csvlk_info(args.key, rng=system_rng(), today=_dt.date.today())
        now = time.time()
        if phone_cid is not None:
            signer.check_cid(args.key, args.domain, phone_cid)
            licences = signer.phone_licences(args.domain, info.sku_id, info.kms_ids, now)
            extra = {
                "msSPP-InstallationId": signer.installation_id(args.key, args.domain),
                "msSPP-ConfirmationId": phone_cid,
            }
        else:
            licences = signer.online_licences(args.key, args.domain, info.sku_id, info.kms_ids, now)
            extra = {}
        client = connect(args)
        assert isinstance(client, LdapClient)
        with client:
            dn = admin.create_object(
                client, name=args.name or "emu lab forest activation", info=info, licences=licences, extra=extra
            )
    except (admin.AdbaAdminError, IidCidError) as exc:
        return _fail(exc)
    if args.json:
        print(
            json.dumps(
                {"dn": dn, "kms_ids": [str(k) for k in info.kms_ids], "sku_id": str(info.sku_id), "pid": info.epid}
            )
        )
    else:
        print(f"created {dn}")
    return 0


def _activate_online(args: argparse.Namespace) -> int:
    return _create(args, None)


def _apply_cid(args: argparse.Namespace) -> int:
    return _create(args, args.cid)


def _get_iid(args: argparse.Namespace) -> int:
    from emu.activation.csvlk import csvlk_info
    from emu.adba.admin import AdbaAdminError
    from emu.adba.labsigner import LabSigner
    from emu.rng import system_rng

    try:
        csvlk_info(args.key, rng=system_rng(), today=_dt.date.today())
    except AdbaAdminError as exc:
        return _fail(exc)
    print(LabSigner.installation_id(args.key, args.domain))
    return 0


def _cid(args: argparse.Namespace) -> int:
    from emu.adba.labsigner import IidCidError, LabSigner

    try:
        print(LabSigner().confirmation_id(args.iid))
    except IidCidError as exc:
        return _fail(exc)
    return 0


def _lab_key(args: argparse.Namespace) -> int:
    from emu.activation.csvlk import lab_key_for_group

    print(lab_key_for_group(args.group))
    return 0


def _list(args: argparse.Namespace) -> int:
    from emu.adba import admin
    from emu.net.ldap_client import LdapClient

    client = connect(args)
    assert isinstance(client, LdapClient)
    try:
        with client:
            objects = admin.list_objects(client)
    except admin.AdbaAdminError as exc:
        return _fail(exc)
    for ao in objects:
        if args.json:
            print(
                json.dumps(
                    {
                        "dn": ao.dn,
                        "name": ao.name,
                        "sku_id": str(ao.sku_id),
                        "pid": ao.pid,
                        "partial_key": ao.partial_key,
                        "kms_ids": [str(k) for k in ao.kms_ids],
                    }
                )
            )
        else:
            print(
                f"{ao.name}\n  DN: {ao.dn}\n  Activation ID: {ao.sku_id}\n  Extended PID: {ao.pid}\n"
                f"  Partial product key: {ao.partial_key}\n  KMS IDs: {len(ao.kms_ids)}"
            )
    if not objects and not args.json:
        print("no activation objects")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from emu.adba import admin
    from emu.net.ldap_client import LdapClient

    client = connect(args)
    assert isinstance(client, LdapClient)
    try:
        with client:
            dn = admin.delete_object(client, args.target)
    except admin.AdbaAdminError as exc:
        return _fail(exc)
    print(f"deleted {dn}")
    return 0
