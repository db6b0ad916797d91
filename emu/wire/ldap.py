"""LDAPv3 frames (RFC 4511 section 4 and Appendix B) as pyasn1 types: emu's one definition of them.

Construct describes emu's fixed-layout frames; LDAP is BER with recursive CHOICEs (the search filter), so
its frames are pyasn1 types instead. They live in ``emu.wire`` because they are pure frame layout: the
directory (``emu.adba``), the message layer (``emu.ldap``), the server and the decoder all share them.

:func:`decode_ldap_message` turns one whole PDU into a pyasn1 ``LDAPMessage`` and raises
:class:`emu.errors.DecodeError` with the byte offset of the first structural fault; :func:`ldap_pdu_length`
reads how long the PDU starting a TCP stream is. Encoding uses pyasn1's BER encoder, which writes definite, minimal
lengths (as ldap3 and Samba do), so PDUs from those peers round-trip byte for byte.
"""

from __future__ import annotations

from typing import Any

from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.ber import encoder as ber_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import constraint, namedtype, namedval, tag, univ

from emu.errors import DecodeError

__all__ = [
    "MAX_PDU",
    "Filter",
    "LDAPMessage",
    "decode_ldap_message",
    "encode_ldap_message",
    "ldap_pdu_length",
]

#: Largest PDU emu accepts (the msSPP licence attributes go up to 5 MiB; leave room for the rest).
MAX_PDU = 16 * 1024 * 1024


def _app(n: int, fmt: int) -> tag.TagSet:
    return tag.Tag(tag.tagClassApplication, fmt, n)


def _ctx(n: int, fmt: int = tag.tagFormatSimple) -> tag.Tag:
    return tag.Tag(tag.tagClassContext, fmt, n)


class LDAPString(univ.OctetString):
    """UTF-8 text on the wire; kept as bytes here (binary-safe)."""


class ResultCode(univ.Enumerated):
    """LDAPResult.resultCode; any value decodes (servers add their own)."""


class LDAPResultComponents:
    """The four LDAPResult fields, shared by every response type (COMPONENTS OF LDAPResult)."""

    fields = (
        namedtype.NamedType("resultCode", ResultCode()),
        namedtype.NamedType("matchedDN", LDAPString()),
        namedtype.NamedType("diagnosticMessage", LDAPString()),
        namedtype.OptionalNamedType(
            "referral",
            univ.SequenceOf(componentType=LDAPString()).subtype(implicitTag=_ctx(3, tag.tagFormatConstructed)),
        ),
    )


def _result_type(app: int, *extra: Any) -> type[univ.Sequence]:
    class _Result(univ.Sequence):
        tagSet = univ.Sequence.tagSet.tagImplicitly(_app(app, tag.tagFormatConstructed))
        componentType = namedtype.NamedTypes(*LDAPResultComponents.fields, *extra)

    return _Result


class AttributeValueAssertion(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("attributeDesc", LDAPString()),
        namedtype.NamedType("assertionValue", univ.OctetString()),
    )


class Substring(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("initial", univ.OctetString().subtype(implicitTag=_ctx(0))),
        namedtype.NamedType("any", univ.OctetString().subtype(implicitTag=_ctx(1))),
        namedtype.NamedType("final", univ.OctetString().subtype(implicitTag=_ctx(2))),
    )


class SubstringFilter(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("type", LDAPString()),
        namedtype.NamedType(
            "substrings",
            univ.SequenceOf(componentType=Substring()).subtype(sizeSpec=constraint.ValueSizeConstraint(1, 1 << 30)),
        ),
    )


class MatchingRuleAssertion(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("matchingRule", LDAPString().subtype(implicitTag=_ctx(1))),
        namedtype.OptionalNamedType("type", LDAPString().subtype(implicitTag=_ctx(2))),
        namedtype.NamedType("matchValue", univ.OctetString().subtype(implicitTag=_ctx(3))),
        namedtype.DefaultedNamedType("dnAttributes", univ.Boolean(False).subtype(implicitTag=_ctx(4))),
    )


class Filter(univ.Choice):
    """RFC 4511 Filter: a recursive CHOICE (and/or hold SET OF Filter, not holds one, explicitly tagged)."""

    def __repr__(self) -> str:  # the schema is cyclic: keep pyasn1's messages finite
        return super().__repr__() if self.isValue else "<Filter schema>"


