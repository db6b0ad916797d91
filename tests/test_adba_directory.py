"""emu's AD-shaped directory and the ADBA rules, in process (every message still goes through the codec)."""

from __future__ import annotations

import itertools
import uuid

import pytest

from emu.adba import admin
from emu.adba.client import RENEWAL, VALIDITY, AdbaState, adba_attempt
from emu.adba.forest import DEFAULT_ADMIN_PASSWORD
from emu.adba.labkey import LabKeyError, csvlk_sku_id, lab_csvlk, parse_lab_csvlk
from emu.adba.labsigner import IidCidError, LabSigner
from emu.adba.licence import LicenceError, verify_licence
from emu.adba.ops import SessionOps
from emu.adba.session import LdapSession, make_dsa
from emu.ldap import messages as m

WIN10 = uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148")
SRV2019 = uuid.UUID("8449b1fb-f0ea-497a-99ab-66ca96e9a0f5")
OFFICE = uuid.UUID("86d50b16-4808-41af-b83b-b338274318b2")
NOW = 1_780_000_000.0
ADMIN = "CN=Administrator,CN=Users,DC=kms,DC=test"
CONTAINER = "CN=Activation Objects,CN=Microsoft SPP,CN=Services,CN=Configuration,DC=kms,DC=test"


def _ops(**kw: bool) -> SessionOps:
    counter = itertools.count(1)
    dsa = make_dsa(
        "kms.test",
        wall=lambda: NOW,
        new_guid=lambda: next(counter).to_bytes(16, "little"),
        admin_password=DEFAULT_ADMIN_PASSWORD,
        **kw,
    )
    return SessionOps(LdapSession(dsa))


def _bound(**kw: bool) -> SessionOps:
    ops = _ops(**kw)
    assert ops.bind(ADMIN, DEFAULT_ADMIN_PASSWORD).code == 0
    return ops


def _info(kms_ids: tuple[uuid.UUID, ...] = (WIN10, SRV2019)) -> admin.CsvlkInfo:
    return admin.CsvlkInfo(csvlk_sku_id(206), kms_ids, "03612-00206-556-123727-03-1033-17763.0000-2972018", "X9XX9")


def _create(ops: SessionOps, name: str = "lab forest", kms_ids: tuple[uuid.UUID, ...] = (WIN10, SRV2019)) -> str:
    info = _info(kms_ids)
    lic = LabSigner().online_licences(lab_csvlk(206), "kms.test", info.sku_id, info.kms_ids, NOW)
    return admin.create_object(ops, name=name, info=info, licences=lic)


def _ao_attrs(**override: list[bytes]) -> list[tuple[str, list[bytes]]]:
    attrs = {
        "objectClass": [b"top", b"msSPP-ActivationObject"],
        "msSPP-CSVLKSkuId": [bytes(16)],
        "msSPP-KMSIds": [WIN10.bytes_le],
        "msSPP-CSVLKPid": [b"pid"],
        "msSPP-CSVLKPartialProductKey": [b"ABCDE"],
    }
    attrs.update(override)
    return [(k, v) for k, v in attrs.items() if v]


def test_rootdse_names_the_naming_contexts_anonymously():
    entries, result = _ops().search(m.SearchRequest("", 0, m.Present("objectClass")))
    assert result.code == 0
    assert entries[0].get("configurationNamingContext") == (b"CN=Configuration,DC=kms,DC=test",)
    assert b"CN=Configuration,DC=kms,DC=test" in entries[0].get("namingContexts")


def test_anonymous_search_below_rootdse_is_an_operations_error():
    _, result = _ops().search(m.SearchRequest(CONTAINER, 1, m.Present("objectClass")))
    assert result.code == 1


def test_forest_updates_create_both_containers():
    entries, result = _bound().search(m.SearchRequest(CONTAINER, 0, m.Present("objectClass")))
    assert result.code == 0
    assert b"msSPP-ActivationObjectsContainer" in entries[0].get("objectClass")


@pytest.mark.parametrize(
    "override,code",
    [
        ({}, 0),
        ({"msSPP-CSVLKPartialProductKey": [b"ABCD"]}, 21),
        ({"msSPP-KMSIds": [bytes(15)]}, 21),
        ({"msSPP-CSVLKSkuId": [bytes(17)]}, 21),
        ({"msSPP-KMSIds": []}, 65),
        ({"msSPP-CSVLKPid": [b"a", b"b"]}, 19),
        ({"sAMAccountName": [b"x"]}, 65),
    ],
)
def test_msspp_schema_enforced_with_sambas_result_codes(override: dict[str, list[bytes]], code: int):
    assert _bound().add(f"CN=t,{CONTAINER}", _ao_attrs(**override)).code == code


def test_activation_object_outside_its_container_is_a_naming_violation():
    dn = "CN=t,CN=Microsoft SPP,CN=Services,CN=Configuration,DC=kms,DC=test"
    assert _bound().add(dn, _ao_attrs()).code == 64


def test_binary_equality_finds_an_object_by_its_non_utf8_kms_id():
    ops = _bound()
    _create(ops)
    flt = m.And((m.Equality("objectClass", b"msSPP-ActivationObject"), m.Equality("msSPP-KMSIds", SRV2019.bytes_le)))
    entries, _ = ops.search(m.SearchRequest(CONTAINER, 1, flt, ("cn",)))
    assert [e.get("cn") for e in entries] == [(b"lab forest",)]
    entries, _ = ops.search(m.SearchRequest(CONTAINER, 1, m.Equality("msSPP-KMSIds", OFFICE.bytes_le)))
    assert entries == []


