"""``emu actsvc``: the lab activation service (MAK and KMS host keys) and its ledger.

``serve`` runs BatchActivation SOAP and emu's online endpoint over HTTP(S); ``phone IID`` is the phone
activation centre on the same ledger; ``keys add|list|block`` manage emu lab keys. See docs/mak.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emu.cli import show_help
from emu.errors import UsageError
from emu.mak.batch import LAB_DIGEST_KEY
from emu.mak.errors import ActivationError
from emu.mak.keys import KeyKind, make_key
from emu.mak.ledger import CSVLK_ACTIVATIONS_PER_HOST, CSVLK_HOSTS, KeyRecord, remaining
from emu.net.actsvc_store import LedgerStore
from emu.rng import system_rng

__all__ = ["parse_digest_key", "parse_listen", "register"]


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[::1]:PORT`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: expected ADDR:PORT, for example 127.0.0.1:8443")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_digest_key(text: str | None) -> bytes:
    """The BatchActivation HMAC key: hex digits, or emu's lab key when not given."""
    if text is None:
        return LAB_DIGEST_KEY
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise UsageError("--digest-key: expected hexadecimal digits (for example 64 bytes as 128 hex digits)") from None
    if not key:
        raise UsageError("--digest-key: must not be empty")
    return key


def _store(args: argparse.Namespace) -> LedgerStore:
    try:
        return LedgerStore(args.state)
    except Exception as exc:  # sqlite3 errors for unreadable files
        raise UsageError(f"--state {args.state}: {exc}") from None


def _serve(args: argparse.Namespace) -> int:
    import logging

    from emu.net.actsvc import ActivationService, ServiceConfig
    from emu.net.labtls import make_lab_certificates

    host, port = parse_listen(args.listen)
    digest_key = parse_digest_key(args.digest_key)
    store = _store(args)
    certfile = keyfile = None
    if args.tls:
        certs = make_lab_certificates(
            Path(args.cert_dir or Path(args.state).parent / "actsvc-tls"), (host, "localhost")
        )
        certfile, keyfile = certs.cert, certs.key
        print(f"lab CA: {certs.ca} (clients: --cafile {certs.ca})", flush=True)
    if args.log_level is None:
        logging.getLogger("emu").setLevel(logging.INFO)
    service = ActivationService(store, ServiceConfig(host, port, digest_key, certfile, keyfile))
    print(f"activation service on {service.url} (ledger {args.state})", flush=True)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.httpd.server_close()
        store.close()
    return 0


def _phone(args: argparse.Namespace) -> int:
    import time

    store = _store(args)
    try:
        cid = store.activate(args.iid, time.time(), channel="phone")
    except ActivationError as exc:
        print(f"emu: activation refused: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(cid)
    return 0


def _record_json(record: KeyRecord) -> dict[str, object]:
    return {
        "key": record.key,
        "kind": record.kind.value,
        "group": record.group,
        "limit": record.limit,
        "used": record.used,
        "remaining": remaining(record),
        "blocked": record.blocked,
        "hosts": dict(record.hosts),
    }


def _keys_add(args: argparse.Namespace) -> int:
    kind = KeyKind(args.kind.upper())
    if kind is KeyKind.MAK and args.limit is None:
        raise UsageError("keys add --kind mak needs --limit N (the activations the MAK allows)")
    limit = args.limit if kind is KeyKind.MAK else CSVLK_HOSTS * CSVLK_ACTIVATIONS_PER_HOST
    key = args.key or make_key(kind, system_rng())
    store = _store(args)
    try:
        record = store.add_key(key, args.group, limit)
    except (ValueError, ActivationError) as exc:
        raise UsageError(f"keys add: {exc}") from None
    finally:
        store.close()
    if record.kind is not kind:
        raise UsageError(f"keys add: {record.key} is a {record.kind.value}, not a {kind.value}")
    print(record.key)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        records = store.keys()
    finally:
        store.close()
    if args.json:
        print(json.dumps([_record_json(r) for r in records], indent=2))
        return 0
    for r in records:
        flag = " BLOCKED" if r.blocked else ""
        hosts = f" hosts={len(r.hosts)}/{CSVLK_HOSTS}" if r.kind is KeyKind.CSVLK else ""
        print(f"{r.key}  {r.kind.value:5}  {r.group}  used={r.used}/{r.limit}  remaining={remaining(r)}{hosts}{flag}")
    return 0


def _keys_block(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        record = store.block(args.key, not args.unblock)
    except ActivationError as exc:
        raise UsageError(f"keys block: {exc}") from None
    finally:
        store.close()
    print(f"{record.key} {'blocked' if record.blocked else 'unblocked'}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top = subparsers.add_parser("actsvc", help="lab activation service for MAK and KMS host keys (emu-defined)")
    top.set_defaults(func=show_help(top))
    sub = top.add_subparsers(metavar="ACTION")

    serve = sub.add_parser("serve", help="serve BatchActivation SOAP and emu's online activation over HTTP(S)")
    serve.add_argument("--listen", default="127.0.0.1:8080", help="ADDR:PORT (default 127.0.0.1:8080)")
    serve.add_argument("--state", required=True, help="SQLite ledger file (created if missing)")
    serve.add_argument("--tls", action="store_true", help="HTTPS with lab certificates made on first use")
    serve.add_argument("--cert-dir", help="where the lab CA and server certificate live (default next to --state)")
    serve.add_argument("--digest-key", help="BatchActivation HMAC key in hex (default: emu's lab key)")
    serve.set_defaults(func=_serve)

    phone = sub.add_parser("phone", help="phone activation: read an installation ID, get a confirmation ID")
    phone.add_argument("iid", help="the installation ID (63 digits, groups of 7)")
    phone.add_argument("--state", required=True, help="the service's SQLite ledger")
    phone.set_defaults(func=_phone)

    keys = sub.add_parser("keys", help="manage the ledger's lab keys")
    keys.set_defaults(func=show_help(keys))
    ksub = keys.add_subparsers(metavar="ACTION")
    add = ksub.add_parser("add", help="add a lab key (a new one unless --key is given); prints the key")
    add.add_argument("--state", required=True)
    add.add_argument("--kind", choices=("mak", "csvlk"), default="mak")
    add.add_argument("--group", default="Windows", help="product group the key activates (a label)")
    add.add_argument("--limit", type=int, help="MAK: number of activations (CSVLK: 6 hosts x 10, fixed)")
    add.add_argument("--key", help="an existing lab key (EMUM1-/EMUK1-...) instead of a new one")
    add.set_defaults(func=_keys_add)
    lst = ksub.add_parser("list", help="keys with used and remaining activations")
    lst.add_argument("--state", required=True)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_keys_list)
    blk = ksub.add_parser("block", help="block a key (0xC004C003 from then on)")
    blk.add_argument("key")
    blk.add_argument("--state", required=True)
    blk.add_argument("--unblock", action="store_true")
    blk.set_defaults(func=_keys_block)
