"""Samba's AD DC as the reference directory (one DC per session, in its own namespace):
emu's ADBA client finds objects that ``emu adba`` created there and objects made with Samba's own
tools, and emu's directory answers a request sequence with Samba's result codes and entries."""

from __future__ import annotations

import datetime as _dt
import itertools
import time
import uuid
from collections.abc import Callable

import pytest
from emu_testing import require_tool
from samba_dc import ADMIN, PASSWORD, SambaDc

from emu.activation.csvlk import csvlk_info, lab_key_for_group
from emu.adba import admin
from emu.adba.client import adba_attempt
from emu.adba.labsigner import LabSigner
from emu.adba.ops import LdapOps, SessionOps
from emu.adba.session import LdapSession, make_dsa
from emu.ldap import messages as m
from emu.net import netns
from emu.net.ldap_client import LdapClient
from emu.rng import seeded

pytestmark = pytest.mark.slow
CONTAINER = "CN=Activation Objects,CN=Microsoft SPP,CN=Services,CN=Configuration,DC=kms,DC=test"
WIN10 = uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148")
OFFICE2019 = uuid.UUID("617d9eb1-ef36-4f82-86e0-a65ae07b96c6")


def _in_samba(dc: SambaDc, fn: Callable[[LdapClient], object]) -> object:
    def call() -> object:
        with LdapClient("127.0.0.1", 389, timeout=10) as client:
            assert client.bind(ADMIN, PASSWORD).code == 0
            return fn(client)

    return netns.run_in(dc.ns, call)


def _emu_object(ops: LdapOps, name: str, group: str = "Windows") -> str:
    key = lab_key_for_group(group)
    info = csvlk_info(key, rng=seeded(7), today=_dt.date(2026, 12, 1))
    lic = LabSigner().online_licences(key, "kms.test", info.sku_id, info.kms_ids, time.time())
    return admin.create_object(ops, name=name, info=info, licences=lic)


def test_emu_client_activates_from_an_object_emu_adba_created_in_samba(samba_dc: SambaDc):
    def scenario(client: LdapClient) -> object:
        dn = _emu_object(client, "emu-created")
        try:
            listed = [ao.name for ao in admin.list_objects(client)]
            found = adba_attempt(
                client, kms_id=WIN10, forest="kms.test", now=time.time(), bind_name=ADMIN, password=PASSWORD
            )
            missing = adba_attempt(
                client, kms_id=OFFICE2019, forest="kms.test", now=time.time(), bind_name=ADMIN, password=PASSWORD
            )
            return listed, found, missing
        finally:
            admin.delete_object(client, "emu-created")
            assert dn

    listed, found, missing = _in_samba(samba_dc, scenario)  # type: ignore[misc]
    assert "emu-created" in listed
    assert found.activated and found.activation_object.dn.lower().startswith("cn=emu-created,")
    assert not missing.activated and missing.hresult == 0xC004F081


def test_emu_client_finds_an_object_made_with_ldbadd(samba_dc: SambaDc, tmp_path):
    import base64

    key = lab_key_for_group("Office2019")
    info = csvlk_info(key, rng=seeded(3), today=_dt.date(2026, 12, 1))
    lic = LabSigner().online_licences(key, "kms.test", info.sku_id, info.kms_ids, time.time())["Online"]
    ldif = tmp_path / "ao.ldif"
    ldif.write_text(
        f"dn: CN=ldbadd-made,{CONTAINER}\nobjectClass: msSPP-ActivationObject\n"
        f"msSPP-CSVLKSkuId:: {base64.b64encode(info.sku_id.bytes_le).decode()}\n"
        + "".join(f"msSPP-KMSIds:: {base64.b64encode(k.bytes_le).decode()}\n" for k in info.kms_ids)
        + f"msSPP-CSVLKPid: {info.epid}\nmsSPP-CSVLKPartialProductKey: {info.partial_key}\n"
        f"msSPP-OnlineLicense:: {base64.b64encode(lic).decode()}\n"
    )
    out = samba_dc.run([require_tool("ldbadd"), "-H", str(samba_dc.tree / "private" / "sam.ldb"), str(ldif)])
    assert out.returncode == 0, out.stdout + out.stderr

    def scenario(client: LdapClient) -> object:
        try:
            return adba_attempt(
                client, kms_id=OFFICE2019, forest="kms.test", now=time.time(), bind_name=ADMIN, password=PASSWORD
            )
        finally:
            admin.delete_object(client, "ldbadd-made")

    result = _in_samba(samba_dc, scenario)
    assert result.activated, result.checks  # type: ignore[attr-defined]


def _ao(**override: list[bytes]) -> list[tuple[str, list[bytes]]]:
    attrs = {
        "objectClass": [b"msSPP-ActivationObject"],
        "msSPP-CSVLKSkuId": [bytes(16)],
        "msSPP-KMSIds": [WIN10.bytes_le],
        "msSPP-CSVLKPid": [b"03612-00206-556-123727-03-1033-17763.0000-2972018"],
        "msSPP-CSVLKPartialProductKey": [b"ABCDE"],
    }
    attrs.update(override)
    return [(k, v) for k, v in attrs.items() if v]


def _sequence(ops: LdapOps) -> list[object]:
    """The differential request sequence; returns result codes and the entries' DN and cn."""
    spp = "CN=Microsoft SPP,CN=Services,CN=Configuration,DC=kms,DC=test"
    out: list[object] = [
        ops.add(f"CN=diff-ok,{CONTAINER}", _ao()).code,
        ops.add(f"CN=diff-ok,{CONTAINER}", _ao()).code,
        ops.add(f"CN=diff-4,{CONTAINER}", _ao(**{"msSPP-CSVLKPartialProductKey": [b"ABCD"]})).code,
        ops.add(f"CN=diff-15,{CONTAINER}", _ao(**{"msSPP-KMSIds": [bytes(15)]})).code,
        ops.add(f"CN=diff-17,{CONTAINER}", _ao(**{"msSPP-CSVLKSkuId": [bytes(17)]})).code,
        ops.add(f"CN=diff-nokms,{CONTAINER}", _ao(**{"msSPP-KMSIds": []})).code,
        ops.add(f"CN=diff-parent,{spp}", _ao()).code,
        ops.add(f"CN=x,CN=nowhere,{CONTAINER}", _ao()).code,
    ]
    flt = m.And((m.Equality("objectClass", b"msSPP-ActivationObject"), m.Equality("msSPP-KMSIds", WIN10.bytes_le)))
    entries, result = ops.search(m.SearchRequest(CONTAINER, 1, flt, ("cn",)))
    out.append((result.code, sorted((e.dn.lower(), e.get("cn")) for e in entries)))
    entries, result = ops.search(m.SearchRequest(f"CN=gone,{CONTAINER}", 0, m.Present("objectClass")))
    out.append((result.code, len(entries)))
    out.append(ops.delete(f"CN=gone,{CONTAINER}").code)
    out.append(ops.delete(spp).code)
    out.append(ops.delete(f"CN=diff-ok,{CONTAINER}").code)
    return out


def test_emu_directory_and_samba_agree_on_codes_and_entries(samba_dc: SambaDc):
    samba = _in_samba(samba_dc, _sequence)
    counter = itertools.count(1)
    dsa = make_dsa(
        "kms.test", wall=time.time, new_guid=lambda: next(counter).to_bytes(16, "little"), admin_password=PASSWORD
    )
    ops = SessionOps(LdapSession(dsa))
    assert ops.bind(ADMIN, PASSWORD).code == 0
    assert _sequence(ops) == samba