def test_size_limit_stops_the_search_with_size_limit_exceeded():
    ops = _bound()
    _create(ops, "a")
    _create(ops, "b")
    entries, result = ops.search(m.SearchRequest(CONTAINER, 1, m.Present("objectClass"), size_limit=1))
    assert len(entries) == 1 and result.code == 4


def test_sasl_bind_is_auth_method_not_supported_and_require_signing_is_stronger_auth_required():
    ops = _ops()
    reply = ops.session.handle(m.LdapMessage(1, m.BindRequest(3, "", b"", "GSSAPI")))
    assert reply.responses[0].op.result.code == 7  # type: ignore[union-attr]
    assert _ops(require_signing=True).bind(ADMIN, DEFAULT_ADMIN_PASSWORD).code == 8
    assert _ops().bind(ADMIN, "wrong").code == 49
    assert _ops().bind("KMS\\Administrator", DEFAULT_ADMIN_PASSWORD).code == 0


def test_name_longer_than_40_characters_is_c004f082():
    with pytest.raises(admin.AdbaAdminError) as info:
        _create(_bound(), "x" * 41)
    assert info.value.hresult == 0xC004F082
    _create(_bound(), "x" * 40)


def test_missing_container_is_c004f083_to_create_and_80072030_to_list():
    ops = _bound(forest_prep=False)
    with pytest.raises(admin.AdbaAdminError) as info:
        _create(ops)
    assert info.value.hresult == 0xC004F083
    with pytest.raises(admin.AdbaAdminError) as info:
        admin.list_objects(ops)
    assert info.value.hresult == 0x80072030


def test_delete_takes_a_dn_or_an_rdn_and_checks_the_class_first():
    ops = _bound()
    dn = _create(ops, "one")
    _create(ops, "two")
    assert admin.delete_object(ops, "one") == dn
    assert admin.delete_object(ops, "CN=two").startswith("CN=two,")
    assert admin.object_dn(f"CN=x,{CONTAINER}", CONTAINER) == f"CN=x,{CONTAINER}"
    with pytest.raises(admin.AdbaAdminError) as info:
        admin.delete_object(ops, "CN=Microsoft SPP,CN=Services,CN=Configuration,DC=kms,DC=test")
    assert info.value.hresult == 0xC004F081
    with pytest.raises(admin.AdbaAdminError) as info:
        admin.delete_object(ops, "gone")
    assert info.value.hresult == 0x80072030


def test_client_activates_for_180_days_with_the_matching_object():
    ops = _bound()
    _create(ops)
    result = adba_attempt(
        ops, kms_id=WIN10, forest="kms.test", now=NOW, bind_name=ADMIN, password=DEFAULT_ADMIN_PASSWORD
    )
    assert result.activated and result.valid_until == NOW + VALIDITY
    assert [c.name for c in result.checks] == ["bind", "rootdse", "search", "object", "licence"]


def test_client_without_a_matching_object_falls_back_with_c004f081():
    ops = _bound()
    _create(ops, kms_ids=(SRV2019,))
    result = adba_attempt(
        ops, kms_id=WIN10, forest="kms.test", now=NOW, bind_name=ADMIN, password=DEFAULT_ADMIN_PASSWORD
    )
    assert result.fallback and result.hresult == 0xC004F081


def test_client_refuses_a_licence_issued_for_another_forest():
    ops = _bound()
    info = _info()
    lic = LabSigner().online_licences("k", "other.test", info.sku_id, info.kms_ids, NOW)
    admin.create_object(ops, name="foreign", info=info, licences=lic)
    result = adba_attempt(
        ops, kms_id=WIN10, forest="kms.test", now=NOW, bind_name=ADMIN, password=DEFAULT_ADMIN_PASSWORD
    )
    assert not result.activated and "another forest" in result.checks[-1].detail


def test_tampered_licence_does_not_verify():
    info = _info()
    blob = LabSigner().online_licences("k", "kms.test", info.sku_id, info.kms_ids, NOW)["Online"]
    verify_licence(blob)
    with pytest.raises(LicenceError):
        verify_licence(blob.replace(b"Payload>e", b"Payload>f"))


def test_lifecycle_reactivates_weekly_and_leaving_the_domain_unactivates_at_restart():
    ops = _bound()
    _create(ops)
    state = AdbaState()
    state.record(
        adba_attempt(ops, kms_id=WIN10, forest="kms.test", now=NOW, bind_name=ADMIN, password=DEFAULT_ADMIN_PASSWORD),
        NOW,
    )
    assert state.activated(NOW + 100 * 86400) and not state.due(NOW + RENEWAL - 1) and state.due(NOW + RENEWAL)
    assert not state.activated(NOW + VALIDITY)
    state.restart(NOW + 10, domain_member=False)
    assert not state.activated(NOW + 11)


def test_lab_keys_iid_and_cid_carry_check_digits():
    key = lab_csvlk(206)
    assert parse_lab_csvlk(key) == 206
    with pytest.raises(LabKeyError):
        parse_lab_csvlk(key[:-1] + ("B" if key[-1] != "B" else "C"))
    signer = LabSigner()
    iid = signer.installation_id(key, "kms.test")
    cid = signer.confirmation_id(iid)
    signer.check_cid(key, "kms.test", cid)
    with pytest.raises(IidCidError) as info:
        signer.check_cid(key, "other.test", cid)
    assert info.value.hresult == 0xC004F07E
    bad = cid[:-1] + str((int(cid[-1]) + 1) % 10)
    with pytest.raises(IidCidError) as info:
        signer.check_cid(key, "kms.test", bad)
    assert info.value.hresult == 0xC004F04D
