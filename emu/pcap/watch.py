"""``emu watch``: passive detection of KMS activation traffic, written as Suricata EVE JSON alerts.

Security teams run Suricata-style pipelines; emu writes its findings in the EVE ``alert`` record shape
(``timestamp``, ``flow_id``, ``src_ip``/``src_port``/``dest_ip``/``dest_port``, ``proto``, ``app_proto`` and
an ``alert`` object with ``signature_id``, ``signature``, ``category``, ``severity``), so they flow into
the same tooling. The signatures are emu's own (ids 8200001-8200005, :data:`SIGNATURES`):

* **8200001** a KMS activation: a DCE/RPC bind to the KMS interface, one alert per TCP conversation;
* **8200002** a KMS host on a port other than 1688 (``--kms-port``), per conversation;
* **8200003/8200004/8200005** a KMS host whose answers carry the traits of vlmcsd, py-kms or emu
  (:mod:`emu.kms.profiles`, as ``emu probe --pcap`` judges them), once per host, on its first conversation.

KMS conversations are found by content on any port (:mod:`emu.pcap.kms_decode`), which is what makes the
non-standard-port rule possible.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emu.pcap.kms_decode import DecodedPdu, decode_capture
from emu.pcap.probe_pcap import probe_capture_by_server

__all__ = ["SIGNATURES", "Signature", "watch_capture"]

KMS_PORT = 1688


@dataclass(frozen=True)
class Signature:
    """One detection rule: its id, message, category and severity (1 high .. 3 low, as Suricata)."""

    sid: int
    signature: str
    category: str
    severity: int


SIGNATURES: dict[str, Signature] = {
    "activation": Signature(8200001, "EMU KMS activation (DCE/RPC bind to the KMS interface)", "Misc activity", 3),
    "nonstandard-port": Signature(8200002, "EMU KMS host on a non-standard port", "Potentially Bad Traffic", 2),
    "vlmcsd": Signature(
        8200003, "EMU KMS host behaves like vlmcsd (KMS emulator)", "Potential Corporate Privacy Violation", 1
    ),
    "py-kms": Signature(
        8200004, "EMU KMS host behaves like py-kms (KMS emulator)", "Potential Corporate Privacy Violation", 1
    ),
    "emu": Signature(8200005, "EMU KMS host is emu (a lab tool)", "Potential Corporate Privacy Violation", 2),
}


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def _flow_id(client: str, server: str, conversation: int) -> int:
    digest = hashlib.sha256(f"{client}>{server}#{conversation}".encode()).digest()
    return int.from_bytes(digest[:6], "big")  # a positive 48-bit id, stable for the same flow


def _timestamp(t: float | None) -> str:
    stamp = _dt.datetime.fromtimestamp(t or 0.0, _dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+0000"


def _alert(key: str, bind: DecodedPdu, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    rule = SIGNATURES[key]
    src_ip, src_port = _split(bind.src)
    dest_ip, dest_port = _split(bind.dst)
    record: dict[str, Any] = {
        "timestamp": _timestamp(bind.time),
        "flow_id": _flow_id(bind.src, bind.dst, bind.conversation),
        "event_type": "alert",
        "src_ip": src_ip,
        "src_port": src_port,
        "dest_ip": dest_ip,
        "dest_port": dest_port,
        "proto": "TCP",
        "app_proto": "dcerpc",
        "alert": {
            "action": "allowed",
            "gid": 1,
            "signature_id": rule.sid,
            "rev": 1,
            "signature": rule.signature,
            "category": rule.category,
            "severity": rule.severity,
        },
    }
    if extra:
        record["emu"] = extra
    return record


def watch_capture(path: str | Path, *, kms_port: int = KMS_PORT) -> list[dict[str, Any]]:
    """The EVE alert records for a capture, in capture order (see the module docstring)."""
    decoded = decode_capture(path)
    first_bind: dict[int, DecodedPdu] = {}
    for pdu in decoded.pdus:
        if pdu.ptype == "bind" and pdu.direction == "C->S" and pdu.conversation not in first_bind:
            first_bind[pdu.conversation] = pdu
    alerts: list[tuple[float, int, dict[str, Any]]] = []
    for conv, bind in first_bind.items():
        alerts.append((bind.time or 0.0, conv, _alert("activation", bind)))
        if _split(bind.dst)[1] != kms_port:
            alerts.append((bind.time or 0.0, conv, _alert("nonstandard-port", bind)))
    for server, (report, conversations) in probe_capture_by_server(path).items():
        verdict = report.verdict.behaves_like
        first = next((first_bind[c] for c in conversations if c in first_bind), None)
        if verdict in ("vlmcsd", "py-kms", "emu") and first is not None:
            evidence = {
                "host": server,
                "confidence": report.verdict.confidence,
                "evidence": report.observations.evidence,
            }
            alerts.append((first.time or 0.0, first.conversation, _alert(verdict, first, evidence)))
    alerts.sort(key=lambda item: (item[0], item[1], item[2]["alert"]["signature_id"]))
    return [record for _, _, record in alerts]
