"""``emu client activate``: a vlmcs-class activation tool (docs/kms-client.md).

It builds activation requests for a product, sends them to a KMS host over DCE/RPC/TCP, checks
every response the way vlmcs does (docs/kms-wire-protocol.md 2.11, 5.6) and prints one line per request. The target is
``host[:port]``, ``[v6addr]:port``, ``.domain`` (``_vlmcs._tcp.domain`` SRV records, tried in
RFC 2782 order with failover) or ``-`` (``_vlmcs._tcp`` in each domain of the resolver's search
list, from resolv.conf's ``search``/``domain`` line: the first domain with records is used, as
the resolver's search does).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu.cli import positive_int, positive_seconds, show_help
from emu.cli.client_output import (
    EXIT_ACTIVATED,
    EXIT_BELOW_THRESHOLD,
    EXIT_CODES,
    EXIT_HOST_ERROR,
    EXIT_PROTOCOL_ERROR,
    EXIT_UNREACHABLE,
    EXIT_VERIFICATION_FAILED,
    KmsAttempt,
    request_table,
    response_table,
    summary_line,
)
from emu.cli.resolv_conf import RESOLV_CONF, search_domains, system_dns_server
from emu.clock import WallClock, unix_to_filetime
from emu.errors import ScenarioError, UsageError
from emu.kms import products
from emu.kms.client import DEFAULT_BINDING_EXPIRATION, HostAddress, RequestTemplate
from emu.net.address import parse_host_port
from emu.net.kms_client import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_REPLY_TIMEOUT,
    ExchangeResult,
    ExchangeStatus,
    KmsClientSession,
    RpcOptions,
)
from emu.net.kms_lifecycle import dns_resolver
from emu.rng import Rng, seeded, system_rng
from emu.wire.kms import LicenseStatus, Version

__all__ = [
    "EXIT_ACTIVATED",
    "EXIT_BELOW_THRESHOLD",
    "EXIT_CODES",
    "EXIT_HOST_ERROR",
    "EXIT_PROTOCOL_ERROR",
    "EXIT_UNREACHABLE",
    "EXIT_VERIFICATION_FAILED",
    "KmsAttempt",
    "kms_attempt",
    "parse_target",
    "register",
    "search_domains",
]

DEFAULT_PORT = 1688
DEFAULT_PRODUCT = "Windows 10/11 Enterprise"
#: Where the system resolver's nameservers and search list live (resolv.conf(5)).
#: The target that means "search the resolver's domains" (vlmcs ``-``, docs/kms-wire-protocol.md).
SEARCH_TARGET = "-"

_EPILOG = """\
exit status:
  0  activated: count >= the required count and every check passed (or, with --adba/--domain-member, by ADBA)
  1  not activated by ADBA, and no KMS path ran (--adba; --domain-member with --act-type ad)
  2  bad command line (unknown product, malformed GUID or address, ...)
  3  below threshold: the host answered, but its count is below the required count
  4  host error: the host answered with an HRESULT (e.g. 0xC004F042) or a DCE/RPC fault
  5  verification failed: the response failed a client check (MAC, hash, HMAC, CMID echo, ...)
  6  RPC protocol error: garbage, a truncated or oversized PDU, a failed RPC check
  7  no host reachable: refused, timed out, or closed without answering (every host tried)

examples:
  emu client activate 127.0.0.1:1688 --product win10ent
  emu client activate .kms.test --dns-server 127.0.0.1:5353 --product "srv2022 dc" -v
  emu client activate - --dns-server 127.0.0.1:5353 -n 1     # _vlmcs._tcp.<each resolv.conf search domain>
  emu client activate [::1]:1688 --protocol 4 --no-ndr64 --count 3 --new-connection --json
  emu client activate --domain-member --forest kms.test --dns-server 127.0.0.1:5353   # ADBA, then KMS by SRV