class _FilterSet(univ.SetOf):
    componentType = Filter()

    def __repr__(self) -> str:
        return super().__repr__() if self.isValue else "<SET OF Filter schema>"


Filter.componentType = namedtype.NamedTypes(
    namedtype.NamedType("and", _FilterSet().subtype(implicitTag=_ctx(0, tag.tagFormatConstructed))),
    namedtype.NamedType("or", _FilterSet().subtype(implicitTag=_ctx(1, tag.tagFormatConstructed))),
    namedtype.NamedType("not", Filter().subtype(explicitTag=_ctx(2, tag.tagFormatConstructed))),
    namedtype.NamedType(
        "equalityMatch", AttributeValueAssertion().subtype(implicitTag=_ctx(3, tag.tagFormatConstructed))
    ),
    namedtype.NamedType("substrings", SubstringFilter().subtype(implicitTag=_ctx(4, tag.tagFormatConstructed))),
    namedtype.NamedType(
        "greaterOrEqual", AttributeValueAssertion().subtype(implicitTag=_ctx(5, tag.tagFormatConstructed))
    ),
    namedtype.NamedType(
        "lessOrEqual", AttributeValueAssertion().subtype(implicitTag=_ctx(6, tag.tagFormatConstructed))
    ),
    namedtype.NamedType("present", LDAPString().subtype(implicitTag=_ctx(7))),
    namedtype.NamedType(
        "approxMatch", AttributeValueAssertion().subtype(implicitTag=_ctx(8, tag.tagFormatConstructed))
    ),
    namedtype.NamedType(
        "extensibleMatch", MatchingRuleAssertion().subtype(implicitTag=_ctx(9, tag.tagFormatConstructed))
    ),
)


def _tie_filter_knot() -> None:
    """Close the Filter recursion: pyasn1 copies ``componentType`` into each instance when it is made,
    so the inner and/or/not specs, built before Filter's alternatives existed, are pointed at them now."""
    alternatives = Filter.componentType
    _FilterSet.componentType = Filter()
    for name, inner in (("and", Filter()), ("or", Filter()), ("not", alternatives)):
        spec = alternatives[alternatives.getPositionByName(name)].asn1Object
        spec.__dict__["componentType"] = inner
        spec.readOnly["componentType"] = inner


class AttributeValues(univ.SetOf):
    componentType = univ.OctetString()


class PartialAttribute(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("type", LDAPString()),
        namedtype.NamedType("vals", AttributeValues()),
    )


class PartialAttributeList(univ.SequenceOf):
    componentType = PartialAttribute()


class SaslCredentials(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("mechanism", LDAPString()),
        namedtype.OptionalNamedType("credentials", univ.OctetString()),
    )


class AuthenticationChoice(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("simple", univ.OctetString().subtype(implicitTag=_ctx(0))),
        namedtype.NamedType("sasl", SaslCredentials().subtype(implicitTag=_ctx(3, tag.tagFormatConstructed))),
    )


class BindRequest(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_app(0, tag.tagFormatConstructed))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("version", univ.Integer()),
        namedtype.NamedType("name", LDAPString()),
        namedtype.NamedType("authentication", AuthenticationChoice()),
    )


BindResponse = _result_type(
    1, namedtype.OptionalNamedType("serverSaslCreds", univ.OctetString().subtype(implicitTag=_ctx(7)))
)


class UnbindRequest(univ.Null):
    tagSet = univ.Null.tagSet.tagImplicitly(_app(2, tag.tagFormatSimple))


class SearchRequest(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_app(3, tag.tagFormatConstructed))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("baseObject", LDAPString()),
        namedtype.NamedType(
            "scope",
            univ.Enumerated(
                namedValues=namedval.NamedValues(("baseObject", 0), ("singleLevel", 1), ("wholeSubtree", 2))
            ),
        ),
        namedtype.NamedType("derefAliases", univ.Enumerated()),
        namedtype.NamedType("sizeLimit", univ.Integer()),
        namedtype.NamedType("timeLimit", univ.Integer()),
        namedtype.NamedType("typesOnly", univ.Boolean()),
        namedtype.NamedType("filter", Filter()),
        namedtype.NamedType("attributes", univ.SequenceOf(componentType=LDAPString())),
    )


class SearchResultEntry(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_app(4, tag.tagFormatConstructed))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("objectName", LDAPString()),
        namedtype.NamedType("attributes", PartialAttributeList()),
    )


SearchResultDone = _result_type(5)


