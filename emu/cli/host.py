"""``emu host serve`` and ``emu host status``: a KMS host on real sockets, and a look at its table.

Every setting can come from a TOML file (``--config``); flags given on the command line override it
(:mod:`emu.cli.host_settings` turns both into the host's and the server's configuration).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from emu.cli import CLOCK_HELP, clock_spec, show_help
from emu.cli.host_settings import (
    SETTING_NAMES,
    HostSettings,
    as_list,
    build_clock,
    build_host_config,
    build_server_config,
    load_settings,
    number,
    parse_minutes,
)
from emu.errors import UsageError

__all__ = ["SETTING_NAMES", "HostSettings", "load_settings", "parse_minutes", "register"]

log = logging.getLogger(__name__)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line; exchange lines (already JSON) pass through."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if message.startswith("{"):
            return message
        stamp = _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(timespec="milliseconds")
        out = {"ts": stamp, "level": record.levelname.lower(), "logger": record.name, "message": message}
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, sort_keys=True)


def _setup_logging(settings: HostSettings) -> None:
    level_name = str(settings["log_level"] or "INFO").upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise UsageError(f"--log-level {settings['log_level']!r}: use DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    root.setLevel(level)
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    if settings["json_log"]:
        for handler in root.handlers:
            handler.setFormatter(_JsonFormatter())


def _publisher(settings: HostSettings, addresses: list[tuple[str, int]], clock: Any) -> Any:
    """A :class:`emu.net.dns_publisher.Publisher` for ``--publish``, or ``None``."""
    domains = as_list(settings["publish"])
    if not domains:
        return None
    from emu.dns.tsig import parse_key_file
    from emu.net.clock_sleep import sleeper
    from emu.net.dns_publisher import PublishDomain, Publisher, parse_publish_entry
    from emu.net.kms_server import parse_listen

    if not settings["dns_server"]:
        raise UsageError("--publish needs --dns-server ADDR:PORT (the primary that accepts updates)")
    dns_server = parse_listen(str(settings["dns_server"]), default_port=53)
    key = None
    if settings["tsig_key"]:
        path = Path(str(settings["tsig_key"]))
        try:
            keys = parse_key_file(path.read_text(), source=str(path))
        except OSError as exc:
            raise UsageError(f"--tsig-key {path}: {exc.strerror}") from exc
        key = keys[0]
    priority = number(settings["priority"], "--priority", int, 0)
    weight = number(settings["weight"], "--weight", int, 0)
    entries = []
    for text in domains:
        entry = parse_publish_entry(text)
        if "," not in text:
            entry = PublishDomain(entry.domain, priority, weight)
        entries.append(entry)
    hosts = sorted({h for h, _ in addresses if h not in ("0.0.0.0", "::")})
    return Publisher(
        str(settings["host_name"] or socket.getfqdn()),
        entries,
        dns_server=dns_server,
        key=key,
        addresses=hosts,
        port=addresses[0][1],
        ttl=number(settings["ttl"], "--ttl", int, 1),
        clock=clock,
        sleep=sleeper(clock),
    )


def _serve(args: argparse.Namespace) -> int:
    from emu.kms.host import KmsHost
    from emu.net.host_runner import loop_factory
    from emu.net.host_store import HostStore
    from emu.rng import fast_rng

    settings = load_settings(args)
    _setup_logging(settings)
    clock = build_clock(settings)
    host_config = build_host_config(settings)
    host_config = importlib.import_module("emu.cli.host_csvlk").activate_host(settings, host_config)  # --csvlk
    server_config = build_server_config(settings)
    workers = number(settings["workers"], "--workers", int, 1)
    event_loop = str(settings["event_loop"])
    loop_factory(event_loop)  # refuse a bad --event-loop before anything starts
    if workers > 1 and not settings["state"]:
        raise UsageError(f"--workers {workers}: the workers share their client table through --state FILE; give one")
    store = HostStore(settings["state"], durable=bool(settings["durable"]))
    try:
        host = KmsHost(
            host_config, fast_rng(), clock.wall(), store.load_cache(host_config.count_policy), store.load_epids()
        )
        store.save_epids(host.epids)
    except BaseException:
        store.close()
        raise
    if workers > 1:
        store.close()
        return _serve_workers(settings, host_config, server_config, host.epids, workers, event_loop)
    try:
        _run_host(settings, host, server_config, store, event_loop, ready_fd=-1, publish=True)
    finally:
        store.close()
    return 0


def _run_host(
    settings: HostSettings, host: Any, server_config: Any, store: Any, event_loop: str, *, ready_fd: int, publish: bool
) -> None:
    """Serve until SIGINT/SIGTERM on ``event_loop``; with ``ready_fd`` >= 0 (a worker) say so there, not on stderr."""
    from emu.net.host_runner import run_loop
    from emu.net.kms_server import KmsServer

    metrics = None
    if settings["metrics"]:
        from emu.net.kms_server import parse_listen
        from emu.net.metrics import HostMetrics, serve_metrics

        host_addr, port = parse_listen(str(settings["metrics"]), default_port=9178)
        if server_config.worker is not None and port:
            port += server_config.worker  # one endpoint per worker: PORT, PORT+1, ...
        metrics = HostMetrics()
        where = serve_metrics(metrics.registry, (host_addr, port))
        log.info("metrics on http://%s:%d/metrics", *where)
    clock = build_clock(settings)
    server = KmsServer(host, server_config, store, clock=clock, metrics=metrics)

    async def main() -> None:
        await server.start()
        publisher = None
        try:
            publisher = _publisher(settings, server.addresses, clock) if publish else None
            if publisher is not None:
                await publisher.start()
            if ready_fd >= 0:
                os.write(ready_fd, b".")
                os.close(ready_fd)
            elif ready_fd == -1:
                print(
                    f"emu host: serving KMS on {_where(server.addresses)} (state: {store.path})",
                    file=sys.stderr,
                    flush=True,
                )
            await server.serve_until_signal()
        finally:
            if publisher is not None:
                await publisher.stop()
            await server.stop()

    run_loop(main, event_loop)


def _where(addresses: list[tuple[str, int]] | tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)


def _serve_workers(
    settings: HostSettings, host_config: Any, server_config: Any, epids: dict[str, str], workers: int, event_loop: str
) -> int:
    """``--workers N``: N processes on one port (SO_REUSEPORT) and one state file (see emu.net.host_runner)."""
    import dataclasses

    from emu.kms.host import KmsHost
    from emu.net.host_runner import reserve_ports, run_workers
    from emu.net.host_store import HostStore
    from emu.rng import fast_rng

    reserved, listen = reserve_ports(server_config.listen)
    config = dataclasses.replace(server_config, listen=listen, reuse_port=True)
    path = str(settings["state"])

    def serve_one(index: int, ready_fd: int) -> int:
        for sock in reserved:
            sock.close()
        store = HostStore(path, durable=bool(settings["durable"]), shared=True)
        worker_config = dataclasses.replace(config, worker=index)
        try:
            clock = build_clock(settings)
            host = KmsHost(host_config, fast_rng(), clock.wall(), store.load_cache(host_config.count_policy), epids)
            _run_host(
                settings,
                host,
                worker_config,
                store,
                event_loop,
                ready_fd=ready_fd if ready_fd >= 0 else -2,
                publish=index == 0,
            )
        finally:
            store.close()
        return 0

    def on_ready() -> None:
        for sock in reserved:
            sock.close()
        print(
            f"emu host: serving KMS on {_where(listen)} with {workers} workers (state: {path})",
            file=sys.stderr,
            flush=True,
        )

    return run_workers(workers, serve_one, on_ready)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).isoformat(timespec="seconds")


def _product_name(sku_id: Any) -> str:
    from emu.kms import products

    if sku_id is None:
        return ""
    try:
        return products.sku_by_id(sku_id).name
    except UsageError:
        return str(sku_id)


def _status(args: argparse.Namespace) -> int:
    """Per application: count, capacity and each client; as a table, JSON or CSV."""
    from emu.kms import products
    from emu.net.host_store import HostStore

    fmt = "json" if args.json else args.format
    path = Path(args.state)
    if not path.exists():
        raise UsageError(f"--state {path}: no such state file (emu host serve --state {path} writes it)")
    store = HostStore(path)
    try:
        now = args.clock.wall() if args.clock is not None else time.time()
        status = store.status(now)
        epids = store.load_epids()
        inventory = store.inventory()
    finally:
        store.close()
    rows: list[dict[str, Any]] = []
    for app_id, app in sorted(status.items(), key=lambda kv: str(kv[0])):
        try:
            name = products.application(app_id).name
        except UsageError:
            name = str(app_id)
        clients = [
            {
                "cmid": str(c.cmid),
                "workstation": c.workstation,
                "product": _product_name(c.sku_id),
                "sku_id": str(c.sku_id) if c.sku_id else None,
                "first_seen": _iso(c.first_seen),
                "last_seen": _iso(c.last_request),
                "last_count": c.last_count,
                "activated": c.activated,
            }
            for c in inventory
            if c.app_id == app_id
        ]
        rows.append(
            {
                "application": name,
                "app_id": str(app_id),
                "count": app.count,
                "capacity": app.capacity,
                "oldest": _iso(app.oldest),
                "newest": _iso(app.newest),
                "next_expiry": _iso(app.next_expiry),
                "clients": clients,
            }
        )
    if fmt == "json":
        report = {"state": str(path), "now": _iso(now), "applications": rows, "epids": epids}
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    if fmt == "csv":
        import csv

        fields = ["application", "count", "capacity", "cmid", "workstation", "product", "sku_id"]
        fields += ["first_seen", "last_seen", "last_count", "activated"]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            for client in row["clients"]:
                writer.writerow(
                    {"application": row["application"], "count": row["count"], "capacity": row["capacity"], **client}
                )
        return 0
    print(f"state {path} at {_iso(now)}")
    if not rows:
        print("no client has been counted yet")
    for row in rows:
        print(
            f"{row['application']}: {row['count']} clients (capacity {row['capacity']}); "
            f"oldest {row['oldest'] or '-'}, newest {row['newest'] or '-'}, next expiry {row['next_expiry'] or '-'}"
        )
        if row["clients"]:
            print(f"  {'CMID':36}  {'workstation':24}  {'product':34}  {'last seen':25}  count  activated")
        for c in row["clients"]:
            activated = "-" if c["activated"] is None else ("yes" if c["activated"] else "no")
            count = "-" if c["last_count"] is None else c["last_count"]
            print(
                f"  {c['cmid']:36}  {(c['workstation'] or '-')[:24]:24}  {(c['product'] or '-')[:34]:34}  "
                f"{c['last_seen']:25}  {count!s:>5}  {activated}"
            )
    for name, epid in sorted(epids.items()):
        print(f"ePID {name}: {epid}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "host",
        help="KMS host: serve activations, show its client table",
        description="A KMS host speaking the real protocol (DCE/RPC over TCP, KMS v4/v5/v6), counting clients "
        "as a genuine host does, with its table in SQLite.",
    )
    commands = parser.add_subparsers(dest="host_command", metavar="SUBCOMMAND")

    parser.set_defaults(func=show_help(parser))

    serve = commands.add_parser(
        "serve",
        help="run a KMS host",
        description="Serve KMS activations until SIGINT/SIGTERM. Every setting may also come from a TOML file "
        '(--config; keys as the flags with underscores, e.g. idle_timeout = 10, epids = {Windows = "..."}); '
        "flags override it.",
        epilog="example: emu host serve --listen 127.0.0.1:1688 --listen [::1]:1688 --state host.sqlite --json-log",
    )
    a = serve.add_argument
    a("--config", metavar="FILE.toml", help="settings file; flags override it")
    a(
        "--listen",
        action="append",
        metavar="ADDR[:PORT]",
        help="address to listen on; repeatable; IPv6 as [::1]:1688; 0.0.0.0:1688 or :1688 for every interface "
        "(default 127.0.0.1:1688: this machine only)",
    )
    a("--state", metavar="PATH", help="SQLite file of the client table and ePIDs (default: in memory, lost at exit)")
    a("--durable", action="store_const", const=True, help="fsync every commit (survives power loss, not only kill -9)")
    a("--idle-timeout", metavar="SECONDS", help="close connections silent this long; 0 never (default 30)")
    a("--max-connections", metavar="N", help="connections served at once; more are closed (default 1024)")
    a(
        "--no-ndr64",
        dest="ndr64",
        action="store_const",
        const=False,
        help="do not negotiate NDR64 (like a host before build 9200)",
    )
    a("--no-btfn", dest="btfn", action="store_const", const=False, help="reject Bind Time Feature Negotiation")
    a(
        "--activation-interval",
        metavar="DURATION",
        help="retry interval sent to clients not yet activated (minutes, or 2h, 1d...; default 120)",
    )
    a(
        "--renewal-interval",
        metavar="DURATION",
        help="renewal interval sent to activated clients (minutes, or 7d...; default 10080)",
    )
    a(
        "--kms-id",
        dest="kms_ids",
        action="append",
        metavar="GUID",
        help="a KMS counted ID the host key covers; repeatable (default: Windows Server CSVLK group + Office)",
    )
    a(
        "--product",
        dest="products",
        action="append",
        metavar="NAME",
        help="cover the KMS ID of this product (e.g. win10ent, 'Office 2019 ProPlus'); repeatable",
    )
    a(
        "--host-key-group",
        dest="host_key_group",
        action="append",
        metavar="GROUP",
        help="KMS host key group installed, e.g. 'Windows Server 2019', 'Windows 10', 'Office LTSC 2021'; "
        "the host activates what Microsoft documents for it and refuses the rest with 0xC004F042; "
        "repeatable (one Windows group). Default: no group, the host activates every volume product emu "
        "knows (docs/kms-host-keys.md)",
    )
    a(
        "--host-os",
        metavar="OS",
        help="OS the KMS host runs, e.g. 'Windows Server 2016' (default: the newest the key group can be hosted on)",
    )
    a(
        "--unpatched",
        action="store_const",
        const=True,
        help="the host OS lacks the updates Microsoft lists for activating newer clients; those clients get 0xC004F042",
    )
    a("--host-build", metavar="BUILD", help="OS build the ePIDs claim (default: the host OS's build, else 26100)")
    a("--lcid", metavar="LCID", help="language id the ePIDs claim (default 1033)")
    a("--hwid", metavar="HEX16", help="HwId sent in v6 responses (default 3A1C049600B60076)")
    a(
        "--epid",
        dest="epids",
        action="append",
        metavar="CSVLK=EPID",
        help="fixed ePID for a CSVLK (Windows, Office2010, Office2013, Office2016, Office2019, WinChinaGov; with "
        "key groups also Server2025, Server2022, Server2019, Server2016, Win10, Office2021, Office2024); repeatable",
    )
    a(
        "--check-time-skew",
        action="store_const",
        const=True,
        help="refuse clients whose clock is off by more than 4 hours (0xC004F06C)",
    )
    a(
        "--fault",
        dest="faults",
        action="append",
        metavar="RULE",
        help="fault injection, repeatable: ACTION[=VALUE][,product=P][,application=A][,cmid=G][,percent=N]; "
        "actions refuse=HRESULT, low-count, drop-after-bind, drop-request, delay=SECONDS, rpc-fault[=STATUS], "
        "corrupt-hash, corrupt-hmac (docs/operations.md, Fault injection)",
    )
    a(
        "--profile",
        metavar="NAME",
        help="emu (default), or vlmcsd / py-kms: show that implementation's wire traits (fixed count, ePIDs, "
        "bind answers, faults, connection handling) to test clients and detectors (docs/probe.md)",
    )
    a("--json-log", action="store_const", const=True, help="log one JSON object per line")
    a(
        "--log-exchanges",
        action="store_const",
        const=True,
        help="log one line per exchange (peer, product, CMID, count, result); default: a summary line a minute",
    )
    a(
        "--metrics",
        metavar="ADDR[:PORT]",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics (default port 9178; worker N on PORT+N)",
    )
    a(
        "--workers",
        metavar="N",
        help="serve from N processes on the same port (SO_REUSEPORT) sharing --state; counts stay exact (default 1)",
    )
    a(
        "--event-loop",
        metavar="LOOP",
        help="auto (uvloop when installed, else asyncio), uvloop or asyncio (default auto)",
    )
    # SUPPRESS: a value given before the command (emu --log-level DEBUG host serve) is kept.
    a(
        "--log-level",
        metavar="LEVEL",
        default=argparse.SUPPRESS,
        help="DEBUG, INFO (default), WARNING, ERROR",
    )
    a(
        "--publish",
        action="append",
        metavar="DOMAIN[,PRIORITY[,WEIGHT]]",
        help="publish _vlmcs._tcp SRV in this domain while serving; repeatable",
    )
    a("--dns-server", metavar="ADDR:PORT", help="DNS primary that accepts the updates")
    a("--tsig-key", metavar="FILE", help="BIND key file signing the updates (default: unsigned)")
    a("--host-name", metavar="NAME", help="SRV target name (default: this machine's FQDN)")
    a("--priority", metavar="N", help="SRV priority for --publish entries without one (default 0)")
    a("--weight", metavar="N", help="SRV weight for --publish entries without one (default 0)")
    a("--ttl", metavar="SECONDS", help="TTL of the published records (default 3600)")
    a("--clock", type=clock_spec, metavar="SPEC", help=CLOCK_HELP)
    importlib.import_module("emu.cli.host_csvlk").add_arguments(a)  # --csvlk, --actsvc, ... (docs/mak.md)
    serve.set_defaults(func=_serve)

    status = commands.add_parser(
        "status",
        help="show a host's client table",
        description="Per application: live clients, table capacity, oldest and newest record, next expiry; each "
        "client with its CMID, workstation name, product, first and last request, the count it got and whether "
        "it activated; and the ePIDs.",
    )
    status.add_argument("--state", required=True, metavar="PATH", help="the file given to emu host serve --state")
    status.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="table (default), json (applications with their clients, ePIDs) or csv (one row per client)",
    )
    status.add_argument("--json", action="store_true", help="the same as --format json")
    status.add_argument(
        "--clock",
        type=clock_spec,
        metavar="SPEC",
        help="count clients at the present of this shared scaled clock (the --clock of the host; default: now)",
    )
    status.set_defaults(func=_status)
