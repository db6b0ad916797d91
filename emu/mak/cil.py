"""emu-cil: the file VAMT-style proxy activation carries between networks (emu-defined XML).

Microsoft documents VAMT 2.0's CIL tag names in part (root ``SoftwareLicensingData``, ``Computers/
Computer`` with ``Name`` and ``Id``, ``Products/Product``); the .cilx schema of VAMT 3 is not public.
emu keeps the known names and puts its own fields in the ``urn:emu:cil:1`` namespace: per product the
ePID, the partial key, the installation ID and, once acquired, the confirmation ID. A "proxy data only"
export leaves out computer names, as VAMT's option does for personally identifiable data.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace

from emu.errors import ProtocolError

__all__ = ["CIL_NS", "CilEntry", "merge_cids", "parse_cil", "proxy_data_only", "write_cil"]

CIL_NS = "urn:emu:cil:1"
ET.register_namespace("emu", CIL_NS)


@dataclass(frozen=True)
class CilEntry:
    """One computer's product: enough to acquire a CID elsewhere and to apply it back."""

    computer_id: str
    name: str | None
    pid: str
    partial_key: str
    iid: str
    cid: str | None = None
    error: str | None = None


def _e(tag: str) -> str:
    return f"{{{CIL_NS}}}{tag}"


def write_cil(entries: list[CilEntry]) -> bytes:
    root = ET.Element("SoftwareLicensingData", {"Version": "emu/1"})
    computers = ET.SubElement(root, "Computers")
    for entry in entries:
        computer = ET.SubElement(computers, "Computer", {"Id": entry.computer_id})
        if entry.name is not None:
            computer.set("Name", entry.name)
        product = ET.SubElement(ET.SubElement(computer, "Products"), "Product")
        for tag, value in (
            ("PID", entry.pid),
            ("PartialProductKey", entry.partial_key),
            ("InstallationId", entry.iid),
            ("ConfirmationId", entry.cid),
            ("Error", entry.error),
        ):
            if value is not None:
                ET.SubElement(product, _e(tag)).text = value
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def parse_cil(data: bytes) -> list[CilEntry]:
    """The entries of an emu-cil file; :class:`ProtocolError` for anything else."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ProtocolError(f"not an emu-cil file: {exc}") from None
    if root.tag != "SoftwareLicensingData" or root.get("Version") != "emu/1":
        raise ProtocolError("not an emu-cil file (root SoftwareLicensingData Version=emu/1)")
    entries = []
    for computer in root.iterfind("Computers/Computer"):
        product = computer.find("Products/Product")
        if product is None or not computer.get("Id"):
            raise ProtocolError("a Computer without Id or Products/Product")
        pid, iid = product.findtext(_e("PID")), product.findtext(_e("InstallationId"))
        if not pid or not iid:
            raise ProtocolError(f"computer {computer.get('Id')}: a product needs PID and InstallationId")
        entries.append(
            CilEntry(
                computer.get("Id", ""),
                computer.get("Name"),
                pid,
                product.findtext(_e("PartialProductKey")) or "",
                iid,
                product.findtext(_e("ConfirmationId")),
                product.findtext(_e("Error")),
            )
        )
    return entries


def proxy_data_only(entries: list[CilEntry]) -> list[CilEntry]:
    """The entries without computer names."""
    return [replace(e, name=None) for e in entries]


def merge_cids(base: list[CilEntry], acquired: list[CilEntry]) -> list[CilEntry]:
    """``base`` with the CIDs (and errors) that ``acquired`` holds for the same computer and IID."""
    found = {(e.computer_id, e.iid): e for e in acquired}
    out = []
    for entry in base:
        other = found.get((entry.computer_id, entry.iid))
        out.append(replace(entry, cid=other.cid, error=other.error) if other and (other.cid or other.error) else entry)
    return out
