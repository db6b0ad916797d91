"""Scapy layers for KMS: crafting gives valid bytes, captures dissect by field name, answers() pairs."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("scapy")

from emu_testing import requires_vectors, vector_files
from scapy.config import conf
from scapy.layers.dcerpc import DceRpc5, DceRpc5Request, DceRpc5Response
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw
from scapy.sendrecv import sniff
from scapy.sessions import TCPSession
from scapy.utils import rdpcap

from emu.kms import crypto
from emu.kms.host import HostConfig, KmsHost
from emu.kms.messages import open_request, verify_response
from emu.pcap import scapy_kms as sk
from emu.rng import seeded

CMID = uuid.UUID("12345678-1234-4321-8765-123456789abc")
NOW_FT = 134403070050000000  # 2026-11-28 02:36:45 UTC
NOW = (NOW_FT - 116444736000000000) / 1e7
IV = bytes(range(16))

for _port in range(17688, 17693):  # the reference captures' server ports (vectors/INDEX.md)
    sk.bind_kms_port(_port)


@pytest.mark.parametrize("cls,major", [(sk.KMSRequestV4, 4), (sk.KMSRequestV5, 5), (sk.KMSRequestV6, 6)])
def test_crafted_request_is_valid_kms_bytes(cls, major):
    kwargs = {"iv": IV} if major != 4 else {}
    pkt = cls(cmid=CMID, client_time=NOW_FT, workstation_name="lab-pc", required_client_count=5, **kwargs)
    opened = open_request(bytes(pkt))
    assert opened.version.major == major
    assert opened.base.cmid == CMID
    assert opened.base.client_time == NOW_FT
    assert opened.base.workstation_name == "lab-pc"
    assert opened.base.required_client_count == 5
    if major == 4:
        assert opened.mac_ok
    else:
        assert opened.iv == IV


def test_crafted_request_defaults_fill_cmid_time_and_iv():
    opened = open_request(bytes(sk.KMSRequestV6()))
    assert opened.base.cmid != uuid.UUID(int=0)
    assert abs(opened.base.client_time - sk.filetime_now()) < 600 * 10**7


@pytest.mark.parametrize("major", [4, 5, 6])
def test_host_answer_to_scapy_request_dissects_with_count_and_epid(major):
    host = KmsHost(HostConfig(), seeded(7), NOW)
    cls = {4: sk.KMSRequestV4, 5: sk.KMSRequestV5, 6: sk.KMSRequestV6}[major]
    request = cls(cmid=CMID, client_time=NOW_FT, **({"iv": IV} if major != 4 else {}))
    answer = host.handle_request(bytes(request), NOW)
    assert answer.ok and answer.response is not None
    stub = sk.KMSActivationResponse(bytes(sk.KMSActivationResponse() / Raw(answer.response)))
    response = stub[sk.KMSResponse]
    assert type(response).__name__ == f"KMSResponseV{major}"
    assert response.count == answer.count
    assert response.epid == answer.epid
    assert str(response.cmid) == str(CMID)
    assert response.answers(cls(bytes(request)))
    assert bytes(response) == answer.response


@pytest.mark.parametrize("major", [5, 6])
def test_crafted_encrypted_response_passes_client_checks(major):
    request = (sk.KMSRequestV5 if major == 5 else sk.KMSRequestV6)(cmid=CMID, client_time=NOW_FT, iv=IV)
    opened = open_request(bytes(request))
    common = dict(cmid=CMID, client_time=NOW_FT, count=25, random_xored_ivs=bytes(range(16, 32)))
    if major == 5:
        response = sk.KMSResponseV5(iv=IV, **common)
    else:
        response = sk.KMSResponseV6(iv=bytes(16), xored_ivs=crypto.decrypt_block(6, IV), **common)
    verified = verify_response(opened, bytes(response))
    assert verified.ok, verified.failed
    assert verified.count == 25


def test_crafted_v4_response_mac_is_computed():
    opened = open_request(bytes(sk.KMSRequestV4(cmid=CMID, client_time=NOW_FT)))
    verified = verify_response(opened, bytes(sk.KMSResponseV4(cmid=CMID, client_time=NOW_FT, count=7)))
    assert verified.ok, verified.failed


def test_changing_a_dissected_field_reencodes_through_emu_wire():
    request = sk.KMSRequestV6(bytes(sk.KMSRequestV6(cmid=CMID, client_time=NOW_FT, iv=IV)))
    request.workstation_name = "renamed"
    assert open_request(bytes(request)).base.workstation_name == "renamed"


def test_full_stack_on_port_1688_builds_and_dissects_by_name():
    stub = sk.KMSActivationRequest() / sk.KMSRequestV4(cmid=CMID, client_time=NOW_FT)
    pkt = IP(dst="127.0.0.1") / TCP(sport=40000, dport=1688) / DceRpc5(call_id=3) / DceRpc5Request(opnum=0) / stub
    again = IP(bytes(pkt))
    assert again[sk.KMSRequestV4].cmid == CMID
    assert again[sk.KMSActivationRequest].max_count == 252
    assert again[DceRpc5].call_id == 3


def test_ndr64_stub_dissects_and_rebuilds():
    kms = bytes(sk.KMSRequestV4(cmid=CMID, client_time=NOW_FT))
    raw = bytes(sk.KMSActivationRequest(ndr=64) / Raw(kms))
    assert raw[:16] == len(kms).to_bytes(8, "little") * 2
    stub = sk.KMSActivationRequest(raw)
    assert stub.ndr == 64 and stub[sk.KMSRequestV4].cmid == CMID
    assert bytes(stub) == raw


def test_error_form_response_stub_shows_hresult():
    raw = bytes(sk.KMSActivationResponse(hresult=0xC004F042))
    assert raw == bytes(8) + (0xC004F042).to_bytes(4, "little")
    stub = sk.KMSActivationResponse(raw)
    assert stub.hresult == 0xC004F042 and sk.KMSResponse not in stub


def test_other_interfaces_opnum_0_stay_raw():
    pkt = DceRpc5(bytes(DceRpc5(call_id=1) / DceRpc5Request(opnum=0) / Raw(b"\x01\x02\x03\x04" * 8)))
    assert sk.KMSActivationRequest not in pkt
    assert Raw in pkt


def test_response_does_not_answer_a_request_of_another_client():
    req = sk.KMSRequestV4(cmid=CMID, client_time=NOW_FT)
    other = sk.KMSRequestV4(cmid=uuid.uuid4(), client_time=NOW_FT)
    resp = sk.KMSResponseV4(cmid=CMID, client_time=NOW_FT)
    assert resp.answers(req) and not resp.answers(other)


@requires_vectors
def test_every_reference_message_dissects_and_reencodes_losslessly():
    seen = 0
    for path in vector_files():
        for pkt in rdpcap(str(path)):
            for cls in (sk.KMSRequest, sk.KMSResponse):
                if cls in pkt:
                    layer = pkt[cls]
                    raw = bytes(layer)
                    fresh = layer.copy()
                    fresh._raw = None  # force the encode path from the fields
                    assert bytes(fresh) == raw, f"{path.name}: {layer.summary()}"
                    seen += 1
    assert seen >= 150


@requires_vectors
def test_reference_session_pairs_responses_with_requests_by_answers():
    conf.dcerpc_session_enable = True
    try:
        path = next(p for p in vector_files() if p.name == "edge-vlmcs-vlmcsd-v6-5req-1conn-win10ent.pcap")
        pkts = sniff(offline=str(path), session=TCPSession)
    finally:
        conf.dcerpc_session_enable = False
    requests = [p[sk.KMSRequest] for p in pkts if sk.KMSRequest in p]
    responses = [p[sk.KMSResponse] for p in pkts if sk.KMSResponse in p]
    assert len(requests) == len(responses) == 5
    assert [[int(r.answers(q)) for q in requests] for r in responses] == [
        [int(i == j) for j in range(5)] for i in range(5)
    ]
    assert responses[0].epid == "05426-00206-555-072633-03-7194-9200.0000-3332025"
    assert responses[0].hwid == bytes.fromhex("3A1C049600B60076")
    assert DceRpc5Response in next(p for p in pkts if sk.KMSResponse in p)
