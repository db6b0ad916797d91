"""Benchmark: pcap decode throughput of ``emu decode`` (PDUs per second over all reference captures).

Run with ``scripts/bench pcap [SECONDS]`` (default 3). Decodes every capture of the vectors folder
(``$EMU_VECTORS`` or ../shared/vectors) again and again for about SECONDS and prints PDUs/s for the
whole path (Scapy reading + TCP reassembly + RPC/NDR/KMS decoding + verification) and for the
decoding alone (conversations read once, then decoded repeatedly). Not a test.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emu.pcap.kms_decode import decode_capture, decode_conversation  # noqa: E402
from emu.pcap.reader import read_conversations  # noqa: E402

__all__ = ["main"]


def _vectors() -> list[Path]:
    folder = Path(os.environ.get("EMU_VECTORS", ROOT.parent / "shared" / "vectors"))
    return sorted(folder.glob("*.pcap"))


def _run(budget: float, one_pass) -> tuple[int, int, float]:
    """(passes, PDUs, seconds) of repeating ``one_pass`` for about ``budget`` seconds."""
    one_pass()  # warm up (imports, product data)
    passes = pdus = 0
    start = time.perf_counter()
    while True:
        pdus += one_pass()
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return passes, pdus, elapsed


def main(argv: list[str]) -> int:
    budget = float(argv[0]) if argv else 3.0
    files = _vectors()
    if not files:
        print("bench_pcap: no reference captures found (set EMU_VECTORS)", file=sys.stderr)
        return 2

    def whole() -> int:
        return sum(len(decode_capture(f).pdus) for f in files)

    conversations = [(f.name, read_conversations(f)) for f in files]

    def decode_only() -> int:
        n = 0
        for name, convs in conversations:
            for conv in convs:
                n += len(decode_conversation(conv, name) or ())
        return n

    print(f"{len(files)} captures, {whole()} PDUs per pass, ~{budget:g} s per figure")
    for label, fn in (("read + decode (emu decode)", whole), ("decode only (streams in memory)", decode_only)):
        passes, pdus, elapsed = _run(budget, fn)
        print(f"{label:34s} {pdus / elapsed:10,.0f} PDUs/s  ({passes} passes, {elapsed:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