class Change(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("operation", univ.Enumerated()),
        namedtype.NamedType("modification", PartialAttribute()),
    )


class ModifyRequest(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_app(6, tag.tagFormatConstructed))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("object", LDAPString()),
        namedtype.NamedType("changes", univ.SequenceOf(componentType=Change())),
    )


ModifyResponse = _result_type(7)


class AddRequest(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_app(8, tag.tagFormatConstructed))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("entry", LDAPString()),
        namedtype.NamedType("attributes", PartialAttributeList()),
    )


AddResponse = _result_type(9)


class DelRequest(LDAPString):
    tagSet = univ.OctetString.tagSet.tagImplicitly(_app(10, tag.tagFormatSimple))


DelResponse = _result_type(11)


class ModifyDNRequest(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_app(12, tag.tagFormatConstructed))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("entry", LDAPString()),
        namedtype.NamedType("newrdn", LDAPString()),
        namedtype.NamedType("deleteoldrdn", univ.Boolean()),
        namedtype.OptionalNamedType("newSuperior", LDAPString().subtype(implicitTag=_ctx(0))),
    )


ModifyDNResponse = _result_type(13)


class CompareRequest(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_app(14, tag.tagFormatConstructed))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("entry", LDAPString()),
        namedtype.NamedType("ava", AttributeValueAssertion()),
    )


CompareResponse = _result_type(15)


class AbandonRequest(univ.Integer):
    tagSet = univ.Integer.tagSet.tagImplicitly(_app(16, tag.tagFormatSimple))


class SearchResultReference(univ.SequenceOf):
    tagSet = univ.SequenceOf.tagSet.tagImplicitly(_app(19, tag.tagFormatConstructed))
    componentType = LDAPString()


class ExtendedRequest(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_app(23, tag.tagFormatConstructed))
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("requestName", LDAPString().subtype(implicitTag=_ctx(0))),
        namedtype.OptionalNamedType("requestValue", univ.OctetString().subtype(implicitTag=_ctx(1))),
    )


ExtendedResponse = _result_type(
    24,
    namedtype.OptionalNamedType("responseName", LDAPString().subtype(implicitTag=_ctx(10))),
    namedtype.OptionalNamedType("responseValue", univ.OctetString().subtype(implicitTag=_ctx(11))),
)


class IntermediateResponse(univ.Sequence):
    tagSet = univ.Sequence.tagSet.tagImplicitly(_app(25, tag.tagFormatConstructed))
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("responseName", LDAPString().subtype(implicitTag=_ctx(0))),
        namedtype.OptionalNamedType("responseValue", univ.OctetString().subtype(implicitTag=_ctx(1))),
    )


class ProtocolOp(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("bindRequest", BindRequest()),
        namedtype.NamedType("bindResponse", BindResponse()),
        namedtype.NamedType("unbindRequest", UnbindRequest()),
        namedtype.NamedType("searchRequest", SearchRequest()),
        namedtype.NamedType("searchResEntry", SearchResultEntry()),
        namedtype.NamedType("searchResDone", SearchResultDone()),
        namedtype.NamedType("searchResRef", SearchResultReference()),
        namedtype.NamedType("modifyRequest", ModifyRequest()),
        namedtype.NamedType("modifyResponse", ModifyResponse()),
        namedtype.NamedType("addRequest", AddRequest()),
        namedtype.NamedType("addResponse", AddResponse()),
        namedtype.NamedType("delRequest", DelRequest()),
        namedtype.NamedType("delResponse", DelResponse()),
        namedtype.NamedType("modDNRequest", ModifyDNRequest()),
        namedtype.NamedType("modDNResponse", ModifyDNResponse()),
        namedtype.NamedType("compareRequest", CompareRequest()),
        namedtype.NamedType("compareResponse", CompareResponse()),
        namedtype.NamedType("abandonRequest", AbandonRequest()),
        namedtype.NamedType("extendedReq", ExtendedRequest()),
        namedtype.NamedType("extendedResp", ExtendedResponse()),
        namedtype.NamedType("intermediateResponse", IntermediateResponse()),
    )


class Control(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("controlType", LDAPString()),
        namedtype.DefaultedNamedType("criticality", univ.Boolean(False)),
        namedtype.OptionalNamedType("controlValue", univ.OctetString()),
    )


