"""Test helpers for the KMS host on loopback: start one, talk to it like vlmcs, cut PDUs apart."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from emu.clock import unix_to_filetime
from emu.kms import products
from emu.kms.host import HostConfig, KmsHost
from emu.kms.messages import build_request
from emu.net.kms_server import KmsServer, ServerConfig
from emu.rng import Rng, seeded
from emu.rpc.client import BindAccepted, ClientAssociation, FaultReceived, Reply, SendAlterContext
from emu.wire.kms import LicenseStatus, RequestBase, Version

#: Bound on every wait for the server in these tests (seconds).
WAIT = 5.0


@contextlib.asynccontextmanager
async def running_host(
    host_config: HostConfig | None = None, store: Any = None, seed: int = 1, **server_kwargs: Any
) -> AsyncIterator[KmsServer]:
    """A KmsServer on 127.0.0.1 (a free port), stopped on exit."""
    import time

    host = KmsHost(
        host_config or HostConfig(),
        seeded(seed),
        time.time(),
        store.load_cache() if store is not None else None,
        store.load_epids() if store is not None else None,
    )
    config = ServerConfig(**{"listen": (("127.0.0.1", 0),), **server_kwargs})
    server = KmsServer(host, config, store, rng=seeded(seed + 1))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def kms_request(
    rng: Rng,
    sku_name: str = "win10ent",
    major: int | None = None,
    cmid: uuid.UUID | None = None,
    required: int | None = None,
) -> bytes:
    """A KMS request message of a client of ``sku_name`` stamped with the current time."""
    import time

    sku = products.lookup(sku_name)
    base = RequestBase(
        version=Version(major or sku.protocol),
        vm_info=0,
        license_status=LicenseStatus.OOB_GRACE,
        binding_expiration=43200,
        app_id=sku.app_id,
        sku_id=sku.id,
        kms_id=sku.kms_id,
        cmid=cmid or uuid.UUID(int=rng.randint(1, 2**128 - 1)),
        required_client_count=sku.threshold if required is None else required,
        client_time=unix_to_filetime(time.time()),
        previous_cmid=uuid.UUID(int=0),
        workstation_name="peer.lab.test",
    )
    return build_request(base, rng)


async def _read_events(client: ClientAssociation, reader: asyncio.StreamReader) -> list[Any]:
    data = await asyncio.wait_for(reader.read(65536), WAIT)
    if not data:
        raise ConnectionError("the host closed the connection")
    return client.receive_data(data)


async def session(
    addr: tuple[str, int], messages: list[bytes], ndr64: bool = True, btfn: bool = True
) -> list[Reply | FaultReceived]:
    """One connection, vlmcs style: bind (alter_context if asked), then each message in turn."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*addr), WAIT)
    client = ClientAssociation(offer_ndr64=ndr64, offer_btfn=btfn)
    out: list[Reply | FaultReceived] = []
    try:
        writer.write(client.bind())
        bound = False
        while not bound:
            for event in await _read_events(client, reader):
                if isinstance(event, SendAlterContext):
                    writer.write(event.data)
                elif isinstance(event, BindAccepted):
                    bound = True
        for message in messages:
            writer.write(client.request(message))
            got: list[Any] = []
            while not got:
                got = [e for e in await _read_events(client, reader) if isinstance(e, (Reply, FaultReceived))]
            out.extend(got)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return out


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = WAIT) -> bytes:
    """Everything the host sends until it closes the connection (bounded by ``timeout``)."""
    data = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError("the host kept the connection open")
        try:
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk
