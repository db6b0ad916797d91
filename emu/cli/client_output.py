"""What ``emu client activate`` prints: the one-line summary per request, the verbose request and
response tables (vlmcs ``-v`` style), the JSON record of an exchange; the exit codes; and the result of
the KMS path (:class:`KmsAttempt`: its exit code, HRESULT, JSON document and closing message)."""

from __future__ import annotations

import datetime as _dt
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from emu.clock import filetime_to_unix
from emu.hresults import E_KMS_NOT_REACHABLE, E_NOT_ENOUGH_COUNT, describe
from emu.kms import products
from emu.kms.client import HostAddress
from emu.net.kms_client import ExchangeResult, ExchangeStatus
from emu.wire.kms import LicenseStatus

__all__ = [
    "EXIT_ACTIVATED",
    "EXIT_BELOW_THRESHOLD",
    "EXIT_CODES",
    "EXIT_HOST_ERROR",
    "EXIT_PROTOCOL_ERROR",
    "EXIT_UNREACHABLE",
    "EXIT_VERIFICATION_FAILED",
    "KmsAttempt",
    "json_result",
    "request_table",
    "response_table",
    "summary_line",
]

EXIT_ACTIVATED = 0
#: 2 is taken by the command line for usage errors (bad option, unknown product).
EXIT_BELOW_THRESHOLD = 3
EXIT_HOST_ERROR = 4
EXIT_VERIFICATION_FAILED = 5
EXIT_PROTOCOL_ERROR = 6
EXIT_UNREACHABLE = 7

#: Exit code of the last request's status.
EXIT_CODES = {
    ExchangeStatus.ACTIVATED: EXIT_ACTIVATED,
    ExchangeStatus.BELOW_THRESHOLD: EXIT_BELOW_THRESHOLD,
    ExchangeStatus.HOST_ERROR: EXIT_HOST_ERROR,
    ExchangeStatus.FAULT: EXIT_HOST_ERROR,
    ExchangeStatus.VERIFICATION_FAILED: EXIT_VERIFICATION_FAILED,
    ExchangeStatus.PROTOCOL_ERROR: EXIT_PROTOCOL_ERROR,
    ExchangeStatus.UNREACHABLE: EXIT_UNREACHABLE,
}

#: DNS_ERROR_RCODE_NAME_ERROR: no _vlmcs._tcp SRV record (the code a client reports for it).
DNS_NAME_ERROR = 0x8007232B


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


@dataclass
class KmsAttempt:
    """The KMS path of one run: the hosts found and every exchange made (``message`` when none was found;
    ``no_records``: the DNS server answered, without SRV records)."""

    target_text: str
    product: str
    hosts: list[HostAddress]
    results: list[ExchangeResult]
    message: str = ""
    no_records: bool = False

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.results[-1].status] if self.hosts and self.results else EXIT_UNREACHABLE

    @property
    def hresult(self) -> int:
        """0 activated; else the host's HRESULT (or fault status), 0xC004F038 below threshold, 0x8007232B no
        SRV records, 0xC004F074 for no host reached or no valid answer (emu-defined mapping)."""
        if not self.hosts or not self.results:
            return DNS_NAME_ERROR if self.no_records else E_KMS_NOT_REACHABLE
        last = self.results[-1]
        if last.status == ExchangeStatus.ACTIVATED:
            return 0
        if last.status == ExchangeStatus.BELOW_THRESHOLD:
            return E_NOT_ENOUGH_COUNT
        return last.hresult or last.fault_status or E_KMS_NOT_REACHABLE

    def document(self) -> dict[str, Any]:
        """The ``--json`` document of a KMS run."""
        if not self.hosts:
            return {
                "target": self.target_text,
                "hosts": [],
                "results": [],
                "status": "unreachable",
                "detail": self.message,
                "exit_code": EXIT_UNREACHABLE,
            }
        last = self.results[-1]
        return {
            "target": self.target_text,
            "product": self.product,
            "hosts": [str(h) for h in self.hosts],
            "results": [json_result(r) for r in self.results],
            "status": last.status.value,
            "detail": last.detail,
            "exit_code": self.exit_code,
        }

    def report(self) -> None:
        """What the text output says after the request lines: why no host answered."""
        if not self.hosts:
            print(self.message, file=sys.stderr)
        elif self.exit_code == EXIT_UNREACHABLE and len(self.hosts) > 1:
            print(f"no KMS host reachable: tried {', '.join(str(h) for h in self.hosts)}", file=sys.stderr)
