"""LDAPv3 codec: real peers' PDUs (ldap3's encoder) round-trip byte for byte, compound filters included;
bad bytes give DecodeError at an offset, never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ldap3 import SUBTREE
from ldap3.operation.add import add_operation
from ldap3.operation.bind import bind_operation
from ldap3.operation.delete import delete_operation
from ldap3.operation.modify import modify_operation
from ldap3.operation.search import search_operation
from ldap3.protocol.rfc4511 import LDAPMessage as L3Message
from ldap3.protocol.rfc4511 import MessageID, ProtocolOp
from pyasn1.codec.ber import encoder as ber_encoder

from emu.errors import DecodeError
from emu.ldap import messages as m
from emu.ldap.filter_text import parse_filter, render_filter
from emu.ldap.framing import PduBuffer

KMS_ID = bytes.fromhex("4f13e258") + bytes(range(0xE0, 0xEC))
FILTERS = [
    "(objectClass=*)",
    "(&(objectClass=msSPP-ActivationObject)(msSPP-KMSIds=" + "".join(f"\\{b:02x}" for b in KMS_ID) + "))",
    "(|(cn=a*b*c)(!(&(cn>=x)(cn<=y)))(cn~=z))",
    "(!(!(!(cn=deep))))",
]


def _ldap3_pdu(name: str, op: object, message_id: int = 5) -> bytes:
    msg = L3Message()
    msg["messageID"] = MessageID(message_id)
    po = ProtocolOp()
    po.setComponentByName(name, op)
    msg["protocolOp"] = po
    return bytes(ber_encoder.encode(msg))


def _ldap3_pdus() -> list[bytes]:
    pdus = [_ldap3_pdu("bindRequest", bind_operation(3, "SIMPLE", "CN=Administrator,CN=Users,DC=kms,DC=test", "pw"))]
    for text in FILTERS:
        req = search_operation(
            "CN=Activation Objects,CN=Microsoft SPP,CN=Services,CN=Configuration,DC=kms,DC=test",
            text,
            SUBTREE,
            "NEVER",
            ["cn", "msSPP-KMSIds"],
            10,
            0,
            False,
            False,
            False,
        )
        pdus.append(_ldap3_pdu("searchRequest", req))
    pdus.append(
        _ldap3_pdu(
            "addRequest",
            add_operation(
                "CN=lab,CN=Activation Objects,DC=kms,DC=test",
                {"objectClass": ["top", "msSPP-ActivationObject"], "msSPP-KMSIds": [KMS_ID, bytes(16)]},
                False,
            ),
        )
    )
    pdus.append(_ldap3_pdu("delRequest", delete_operation("CN=lab,DC=kms,DC=test")))
    pdus.append(
        _ldap3_pdu(
            "modifyRequest",
            modify_operation("CN=lab,DC=kms,DC=test", {"description": [("MODIFY_REPLACE", ["x", "y"])]}, False),
        )
    )
    return pdus


@pytest.mark.parametrize("pdu", _ldap3_pdus(), ids=lambda b: b[:12].hex())
def test_ldap3_pdus_round_trip_byte_for_byte(pdu: bytes):
    msg = m.decode_message(pdu)
    assert m.encode_message(msg) == pdu


def test_compound_filter_decodes_to_its_structure():
    msg = m.decode_message(_ldap3_pdus()[2])
    assert isinstance(msg.op, m.SearchRequest)
    flt = msg.op.filter
    assert isinstance(flt, m.And)
    assert flt.items[1] == m.Equality("msSPP-KMSIds", KMS_ID)
    assert msg.op.size_limit == 10


@pytest.mark.parametrize("text", FILTERS)
def test_filter_text_parses_and_renders_back(text: str):
    parsed = parse_filter(text)
    assert parse_filter(render_filter(parsed)) == parsed
    assert render_filter(parsed) == text or "\\e2" in render_filter(parsed)


def test_every_response_type_round_trips():
    ok = m.LdapResult(0)
    ops: list[m.Operation] = [
        m.BindResponse(m.LdapResult(49, "", "bad creds")),
        m.BindRequest(3, "", b"", "GSSAPI", b"\x01\x02"),
        m.SearchResultEntry("CN=x", (("msSPP-KMSIds", (KMS_ID,)), ("cn", (b"x",)))),
        m.SearchResultDone(m.LdapResult(32, "CN=Services", "no such object", ("ldap://a/",))),
        m.SearchResultReference(("ldap://dc1.kms.test/",)),
        m.SimpleResponse("addResponse", ok),
        m.SimpleResponse("delResponse", ok),
        m.SimpleResponse("modifyResponse", ok),
        m.ExtendedRequest("1.3.6.1.4.1.1466.20037"),
        m.ExtendedResponse(m.LdapResult(2), "1.3.6.1.4.1.4203.1.11.3", b"v"),
        m.UnbindRequest(),
        m.AbandonRequest(4),
        m.CompareRequest("CN=x", "cn", b"x"),
        m.ModifyDNRequest("CN=x,DC=t", "CN=y", True, "DC=u"),
    ]
    for op in ops:
        msg = m.LdapMessage(9, op, (m.Control("1.2.840.113556.1.4.319", True, b"\x30\x00"),))
        wire = m.encode_message(msg)
        assert m.decode_message(wire) == msg
        assert m.encode_message(m.decode_message(wire)) == wire


def test_truncated_pdu_is_a_decode_error_at_an_offset():
    pdu = _ldap3_pdus()[2]
    with pytest.raises(DecodeError) as info:
        m.decode_message(pdu[:-3])
    assert info.value.offset is not None


def test_trailing_bytes_are_reported_at_their_offset():
    pdu = _ldap3_pdus()[0]
    with pytest.raises(DecodeError) as info:
        m.decode_message(pdu + b"\x00")
    assert info.value.offset == len(pdu)


def test_indefinite_length_is_refused():
    with pytest.raises(DecodeError, match="indefinite"):
        m.decode_message(b"\x30\x80\x02\x01\x01\x42\x00\x00\x00")


def test_stream_framing_splits_pdus_split_across_reads():
    pdus = _ldap3_pdus()
    stream = b"".join(pdus)
    buf = PduBuffer()
    got: list[bytes] = []
    for i in range(0, len(stream), 7):
        got += buf.feed(stream[i : i + 7])
    assert got == pdus and buf.pending == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_decode_error(data: bytes):
    try:
        m.decode_message(data)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_real_pdus_decode_or_raise_decode_error(data: st.DataObject):
    pdu = bytearray(data.draw(st.sampled_from(_ldap3_pdus())))
    for _ in range(data.draw(st.integers(1, 4))):
        pdu[data.draw(st.integers(0, len(pdu) - 1))] = data.draw(st.integers(0, 255))
    try:
        m.decode_message(bytes(pdu))
    except DecodeError:
        pass
