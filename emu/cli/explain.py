"""``emu explain CODE|NAME|GVLK|PRODUCT``: what an error code means, or what emu knows of a product.

One argument, recognised in this order: an HRESULT (``0xC004F074``, ``C004F074``, a decimal or the
negative value a script prints); a symbolic name (``SL_E_VL_BINDING_SERVICE_UNAVAILABLE``); a GVLK; a GUID
(SKU ID, KMS counted ID or application ID); a KMS host key group ("Windows Server 2019", "Office 2019 host
key"; a product's exact name or alias wins over a group's); a product name as ``--product`` takes it. Codes come from :mod:`emu.hresults`, products from :mod:`emu.kms.products`,
host key groups from :mod:`emu.kms.host_keys` (docs/explain.md). Unknown input: exit 2 with suggestions.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import uuid
from typing import Any

from emu import hresults
from emu.errors import UsageError
from emu.kms import host_keys, products

__all__ = ["explain", "register"]

_HEX = re.compile(r"^(?:0x)?([0-9a-f]{8})$", re.IGNORECASE)
_DECIMAL = re.compile(r"^-?\d+$")
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="explain an error code, a GVLK or a product: meaning, causes, checks; IDs, threshold, host keys",
        description="Explain one thing. An error code (0xC004F074, its symbolic name such as "
        "SL_E_VL_BINDING_SERVICE_UNAVAILABLE, or the decimal a script printed): what it means, where it "
        "comes from, what causes it and what to check. A GVLK, a SKU or KMS counted ID, or a product name "
        "(as --product takes it: 'Windows 10 Enterprise', win10ent, 'o2019'): the product, its SKU ID, KMS "
        "counted ID, threshold, protocol version, published key and the KMS host key groups that activate "
        "it. A host key group ('Windows Server 2019'): what it activates and where it can be hosted. "
        "Unknown input exits 2 with suggestions (docs/explain.md).",
    )
    parser.add_argument("what", nargs="+", help="a code, symbolic name, GVLK, GUID, host key group or product name")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    record = explain(" ".join(args.what))
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(_text(record))
    return 0


# --------------------------------------------------------------------------------------------------
# Recognising the input


def explain(text: str) -> dict[str, Any]:
    """What emu knows of ``text``, as a JSON-ready dict with a ``kind`` key.

    Raises:
        UsageError: nothing matches (the message suggests close codes, names or products), or a
            product name is ambiguous (the message lists the candidates).
    """
    query = text.strip()
    if not query:
        raise UsageError("explain what? give an error code, a symbolic name, a GVLK or a product name")
    code = _as_code(query)
    if code is not None:
        entry = hresults.lookup(code)
        if entry is None:
            raise UsageError(f"0x{code:08X} is not a code emu knows{_near_codes(code)}")
        return _error_record(entry)
    if _SYMBOL.match(query.upper()) and "_" in query:
        named = hresults.lookup_name(query)
        if named is None:
            raise UsageError(f"{query!r} is not a symbolic name emu knows{_near_symbols(query)}")
        return _error_record(named)
    if products.GVLK_PATTERN.match(query.upper()):
        sku = products.sku_by_gvlk(query)
        if sku is None:
            raise UsageError(
                f"{query!r} is not a GVLK Microsoft publishes (emu knows every published one; see emu client products)"
            )
        return _product_record(sku)
    guid = _as_guid(query)
    if guid is not None:
        return _guid_record(guid)
    data = products.product_data()
    if not _names_a_product_exactly(query):
        try:
            return _group_record(host_keys.host_key_group(query))
        except UsageError:
            pass
    if not data.search(query):
        raise UsageError(f"nothing called {query!r}: not a code, symbolic name, GVLK or product{_near_anything(query)}")
    return _product_record(data.lookup(query))


def _names_a_product_exactly(text: str) -> bool:
    """The text is a product's name or alias ("Office 2019" is Office Professional Plus 2019's alias,
    so it explains the product; "Office 2019 host key" explains the host key group)."""
    wanted = frozenset(products.normalise_name(text))
    return any(
        wanted == frozenset(products.normalise_name(name))
        for sku in products.all_skus()
        for name in (sku.name, *sku.aliases)
    )


def _as_code(text: str) -> int | None:
    match = _HEX.match(text)
    if match is not None and (text.lower().startswith("0x") or not text.isdigit()):
        return int(match[1], 16)
    if _DECIMAL.match(text):
        value = int(text)
        if -(2**31) <= value < 2**32:
            return value & 0xFFFFFFFF
    return None


def _as_guid(text: str) -> uuid.UUID | None:
    if not re.fullmatch(r"\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?", text):
        return None
    return uuid.UUID(text.strip("{}"))


# --------------------------------------------------------------------------------------------------
# Records


def _error_record(entry: hresults.ErrorCode) -> dict[str, Any]:
    return {
        "kind": "error",
        "code": entry.hex,
        "symbol": entry.symbol,
        "meaning": entry.meaning,
        "paths": list(entry.paths),
        "causes": list(entry.causes),
        "checks": list(entry.checks),
    }


def _product_record(sku: products.Sku) -> dict[str, Any]:
    return {"kind": "product", **host_keys.product_record(sku)}


def _guid_record(guid: uuid.UUID) -> dict[str, Any]:
    data = products.product_data()
    sku = data.find_sku(guid)
    if sku is not None:
        return _product_record(sku)
    item = data.find_kms_item(guid)
    if item is not None:
        return {
            "kind": "kms_item",
            "kms_id": str(item.id),
            "name": item.name,
            "application": data.application(item.app_id).name,
            "protocol": item.protocol,
            "threshold": item.threshold,
            "retail": item.retail,
            "preview": item.preview,
            "skus": [s.name for s in data.skus() if s.kms_id == item.id],
            "host_key_groups": [g.name for g in host_keys.groups_activating(item.id)],
        }
    for app in data.applications():
        if app.id == guid:
            return {
                "kind": "application",
                "app_id": str(app.id),
                "name": app.name,
                "table_size": app.min_active_clients,
                "kms_items": [k.name for k in data.kms_items() if k.app_id == app.id],
            }
    raise UsageError(f"{guid} is not a SKU ID, KMS counted ID or application ID emu knows")


def _group_record(group: host_keys.HostKeyGroup) -> dict[str, Any]:
    data = products.product_data()
    return {
        "kind": "host_key_group",
        "name": group.name,
        "title": group.title,
        "application": data.application(group.app_id).name,
        "hosted_on": list(group.hosted_on),
        "activates": list(group.documented),
        "kms_items": sorted(data.kms_item(k).name for k in group.kms_ids),
        "required_updates": [
            {"host_os": u.host_os, "clients": list(u.clients), "update": u.update}
            for os_name in group.hosted_on
            for u in host_keys.required_updates(os_name)
        ],
    }


# --------------------------------------------------------------------------------------------------
# Suggestions


def _near_codes(code: int) -> str:
    family = [e for e in hresults.ERROR_CODES.values() if e.code >> 12 == code >> 12]
    if not family:
        family = list(hresults.ERROR_CODES.values())
    nearest = sorted(family, key=lambda e: abs(e.code - code))[:4]
    return "; close: " + ", ".join(f"{e.hex} {e.symbol}" for e in nearest)


def _near_symbols(text: str) -> str:
    symbols = [e.symbol for e in hresults.ERROR_CODES.values()]
    near = difflib.get_close_matches(text.upper(), symbols, n=4, cutoff=0.5)
    if not near:
        words = set(text.upper().split("_")) - {"SL", "E"}
        near = [s for s in symbols if words & set(s.split("_"))][:4]
    return "; did you mean: " + ", ".join(near) if near else "; see docs/error-codes.md for the list"


def _near_anything(text: str) -> str:
    hint = products.product_data().suggestions(text)
    if "did you mean" in hint:
        return hint
    groups = [g.name for g in host_keys.host_key_groups()]
    near = difflib.get_close_matches(text, groups, n=3, cutoff=0.6)
    if near:
        return "; did you mean the host key group: " + ", ".join(near)
    return hint


# --------------------------------------------------------------------------------------------------
# Text output


def _text(record: dict[str, Any]) -> str:
    kind = record["kind"]
    lines: list[str] = []
    if kind == "error":
        lines.append(f"{record['code']}  {record['symbol']}")
        lines.append(f"  meaning:  {record['meaning']}")
        lines.append(f"  from:     {', '.join(record['paths'])}")
        lines.extend(_listed("causes", record["causes"]))
        lines.extend(_listed("check", record["checks"]))
    elif kind == "product":
        lines.append(record["name"])
        if record["aliases"]:
            lines.append(f"  also:           {', '.join(record['aliases'])}")
        lines.append(f"  SKU ID:         {record['sku_id']}")
        lines.append(f"  KMS counted ID: {record['kms_id']} ({record['kms_item']})")
        lines.append(f"  application:    {record['application']} ({record['app_id']})")
        lines.append(f"  threshold:      {record['threshold']} clients")
        lines.append(f"  protocol:       {record['protocol']}.0")
        keys = ", ".join(record["gvlks"]) or "(Microsoft publishes none)"
        lines.append(f"  GVLK:           {keys}")
        source = record["gvlk_source"]
        if source:
            lines.append(f"  published in:   {source['title']} ({source['date']})")
        groups = ", ".join(record["host_key_groups"]) or "(none)"
        lines.append(f"  host keys:      {groups}")
        if record["retail"] or record["preview"]:
            lines.append("  note:           a retail or preview group: a genuine host refuses it (0xC004F042)")
        if record["note"]:
            lines.append(f"  note:           {record['note']}")
    elif kind == "kms_item":
        lines.append(f"{record['name']}  (KMS counted ID {record['kms_id']})")
        lines.append(f"  application:  {record['application']}")
        lines.append(f"  threshold:    {record['threshold']} clients, protocol {record['protocol']}.0")
        lines.append(f"  editions:     {', '.join(record['skus']) or '(none in emu)'}")
        lines.append(f"  host keys:    {', '.join(record['host_key_groups']) or '(none)'}")
    elif kind == "application":
        lines.append(f"{record['name']}  (application ID {record['app_id']})")
        lines.append(f"  client table: {record['table_size']} clients")
        lines.append(f"  KMS items:    {', '.join(record['kms_items'])}")
    else:
        lines.append(f"{record['title']}  (host key group {record['name']!r})")
        lines.append(f"  application: {record['application']}")
        if record["hosted_on"]:
            lines.append(f"  hosted on:   {', '.join(record['hosted_on'])}")
        lines.extend(_listed("activates", record["activates"]))
        for update in record["required_updates"]:
            clients = ", ".join(update["clients"])
            lines.append(f"  a {update['host_os']} host needs {update['update']} for {clients}")
    return "\n".join(lines)


def _listed(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    return [f"  {title}:"] + [f"    - {item}" for item in items]
