"""Port reuse on a real capture: emu's client against emu's host on loopback, client ports coming round again.

The decode-at-scale issue: a busy host sees ephemeral ports reused, and every exchange must be its
own conversation. Here the clients are bound to three local ports in turn (a tiny
``ip_local_port_range``, without changing the machine's), twelve exchanges, each port reused four
times, captured by dumpcap on ``lo`` (it comes with tshark, which the project's scripts install). tshark's
count of SYNs is the reference for the conversations, and every exchange must appear once, whatever
``--jobs``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from emu_testing import require_tool, tshark_streams_and_syns

from emu.cli import main

EXCHANGES, PORTS = 12, 3


def _base(rng: Any) -> Any:
    import uuid

    from emu.clock import unix_to_filetime
    from emu.kms import products
    from emu.kms.client import RequestTemplate
    from emu.wire.kms import Version

    template = RequestTemplate.of(products.lookup("Windows 10 Enterprise"), "port-reuse-test", version=Version(6))
    return template.base(uuid.UUID(bytes=rng.bytes(16), version=4), unix_to_filetime(time.time()))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def reused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int]]]:
    """The capture and the client address of each exchange, in order."""
    from emu.kms.client import HostAddress
    from emu.kms.host import HostConfig, KmsHost
    from emu.net import kms_client
    from emu.net.kms_server import KmsServer, ServerConfig
    from emu.rng import seeded

    out = tmp_path_factory.mktemp("reuse") / "reuse.pcap"
    ports = itertools.cycle(_free_ports(PORTS))
    original = asyncio.open_connection

    async def bound(host: str, port: int, **_: Any) -> Any:
        """The client's connection from the next of the few local ports (SO_REUSEADDR: TIME_WAIT allowed)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", next(ports)))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        return await original(sock=sock)

    dumpcap = require_tool("dumpcap")
    clients: list[tuple[str, int]] = []

    async def serve_and_ask() -> None:
        async with KmsServer(
            KmsHost(HostConfig(), seeded(2), time.time()), ServerConfig(listen=(("127.0.0.1", 0),))
        ) as srv:
            port = srv.addresses[0][1]
            argv = [dumpcap, "-q", "-P", "-i", "lo", "-f", f"tcp port {port}", "-w", str(out)]
            sniffer = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
            try:
                assert sniffer.stderr is not None
                line = await asyncio.to_thread(sniffer.stderr.readline)  # "Capturing on 'Loopback: lo'"
                assert "Capturing on" in line, line
                await asyncio.sleep(1.0)  # the message comes a moment before the capture is live
                rng = seeded(3)
                for _ in range(EXCHANGES):
                    result = await kms_client.exchange(HostAddress("127.0.0.1", port), _base(rng), rng=rng)
                    assert result.local is not None
                    clients.append(result.local)
                await asyncio.sleep(1.0)  # the last FIN/ACKs reach the capture
            finally:
                sniffer.send_signal(signal.SIGINT)
                sniffer.communicate(timeout=10)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kms_client.asyncio, "open_connection", bound)
        asyncio.run(serve_and_ask())
    return out, clients


@pytest.mark.skipif(os.geteuid() != 0, reason="sniffing needs root (CI runs as root)")
@pytest.mark.parametrize("jobs", [1, 2])
def test_reused_client_ports_give_one_conversation_per_syn_and_every_exchange_once(
    reused: tuple[Path, list[tuple[str, int]]], jobs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    path, clients = reused
    assert len(set(clients)) == PORTS  # the ports really came round again
    streams, syns = tshark_streams_and_syns(path, timeout=60)
    assert syns == streams == EXCHANGES
    main(["decode", "--json", "--jobs", str(jobs), str(path)])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = records[-1]
    assert summary["record"] == "summary"
    assert summary["tcp_conversations"] == summary["kms_conversations"] == syns
    assert summary["exchanges"] == EXCHANGES and summary["pdus"]["response"] == EXCHANGES
    responses = [r for r in records if r["record"] == "pdu" and r["ptype"] == "response"]
    assert sorted(r["conversation"] for r in responses) == list(range(EXCHANGES))  # each exchange once
    assert [r["dst"] for r in sorted(responses, key=lambda r: r["conversation"])] == [
        f"{host}:{port}" for host, port in clients
    ]
    assert all(r["response"]["verified"] for r in responses)


def test_a_conversation_survives_pickling_whole_as_decode_jobs_send_it():
    import pickle

    from emu.pcap.reader import read_conversations

    samples = Path(__file__).resolve().parents[2] / "pcaps"
    conversations = [c for path in sorted(samples.glob("*.pcap")) for c in read_conversations(path)]
    assert len(conversations) > 5 and any(len(c.client.chunks) > 1 for c in conversations)
    for conv in conversations:
        back = pickle.loads(pickle.dumps(conv, protocol=pickle.HIGHEST_PROTOCOL))
        assert back == conv
        assert [type(c) for c in back.client.chunks + back.server.chunks] == [
            type(c) for c in conv.client.chunks + conv.server.chunks
        ]