class LDAPMessage(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("messageID", univ.Integer()),
        namedtype.NamedType("protocolOp", ProtocolOp()),
        namedtype.OptionalNamedType(
            "controls",
            univ.SequenceOf(componentType=Control()).subtype(implicitTag=_ctx(0, tag.tagFormatConstructed)),
        ),
    )


_tie_filter_knot()


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, bool, int, int]:
    """Read one BER tag+length at ``pos``; return (tag byte, constructed, content start, content end)."""
    if pos >= end:
        raise DecodeError("truncated BER: tag expected", offset=pos, path="LDAPMessage")
    first = data[pos]
    p = pos + 1
    if first & 0x1F == 0x1F:  # high tag number form
        while True:
            if p >= end:
                raise DecodeError("truncated BER tag", offset=p, path="LDAPMessage")
            b = data[p]
            p += 1
            if not b & 0x80:
                break
            if p - pos > 5:
                raise DecodeError("BER tag number too long", offset=pos, path="LDAPMessage")
    if p >= end:
        raise DecodeError("truncated BER: length expected", offset=p, path="LDAPMessage")
    lb = data[p]
    p += 1
    if lb == 0x80:
        raise DecodeError("indefinite BER length (forbidden in LDAP, RFC 4511 5.1)", offset=p - 1)
    if lb & 0x80:
        n = lb & 0x7F
        if n > 4 or p + n > end:
            raise DecodeError(f"bad BER long-form length ({n} octets)", offset=p - 1)
        length = int.from_bytes(data[p : p + n], "big")
        p += n
    else:
        length = lb
    if p + length > end:
        raise DecodeError(f"BER length {length} runs past the end of its container", offset=pos)
    return first, bool(first & 0x20), p, p + length


def _walk(data: bytes, pos: int, end: int, depth: int) -> None:
    """Check that every TLV nests properly, so structural faults get an exact offset."""
    if depth > 64:
        raise DecodeError("BER nested too deeply", offset=pos)
    while pos < end:
        _first, constructed, start, stop = _tlv(data, pos, end)
        if constructed:
            _walk(data, start, stop, depth + 1)
        pos = stop


def ldap_pdu_length(buffer: bytes) -> int | None:
    """Total length of the LDAPMessage that starts ``buffer``; ``None`` while its header is incomplete.

    Raises DecodeError when the first bytes cannot start an LDAPMessage (not a SEQUENCE, bad length, or
    a PDU larger than :data:`MAX_PDU`).
    """
    if not buffer:
        return None
    if buffer[0] != 0x30:
        raise DecodeError(f"LDAPMessage must start with SEQUENCE (0x30), got 0x{buffer[0]:02x}", offset=0)
    if len(buffer) < 2:
        return None
    lb = buffer[1]
    if lb == 0x80:
        raise DecodeError("indefinite BER length (forbidden in LDAP, RFC 4511 5.1)", offset=1)
    if lb & 0x80:
        n = lb & 0x7F
        if n > 4:
            raise DecodeError(f"bad BER long-form length ({n} octets)", offset=1)
        if len(buffer) < 2 + n:
            return None
        total = 2 + n + int.from_bytes(buffer[2 : 2 + n], "big")
    else:
        total = 2 + lb
    if total > MAX_PDU:
        raise DecodeError(f"LDAPMessage of {total} bytes exceeds the {MAX_PDU}-byte limit", offset=0)
    return total


def decode_ldap_message(data: bytes) -> LDAPMessage:
    """Decode exactly one LDAPMessage; DecodeError (with offset) on any fault or trailing bytes."""
    data = bytes(data)
    _first, _constructed, _start, stop = _tlv(data, 0, len(data))
    if data[0] != 0x30:
        raise DecodeError(f"LDAPMessage must start with SEQUENCE (0x30), got 0x{data[0]:02x}", offset=0)
    if stop != len(data):
        raise DecodeError(f"{len(data) - stop} bytes after the LDAPMessage", offset=stop)
    _walk(data, 0, len(data), 0)
    try:
        message, rest = ber_decoder.decode(data, asn1Spec=LDAPMessage())
    except (PyAsn1Error, ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(f"not an RFC 4511 LDAPMessage: {exc}", offset=0, path="LDAPMessage") from None
    if rest:
        raise DecodeError("bytes after the LDAPMessage", offset=len(data) - len(rest))
    return message  # type: ignore[no-any-return]


def encode_ldap_message(message: LDAPMessage) -> bytes:
    """BER-encode an LDAPMessage (definite, minimal lengths)."""
    return bytes(ber_encoder.encode(message))