"""


# --- targets --------------------------------------------------------------------------------


def parse_target(text: str, default_port: int = DEFAULT_PORT) -> HostAddress | str:
    """``host[:port]``, ``[v6]:port``, a bare IPv6 address → :class:`HostAddress`; ``.domain`` → the domain.

    Raises:
        UsageError: the text is neither.
    """
    text = text.strip()
    if not text:
        raise UsageError("empty target: give host[:port], [v6addr]:port or .domain")
    if text.startswith("."):
        domain = text.strip(".")
        if not domain:
            raise UsageError("'.' is not a domain: give .example.com to look up _vlmcs._tcp.example.com")
        return domain
    host, port = parse_host_port(text, default_port, min_port=1)
    return HostAddress(host, port)


def _guid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text.strip().strip("{}"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)") from None


def _version(text: str) -> Version:
    major, _, minor = text.partition(".")
    try:
        version = Version(int(major), int(minor or 0))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MAJOR[.MINOR], e.g. 6.0") from None
    if not (0 <= version.major <= 0xFFFF and 0 <= version.minor <= 0xFFFF):
        raise argparse.ArgumentTypeError(f"{text!r}: major and minor are 0..65535")
    return version


# --- the parser -------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``emu client`` and its ``activate`` subcommand."""
    client = subparsers.add_parser("client", help="KMS client tools (activate against a host)")
    sub = client.add_subparsers(dest="client_command", metavar="SUBCOMMAND")
    importlib.import_module("emu.cli.client_mak").register(sub)  # emu client mak ... (MAK)
    p = sub.add_parser(
        "activate",
        help="send activation requests to a KMS host and check the answers (like vlmcs)",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target",
        nargs="?",
        default=None,
        help="host[:port], [v6addr]:port, .domain (SRV _vlmcs._tcp.domain), or - (SRV _vlmcs._tcp in each "
        "domain of the search/domain line of resolv.conf in turn; the first that has records is used, like vlmcs -) (default 127.0.0.1:1688, "
        "[::1]:1688 with --ip 6)",
    )
    g = p.add_argument_group("product (vlmcs -l, -a, -k, -s, -4/-5/-6, -K)")
    g.add_argument(
        "-l",
        "--product",
        default=DEFAULT_PRODUCT,
        help=f"product name or SKU GUID (forgiving: win10ent, 'srv2019 dc', o2019); default {DEFAULT_PRODUCT!r}",
    )
    g.add_argument("-a", "--app-id", type=_guid, help="application ID (overrides the product's)")
    g.add_argument("-k", "--kms-id", type=_guid, help="KMS counted ID (overrides the product's)")
    g.add_argument("-s", "--sku-id", type=_guid, help="SKU (activation) ID (overrides the product's)")
    g.add_argument(
        "--protocol", type=int, choices=(4, 5, 6), help="KMS protocol major version (default: the product's)"
    )
    g.add_argument(
        "-K",
        "--kms-version",
        type=_version,
        metavar="MAJOR.MINOR",
        help="exact version for the version fields (layout: v4 below 5, v6 above 6, like vlmcs -K); hosts should refuse other than 4.0/5.0/6.0",
    )
    g = p.add_argument_group("request fields (vlmcs -c, -o, -w, -r, -m, -t, -g)")
    g.add_argument(
        "-c", "--cmid", type=_guid, help="client machine ID (default: random per request; fixed implies one request)"
    )
    g.add_argument("-o", "--previous-cmid", type=_guid, default=uuid.UUID(int=0), help="previous CMID (default zero)")
    g.add_argument("-w", "--workstation", help="workstation name, up to 63 characters (default: random)")
    g.add_argument(
        "-r", "--required-count", type=positive_int, help="RequiredClientCount N (default: the product's threshold)"
    )
    g.add_argument("-m", "--vm", action="store_true", help="say the client is a virtual machine")
    g.add_argument(
        "-t",
        "--license-status",
        type=int,
        choices=range(7),
        default=int(LicenseStatus.OOB_GRACE),
        metavar="0..6",
        help="LicenseStatus (default 2, OOB grace)",
    )
    g.add_argument(
        "-g",
        "--binding-expiration",
        type=int,
        default=DEFAULT_BINDING_EXPIRATION,
        metavar="MINUTES",
        help=f"BindingExpiration in minutes (default {DEFAULT_BINDING_EXPIRATION})",
    )
    g = p.add_argument_group("connection (vlmcs -n, -T, -N, -B, -p, -i)")
    g.add_argument(
        "-n",
        "--count",
        type=positive_int,
        help="send exactly N requests (default: until the count reaches N, stopping when it stops rising)",
    )
    g.add_argument("-T", "--new-connection", action="store_true", help="a new TCP connection (and bind) per request")
    g.add_argument("--ndr64", action=argparse.BooleanOptionalAction, default=True, help="offer NDR64 (default on)")
    g.add_argument(
        "--btfn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offer bind-time feature negotiation (default on)",
    )
    g.add_argument("-p", "--no-multiplex", action="store_true", help="bind without the CONC_MPX flag")
    g.add_argument("--ip", type=int, choices=(4, 6), help="use only IPv4 or only IPv6")
    g.add_argument("--connect-timeout", type=positive_seconds, default=DEFAULT_CONNECT_TIMEOUT, metavar="SECONDS")
    g.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_REPLY_TIMEOUT,
        metavar="SECONDS",
        help="seconds to wait for each reply",
    )
    g.add_argument(
        "--dns-server",
        metavar="ADDR:PORT",
        help="DNS server for .domain and - targets (default: the first nameserver of --resolv-conf)",
    )
    g.add_argument(
        "--resolv-conf",
        default=RESOLV_CONF,
        metavar="FILE",
        help=f"resolver configuration read for the - target's search list and the default DNS server (default {RESOLV_CONF})",
    )
    g = p.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="store_true", help="print every request and response field and each check")
    g.add_argument("--json", action="store_true", help="one JSON document on stdout")
    g.add_argument("--capture", metavar="FILE.pcap", help="record the exchange into a pcap (needs root)")
    g.add_argument("--seed", type=int, help="seed for CMIDs, IVs and names (reproducible runs)")
    g = p.add_argument_group("ADBA (one Active Directory-based activation attempt instead of KMS; docs/adba.md)")
    g.add_argument(
        "--adba", metavar="DOMAIN", help="look for an activation object in this forest (exit 1: none, fall back to KMS)"
    )
    g.add_argument("--dc", metavar="HOST:PORT", help="the domain controller (default: SRV _ldap._tcp.dc._msdcs.DOMAIN)")
    g.add_argument("--bind-dn", help="account to bind as (default the forest's Administrator)")
    g.add_argument("--password", help="its password (default emu's lab password)")
    g = p.add_argument_group("the documented order in one run: ADBA, then KMS, then MAK (docs/adba.md)")
    g.add_argument(
        "--domain-member",
        action="store_true",
        help="this machine is in a domain: ask a DC for an activation object first, then KMS (the target, else "
        "SRV _vlmcs._tcp.FOREST), then MAK",
    )
    g.add_argument("--forest", metavar="FOREST", help="its forest (default: the .DOMAIN target)")
    g.add_argument("--act-type", metavar="any|ad|kms", help="slmgr /act-type policy: any (default), ad, kms or 0/1/2")
    g.add_argument("--mak-state", metavar="FILE", help="a MAK client state (emu client mak install): the last path")
    g.add_argument("--actsvc", metavar="URL", help="the activation service for --mak-state")
    p.set_defaults(func=_activate)
    g = sub.add_parser(
        "grab",
        help="read a host's ePID and HwId for every CSVLK (like vlmcs -G)",
        description="Send one request per CSVLK (host key group: Windows, Office2010, Office2013, Office2016, "
        "WinChinaGov, Office2019, ...) on one connection, v6 first, falling back to v5 and v4 when the host "
        "refuses with an error HRESULT, and print what it answered: as vlmcsd's ini lines (Name = EPID / HWID "
        "bytes) or as a TOML file for emu host serve --config, so an emu host can answer with that identity.",
    )
    g.add_argument(
        "target", nargs="?", default="127.0.0.1:1688", help="host[:port] or [v6addr]:port (default 127.0.0.1:1688)"
    )
    g.add_argument("-o", "--output", metavar="FILE", help="write the result here instead of standard output")
    g.add_argument(
        "--format",
        choices=("ini", "toml"),
        default="ini",
        help="ini: vlmcsd -i format (default); toml: emu host serve --config",
    )
    g.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="seconds to wait for each reply (default 5)"
    )
    g.add_argument("--seed", type=int, help="seed for CMIDs and IVs (reproducible runs)")
    g.set_defaults(func=_grab)
    q = sub.add_parser(
        "products",
        help="list the products emu knows: names, protocol, threshold, public GVLK (like vlmcs -x)",
        description="List the SKUs of emu's product data (docs/products.md) with their protocol "
        "version, activation threshold, KMS counted ID and the GVLK Microsoft publishes. FILTER is "
        "matched as --product is (abbreviations such as win10, srv2019 dc, o2019; a SKU GUID; a GVLK), "
        "best match first.",
    )
    q.add_argument("filter", nargs="*", help="words of the product name (e.g. server 2022, win10, o2019)")
    q.add_argument("--json", action="store_true", help="one JSON object per SKU per line, with every field")
    q.set_defaults(func=_products)
    client.set_defaults(func=show_help(client))


