"""Helpers shared by the tests: the reference captures, external tools.

Import them with ``from emu_testing import ...`` (not from ``conftest``: several conftest modules exist
and would shadow each other)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from emu.wire.rpc import split_pdus

ROOT = Path(__file__).resolve().parent.parent
#: The reference captures between vlmcsd/vlmcs and py-kms (../shared/vectors, read its README).
VECTORS_DIR = Path(os.environ.get("EMU_VECTORS", ROOT.parent / "shared" / "vectors"))


def vector_files() -> list[Path]:
    return sorted(VECTORS_DIR.glob("*.pcap"))


@dataclass(frozen=True)
class VectorPdu:
    """One DCE/RPC PDU cut out of a reference capture by its frag_length."""

    capture: str
    conversation: int
    direction: str  # "C->S" or "S->C"
    index: int
    data: bytes

    @property
    def ptype(self) -> int:
        return self.data[2]


def whole_pdus(stream: bytes) -> list[bytes]:
    """The whole DCE/RPC PDUs of a byte stream (a partial tail is dropped)."""
    return split_pdus(stream)[0]


def vector_pdus() -> list[VectorPdu]:
    """Every whole PDU of every reference capture, in stream order per direction."""
    from emu.pcap.reader import read_conversations

    out: list[VectorPdu] = []
    for path in vector_files():
        for conv in read_conversations(path):
            for direction, stream in (("C->S", conv.client.data), ("S->C", conv.server.data)):
                for i, pdu in enumerate(whole_pdus(stream)):
                    out.append(VectorPdu(path.name, conv.index, direction, i, pdu))
    return out


def vector_exchanges() -> list[tuple[VectorPdu, VectorPdu]]:
    """(request PDU, response PDU) pairs: each ptype-0 request with the ptype-2 response that answered it."""
    pdus = vector_pdus()
    pairs = []
    by_conv: dict[tuple[str, int], list[VectorPdu]] = {}
    for pdu in pdus:
        by_conv.setdefault((pdu.capture, pdu.conversation), []).append(pdu)
    for items in by_conv.values():
        requests = [p for p in items if p.direction == "C->S" and p.ptype == 0]
        responses = [p for p in items if p.direction == "S->C" and p.ptype == 2]
        pairs.extend(zip(requests, responses))
    return pairs


if not vector_files() and os.environ.get("CI"):
    # CI lays shared/ beside the clone: missing vectors there are a setup fault, not a reason to skip.
    raise RuntimeError(f"CI run without the reference captures: {VECTORS_DIR} has no *.pcap (set EMU_VECTORS)")
requires_vectors = pytest.mark.skipif(not vector_files(), reason=f"reference captures not found in {VECTORS_DIR}")


def require_tool(name: str) -> str:
    """Path of an external program; skip (or fail under CI, where the scripts must install it)."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed: scripts/test should have installed it")
        pytest.skip(f"{name} is not installed")
    return path


def _private_wireshark_home() -> dict[str, str]:
    """An environment whose HOME is an empty folder: tshark then loads no personal plugins or preferences
    (a dissector the user installed with `emu wireshark install` must not change what the tests see)."""
    import atexit
    import tempfile

    home = tempfile.mkdtemp(prefix="emu-tshark-home-")
    atexit.register(shutil.rmtree, home, True)
    return {**os.environ, "HOME": home, "XDG_CONFIG_HOME": os.path.join(home, ".config")}


#: Pass as ``env=`` to every tshark the tests run.
TSHARK_ENV = _private_wireshark_home()


def tshark_streams_and_syns(path: Path, timeout: float = 120) -> tuple[int, int]:
    """(distinct tcp.stream values, SYNs without ACK) of a capture, as tshark counts them."""
    tshark = require_tool("tshark")
    out = subprocess.run(
        [tshark, "-r", str(path), "-T", "fields", "-e", "tcp.stream", "-e", "tcp.flags"],
        capture_output=True,
        env=TSHARK_ENV,
        text=True,
        check=True,
        timeout=timeout,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line.strip()]
    syns = sum(1 for _, flags in rows if int(flags, 16) & 0x12 == 0x02)
    return len({stream for stream, _ in rows}), syns
