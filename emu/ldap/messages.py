"""LDAPv3 messages as frozen dataclasses, and their conversion to and from the pyasn1 frames.

``decode_message(bytes)`` and ``encode_message(msg)`` are the whole API most callers need. Strings (DNs,
attribute names) are decoded as UTF-8 with ``surrogateescape`` so that any bytes survive a round trip;
attribute and assertion values stay ``bytes`` (binary-safe: msSPP GUIDs are not text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emu.errors import DecodeError
from emu.wire import ldap as w

__all__ = [
    "AbandonRequest",
    "AddRequest",
    "And",
    "Approx",
    "BindRequest",
    "BindResponse",
    "CompareRequest",
    "Control",
    "DelRequest",
    "Equality",
    "ExtendedRequest",
    "ExtendedResponse",
    "Extensible",
    "FilterT",
    "GreaterOrEqual",
    "LdapMessage",
    "LdapResult",
    "LessOrEqual",
    "Modification",
    "ModifyDNRequest",
    "ModifyRequest",
    "Not",
    "Operation",
    "Or",
    "Present",
    "SearchRequest",
    "SearchResultDone",
    "SearchResultEntry",
    "SearchResultReference",
    "SimpleResponse",
    "Substrings",
    "UnbindRequest",
    "decode_message",
    "encode_message",
]


def _s(value: Any) -> str:
    return bytes(value).decode("utf-8", "surrogateescape")


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# ---- filters (RFC 4511 4.5.1.7) -------------------------------------------------------------------


@dataclass(frozen=True)
class And:
    items: tuple[FilterT, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[FilterT, ...]


@dataclass(frozen=True)
class Not:
    item: FilterT


@dataclass(frozen=True)
class Equality:
    attribute: str
    value: bytes


@dataclass(frozen=True)
class GreaterOrEqual:
    attribute: str
    value: bytes


@dataclass(frozen=True)
class LessOrEqual:
    attribute: str
    value: bytes


@dataclass(frozen=True)
class Approx:
    attribute: str
    value: bytes


@dataclass(frozen=True)
class Substrings:
    """``parts`` keeps the wire order: ("initial"|"any"|"final", value)."""

    attribute: str
    parts: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Present:
    attribute: str


@dataclass(frozen=True)
class Extensible:
    rule: str | None
    attribute: str | None
    value: bytes
    dn_attributes: bool = False


FilterT = And | Or | Not | Equality | Substrings | GreaterOrEqual | LessOrEqual | Present | Approx | Extensible

_AVA: dict[str, type[Equality | GreaterOrEqual | LessOrEqual | Approx]] = {
    "equalityMatch": Equality,
    "greaterOrEqual": GreaterOrEqual,
    "lessOrEqual": LessOrEqual,
    "approxMatch": Approx,
}
_AVA_NAME: dict[type, str] = {v: k for k, v in _AVA.items()}


def _filter_from(f: Any) -> FilterT:
    name = f.getName()
    inner = f.getComponent()
    if name in ("and", "or"):
        items = tuple(_filter_from(x) for x in inner)
        return And(items) if name == "and" else Or(items)
    if name == "not":
        return Not(_filter_from(inner))
    if name in _AVA:
        return _AVA[name](_s(inner["attributeDesc"]), bytes(inner["assertionValue"]))
    if name == "substrings":
        parts = tuple((p.getName(), bytes(p.getComponent())) for p in inner["substrings"])
        return Substrings(_s(inner["type"]), parts)
    if name == "present":
        return Present(_s(inner))
    rule = _s(inner["matchingRule"]) if inner["matchingRule"].isValue else None
    attr = _s(inner["type"]) if inner["type"].isValue else None
    return Extensible(rule, attr, bytes(inner["matchValue"]), bool(inner["dnAttributes"]))


def _filter_to(flt: FilterT, spec: Any) -> Any:
    """Fill the pyasn1 Filter ``spec`` (a fresh component) from ``flt``."""
    if isinstance(flt, And | Or):
        name = "and" if isinstance(flt, And) else "or"
        target = spec.setComponentByName(name).getComponentByName(name)
        for i, item in enumerate(flt.items):
            _filter_to(item, target.getComponentByPosition(i, instantiate=True))
        return spec
    if isinstance(flt, Not):
        target = spec.setComponentByName("not").getComponentByName("not")
        _filter_to(flt.item, target)
        return spec
    if isinstance(flt, Present):
        spec.setComponentByName("present", _b(flt.attribute))
        return spec
    if isinstance(flt, Substrings):
        target = spec.setComponentByName("substrings").getComponentByName("substrings")
        target["type"] = _b(flt.attribute)
        subs = target.getComponentByName("substrings")
        for i, (kind, value) in enumerate(flt.parts):
            subs.getComponentByPosition(i, instantiate=True).setComponentByName(kind, value)
        return spec
    if isinstance(flt, Extensible):
        target = spec.setComponentByName("extensibleMatch").getComponentByName("extensibleMatch")
        if flt.rule is not None:
            target["matchingRule"] = _b(flt.rule)
        if flt.attribute is not None:
            target["type"] = _b(flt.attribute)
        target["matchValue"] = flt.value
        if flt.dn_attributes:
            target["dnAttributes"] = True
        return spec
    name = _AVA_NAME[type(flt)]
    target = spec.setComponentByName(name).getComponentByName(name)
    target["attributeDesc"] = _b(flt.attribute)
    target["assertionValue"] = flt.value
    return spec


# ---- operations ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LdapResult:
    code: int
    matched_dn: str = ""
    message: str = ""
    referral: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Control:
    oid: str
    critical: bool = False
    value: bytes | None = None


@dataclass(frozen=True)
class BindRequest:
    """Simple bind when ``sasl_mechanism`` is None (``password`` then holds the simple credentials)."""

    version: int
    name: str
    password: bytes = b""
    sasl_mechanism: str | None = None
    sasl_credentials: bytes | None = None


@dataclass(frozen=True)
class BindResponse:
    result: LdapResult
    server_sasl_creds: bytes | None = None


@dataclass(frozen=True)
class UnbindRequest:
    pass


@dataclass(frozen=True)
class SearchRequest:
    base: str
    scope: int  # 0 base, 1 one level, 2 subtree
    filter: FilterT
    attributes: tuple[str, ...] = ()
    size_limit: int = 0
    time_limit: int = 0
    types_only: bool = False
    deref: int = 0


@dataclass(frozen=True)
class SearchResultEntry:
    dn: str
    attributes: tuple[tuple[str, tuple[bytes, ...]], ...]

    def get(self, name: str) -> tuple[bytes, ...]:
        """Values of attribute ``name`` (case-insensitive), empty when absent."""
        for attr, values in self.attributes:
            if attr.lower() == name.lower():
                return values
        return ()


@dataclass(frozen=True)
class SearchResultReference:
    uris: tuple[str, ...]


@dataclass(frozen=True)
class SearchResultDone:
    result: LdapResult


@dataclass(frozen=True)
class Modification:
    operation: int  # 0 add, 1 delete, 2 replace
    attribute: str
    values: tuple[bytes, ...]


@dataclass(frozen=True)
class ModifyRequest:
    dn: str
    changes: tuple[Modification, ...]


@dataclass(frozen=True)
class AddRequest:
    dn: str
    attributes: tuple[tuple[str, tuple[bytes, ...]], ...]


@dataclass(frozen=True)
class DelRequest:
    dn: str


@dataclass(frozen=True)
class ModifyDNRequest:
    dn: str
    new_rdn: str
    delete_old_rdn: bool
    new_superior: str | None = None


@dataclass(frozen=True)
class CompareRequest:
    dn: str
    attribute: str
    value: bytes


@dataclass(frozen=True)
class AbandonRequest:
    message_id: int


@dataclass(frozen=True)
class ExtendedRequest:
    name: str
    value: bytes | None = None


@dataclass(frozen=True)
class ExtendedResponse:
    result: LdapResult
    name: str | None = None
    value: bytes | None = None


@dataclass(frozen=True)
class SimpleResponse:
    """modifyResponse, addResponse, delResponse, modDNResponse or compareResponse (``kind``)."""

    kind: str
    result: LdapResult


Operation = (
    BindRequest
    | BindResponse
    | UnbindRequest
    | SearchRequest
    | SearchResultEntry
    | SearchResultReference
    | SearchResultDone
    | ModifyRequest
    | AddRequest
    | DelRequest
    | ModifyDNRequest
    | CompareRequest
    | AbandonRequest
    | ExtendedRequest
    | ExtendedResponse
    | SimpleResponse
)

_SIMPLE_KINDS = ("modifyResponse", "addResponse", "delResponse", "modDNResponse", "compareResponse")


@dataclass(frozen=True)
class LdapMessage:
    message_id: int
    op: Operation
    controls: tuple[Control, ...] | None = field(default=None)

    @property
    def op_name(self) -> str:
        """The RFC 4511 protocolOp name, such as ``searchRequest``."""
        if isinstance(self.op, SimpleResponse):
            return self.op.kind
        return _OP_NAME[type(self.op)]


_OP_NAME: dict[type, str] = {
    BindRequest: "bindRequest",
    BindResponse: "bindResponse",
    UnbindRequest: "unbindRequest",
    SearchRequest: "searchRequest",
    SearchResultEntry: "searchResEntry",
    SearchResultReference: "searchResRef",
    SearchResultDone: "searchResDone",
    ModifyRequest: "modifyRequest",
    AddRequest: "addRequest",
    DelRequest: "delRequest",
    ModifyDNRequest: "modDNRequest",
    CompareRequest: "compareRequest",
    AbandonRequest: "abandonRequest",
    ExtendedRequest: "extendedReq",
    ExtendedResponse: "extendedResp",
}


def _result_from(r: Any) -> LdapResult:
    referral = tuple(_s(u) for u in r["referral"]) if r["referral"].isValue else None
    return LdapResult(int(r["resultCode"]), _s(r["matchedDN"]), _s(r["diagnosticMessage"]), referral)


def _result_to(result: LdapResult, r: Any) -> None:
    r["resultCode"] = result.code
    r["matchedDN"] = _b(result.matched_dn)
    r["diagnosticMessage"] = _b(result.message)
    if result.referral is not None:
        ref = r.setComponentByName("referral").getComponentByName("referral")
        for i, uri in enumerate(result.referral):
            ref[i] = _b(uri)


def _attrs_from(seq: Any) -> tuple[tuple[str, tuple[bytes, ...]], ...]:
    return tuple((_s(a["type"]), tuple(bytes(v) for v in a["vals"])) for a in seq)


def _attrs_to(attrs: tuple[tuple[str, tuple[bytes, ...]], ...], seq: Any) -> None:
    for i, (name, values) in enumerate(attrs):
        pa = seq.getComponentByPosition(i, instantiate=True)
        pa["type"] = _b(name)
        vals = pa.setComponentByName("vals").getComponentByName("vals")
        for j, v in enumerate(values):
            vals[j] = v


def _opt(component: Any) -> bytes | None:
    return bytes(component) if component.isValue else None


def _op_from(name: str, o: Any) -> Operation:
    if name == "bindRequest":
        auth = o["authentication"]
        if auth.getName() == "simple":
            return BindRequest(int(o["version"]), _s(o["name"]), bytes(auth.getComponent()))
        sasl = auth.getComponent()
        return BindRequest(int(o["version"]), _s(o["name"]), b"", _s(sasl["mechanism"]), _opt(sasl["credentials"]))
    if name == "bindResponse":
        return BindResponse(_result_from(o), _opt(o["serverSaslCreds"]))
    if name == "unbindRequest":
        return UnbindRequest()
    if name == "searchRequest":
        return SearchRequest(
            _s(o["baseObject"]),
            int(o["scope"]),
            _filter_from(o["filter"]),
            tuple(_s(a) for a in o["attributes"]),
            int(o["sizeLimit"]),
            int(o["timeLimit"]),
            bool(o["typesOnly"]),
            int(o["derefAliases"]),
        )
    if name == "searchResEntry":
        return SearchResultEntry(_s(o["objectName"]), _attrs_from(o["attributes"]))
    if name == "searchResRef":
        return SearchResultReference(tuple(_s(u) for u in o))
    if name == "searchResDone":
        return SearchResultDone(_result_from(o))
    if name == "modifyRequest":
        changes = tuple(
            Modification(
                int(c["operation"]),
                _s(c["modification"]["type"]),
                tuple(bytes(v) for v in c["modification"]["vals"]),
            )
            for c in o["changes"]
        )
        return ModifyRequest(_s(o["object"]), changes)
    if name == "addRequest":
        return AddRequest(_s(o["entry"]), _attrs_from(o["attributes"]))
    if name == "delRequest":
        return DelRequest(_s(o))
    if name == "modDNRequest":
        sup = _s(o["newSuperior"]) if o["newSuperior"].isValue else None
        return ModifyDNRequest(_s(o["entry"]), _s(o["newrdn"]), bool(o["deleteoldrdn"]), sup)
    if name == "compareRequest":
        return CompareRequest(_s(o["entry"]), _s(o["ava"]["attributeDesc"]), bytes(o["ava"]["assertionValue"]))
    if name == "abandonRequest":
        return AbandonRequest(int(o))
    if name == "extendedReq":
        return ExtendedRequest(_s(o["requestName"]), _opt(o["requestValue"]))
    if name == "extendedResp":
        rn = _s(o["responseName"]) if o["responseName"].isValue else None
        return ExtendedResponse(_result_from(o), rn, _opt(o["responseValue"]))
    if name in _SIMPLE_KINDS:
        return SimpleResponse(name, _result_from(o))
    raise DecodeError(f"LDAP operation {name} is not supported", offset=0, path="LDAPMessage -> protocolOp")


def _op_to(op: Operation, po: Any) -> None:
    name = op.kind if isinstance(op, SimpleResponse) else _OP_NAME[type(op)]
    if isinstance(op, UnbindRequest):
        po.setComponentByName(name, w.UnbindRequest(""))
        return
    if isinstance(op, DelRequest):
        po.setComponentByName(name, _b(op.dn))
        return
    if isinstance(op, AbandonRequest):
        po.setComponentByName(name, op.message_id)
        return
    o = po.setComponentByName(name).getComponentByName(name)
    if isinstance(op, BindRequest):
        o["version"] = op.version
        o["name"] = _b(op.name)
        auth = o.getComponentByName("authentication")
        if op.sasl_mechanism is None:
            auth.setComponentByName("simple", op.password)
        else:
            sasl = auth.setComponentByName("sasl").getComponentByName("sasl")
            sasl["mechanism"] = _b(op.sasl_mechanism)
            if op.sasl_credentials is not None:
                sasl["credentials"] = op.sasl_credentials
    elif isinstance(op, BindResponse):
        _result_to(op.result, o)
        if op.server_sasl_creds is not None:
            o["serverSaslCreds"] = op.server_sasl_creds
    elif isinstance(op, SearchRequest):
        o["baseObject"] = _b(op.base)
        o["scope"] = op.scope
        o["derefAliases"] = op.deref
        o["sizeLimit"] = op.size_limit
        o["timeLimit"] = op.time_limit
        o["typesOnly"] = op.types_only
        _filter_to(op.filter, o.getComponentByName("filter"))
        attrs = o.setComponentByName("attributes").getComponentByName("attributes")
        for i, a in enumerate(op.attributes):
            attrs[i] = _b(a)
    elif isinstance(op, SearchResultEntry):
        o["objectName"] = _b(op.dn)
        _attrs_to(op.attributes, o.setComponentByName("attributes").getComponentByName("attributes"))
    elif isinstance(op, SearchResultReference):
        for i, uri in enumerate(op.uris):
            o[i] = _b(uri)
    elif isinstance(op, SearchResultDone | SimpleResponse):
        _result_to(op.result, o)
    elif isinstance(op, ModifyRequest):
        o["object"] = _b(op.dn)
        changes = o.setComponentByName("changes").getComponentByName("changes")
        for i, ch in enumerate(op.changes):
            c = changes.getComponentByPosition(i, instantiate=True)
            c["operation"] = ch.operation
            m = c.getComponentByName("modification")
            m["type"] = _b(ch.attribute)
            vals = m.setComponentByName("vals").getComponentByName("vals")
            for j, v in enumerate(ch.values):
                vals[j] = v
    elif isinstance(op, AddRequest):
        o["entry"] = _b(op.dn)
        _attrs_to(op.attributes, o.setComponentByName("attributes").getComponentByName("attributes"))
    elif isinstance(op, ModifyDNRequest):
        o["entry"] = _b(op.dn)
        o["newrdn"] = _b(op.new_rdn)
        o["deleteoldrdn"] = op.delete_old_rdn
        if op.new_superior is not None:
            o["newSuperior"] = _b(op.new_superior)
    elif isinstance(op, CompareRequest):
        o["entry"] = _b(op.dn)
        o["ava"]["attributeDesc"] = _b(op.attribute)
        o["ava"]["assertionValue"] = op.value
    elif isinstance(op, ExtendedRequest):
        o["requestName"] = _b(op.name)
        if op.value is not None:
            o["requestValue"] = op.value
    elif isinstance(op, ExtendedResponse):
        _result_to(op.result, o)
        if op.name is not None:
            o["responseName"] = _b(op.name)
        if op.value is not None:
            o["responseValue"] = op.value


def decode_message(data: bytes) -> LdapMessage:
    """Decode one whole LDAPMessage PDU; DecodeError (with an offset) when it is not one."""
    m = w.decode_ldap_message(data)
    po = m["protocolOp"]
    try:
        op = _op_from(po.getName(), po.getComponent())
    except DecodeError:
        raise
    except Exception as exc:  # pyasn1 raises assorted errors on absent mandatory parts
        raise DecodeError(f"incomplete {po.getName()}: {exc}", offset=0, path="LDAPMessage -> protocolOp") from None
    controls = None
    if m["controls"].isValue:
        controls = tuple(
            Control(_s(c["controlType"]), bool(c["criticality"]), _opt(c["controlValue"])) for c in m["controls"]
        )
    return LdapMessage(int(m["messageID"]), op, controls)


def encode_message(message: LdapMessage) -> bytes:
    """Encode an LdapMessage as BER (definite, minimal lengths)."""
    m = w.LDAPMessage()
    m["messageID"] = message.message_id
    _op_to(message.op, m.getComponentByName("protocolOp"))
    if message.controls is not None:
        cs = m.setComponentByName("controls").getComponentByName("controls")
        for i, c in enumerate(message.controls):
            cc = cs.getComponentByPosition(i, instantiate=True)
            cc["controlType"] = _b(c.oid)
            if c.critical:
                cc["criticality"] = True
            if c.value is not None:
                cc["controlValue"] = c.value
    return w.encode_ldap_message(m)
