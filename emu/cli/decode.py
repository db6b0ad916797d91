"""``emu decode FILE.pcap``: every KMS PDU of a capture, its fields and the response checks.

The decoding is :mod:`emu.pcap.kms_decode`; this module only prints it, as readable blocks or as
JSON lines.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from emu.errors import UsageError
from emu.pcap.json_lines import json_line
from emu.pcap.kms_records import DecodedPdu, KmsRequestInfo, KmsResponseInfo, StreamNote

__all__ = ["EPILOG", "format_note", "format_pdu", "register", "run"]

EPILOG = """\
output:
  One block per DCE/RPC PDU, in capture-time order: direction and endpoints, PTYPE, size,
  call_id, then the key fields one per line (contexts, KMS version, product, CMID, count and
  threshold, intervals, ePID, HwId, HRESULT) and the response checks of docs/kms-wire-protocol.md
  ("checks: decode_ok ✓ hash_ok ✓ ..."), each paired with its request by call_id.
  Conversations are found on any port (DCE/RPC header + the KMS interface in the bind, or a KMS
  message in a request/response stub); --port N decodes every conversation on port N as KMS.

  Conversations are tracked as TCP and tshark do (a SYN on a 4-tuple whose connection ended, or
  with a new ISN, starts a new one) and printed as each ends: output starts before the file is
  read to the end. Every run ends with a summary: packets, TCP and KMS conversations, PDUs by
  type, exchanges, errors, bytes not decoded.

--summary: instead of the PDUs, the activation inventory: per KMS host its ePIDs and HwIds, per
  application the clients (CMID, workstation, product, requests, count, threshold N, activated)
  and the outcomes of the exchanges; --json gives it as one "inventory" record, --csv as one
  row per client.

--json: one JSON object per line; "record" is "pdu", "note" or, last, "summary". Keys of a pdu record (always
  all present, null when not applicable):
    record capture time conversation src dst direction offset size ptype call_id pfc_flags
    p_cont_id opnum syntax syntax_guessed contexts[] results[] fault_status fault_name
    request response error
  request:  version size refused application product sku_name app_id sku_id kms_id cmid
            previous_cmid workstation required_client_count client_time vm license_status
            binding_expiration mac_ok
  response: hresult hresult_name version size epid epid_problems[] hwid count threshold
            activation_interval renewal_interval cmid client_time verified
            checks[{name passed severity detail}] note
  note:     record capture time conversation direction message  (an error: a gap, a damaged
            capture, bytes that are not DCE/RPC, a DCE/RPC conversation without KMS)
  summary:  record capture packets tcp_packets other_packets unparsed_packets tcp_conversations
            kms_conversations other_conversations not_decoded_rpc_conversations pdus{ptype: n}
            other_records{} exchanges errors bytes_not_decoded late_bytes damaged
  Times are ISO 8601 UTC; HRESULTs and fault statuses are "0x%08X" strings.

exit status:
  0  every PDU decoded and every response passed its error-severity checks
     (HRESULT error responses and fault PDUs are decoded traffic, not failures)
  1  some PDU did not decode, a response failed a check, a v4 request MAC was wrong, or a
     stream had a problem (gap, truncated capture, bytes that are not DCE/RPC)
  2  usage error: missing file, not a pcap/pcapng file
"""


class _Glyphs:
    """Arrow and check marks, with ASCII stand-ins when the terminal cannot print them."""

    def __init__(self, stream: TextIO) -> None:
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "→✓✗".encode(encoding)
            self.arrow, self.ok, self.bad = "→", "✓", "✗"
        except (UnicodeEncodeError, LookupError):
            self.arrow, self.ok, self.bad = "->", "ok", "FAIL"


def _when(t: float | None) -> str:
    if t is None:
        return "time unknown"
    return _dt.datetime.fromtimestamp(t, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def _request_lines(r: KmsRequestInfo, glyphs: _Glyphs, verbose: bool) -> list[str]:
    lines = [f"KMS request v{r.version} ({r.size} bytes)"]
    if r.refused:
        lines.append(f"no message layout: {r.refused}")
        return lines
    product = r.product or "?"
    lines.append(f"product: {product}" + (f" [{r.application}]" if r.application else ""))
    if verbose:
        lines += [
            f"app id: {r.app_id}",
            f"sku id: {r.sku_id}" + (f" ({r.sku_name})" if r.sku_name else ""),
            f"kms id: {r.kms_id}",
        ]
    lines += [
        f"cmid: {r.cmid}",
        f"previous cmid: {r.previous_cmid}",
        f"workstation: {r.workstation}",
        f"required client count (N): {r.required_client_count}",
        f"client time: {r.client_time}",
        f"vm: {'yes' if r.vm else 'no'}",
        f"license status: {r.license_status}, grace {r.binding_expiration} min",
    ]
    if r.mac_ok is not None:
        lines.append(f"v4 mac: {glyphs.ok if r.mac_ok else glyphs.bad}")
    return lines


def _response_lines(s: KmsResponseInfo, glyphs: _Glyphs, verbose: bool) -> list[str]:
    lines = [f"HRESULT: 0x{s.hresult:08X} {s.hresult_name}"]
    if s.size is not None:
        lines.append(f"KMS response v{s.version} ({s.size} bytes)")
    if s.epid is not None:
        lines.append(f"ePID: {s.epid}")
        lines += [f"ePID problem: {p}" for p in s.epid_problems]
        if s.hwid is not None:
            lines.append(f"HwId: {s.hwid}")
        threshold = f" (threshold {s.threshold})" if s.threshold is not None else ""
        lines.append(f"count: {s.count}{threshold}")
        lines.append(f"intervals: activation {s.activation_interval} min, renewal {s.renewal_interval} min")
        lines.append(f"cmid: {s.cmid}")
        lines.append(f"client time: {s.client_time}")
    if s.checks:
        marks = " ".join(f"{c.name} {glyphs.ok if c.passed else glyphs.bad}" for c in s.checks)
        lines.append(f"checks: {marks}")
        for c in s.checks:
            if not c.passed:
                kind = "warning" if c.severity == "warning" else "failed"
                lines.append(f"{kind}: {c.name}" + (f" ({c.detail})" if c.detail else ""))
            elif verbose and c.detail:
                lines.append(f"  {c.name}: {c.detail}")
    if s.note:
        lines.append(s.note)
    return lines


def format_pdu(p: DecodedPdu, glyphs: _Glyphs | None = None, verbose: bool = False) -> str:
    """One human-readable block for a PDU."""
    glyphs = glyphs or _Glyphs(sys.stdout)
    head = f"{_when(p.time)}  #{p.conversation} {p.src} {glyphs.arrow} {p.dst}  {p.ptype or '?'}  {p.size} B"
    if p.call_id is not None:
        head += f"  call_id {p.call_id}"
    lines: list[str] = []
    if verbose:
        lines.append(
            f"stream offset {p.offset}" + (f", pfc_flags 0x{p.pfc_flags:02x}" if p.pfc_flags is not None else "")
        )
    for c in p.contexts:
        lines.append(f"context {c.p_cont_id}: {c.abstract_syntax} over {', '.join(c.transfer_syntaxes)}")
    for r in p.results:
        ctx = f"context {r.p_cont_id}" if r.p_cont_id is not None else "result"
        lines.append(f"{ctx}: {r.result} (reason {r.reason}) {r.transfer_syntax}")
    if p.p_cont_id is not None and p.ptype in ("request", "response"):
        syntax = (
            f" {p.syntax}" + (" (guessed from the stub: no bind seen)" if p.syntax_guessed else "") if p.syntax else ""
        )
        lines.append(f"context {p.p_cont_id}{syntax}" + (f", opnum {p.opnum}" if p.opnum is not None else ""))
    if p.fault_status is not None:
        lines.append(f"status: 0x{p.fault_status:08X} {p.fault_name}")
    if p.request is not None:
        lines += _request_lines(p.request, glyphs, verbose)
    if p.response is not None:
        lines += _response_lines(p.response, glyphs, verbose)
    if p.error is not None:
        lines.append(f"error: {p.error}")
    return "\n".join([head] + [f"    {line}" for line in lines])


def format_note(n: StreamNote) -> str:
    """One line for a stream problem."""
    where = f" {n.direction}" if n.direction else ""
    return f"note: conversation #{n.conversation}{where}: {n.message}"


def _records(path: Path, args: argparse.Namespace) -> Iterator[Any]:
    from emu.pcap.decode import iter_records

    return iter_records(path, port=args.port, jobs=args.jobs, keep_ids=False)


class _Render:
    """A record as the lines ``emu decode`` prints for it (picklable: the workers of --jobs call it)."""

    def __init__(self, as_json: bool, glyphs: _Glyphs, verbose: bool) -> None:
        self.as_json, self.glyphs, self.verbose = as_json, glyphs, verbose

    def __call__(self, record: Any) -> str:
        if self.as_json:
            return json_line(record.to_json())
        if isinstance(record, DecodedPdu):
            return format_pdu(record, self.glyphs, self.verbose) + "\n"
        if isinstance(record, StreamNote):
            return format_note(record) + "\n"
        if hasattr(record, "line"):  # another protocol's decoder with a text form (LDAP)
            return f"{record.line()}\n"
        return json_line(record.to_json())  # a record of another protocol's decoder


def _decode_one(path: Path, args: argparse.Namespace, out: TextIO) -> bool:
    """Print one capture's records as they come; whether it decoded without error."""
    from emu.pcap.decode import DecodeSummary, iter_text

    render = _Render(args.json, _Glyphs(out), args.verbose)
    for piece in iter_text(path, render, port=args.port, jobs=args.jobs):
        if isinstance(piece, DecodeSummary):
            out.write(json_line(piece.to_json()) if args.json else "\n".join(piece.lines()) + "\n")
            return piece.ok
        out.write(piece)
    raise AssertionError("iter_text ends with its summary")


