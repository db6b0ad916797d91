"""vlmcs -K: requests with versions other than 4.0/5.0/6.0, for testing how hosts refuse them (spec 9.1)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from emu.kms import crypto, products
from emu.kms.client import HostAddress
from emu.kms.host import HostConfig, KmsHost
from emu.kms.messages import build_request, message_layout
from emu.net.kms_client import ExchangeStatus, exchange
from emu.net.kms_server import KmsServer, ServerConfig
from emu.rng import seeded
from emu.wire.kms import LicenseStatus, RequestBase, Version


def _base(version: Version) -> RequestBase:
    sku = products.lookup("win10ent")
    return RequestBase(
        version,
        0,
        LicenseStatus.OOB_GRACE,
        43200,
        sku.app_id,
        sku.id,
        sku.kms_id,
        uuid.UUID(int=1),
        25,
        133485408000000000,
        uuid.UUID(int=0),
        "TESTPC",
    )


@pytest.mark.parametrize("major,layout", [(0, 4), (3, 4), (4, 4), (5, 5), (6, 6), (7, 6), (255, 6)])
def test_message_layout_follows_vlmcs_minus_k(major, layout):
    assert message_layout(major) == layout


def test_a_7_0_request_is_a_v6_message_with_version_7_inside():
    message = build_request(_base(Version(7)), seeded(1))
    assert len(message) == 260 and message[:4] == bytes.fromhex("00000700")  # as in badversion-K7.0 captures
    inner = crypto.cbc_decrypt(6, message[4:20], message[20:])
    assert inner[:4] == bytes.fromhex("00000700") and inner[-4:] == b"\x04" * 4


def test_a_3_0_request_is_a_v4_message():
    message = build_request(_base(Version(3)), seeded(1))
    assert len(message) == 252 and message[:4] == bytes.fromhex("00000300")  # as in badversion-K3.0 captures
    assert message[236:] == crypto.v4_mac(message[:236])


@pytest.mark.parametrize("version", [Version(7), Version(3), Version(6, 1)])
def test_emu_host_refuses_other_versions_with_invalid_data(version):
    async def run():
        host = KmsHost(HostConfig(), seeded(2), time.time())
        async with KmsServer(host, ServerConfig(listen=(("127.0.0.1", 0),))) as server:
            addr = server.addresses[0]
            return await exchange(HostAddress(addr[0], addr[1]), _base(version), rng=seeded(3))

    result = asyncio.run(run())
    assert result.status is ExchangeStatus.HOST_ERROR and result.hresult == 0x8007000D
