"""TSIG (RFC 8945): HMAC signatures over the raw bytes of DNS messages, and BIND key files.

The MAC of a request covers the message exactly as received, minus its TSIG RR, with ARCOUNT
decremented and the ID replaced by the TSIG's original ID, followed by the "TSIG variables"
(RFC 8945 4.3.3). dnslib cannot re-create the received bytes reliably (compression and case may
differ), so everything here works on bytes. Time is passed in as Unix seconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from emu.errors import DnsUpdateError, UsageError
from emu.wire.dns import (
    CLASS_ANY,
    DnsMessage,
    Rcode,
    TsigRecord,
    canonical_name,
    canonical_name_wire,
    encode_tsig_rr,
)

__all__ = [
    "ALGORITHMS",
    "DEFAULT_FUDGE",
    "REPLAY_CACHE_SIZE",
    "ReplayCache",
    "TsigCheck",
    "TsigKey",
    "append_unsigned_tsig",
    "parse_key_file",
    "sign_request",
    "sign_response",
    "verify_request",
    "verify_response",
]

#: HMAC algorithms by their TSIG names (RFC 8945 6). hmac-sha256 is the mandatory one.
ALGORITHMS: dict[str, str] = {
    "hmac-sha256.": "sha256",
    "hmac-sha1.": "sha1",
    "hmac-sha224.": "sha224",
    "hmac-sha384.": "sha384",
    "hmac-sha512.": "sha512",
    "hmac-md5.sig-alg.reg.int.": "md5",
}

#: Permitted clock error in seconds; RFC 8945 10 recommends 300.
DEFAULT_FUDGE = 300

#: Accepted signed UPDATEs remembered for replay detection. Only holders of a key can add entries;
#: at 300 s fudge this is about 7 updates/s sustained for 10 min before the horizon rule below bites.
REPLAY_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class TsigKey:
    """A shared HMAC key. ``name`` and ``algorithm`` are canonical (lower case, trailing dot)."""

    name: str
    algorithm: str
    secret: bytes

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise UsageError(f"TSIG key {self.name}: unsupported algorithm {self.algorithm!r} (use hmac-sha256)")

    @classmethod
    def make(cls, name: str, secret: bytes, algorithm: str = "hmac-sha256") -> TsigKey:
        return cls(canonical_name(name), canonical_name(algorithm), secret)

    @property
    def digest_size(self) -> int:
        return hashlib.new(ALGORITHMS[self.algorithm]).digest_size

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self.secret, data, ALGORITHMS[self.algorithm]).digest()


@dataclass(frozen=True, slots=True)
class TsigCheck:
    """Outcome of checking a signed request.

    ``rcode`` is NOERROR, or FORMERR (bad MAC size), or NOTAUTH with ``error`` one of BADKEY,
    BADSIG, BADTIME, BADTRUNC (RFC 8945 5.2). ``key`` is set whenever the key was known, so a
    BADTIME/BADTRUNC answer can still be signed.
    """

    rcode: int
    error: int
    key: TsigKey | None
    record: TsigRecord

    @property
    def ok(self) -> bool:
        return self.rcode == Rcode.NOERROR


class ReplayCache:
    """The (key name, MAC) pairs of accepted signed requests, each for as long as it could pass the
    time check (until time signed + fudge). Sans-IO: time is passed in, Unix seconds.

    TSIG alone lets a captured message be replayed inside its fudge window (docs/dns.md). A repeat is
    never applied again. When the first answer is still known (:meth:`remember`), the repeat gets
    exactly that answer back: a client that retransmits an UPDATE whose reply was lost (nsupdate over
    UDP does) learns the outcome instead of a failure, and a replay by anyone else changes nothing.
    Otherwise (the entry was evicted) it is refused as RFC 8945 5.2.3 refuses an out-of-order Time
    Signed: rcode NOTAUTH, TSIG error BADTIME, the answer signed with the key (the caller does that).

    The cache is bounded. When it is full the entry that expires first is evicted and its expiry
    becomes a horizon: a request whose time signed + fudge is not later than the horizon is refused
    too, because it may be the replay of an evicted entry. So a replay is never accepted; under an
    overload of one key, late-arriving requests (signed long before they arrive) are refused.

    Args:
        max_entries: how many (key, MAC) pairs are kept at most.
    """

    def __init__(self, max_entries: int = REPLAY_CACHE_SIZE) -> None:
        if max_entries < 1:
            raise UsageError("a replay cache needs room for at least one entry")
        self.max_entries = max_entries
        self._seen: dict[tuple[str, bytes], bytes | None] = {}  # entry -> the answer sent, once known
        self._expiries: list[tuple[int, str, bytes]] = []  # heap by expiry
        self._horizon: int | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: int) -> None:
        while self._expiries and self._expiries[0][0] < now:
            _, name, mac = heapq.heappop(self._expiries)
            self._seen.pop((name, mac), None)
        if self._horizon is not None and self._horizon < now:
            self._horizon = None  # whatever it guarded now fails the time check by itself

    def admit(self, record: TsigRecord, now: int) -> bool:
        """Remember a verified request; False if it is a repeat (or may be one, see the horizon)."""
        self._expire(now)
        entry = (record.key_name, record.mac)
        expires = record.time_signed + record.fudge
        if entry in self._seen or (self._horizon is not None and expires <= self._horizon):
            return False
        while len(self._seen) >= self.max_entries:
            evicted, name, mac = heapq.heappop(self._expiries)
            self._seen.pop((name, mac), None)
            self._horizon = evicted if self._horizon is None else max(self._horizon, evicted)
            if expires <= self._horizon:
                return False
        self._seen[entry] = None
        heapq.heappush(self._expiries, (expires, record.key_name, record.mac))
        return True

    def remember(self, record: TsigRecord, answer: bytes) -> None:
        """Keep the answer sent to an admitted request, for its retransmissions."""
        entry = (record.key_name, record.mac)
        if entry in self._seen:
            self._seen[entry] = answer

    def earlier_answer(self, record: TsigRecord, now: int) -> bytes | None:
        """The answer already sent to this very request (same key and MAC), if still known."""
        self._expire(now)
        return self._seen.get((record.key_name, record.mac))


_KEY_BLOCK = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.S)
_ALGORITHM = re.compile(r"algorithm\s+\"?([A-Za-z0-9.\-]+)\"?\s*;")
_SECRET = re.compile(r'secret\s+"([^"]*)"\s*;')


_COMMENT_OR_STRING = re.compile(r'"[^"\n]*"|(?:#|//)[^\n]*')


def parse_key_file(text: str, source: str = "key file") -> list[TsigKey]:
    """The keys of a BIND key file, as ``tsig-keygen`` writes it::

        key "kms1" {
                algorithm hmac-sha256;
                secret "base64...";
        };

    Raises:
        UsageError: no key block, a block without algorithm or secret, bad base64, an
            unsupported algorithm.
    """
    # comments (# and //) run to the end of the line, but not inside a quoted string: a base64 secret may
    # hold "//" (about one key in a hundred)
    text = _COMMENT_OR_STRING.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)
    keys = []
    for match in _KEY_BLOCK.finditer(text):
        name, body = match.group(1), match.group(2)
        algorithm = _ALGORITHM.search(body)
        secret = _SECRET.search(body)
        if not algorithm or not secret:
            raise UsageError(f"{source}: key {name!r} needs both 'algorithm' and 'secret'")
        try:
            raw = base64.b64decode(secret.group(1), validate=True)
        except binascii.Error as exc:
            raise UsageError(f"{source}: key {name!r}: secret is not valid base64 ({exc})") from exc
        keys.append(TsigKey(canonical_name(name), canonical_name(algorithm.group(1)), raw))
    if not keys:
        raise UsageError(
            f'{source}: no key "name" {{ algorithm ...; secret "..."; }}; block found (write one with tsig-keygen)'
        )
    return keys


def _variables(record: TsigRecord, timers_only: bool = False) -> bytes:
    """The TSIG variables of RFC 8945 4.3.3 (key name, class, TTL, algorithm, times, error, other)."""
    timers = struct.pack("!HIH", (record.time_signed >> 32) & 0xFFFF, record.time_signed & 0xFFFFFFFF, record.fudge)
    if timers_only:
        return timers
    return (
        canonical_name_wire(record.key_name)
        + struct.pack("!HI", CLASS_ANY, 0)
        + canonical_name_wire(record.algorithm)
        + timers
        + struct.pack("!HH", record.error, len(record.other))
        + record.other
    )


def _strip_tsig(raw: bytes, tsig_offset: int, original_id: int) -> bytes:
    """The message as it was before signing: no TSIG RR, ARCOUNT - 1, the original ID."""
    arcount = struct.unpack_from("!H", raw, 10)[0]
    return struct.pack("!H", original_id) + raw[2:10] + struct.pack("!H", arcount - 1) + raw[12:tsig_offset]


def _append_rr(message: bytes, rr: bytes) -> bytes:
    arcount = struct.unpack_from("!H", message, 10)[0]
    return message[:10] + struct.pack("!H", arcount + 1) + message[12:] + rr


def verify_request(message: DnsMessage, keys: Mapping[str, TsigKey], now: int) -> TsigCheck:
    """Check the TSIG of a received request in the order of RFC 8945 5.2.

    Args:
        message: a decoded message whose ``tsig`` is set.
        keys: known keys by canonical name.
        now: the server's time in Unix seconds.
    """
    record = message.tsig
    if record is None or message.tsig_offset is None:
        raise ValueError("verify_request needs a message with a TSIG RR")
    key = keys.get(record.key_name)
    if key is None or key.algorithm != record.algorithm:
        return TsigCheck(Rcode.NOTAUTH, Rcode.BADKEY, None, record)
    size = key.digest_size
    # RFC 8945 5.2.2.1: a MAC longer than the hash or shorter than max(10, L/2) is a format error.
    if len(record.mac) > size or len(record.mac) < max(10, size // 2):
        return TsigCheck(Rcode.FORMERR, Rcode.NOERROR, key, record)
    signed = _strip_tsig(message.raw, message.tsig_offset, record.original_id) + _variables(record)
    if not hmac.compare_digest(key.mac(signed)[: len(record.mac)], record.mac):
        return TsigCheck(Rcode.NOTAUTH, Rcode.BADSIG, None, record)
    if abs(now - record.time_signed) > record.fudge:
        return TsigCheck(Rcode.NOTAUTH, Rcode.BADTIME, key, record)
    if len(record.mac) < size:  # our local minimum is the full MAC (RFC 8945 5.2.2.1)
        return TsigCheck(Rcode.NOTAUTH, Rcode.BADTRUNC, key, record)
    return TsigCheck(Rcode.NOERROR, Rcode.NOERROR, key, record)


def sign_request(message: bytes, key: TsigKey, now: int, fudge: int = DEFAULT_FUDGE) -> tuple[bytes, bytes]:
    """Append a TSIG RR to an unsigned request; returns (signed bytes, MAC) (RFC 8945 4.3.3)."""
    message = bytes(message)
    original_id = struct.unpack_from("!H", message, 0)[0]
    record = TsigRecord(key.name, key.algorithm, int(now), fudge, b"", original_id, 0, b"")
    mac = key.mac(message + _variables(record))
    signed = _append_rr(message, encode_tsig_rr(_with_mac(record, mac)))
    return signed, mac


def _with_mac(
    record: TsigRecord, mac: bytes, error: int | None = None, other: bytes | None = None, time_signed: int | None = None
) -> TsigRecord:
    return TsigRecord(
        record.key_name,
        record.algorithm,
        record.time_signed if time_signed is None else time_signed,
        record.fudge,
        mac,
        record.original_id,
        record.error if error is None else error,
        record.other if other is None else other,
    )


def sign_response(response: bytes, key: TsigKey, request: TsigRecord, now: int, error: int = Rcode.NOERROR) -> bytes:
    """Sign a response to a signed request (RFC 8945 4.3.1, 5.3).

    The MAC covers the request's MAC, the response and the variables. For BADTIME the time
    signed echoes the request and Other Data carries the server's 48-bit time (RFC 8945 5.2.3).
    """
    response = bytes(response)
    if error == Rcode.BADTIME:
        record = TsigRecord(
            key.name,
            key.algorithm,
            request.time_signed,
            request.fudge,
            b"",
            request.original_id,
            error,
            struct.pack("!HI", (now >> 32) & 0xFFFF, now & 0xFFFFFFFF),
        )
    else:
        record = TsigRecord(key.name, key.algorithm, int(now), request.fudge, b"", request.original_id, error, b"")
    unsigned = struct.pack("!H", request.original_id) + response[2:]
    mac = key.mac(struct.pack("!H", len(request.mac)) + request.mac + unsigned + _variables(record))
    return _append_rr(response, encode_tsig_rr(_with_mac(record, mac)))


def append_unsigned_tsig(response: bytes, request: TsigRecord, error: int) -> bytes:
    """BADKEY/BADSIG answers: a TSIG RR with the error and an empty MAC (RFC 8945 5.3.2)."""
    record = TsigRecord(
        request.key_name, request.algorithm, request.time_signed, request.fudge, b"", request.original_id, error, b""
    )
    return _append_rr(bytes(response), encode_tsig_rr(record))


def verify_response(message: DnsMessage, key: TsigKey, request_mac: bytes, now: int) -> None:
    """Check the TSIG of a response to a request we signed with ``key``.

    Raises:
        DnsUpdateError: no TSIG, another key, a TSIG error from the server, a bad MAC, or a
            time outside the fudge window. ``wire_code`` is the TSIG error (or NOTAUTH).
    """
    record = message.tsig
    if record is None or message.tsig_offset is None:
        raise DnsUpdateError(
            f"the response (rcode {message.header.flags & 0xF}) is not signed", wire_code=Rcode.NOTAUTH
        )
    if record.error:
        raise DnsUpdateError(f"the server rejected our TSIG: {_error_name(record.error)}", wire_code=record.error)
    if record.key_name != key.name or record.algorithm != key.algorithm:
        raise DnsUpdateError(
            f"the response is signed with key {record.key_name}, not {key.name}", wire_code=Rcode.BADKEY
        )
    signed = (
        struct.pack("!H", len(request_mac))
        + request_mac
        + _strip_tsig(message.raw, message.tsig_offset, record.original_id)
        + _variables(record)
    )
    expected = key.mac(signed)
    if len(record.mac) < max(10, key.digest_size // 2) or not hmac.compare_digest(
        expected[: len(record.mac)], record.mac
    ):
        raise DnsUpdateError("the response MAC does not verify", wire_code=Rcode.BADSIG)
    if abs(now - record.time_signed) > record.fudge:
        raise DnsUpdateError(
            f"the response was signed {abs(now - record.time_signed)} s away from our clock", wire_code=Rcode.BADTIME
        )


def _error_name(code: int) -> str:
    try:
        return Rcode(code).name
    except ValueError:
        return str(code)
