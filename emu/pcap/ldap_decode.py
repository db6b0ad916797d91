"""LDAP in ``emu decode``: the operations of an LDAP conversation (bind, search with its filter, entries,
add/modify/delete and results), with the msSPP attributes of ADBA activation objects decoded: GUIDs
(msSPP-KMSIds, msSPP-CSVLKSkuId, objectGUID) are stored in Windows byte order and shown as GUID strings,
licence blobs by kind and size. Plugged into :data:`emu.pcap.decode.DECODERS`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from emu.errors import DecodeError
from emu.ldap import messages as m
from emu.ldap.filter_text import render_filter
from emu.ldap.framing import PduBuffer
from emu.pcap.reader import Conversation

__all__ = ["LdapDecoder", "LdapRecord", "describe_value"]

LDAP_PORTS = {389, 3268}
GUID_ATTRIBUTES = {"msspp-kmsids", "msspp-csvlkskuid", "objectguid"}
SCOPES = {0: "base", 1: "one", 2: "sub"}


def describe_value(attribute: str, value: bytes) -> str:
    """A value as a person reads it: GUID strings for GUID attributes, licences by kind, text or hex."""
    name = attribute.lower()
    if name in GUID_ATTRIBUTES and len(value) == 16:
        return str(uuid.UUID(bytes_le=value))
    if name.endswith("license"):
        kind = "emu-licence/1" if value.startswith(b"<emuLicence") else "licence"
        return f"<{kind}, {len(value)} bytes>"
    try:
        text = value.decode("utf-8")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return "0x" + value.hex()


@dataclass(frozen=True)
class LdapRecord:
    """One LDAP message of a capture."""

    capture: str
    conversation: int
    direction: str  # "C->S" or "S->C"
    message_id: int
    op: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "record": "ldap",
            "capture": self.capture,
            "conversation": self.conversation,
            "direction": self.direction,
            "message_id": self.message_id,
            "op": self.op,
            "summary": self.summary,
            **self.details,
        }

    def line(self) -> str:
        """The record as one text line of ``emu decode``."""
        return f"#{self.conversation} LDAP {self.direction} [{self.message_id}] {self.op}: {self.summary}"


def _attrs(attrs: tuple[tuple[str, tuple[bytes, ...]], ...]) -> dict[str, list[str]]:
    return {a: [describe_value(a, v) for v in vals] for a, vals in attrs}


def _summarise(msg: m.LdapMessage) -> tuple[str, dict[str, Any]]:
    op = msg.op
    if isinstance(op, m.BindRequest):
        how = f"SASL {op.sasl_mechanism}" if op.sasl_mechanism else ("anonymous" if not op.password else "simple")
        return f"{op.name or '(anonymous)'} ({how})", {"name": op.name, "auth": how}
    if isinstance(op, m.SearchRequest):
        flt = render_filter(op.filter)
        attrs = ",".join(op.attributes) or "*"
        return f"base={op.base!r} scope={SCOPES.get(op.scope, op.scope)} filter={flt} attrs={attrs}", {
            "base": op.base,
            "scope": SCOPES.get(op.scope, op.scope),
            "filter": flt,
            "attributes": list(op.attributes),
            "size_limit": op.size_limit,
        }
    if isinstance(op, m.SearchResultEntry | m.AddRequest):
        shown = _attrs(op.attributes)
        text = "; ".join(f"{a}={'|'.join(v)}" for a, v in shown.items())
        return f"{op.dn}: {text}", {"dn": op.dn, "attributes": shown}
    if isinstance(op, m.DelRequest):
        return op.dn, {"dn": op.dn}
    if isinstance(op, m.ModifyRequest):
        changes = [
            f"{('add', 'delete', 'replace')[c.operation] if c.operation < 3 else c.operation} {c.attribute}"
            for c in op.changes
        ]
        return f"{op.dn}: {', '.join(changes)}", {"dn": op.dn, "changes": changes}
    if isinstance(op, m.BindResponse | m.SearchResultDone | m.SimpleResponse | m.ExtendedResponse):
        r = op.result
        text = f"result {r.code}" + (f" {r.message}" if r.message else "")
        return text, {"result": r.code, "matched_dn": r.matched_dn, "message": r.message}
    if isinstance(op, m.ExtendedRequest):
        return op.name, {"name": op.name}
    return "", {}


class LdapDecoder:
    """Claims conversations on the LDAP ports, or any whose client bytes parse as an LDAPMessage."""

    name = "ldap"

    def decode(self, conv: Conversation, capture: str, force: bool) -> list[Any] | None:
        ports = {conv.client.src[1], conv.client.dst[1]}
        data = conv.client.data
        if not data or data[0] != 0x30:
            return None
        if not (ports & LDAP_PORTS or force):
            try:
                first = PduBuffer().feed(data[:65536])
                if not first:
                    return None
                m.decode_message(first[0])
            except DecodeError:
                return None
        records: list[Any] = []
        for direction, stream in (("C->S", conv.client.data), ("S->C", conv.server.data)):
            buffer = PduBuffer()
            try:
                pdus = buffer.feed(stream)
            except DecodeError as exc:
                records.append(LdapRecord(capture, conv.index, direction, -1, "error", str(exc)))
                continue
            for pdu in pdus:
                try:
                    msg = m.decode_message(pdu)
                except DecodeError as exc:
                    records.append(LdapRecord(capture, conv.index, direction, -1, "error", str(exc)))
                    continue
                summary, details = _summarise(msg)
                records.append(
                    LdapRecord(capture, conv.index, direction, msg.message_id, msg.op_name, summary, details)
                )
            if buffer.pending:
                records.append(
                    LdapRecord(
                        capture, conv.index, direction, -1, "error", f"{buffer.pending} bytes of an unfinished PDU"
                    )
                )
        requests = [r for r in records if r.direction == "C->S"]
        answers = [r for r in records if r.direction == "S->C"]
        ordered: list[Any] = []
        for req in requests:
            ordered.append(req)
            ordered.extend(a for a in answers if a.message_id == req.message_id)
        ordered.extend(a for a in answers if all(a.message_id != r.message_id for r in requests))
        return ordered