def _grab(args: argparse.Namespace) -> int:
    """``emu client grab``: exit 0 when at least one ePID came back, 4 when every CSVLK was refused, 7 unreachable."""
    from emu.net.kms_grab import grab_host, to_ini, to_toml

    target = parse_target(args.target)
    if not isinstance(target, HostAddress):
        raise UsageError("grab talks to one host: give host[:port], not a .domain")
    rng = seeded(args.seed) if args.seed is not None else system_rng()
    options = RpcOptions(connect_timeout=args.timeout, reply_timeout=args.timeout)
    grabbed = asyncio.run(grab_host(target, rng, options=options))
    for key in grabbed:
        got = f"{key.epid} ({key.hwid.hex().upper()})" if key.epid and key.hwid else (key.epid or key.detail)
        print(f"{key.csvlk:<12} v{key.protocol} {key.product:<40} -> {got}", file=sys.stderr)
    text = to_toml(grabbed) if args.format == "toml" else to_ini(grabbed)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if any(k.epid for k in grabbed):
        return 0
    unreachable = all(k.result is not None and k.result.status.name == "UNREACHABLE" for k in grabbed)
    return 7 if unreachable else 4


def _products(args: argparse.Namespace) -> int:
    """``emu client products``: the product table, filtered by the product matcher of ``--product``."""
    from emu.kms.host_keys import product_record

    words = " ".join(args.filter)
    skus = products.search(words)
    if not skus:
        print(f"no product matches {words!r}{products.product_data().suggestions(words)}", file=sys.stderr)
        return 1
    for sku in skus:
        if args.json:
            print(json.dumps(product_record(sku)))
        else:
            app = products.application(sku.app_id).name
            print(f"{sku.name:<52} v{sku.protocol}  N={sku.threshold:<2}  {sku.gvlk or '(no public GVLK)':<29}  {app}")
    return 0


