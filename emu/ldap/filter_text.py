"""RFC 4515 text form of LDAP search filters: parse ``(&(a=b)(!(c=*)))`` and render a filter back.

Values are escaped as ``\\XX`` whenever they are not printable ASCII or are one of ``* ( ) \\ NUL``, so
binary values such as msSPP GUIDs print unambiguously and parse back to the same bytes.
"""

from __future__ import annotations

from emu.errors import DecodeError
from emu.ldap.messages import (
    And,
    Approx,
    Equality,
    Extensible,
    FilterT,
    GreaterOrEqual,
    LessOrEqual,
    Not,
    Or,
    Present,
    Substrings,
)

__all__ = ["escape_value", "parse_filter", "render_filter"]

_SPECIAL = {0x2A, 0x28, 0x29, 0x5C, 0x00}


def escape_value(value: bytes) -> str:
    """RFC 4515 escaping of an assertion value."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b not in _SPECIAL else f"\\{b:02x}" for b in value)


def render_filter(flt: FilterT) -> str:
    """The RFC 4515 string of ``flt``."""
    if isinstance(flt, And):
        return "(&" + "".join(render_filter(f) for f in flt.items) + ")"
    if isinstance(flt, Or):
        return "(|" + "".join(render_filter(f) for f in flt.items) + ")"
    if isinstance(flt, Not):
        return "(!" + render_filter(flt.item) + ")"
    if isinstance(flt, Present):
        return f"({flt.attribute}=*)"
    if isinstance(flt, Substrings):
        initial = next((escape_value(v) for k, v in flt.parts if k == "initial"), "")
        final = next((escape_value(v) for k, v in flt.parts if k == "final"), "")
        middle = [escape_value(v) for k, v in flt.parts if k == "any"]
        return f"({flt.attribute}=" + "*".join([initial, *middle, final]) + ")"
    if isinstance(flt, Extensible):
        head = (flt.attribute or "") + (":dn" if flt.dn_attributes else "") + (f":{flt.rule}" if flt.rule else "")
        return f"({head}:={escape_value(flt.value)})"
    op = {Equality: "=", GreaterOrEqual: ">=", LessOrEqual: "<=", Approx: "~="}[type(flt)]
    return f"({flt.attribute}{op}{escape_value(flt.value)})"


def _unescape(text: str, where: int) -> bytes:
    out = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C:
            try:
                out.append(int(raw[i + 1 : i + 3].decode("ascii"), 16))
            except (ValueError, UnicodeDecodeError):
                raise DecodeError("bad \\XX escape in filter value", offset=where + i) from None
            if len(raw[i + 1 : i + 3]) != 2:
                raise DecodeError("bad \\XX escape in filter value", offset=where + i)
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> DecodeError:
        return DecodeError(f"bad LDAP filter: {why}", offset=self.pos, path="filter")

    def expect(self, ch: str) -> None:
        if self.pos >= len(self.text) or self.text[self.pos] != ch:
            raise self.fail(f"{ch!r} expected")
        self.pos += 1

    def parse(self, depth: int = 0) -> FilterT:
        if depth > 50:
            raise self.fail("nested too deeply")
        self.expect("(")
        if self.pos >= len(self.text):
            raise self.fail("unterminated")
        ch = self.text[self.pos]
        if ch in "&|":
            self.pos += 1
            items: list[FilterT] = []
            while self.pos < len(self.text) and self.text[self.pos] == "(":
                items.append(self.parse(depth + 1))
            self.expect(")")
            return And(tuple(items)) if ch == "&" else Or(tuple(items))
        if ch == "!":
            self.pos += 1
            inner = self.parse(depth + 1)
            self.expect(")")
            return Not(inner)
        end = self.text.find(")", self.pos)
        if end < 0:
            raise self.fail("unterminated item")
        item, start = self.text[self.pos : end], self.pos
        self.pos = end + 1
        return self.item(item, start)

    def item(self, item: str, start: int) -> FilterT:
        ops: tuple[tuple[str, type[GreaterOrEqual | LessOrEqual | Approx]], ...] = (
            (">=", GreaterOrEqual),
            ("<=", LessOrEqual),
            ("~=", Approx),
        )
        for op, cls in ops:
            if op in item:
                attr, value = item.split(op, 1)
                return cls(attr, _unescape(value, start + len(attr) + 2))
        if ":=" in item:
            head, value = item.split(":=", 1)
            pieces = head.split(":")
            dn = "dn" in [p.lower() for p in pieces[1:]]
            rules = [p for p in pieces[1:] if p.lower() != "dn"]
            return Extensible(rules[0] if rules else None, pieces[0] or None, _unescape(value, start), dn)
        if "=" not in item:
            raise DecodeError("bad LDAP filter: no operator", offset=start, path="filter")
        attr, value = item.split("=", 1)
        if not attr:
            raise DecodeError("bad LDAP filter: empty attribute", offset=start, path="filter")
        if value == "*":
            return Present(attr)
        if "*" in value:
            chunks = value.split("*")
            parts: list[tuple[str, bytes]] = []
            if chunks[0]:
                parts.append(("initial", _unescape(chunks[0], start)))
            parts.extend(("any", _unescape(c, start)) for c in chunks[1:-1] if c)
            if chunks[-1]:
                parts.append(("final", _unescape(chunks[-1], start)))
            return Substrings(attr, tuple(parts))
        return Equality(attr, _unescape(value, start + len(attr) + 1))


def parse_filter(text: str) -> FilterT:
    """Parse an RFC 4515 filter string; DecodeError with the character offset when it is malformed."""
    text = text.strip()
    if not text.startswith("("):
        text = f"({text})"
    parser = _Parser(text)
    result = parser.parse()
    if parser.pos != len(text):
        raise parser.fail("trailing characters")
    return result
