"""What ``emu client activate`` prints: the one-line summary per request, the verbose request and
response tables (vlmcs ``-v`` style) and the JSON record of an exchange."""

from __future__ import annotations

import datetime as _dt
import uuid
from typing import Any

from emu.clock import filetime_to_unix
from emu.hresults import describe
from emu.kms import products
from emu.net.kms_client import ExchangeResult, ExchangeStatus
from emu.wire.kms import LicenseStatus

__all__ = ["json_result", "request_table", "response_table", "summary_line"]


def summary_line(result: ExchangeResult, index: int, of: str) -> str:
    version = result.request.version
    head = f"{result.host} request {index}{of} (KMS V{version.major}.{version.minor}"
    head += f", {result.syntax.name})" if result.syntax is not None else ")"
    v = result.verified
    if result.status in (ExchangeStatus.ACTIVATED, ExchangeStatus.BELOW_THRESHOLD) and v is not None:
        words = "activated" if result.activated else "below threshold"
        parts = [f"{words}: count {v.count}/{result.request.required_client_count}", f"ePID {v.epid}"]
        if v.hwid is not None:
            parts.append(f"HwId {v.hwid.hex().upper()}")
        parts.append(f"activation {v.activation_interval} min, renewal {v.renewal_interval} min")
        line = f"{head}: " + ", ".join(parts)
    else:
        line = f"{head}: {result.status.value}: {result.detail}"
    warnings = [w.check for w in result.warnings] + (
        [c.name for c in v.checks if not c.passed and c.severity == "warning"] if v is not None else []
    )
    if warnings:
        line += f" [warnings: {', '.join(warnings)}]"
    return line


def _filetime_text(filetime: int) -> str:
    try:
        return _dt.datetime.fromtimestamp(filetime_to_unix(filetime), _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"FILETIME {filetime}"


def request_table(result: ExchangeResult) -> str:
    b = result.request
    rows = [
        ("Protocol version", f"{b.version.major}.{b.version.minor}"),
        ("Client is a virtual machine", "yes" if b.vm_info else "no"),
        ("Licensing status", f"{int(b.license_status)} ({LicenseStatus(b.license_status).name})"),
        ("Binding expiration", f"{b.binding_expiration} minutes"),
        ("Application ID", str(b.app_id)),
        ("SKU ID", f"{b.sku_id}" + _sku_name(b.sku_id)),
        ("KMS ID", f"{b.kms_id} ({products.describe_kms_id(b.kms_id)})"),
        ("Client machine ID", str(b.cmid)),
        ("Previous client machine ID", str(b.previous_cmid)),
        ("Client request timestamp", _filetime_text(b.client_time)),
        ("Workstation name", b.workstation_name),
        ("Required client count", str(b.required_client_count)),
        ("Request size", f"{len(result.kms_request)} bytes"),
    ]
    return "Request\n" + "\n".join(f"  {k:<28}: {v}" for k, v in rows)


def _sku_name(sku_id: uuid.UUID) -> str:
    sku = products.product_data().find_sku(sku_id)
    return f" ({sku.name})" if sku is not None else ""


def response_table(result: ExchangeResult) -> str:
    lines = ["Response"]
    v = result.verified
    if result.kms_response is not None:
        lines.append(f"  {'Response size':<28}: {len(result.kms_response)} bytes")
    if result.hresult:
        lines.append(f"  {'HRESULT':<28}: {describe(result.hresult)}")
    if result.fault_status is not None:
        lines.append(f"  {'Fault status':<28}: 0x{result.fault_status:08X}")
    if v is not None and v.base is not None:
        base = v.base
        rows = [
            ("Protocol version", f"{base.version.major}.{base.version.minor}"),
            ("KMS host ePID", base.epid),
            ("KMS host HwId", v.hwid.hex().upper() if v.hwid is not None else "-"),
            ("Client machine ID", str(base.cmid)),
            ("Client request timestamp", _filetime_text(base.client_time)),
            ("Current count", str(base.count)),
            ("Activation interval", f"{base.activation_interval} minutes"),
            ("Renewal interval", f"{base.renewal_interval} minutes"),
        ]
        lines += [f"  {k:<28}: {val}" for k, val in rows]
    if v is not None:
        lines.append("Checks")
        for c in v.checks:
            mark = "ok" if c.passed else ("WARNING" if c.severity == "warning" else "FAILED")
            lines.append(f"  {c.name:<28}: {mark}" + (f" ({c.detail})" if c.detail else ""))
    for w in result.warnings:
        lines.append(f"  rpc {w.check:<24}: WARNING ({w.text})")
    if result.rpc_check:
        lines.append(f"  rpc {result.rpc_check:<24}: FAILED")
    return "\n".join(lines)


def json_result(result: ExchangeResult) -> dict[str, Any]:
    b = result.request
    out: dict[str, Any] = {
        "host": str(result.host),
        "status": result.status.value,
        "detail": result.detail,
        "new_connection": result.new_connection,
        "syntax": result.syntax.name if result.syntax is not None else None,
        "request": {
            "version": f"{b.version.major}.{b.version.minor}",
            "vm": bool(b.vm_info),
            "license_status": int(b.license_status),
            "binding_expiration": b.binding_expiration,
            "app_id": str(b.app_id),
            "sku_id": str(b.sku_id),
            "kms_id": str(b.kms_id),
            "cmid": str(b.cmid),
            "previous_cmid": str(b.previous_cmid),
            "client_time": b.client_time,
            "workstation_name": b.workstation_name,
            "required_client_count": b.required_client_count,
        },
        "hresult": result.hresult,
        "fault_status": result.fault_status,
        "rpc_check": result.rpc_check,
        "rpc_warnings": [{"check": w.check, "text": w.text} for w in result.warnings],
    }
    v = result.verified
    if v is not None:
        out["checks"] = [
            {"name": c.name, "passed": c.passed, "severity": c.severity, "detail": c.detail} for c in v.checks
        ]
        if v.base is not None:
            out["response"] = {
                "version": f"{v.base.version.major}.{v.base.version.minor}",
                "epid": v.epid,
                "hwid": v.hwid.hex().upper() if v.hwid is not None else None,
                "cmid": str(v.cmid),
                "client_time": v.client_time,
                "count": v.count,
                "activation_interval": v.activation_interval,
                "renewal_interval": v.renewal_interval,
            }
    return out
