"""Run emu's directory server: open or create the state, serve LDAP, optionally publish the DC in DNS.

The Python API for labs and scenarios (helper "lab"):

* :func:`open_dsa` -- the directory service of ``--forest``/``--state`` (created, or loaded from state);
* :func:`seed_activation_object` -- put an activation object for a CSVLK group in it (what
  ``emu adba activate-online`` would have created), committed to the state;
* :func:`serve_dc` -- coroutine: serve until ``stop`` is set (and publish/withdraw the DC's SRV + A/AAAA);
* or run the command ``emu dc serve --listen ADDR:PORT --forest kms.test --state FILE
  [--seed-group Windows] [--publish DNS:PORT --tsig-key FILE --address IP]`` as a process.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from emu.activation.csvlk import csvlk_info, lab_key_for_group
from emu.adba import admin
from emu.adba.forest import DEFAULT_ADMIN_PASSWORD
from emu.adba.labsigner import LabSigner
from emu.adba.ops import SessionOps
from emu.adba.session import Dsa, LdapSession, make_dsa
from emu.clock import Clock, WallClock
from emu.dns.tsig import TsigKey
from emu.net.dc_store import DcStore
from emu.net.ldap_server import LdapServer
from emu.rng import Rng, system_rng

__all__ = ["LDAP_SERVICE", "DcOptions", "open_dsa", "seed_activation_object", "serve_dc"]

log = logging.getLogger(__name__)
#: SRV labels of a domain controller (documented DC locator name).
LDAP_SERVICE = "_ldap._tcp.dc._msdcs"


@dataclass(frozen=True)
class DcOptions:
    forest: str = "kms.test"
    state: str | None = None
    admin_password: str = DEFAULT_ADMIN_PASSWORD
    schema_2012: bool = True
    forest_prep: bool = True
    require_signing: bool = False


def open_dsa(opts: DcOptions, *, clock: Clock | None = None, rng: Rng | None = None) -> tuple[Dsa, DcStore | None]:
    """The directory service and its store (None without ``state``); a new state gets a fresh forest."""
    clock = clock or WallClock()
    rng = rng or system_rng()
    dsa = make_dsa(
        opts.forest,
        wall=clock.wall,
        new_guid=lambda: rng.bytes(16),
        admin_password=opts.admin_password,
        schema_2012=opts.schema_2012,
        forest_prep=opts.forest_prep,
        require_signing=opts.require_signing,
    )
    if opts.state is None:
        return dsa, None
    store = DcStore(opts.state)
    stored_forest = store.meta("forest")
    if stored_forest is not None and not store.empty():
        if stored_forest != dsa.forest.domain:
            log.warning(
                "state %s holds forest %s, not %s: serving the stored one", opts.state, stored_forest, opts.forest
            )
            dsa = make_dsa(
                stored_forest, wall=clock.wall, new_guid=lambda: rng.bytes(16), admin_password=opts.admin_password
            )
        store.load(dsa.directory)
    else:
        store.save_all(dsa.directory.entries.values())
        store.set_meta("forest", dsa.forest.domain)
    return dsa, store


def seed_activation_object(
    dsa: Dsa,
    store: DcStore | None,
    group: str,
    *,
    name: str | None = None,
    rng: Rng | None = None,
    clock: Clock | None = None,
) -> str:
    """Create (as Administrator) an online-activated object for CSVLK group ``group``; returns its DN."""
    rng = rng or system_rng()
    clock = clock or WallClock()
    key = lab_key_for_group(group)
    today = _dt.datetime.fromtimestamp(clock.wall(), _dt.UTC).date()
    info = csvlk_info(key, rng=rng, today=today)
    session = LdapSession(dsa)
    ops = SessionOps(session)
    ops.bind(dsa.forest.admin_dn, next(iter(dsa.passwords.values())))
    licences = LabSigner().online_licences(key, dsa.forest.domain, info.sku_id, info.kms_ids, clock.wall())
    before = dict(dsa.directory.entries)
    dn = admin.create_object(ops, name=name or f"{group} (emu lab)", info=info, licences=licences)
    if store is not None:
        from emu.adba.directory import Change

        store.commit([Change(e.dn, e) for k, e in dsa.directory.entries.items() if k not in before])
    return dn


async def serve_dc(
    dsa: Dsa,
    store: DcStore | None,
    *,
    listen: Sequence[tuple[str, int]],
    stop: asyncio.Event,
    publish: tuple[str, int] | None = None,
    key: TsigKey | None = None,
    addresses: Sequence[str] = (),
    started: asyncio.Event | None = None,
    clock: Clock | None = None,
) -> LdapServer:
    """Serve until ``stop``; with ``publish``, register ``_ldap._tcp.dc._msdcs.<forest>`` + A/AAAA first."""
    server = LdapServer(dsa, listen=list(listen), store=store)
    await server.start()
    publisher = None
    if publish is not None:
        from emu.net.clock_sleep import sleeper
        from emu.net.dns_publisher import PublishDomain, Publisher

        port = server.addresses[0][1]
        publisher = Publisher(
            dsa.forest.dns_host_name,
            [PublishDomain(dsa.forest.domain)],
            dns_server=publish,
            key=key,
            addresses=addresses,
            port=port,
            service=LDAP_SERVICE,
            ttl=600,
            clock=clock,
            sleep=sleeper(clock) if clock is not None else asyncio.sleep,
        )
        await publisher.start()
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        if publisher is not None:
            await publisher.stop()
        await server.stop()
    return server
