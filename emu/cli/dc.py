"""``emu dc serve|export|import``: emu's AD-shaped directory server (docs/adba.md)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from emu.cli import CLOCK_HELP, clock_spec, show_help
from emu.errors import UsageError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dc",
        help="AD-shaped LDAP directory server holding ADBA activation objects",
        description="A domain controller as far as Active Directory-based activation needs one: LDAPv3 with "
        "the rootDSE, the configuration partition, the msSPP schema and CN=Activation Objects.",
    )
    parser.set_defaults(func=show_help(parser))
    commands = parser.add_subparsers(dest="dc_command", metavar="SUBCOMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the directory server",
        description="Serve LDAP on TCP. State (every entry) is committed to --state before each answer.",
        epilog="example: emu dc serve --listen 127.0.0.1:3890 --forest kms.test --state dc.sqlite --seed-group Windows",
    )
    serve.add_argument("--listen", action="append", metavar="ADDR:PORT", help="repeatable (default 127.0.0.1:389)")
    _common(serve)
    serve.add_argument("--require-signing", action="store_true", help="refuse simple binds with strongerAuthRequired")
    serve.add_argument(
        "--schema", choices=("2012r2", "2008r2"), default="2012r2", help="forest schema (2008r2: no msSPP classes)"
    )
    serve.add_argument(
        "--no-forest-prep", action="store_true", help="leave out forest updates 91/92 (no ADBA containers)"
    )
    serve.add_argument("--import", dest="import_ldif", metavar="FILE.ldif", help="add these entries at start")
    serve.add_argument(
        "--seed-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="create an activation object for this CSVLK group (Windows, Office2016, ...) at start; repeatable",
    )
    serve.add_argument(
        "--publish", metavar="DNS:PORT", help="register _ldap._tcp.dc._msdcs.FOREST SRV + A/AAAA (RFC 2136)"
    )
    serve.add_argument("--tsig-key", metavar="FILE", help="BIND key file for --publish")
    serve.add_argument("--address", action="append", default=[], metavar="IP", help="the DC's A/AAAA for --publish")
    serve.add_argument("--clock", type=clock_spec, metavar="SPEC", help=CLOCK_HELP)
    serve.set_defaults(func=_serve)
    export = commands.add_parser("export", help="write the directory as LDIF")
    _common(export)
    export.add_argument("-o", "--output", metavar="FILE", help="default: standard output")
    export.set_defaults(func=_export)
    imp = commands.add_parser("import", help="add LDIF entries to the state file")
    _common(imp)
    imp.add_argument("ldif", metavar="FILE.ldif")
    imp.set_defaults(func=_import)


def _common(p: argparse.ArgumentParser) -> None:
    from emu.adba.forest import DEFAULT_ADMIN_PASSWORD

    p.add_argument("--forest", default="kms.test", help="forest root domain (default kms.test)")
    p.add_argument("--state", metavar="FILE", help="SQLite state (default: in memory)")
    p.add_argument(
        "--admin-password",
        default=DEFAULT_ADMIN_PASSWORD,
        help="CN=Administrator's password for simple binds (default: emu's lab password)",
    )


def _options(args: argparse.Namespace) -> object:
    from emu.net.dc_runner import DcOptions

    return DcOptions(
        forest=args.forest,
        state=args.state,
        admin_password=args.admin_password,
        schema_2012=getattr(args, "schema", "2012r2") == "2012r2",
        forest_prep=not getattr(args, "no_forest_prep", False),
        require_signing=getattr(args, "require_signing", False),
    )


def _import_into(dsa: object, store: object, path: str) -> int:
    from emu.adba.directory import DirectoryError
    from emu.adba.ldif import LdifError, parse_ldif
    from emu.adba.session import Dsa
    from emu.net.dc_store import DcStore

    assert isinstance(dsa, Dsa)
    try:
        records = parse_ldif(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except LdifError as exc:
        raise UsageError(f"{path}: {exc}") from exc
    added = 0
    for dn, attrs in records:
        if dsa.directory.get(dn) is not None:
            continue
        try:
            change = dsa.directory.add(dn, attrs, system=True)
        except DirectoryError as exc:
            raise UsageError(f"{path}: {dn}: {exc} (LDAP result {exc.code})") from exc
        if isinstance(store, DcStore):
            store.commit([change])
        added += 1
    return added


def _serve(args: argparse.Namespace) -> int:
    from emu.cli.dns import load_keys
    from emu.net.dc_runner import DcOptions, open_dsa, seed_activation_object, serve_dc
    from emu.net.dns_server import parse_address

    opts = _options(args)
    assert isinstance(opts, DcOptions)
    listen = [parse_address(t, 389) for t in (args.listen or ["127.0.0.1:389"])]
    publish = parse_address(args.publish, 53) if args.publish else None
    keys = load_keys([args.tsig_key]) if args.tsig_key else []
    dsa, store = open_dsa(opts, clock=args.clock)
    if args.import_ldif:
        print(f"emu dc: imported {_import_into(dsa, store, args.import_ldif)} entries", file=sys.stderr)
    for group in args.seed_group:
        from emu.adba.admin import AdbaAdminError

        try:
            dn = seed_activation_object(dsa, store, group)
        except AdbaAdminError as exc:
            if exc.hresult != 0x80071392:
                raise UsageError(f"--seed-group {group}: {exc}") from exc
            dn = "(already present)"
        print(f"emu dc: activation object for {group}: {dn}", file=sys.stderr)

    async def main() -> None:
        stop = asyncio.Event()
        started = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        task = asyncio.create_task(
            serve_dc(
                dsa,
                store,
                listen=listen,
                stop=stop,
                publish=publish,
                key=keys[0] if keys else None,
                addresses=args.address,
                started=started,
                clock=args.clock,
            )
        )
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
            return
        where = ", ".join(f"{h}:{p}" for h, p in listen)
        print(f"emu dc: serving forest {dsa.forest.domain} on {where}", file=sys.stderr, flush=True)
        await task

    try:
        asyncio.run(main())
    except OSError as exc:
        raise UsageError(f"cannot listen: {exc.strerror or exc}") from exc
    finally:
        if store is not None:
            store.close()
    return 0


def _export(args: argparse.Namespace) -> int:
    from emu.adba.ldif import dump_ldif
    from emu.net.dc_runner import DcOptions, open_dsa

    if args.state and not Path(args.state).exists():
        raise UsageError(f"--state {args.state}: no such state file")
    opts = _options(args)
    assert isinstance(opts, DcOptions)
    dsa, store = open_dsa(opts)
    text = dump_ldif(dsa.directory.entries.values())
    if store is not None:
        store.close()
    if args.output and args.output != "-":
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _import(args: argparse.Namespace) -> int:
    from emu.net.dc_runner import DcOptions, open_dsa

    if not args.state:
        raise UsageError("emu dc import needs --state FILE")
    opts = _options(args)
    assert isinstance(opts, DcOptions)
    dsa, store = open_dsa(opts)
    try:
        print(f"imported {_import_into(dsa, store, args.ldif)} entries")
    finally:
        if store is not None:
            store.close()
    return 0
