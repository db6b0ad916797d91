"""Benchmark of emu's DNS server (run by ``scripts/bench dns``): prints figures, asserts nothing.

* queries/s over UDP for ``_vlmcs._tcp.kms.test SRV`` (answer plus A/AAAA in additional), with
  8 queries outstanding, p50/p99 latency; for emu with its answer cache, emu without it, and
  stock dnslib (``DNSServer`` + ``zoneresolver.ZoneResolver``) on the same zone in the same run;
* TSIG-signed updates/s (each adds one A record, journaled in SQLite before the answer), 8
  outstanding, p50/p99.

Each server runs in its own process (this script re-executed with ``--serve``) so that the load
generator does not share its interpreter. Every phase is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ZONE = """$ORIGIN kms.test.
$TTL 3600
@            IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
@            NS   ns1
ns1          A    127.0.0.1
_vlmcs._tcp  600 IN SRV 0 0 1688 kms1.kms.test.
_vlmcs._tcp  600 IN SRV 0 0 1688 kms2.kms.test.
kms1         A    10.0.0.1
kms1         AAAA fd00::1
kms2         A    10.0.0.2
"""
SECRET = bytes(range(32))
OUTSTANDING = 8
STARTUP_SECONDS = 15.0


def _serve(kind: str, port: int, state: str | None) -> None:
    """Child process: run one server on 127.0.0.1:port until killed."""
    if kind == "dnslib":
        from dnslib.server import DNSLogger, DNSServer
        from dnslib.zoneresolver import ZoneResolver

        server = DNSServer(
            ZoneResolver(ZONE),
            port=port,
            address="127.0.0.1",
            logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"),
        )
        server.start_thread()
        print("READY", flush=True)
        while True:
            time.sleep(3600)
    import asyncio

    from emu.dns.tsig import TsigKey
    from emu.dns.zone import load_master_file
    from emu.net.dns_server import DnsServer

    async def main() -> None:
        server = DnsServer(
            [load_master_file(ZONE, "kms.test")],
            listen=[("127.0.0.1", port)],
            keys=[TsigKey.make("bench", SECRET)],
            state=state,
        )
        if kind == "emu-nocache":
            server.resolver.cache_size = 0
        await server.start()
        print("READY", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))
        return port


class _Child:
    def __init__(self, kind: str, state: str | None = None) -> None:
        self.port = _free_port()
        args = [sys.executable, __file__, "--serve", kind, str(self.port)] + ([state] if state else [])
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def __enter__(self) -> _Child:
        ready, _, _ = select.select([self.process.stdout], [], [], STARTUP_SECONDS)
        if not ready or self.process.stdout.readline().strip() != "READY":
            self.__exit__()
            raise SystemExit("bench: a server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _load(port: int, make: callable, seconds: float) -> tuple[int, float, list[float]]:
    """Keep OUTSTANDING messages in flight for ``seconds``; returns (answered, elapsed, latencies)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    next_id = 0
    start = time.perf_counter()
    end = start + seconds

    def send() -> None:
        nonlocal next_id
        next_id = (next_id + 1) & 0xFFFF
        sent[next_id] = time.perf_counter()
        sock.send(make(next_id))

    for _ in range(OUTSTANDING):
        send()
    while time.perf_counter() < end:
        ready, _, _ = select.select([sock], [], [], 0.5)
        if not ready:  # lost datagrams: refill the window
            sent.clear()
            for _ in range(OUTSTANDING):
                send()
            continue
        try:
            data = sock.recv(4096)
        except (BlockingIOError, ConnectionRefusedError):
            continue
        began = sent.pop(struct.unpack_from("!H", data)[0], None)
        if began is not None:
            latencies.append(time.perf_counter() - began)
            send()
    elapsed = time.perf_counter() - start
    sock.close()
    return len(latencies), elapsed, latencies


def _report(label: str, answered: int, elapsed: float, latencies: list[float]) -> float:
    rate = answered / elapsed if elapsed else 0.0
    if latencies:
        ordered = sorted(latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    else:
        p50 = p99 = float("nan")
    print(f"{label:<44} {rate:>9.0f}/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   ({answered} in {elapsed:.1f} s)")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each phase (default 3)")
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve[0], int(args.serve[1]), args.serve[2] if len(args.serve) > 2 else None)
        return 0

    from dnslib import DNSHeader, DNSQuestion, DNSRecord

    from emu.dns.tsig import TsigKey, sign_request

    template = bytes(DNSRecord(DNSHeader(id=0, bitmap=0), q=DNSQuestion("_vlmcs._tcp.kms.test", 33)).pack())

    def srv_query(query_id: int) -> bytes:
        return struct.pack("!H", query_id) + template[2:]

    print(
        f"DNS benchmark: UDP on 127.0.0.1, {OUTSTANDING} outstanding, {args.seconds:.0f} s per phase, {os.cpu_count()} CPUs"
    )
    rates = {}
    for kind, label in (
        ("dnslib", "stock dnslib ZoneResolver, SRV query"),
        ("emu", "emu, SRV query (answer cache)"),
        ("emu-nocache", "emu, SRV query (no cache)"),
    ):
        with _Child(kind) as child:
            _load(child.port, srv_query, 0.3)  # warm-up
            rates[kind] = _report(label, *_load(child.port, srv_query, args.seconds))

    key = TsigKey.make("bench", SECRET)
    counter = iter(range(10**9))

    def signed_update(query_id: int) -> bytes:
        from dnslib import RR, A

        record = DNSRecord(DNSHeader(id=query_id, bitmap=5 << 11), q=DNSQuestion("kms.test", 6))
        record.add_auth(RR(f"u{next(counter)}.kms.test", 1, 1, 60, A("10.1.2.3")))
        return sign_request(bytes(record.pack()), key, int(time.time()))[0]

    with tempfile.TemporaryDirectory() as tmp:
        state = str(Path(tmp) / "journal.sqlite")
        with _Child("emu", state) as child:
            update_rate = _report(
                "emu, TSIG-signed update, SQLite journal", *_load(child.port, signed_update, args.seconds)
            )
    print(
        f"emu / stock dnslib query rate: {rates['emu'] / rates['dnslib']:.1f}x cached, {rates['emu-nocache'] / rates['dnslib']:.1f}x uncached (target >= 2x, uncached >= 2.5x)"
    )
    print(f"journaled signed updates: {update_rate:.0f}/s (target >= 300/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