def _summarise(path: Path, args: argparse.Namespace, out: TextIO) -> bool:
    """Print one capture's activation inventory (--summary); whether it decoded without error."""
    from emu.pcap.decode import DecodeSummary
    from emu.pcap.inventory import Inventory

    inventory = Inventory()
    summary: DecodeSummary | None = None
    for record in _records(path, args):
        if isinstance(record, DecodeSummary):
            summary = record
        else:
            inventory.add(record)
    assert summary is not None
    if args.csv:
        out.write(inventory.csv())
    elif args.json:
        out.write(json_line(inventory.to_json()))
        out.write(json_line(summary.to_json()))
    else:
        out.write(inventory.table() + "\n")
        out.write("\n".join(summary.lines()) + "\n")
    return summary.ok


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Decode every file named in ``args``; 0, 1 or 2 as documented in :data:`EPILOG`.

    Raises:
        UsageError: a file is missing or is not a capture (the CLI prints one line and exits 2).
    """
    out = out or sys.stdout
    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such capture file")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port} is not a TCP port (1-65535)")
    jobs = getattr(args, "jobs", 1)
    if jobs < 1 or jobs > 64:
        raise UsageError(f"--jobs {jobs}: give 1 to 64 worker processes")
    args.jobs = jobs
    summary = getattr(args, "summary", False)
    args.csv = getattr(args, "csv", False)
    if args.csv and not summary:
        raise UsageError("--csv goes with --summary (the inventory is the tabular output)")
    status = 0
    for path in paths:
        ok = _summarise(path, args, out) if summary else _decode_one(path, args, out)
        if not ok:
            status = 1
    return status


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emu decode`` to the command line."""
    parser = subparsers.add_parser(
        "decode",
        help="decode the KMS traffic of pcap/pcapng files",
        description="Decode every KMS DCE/RPC PDU of one or more captures (pcap or pcapng), verify each "
        "response against its request, and print the fields.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="capture file (pcap or pcapng)")
    parser.add_argument("--port", type=int, help="decode every TCP conversation on this port as KMS")
    parser.add_argument("--json", action="store_true", help="one JSON object per PDU per line (keys below)")
    parser.add_argument(
        "--summary", action="store_true", help="print the activation inventory (hosts, clients, outcomes) instead"
    )
    parser.add_argument("--csv", action="store_true", help="with --summary: one CSV row per client")
    parser.add_argument(
        "--jobs", "-j", type=int, default=1, metavar="N", help="decode conversations in N worker processes"
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="also print GUIDs, stream offsets, flags and check details"
    )
    parser.set_defaults(func=run)