# --- building the requests -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    template: RequestTemplate
    product: str
    fixed_cmid: uuid.UUID | None
    count: int | None
    options: RpcOptions
    new_connection: bool


def _random_workstation(rng: Rng) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    host = "".join(letters[rng.randint(0, 25)] for _ in range(rng.randint(4, 10)))
    return f"{host}{rng.randint(1, 99)}.lab.test"


def _plan(args: argparse.Namespace, rng: Rng) -> _Plan:
    sku = products.lookup(args.product)
    version = args.kms_version or Version(args.protocol or sku.protocol, 0)
    if args.kms_version and args.protocol and args.kms_version.major != args.protocol:
        raise UsageError(
            f"--protocol {args.protocol} contradicts --kms-version {args.kms_version.major}.{args.kms_version.minor}"
        )
    workstation = args.workstation if args.workstation is not None else _random_workstation(rng)
    if len(workstation) > 63:
        raise UsageError(f"workstation name has {len(workstation)} characters; the request holds at most 63")
    template = RequestTemplate(
        version=version,
        app_id=args.app_id or sku.app_id,
        sku_id=args.sku_id or sku.id,
        kms_id=args.kms_id or sku.kms_id,
        required_client_count=args.required_count or sku.threshold,
        workstation_name=workstation,
        vm=args.vm,
        license_status=args.license_status,
        binding_expiration=args.binding_expiration,
        previous_cmid=args.previous_cmid,
    )
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(args.ip or 0, 0)
    options = RpcOptions(
        offer_ndr64=args.ndr64,
        offer_btfn=args.btfn,
        multiplex=not args.no_multiplex,
        connect_timeout=args.connect_timeout,
        reply_timeout=args.timeout,
        family=family,
    )
    count = args.count if args.count is not None else (1 if args.cmid is not None else None)
    return _Plan(template, sku.name, args.cmid, count, options, args.new_connection)


# --- running ------------------------------------------------------------------------------------


def _dns_server(dns_server: str | None, resolv_conf: str) -> tuple[str, int]:
    if dns_server is None:
        return system_dns_server(resolv_conf)
    parsed = parse_target(dns_server, default_port=53)
    if isinstance(parsed, str):
        raise UsageError(f"--dns-server {dns_server!r}: expected ADDR[:PORT]")
    return parsed.host, parsed.port


async def _discover(domain: str, server: tuple[str, int], rng: Rng, timeout: float) -> list[HostAddress]:
    return await dns_resolver(server, rng, timeout=timeout)(domain)


