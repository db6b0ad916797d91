"""``emu client activate --adba DOMAIN``: one ADBA attempt the way a domain member makes it (docs/adba.md
"The client"): locate a DC by SRV (or --dc), bind, read the rootDSE, search the container for an object
listing the product's KMS counted ID, verify its licence. Exit 0 activated, 1 not (a real client would go
on to KMS), 2 usage."""

from __future__ import annotations

import argparse
import json
import time

from emu.adba.client import AdbaResult
from emu.errors import ScenarioError, UsageError

__all__ = ["adba_once", "report_adba", "run_adba_attempt"]


def run_adba_attempt(args: argparse.Namespace) -> int:
    """``emu client activate --adba DOMAIN``: one attempt, reported; exit 0 activated, 1 not."""
    domain = args.adba.strip(".").lower()
    result = adba_once(args, domain)
    report_adba(args, result, domain)
    return 0 if result.activated else 1


def adba_once(args: argparse.Namespace, domain: str) -> AdbaResult:
    """One ADBA attempt for forest ``domain`` with the command's flags (--dc, --dns-server, --capture, ...)."""
    from emu.adba.client import DC_NOT_FOUND, Check, adba_attempt
    from emu.adba.forest import DEFAULT_ADMIN_PASSWORD, Forest
    from emu.kms import products
    from emu.net.dc_runner import LDAP_SERVICE
    from emu.net.dns_discovery import discover_kms_hosts
    from emu.net.dns_server import parse_address
    from emu.net.ldap_client import LdapClient
    from emu.rng import system_rng

    kms_id = args.kms_id or products.lookup(args.product).kms_id
    checks: list[Check] = []
    if args.dc:
        hosts = [parse_address(args.dc, 389)]
        checks.append(Check("dc-located", True, f"--dc {args.dc}"))
    else:
        if not args.dns_server:
            raise UsageError("--adba needs --dc HOST:PORT or --dns-server ADDR:PORT to locate a domain controller")
        import asyncio

        try:
            hosts = asyncio.run(
                discover_kms_hosts(
                    domain, parse_address(args.dns_server, 53), system_rng(), timeout=args.timeout, service=LDAP_SERVICE
                )
            )
        except ScenarioError as exc:
            hosts = []
            checks.append(Check("dc-located", False, str(exc)))
        if hosts:
            checks.append(Check("dc-located", True, f"_ldap._tcp.dc._msdcs.{domain} -> {hosts[0][0]}:{hosts[0][1]}"))
        elif not checks:
            checks.append(Check("dc-located", False, f"no _ldap._tcp.dc._msdcs.{domain} SRV records"))
    capture = None
    local_ports: list[int] = []
    result: AdbaResult
    if not hosts:
        result = AdbaResult(False, tuple(checks), DC_NOT_FOUND)
    else:
        if args.capture:
            import asyncio

            from emu.kms.client import HostAddress
            from emu.pcap.sniff import TcpCapture

            capture = TcpCapture()
            asyncio.run(capture.start([HostAddress(hosts[0][0], hosts[0][1])]))
        try:
            with LdapClient(*hosts[0], timeout=args.timeout) as client:
                local_ports.append(client.local_port)
                result = adba_attempt(
                    client,
                    kms_id=kms_id,
                    forest=domain,
                    now=time.time(),
                    bind_name=args.bind_dn or Forest(domain).admin_dn,
                    password=args.password or DEFAULT_ADMIN_PASSWORD,
                )
            result = AdbaResult(
                result.activated,
                (*checks, *result.checks),
                result.hresult,
                result.activation_object,
                result.valid_until,
            )
        except ScenarioError as exc:
            result = AdbaResult(False, (*checks, Check("connect", False, str(exc))), DC_NOT_FOUND)
    if capture is not None:
        import asyncio

        asyncio.run(capture.stop())
        written = capture.write(args.capture, local_ports)
        if not args.json:
            print(f"wrote {written} frames to {args.capture}")
    return result


def report_adba(args: argparse.Namespace, result: AdbaResult, domain: str) -> None:
    """Print one ADBA attempt: its checks, or with --json one document."""
    from emu.kms import products

    kms_id = args.kms_id or products.lookup(args.product).kms_id
    if args.json:
        doc = result.as_dict()
        doc.update({"domain": domain, "kms_id": str(kms_id), "fallback": "kms" if result.fallback else None})
        print(json.dumps(doc, indent=2))
    else:
        for c in result.checks:
            print(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        if result.activated:
            print(
                f"activated by ADBA until {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(result.valid_until or 0))}"
            )
        else:
            print(f"not activated by ADBA (0x{result.hresult:08X}); a client would fall back to KMS")
