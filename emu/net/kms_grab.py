"""Grab a KMS host's identity: its ePID (and HwId) for every CSVLK, like vlmcs ``-G`` (docs/kms-wire-protocol.md).

One request per CSVLK (the host key groups of docs/kms-wire-protocol.md) on one kept connection, each for a product
group that CSVLK answers; a v6 request first, falling back to v5 and v4 when the host refuses with
an error HRESULT (0x8xxxxxxx), as vlmcs does. The result can be written in vlmcsd's ini format
(``Windows = EPID / 3A 1C ...``) or as a TOML file ``emu host serve --config`` reads, so that an
emu host can answer with a recorded host's identity.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from emu.clock import Clock, WallClock, unix_to_filetime
from emu.kms import products
from emu.kms.client import HostAddress
from emu.kms.epid import CSVLKS, csvlk_for_kms_id, format_hwid
from emu.net.kms_client import ExchangeResult, ExchangeStatus, KmsClientSession, RpcOptions
from emu.rng import Rng
from emu.wire.kms import LicenseStatus, RequestBase, Version

__all__ = ["GrabbedKey", "grab_host", "grab_targets", "to_ini", "to_toml"]

#: Protocol versions tried per CSVLK, in order (vlmcs -G falls back on 0x8xxxxxxx errors).
PROTOCOL_FALLBACK = (6, 5, 4)


@dataclass(frozen=True, slots=True)
class GrabbedKey:
    """What the host answered for one CSVLK."""

    csvlk: str
    product: str
    protocol: int | None
    epid: str | None
    hwid: bytes | None
    result: ExchangeResult | None
    detail: str


def grab_targets() -> list[tuple[str, products.KmsItem]]:
    """(CSVLK name, a product group it answers) for every CSVLK that answers some group.

    A volume group with the highest protocol is preferred (what a current client would send).
    """
    out = []
    items = [i for i in products.all_kms_items() if not i.retail and not i.preview]
    for key in CSVLKS:
        mine = [i for i in items if csvlk_for_kms_id(i.id).name == key.name]
        if mine:
            out.append((key.name, max(mine, key=lambda i: (i.protocol, i.name))))
    return out


async def grab_host(
    host: HostAddress, rng: Rng, *, options: RpcOptions | None = None, clock: Clock | None = None
) -> list[GrabbedKey]:
    """Ask ``host`` once per CSVLK (falling back from v6 to v5 and v4) on one connection."""
    clock = clock or WallClock()
    grabbed: list[GrabbedKey] = []
    async with KmsClientSession(host, options) as session:
        for name, item in grab_targets():
            last: ExchangeResult | None = None
            for protocol in PROTOCOL_FALLBACK:
                base = RequestBase(
                    version=Version(protocol),
                    vm_info=0,
                    license_status=LicenseStatus.OOB_GRACE,
                    binding_expiration=43200,
                    app_id=item.app_id,
                    sku_id=uuid.UUID(int=0),
                    kms_id=item.id,
                    cmid=uuid.UUID(bytes=rng.bytes(16), version=4),
                    required_client_count=item.threshold,
                    client_time=unix_to_filetime(clock.wall()),
                    previous_cmid=uuid.UUID(int=0),
                    workstation_name="emu-grab",
                )
                last = await session.request(base, rng)
                if last.status is not ExchangeStatus.HOST_ERROR or not last.hresult & 0x80000000:
                    break  # answered, or a failure an older protocol cannot mend
            assert last is not None
            verified = last.verified
            epid = verified.epid if verified is not None and last.hresult == 0 and verified.ok else None
            grabbed.append(
                GrabbedKey(
                    name,
                    item.name,
                    last.request.version.major,
                    epid,
                    verified.hwid if verified is not None and epid else None,
                    last,
                    last.detail,
                )
            )
    return grabbed


def to_ini(grabbed: list[GrabbedKey]) -> str:
    """vlmcsd's ini lines (``-i FILE``): ``Name = EPID / HW ID bytes``; CSVLKs without an answer are left out."""
    lines = []
    for key in grabbed:
        if key.epid is None:
            continue
        hwid = f" / {' '.join(f'{b:02X}' for b in key.hwid)}" if key.hwid else ""
        lines.append(f"{key.csvlk} = {key.epid}{hwid}")
    return "\n".join(lines) + ("\n" if lines else "")


def to_toml(grabbed: list[GrabbedKey]) -> str:
    """A ``[host]`` table for ``emu host serve --config``: the ePIDs per CSVLK and the (first) HwId."""
    lines = ["# made by emu client grab", "[host]"]
    hwid = next((k.hwid for k in grabbed if k.hwid), None)
    if hwid is not None:
        lines.append(f'hwid = "{format_hwid(hwid)}"')
    lines.append("[host.epids]")
    lines.extend(f'{k.csvlk} = "{k.epid}"' for k in grabbed if k.epid is not None)
    return "\n".join(lines) + "\n"
