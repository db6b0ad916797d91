"""Fault injection on a live host: the connection-level rules (drop, delay, RPC fault) over real sockets."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from kms_host_peer import WAIT, kms_request, read_until_closed, running_host, session

from emu.kms.faults import parse_fault
from emu.kms.host import HostConfig
from emu.rng import seeded
from emu.rpc.client import ClientAssociation, FaultReceived, Reply


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def _config(*rules: str) -> HostConfig:
    return HostConfig(faults=tuple(parse_fault(r) for r in rules))


def test_drop_after_bind_sends_the_bind_ack_and_closes() -> None:
    async def go() -> bytes:
        async with running_host(_config("drop-after-bind")) as server:
            reader, writer = await asyncio.open_connection(*server.addresses[0])
            writer.write(ClientAssociation(offer_ndr64=False, offer_btfn=False).bind())
            data = await read_until_closed(reader)
            writer.close()
            return data

    data = run(go())
    assert data[2] == 12 and len(data) == int.from_bytes(data[8:10], "little")  # one bind_ack, then EOF


def test_drop_request_closes_without_an_answer_and_the_host_keeps_serving() -> None:
    rng = seeded(4)

    async def go() -> list[object]:
        async with running_host(_config("drop-request,product=win11pro")) as server:
            try:
                await session(server.addresses[0], [kms_request(rng, "win11pro")])
            except ConnectionError:
                pass
            else:
                raise AssertionError("the host answered a request it should have dropped")
            return await session(server.addresses[0], [kms_request(rng)])

    (reply,) = run(go())
    assert isinstance(reply, Reply) and reply.hresult == 0


def test_delay_holds_the_answer_back_that_long() -> None:
    rng = seeded(5)

    async def go() -> float:
        async with running_host(_config("delay=0.4")) as server:
            started = time.monotonic()
            (reply,) = await session(server.addresses[0], [kms_request(rng)])
            assert isinstance(reply, Reply) and reply.hresult == 0
            return time.monotonic() - started

    assert 0.4 <= run(go()) < WAIT


def test_rpc_fault_answers_with_the_chosen_nca_status() -> None:
    rng = seeded(6)

    async def go() -> list[object]:
        async with running_host(_config("rpc-fault=0x1C010003")) as server:
            return await session(server.addresses[0], [kms_request(rng)])

    (fault,) = run(go())
    assert isinstance(fault, FaultReceived) and fault.status == 0x1C010003


def test_a_bad_fault_rule_on_the_command_line_is_one_line_and_exit_2() -> None:
    run_ = subprocess.run(
        [sys.executable, "-m", "emu", "host", "serve", "--listen", "127.0.0.1:0", "--fault", "explode"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run_.returncode == 2
    assert run_.stderr.strip().splitlines()[-1].startswith("emu: error: --fault 'explode': unknown action")