class _Run:
    """One invocation: the requests made, printed as they complete."""

    def __init__(self, plan: _Plan, rng: Rng, args: argparse.Namespace) -> None:
        self.plan = plan
        self.rng = rng
        self.args = args
        self.results: list[ExchangeResult] = []
        self.clock = WallClock()

    def _base(self) -> Any:
        cmid = self.plan.fixed_cmid or uuid.UUID(bytes=self.rng.bytes(16), version=4)
        return self.plan.template.base(cmid, unix_to_filetime(self.clock.wall()))

    async def on_host(self, host: HostAddress) -> bool:
        """Make the requests against ``host``; False when it could not be reached at all (try the next)."""
        plan = self.plan
        total = plan.count
        bound = total if total is not None else plan.template.required_client_count
        session = KmsClientSession(host, plan.options)
        previous: int | None = None
        try:
            for index in range(1, bound + 1):
                if plan.new_connection:
                    await session.close()
                result = await session.request(self._base(), self.rng)
                self.results.append(result)
                self._print(result, index, total)
                if index == 1 and result.status in (ExchangeStatus.UNREACHABLE, ExchangeStatus.PROTOCOL_ERROR):
                    return False
                if result.status not in (ExchangeStatus.ACTIVATED, ExchangeStatus.BELOW_THRESHOLD):
                    return True
                if total is None:
                    count = result.count or 0
                    if result.activated:
                        return True
                    if previous is not None and count <= previous:
                        self._note(
                            f"the count stayed at {count}; stopping (it would not reach "
                            f"{plan.template.required_client_count})"
                        )
                        return True
                    previous = count
            return True
        finally:
            await session.close()

    # -- output --------------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        if not self.args.json:
            print(text)

    def _print(self, result: ExchangeResult, index: int, total: int | None) -> None:
        if self.args.json:
            return
        if self.args.verbose and (index == 1 or self.plan.fixed_cmid is None):
            print(request_table(result))
        of = f" of {total}" if total is not None else ""
        print(summary_line(result, index, of))
        if self.args.verbose:
            print(response_table(result))


def _activate(args: argparse.Namespace) -> int:
    if args.domain_member:
        if args.adba:
            raise UsageError("--adba is one ADBA attempt alone; --domain-member runs ADBA, KMS and MAK in order")
        from emu.cli.client_order import run_in_order

        return run_in_order(args)
    if args.act_type or args.forest or args.mak_state or args.actsvc:
        raise UsageError("--act-type, --forest, --mak-state and --actsvc are for a domain member: add --domain-member")
    if args.adba:
        from emu.cli.client_adba import run_adba_attempt

        return run_adba_attempt(args)
    if args.json and args.verbose:
        raise UsageError("--json already carries every field; drop -v")
    kms = kms_attempt(args, args.target or ("[::1]:1688" if args.ip == 6 else "127.0.0.1:1688"))
    if args.json:
        print(json.dumps(kms.document(), indent=2))
    else:
        kms.report()
    return kms.exit_code


def kms_attempt(args: argparse.Namespace, target_text: str) -> KmsAttempt:
    """The KMS path: find the hosts of ``target_text``, make the requests (a line per request unless
    ``--json``; ``--capture``) and return what happened, unprinted."""
    rng = seeded(args.seed) if args.seed is not None else system_rng()
    plan = _plan(args, rng)
    target: HostAddress | str
    if target_text.strip() == SEARCH_TARGET:
        domains = search_domains(args.resolv_conf)
        target = ", ".join(domains)
    else:
        target = parse_target(target_text)
        domains = [target] if isinstance(target, str) else []
    server = _dns_server(args.dns_server, args.resolv_conf) if domains else None
    capture = None
    if args.capture:
        from emu.pcap.sniff import TcpCapture

        capture = TcpCapture()
    run = _Run(plan, rng, args)
    discovery_error: list[str] = []

    async def main() -> list[HostAddress]:
        if isinstance(target, HostAddress):
            hosts = [target]
        else:
            assert server is not None
            hosts = []
            for domain in domains:  # like res_search: the first domain of the list that has SRV records
                try:
                    hosts = await _discover(domain, server, rng, args.timeout)
                except ScenarioError as exc:  # the DNS server did not answer: no host can be reached
                    discovery_error.append(str(exc))
                    return []
                if hosts:
                    break
        if capture is not None:
            await capture.start(hosts)
        try:
            for host in hosts:
                if await run.on_host(host):
                    break
        finally:
            if capture is not None:
                await capture.stop()
        return hosts

    hosts = asyncio.run(main())
    if capture is not None:
        written = capture.write(args.capture, {r.local[1] for r in run.results if r.local is not None})
        if not args.json:
            print(f"wrote {written} frames to {args.capture}")
    message = ""
    if not hosts:
        message = (
            f"no KMS host found: {discovery_error[0]}"
            if discovery_error
            else f"no KMS host found: no _vlmcs._tcp SRV records for {target}"
        )
    return KmsAttempt(target_text, plan.product, hosts, run.results, message, not hosts and not discovery_error)
