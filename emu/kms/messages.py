"""Build, open and verify KMS messages of every version (docs/kms-wire-protocol.md).

* client side: :func:`build_request`, then :func:`verify_response` on the answer, which runs every
  check vlmcs runs (docs/kms-wire-protocol.md) and reports each by name;
* server side: :func:`open_request` (decrypt and decode, refusing bad versions with the HRESULT
  vlmcsd sends), then :func:`build_response`.

Randomness (IVs, the server's R) comes from an injected :class:`emu.rng.Rng`; explicit values can
be passed instead, which is how the spec's test vectors are reproduced.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Literal

from emu.errors import DecodeError, KmsError, UsageError, VerificationError
from emu.kms.crypto import (
    BLOCK_SIZE,
    PaddingError,
    cbc_decrypt,
    cbc_decrypt_with_iv,
    cbc_encrypt,
    decrypt_block,
    pkcs7_pad,
    pkcs7_unpad,
    v4_mac,
    v6_hmac,
    v6_hmac_key,
)
from emu.rng import Rng
from emu.wire.kms import (
    HWID_SIZE,
    IV_SIZE,
    MAC_SIZE,
    REQUEST_BASE_SIZE,
    RequestBase,
    ResponseBase,
    ResponseV4,
    ResponseV5Plain,
    ResponseV6Plain,
    Version,
    decode_encrypted_message,
    decode_request_base,
    decode_request_v4,
    decode_response_v4,
    decode_response_v5_plain,
    decode_response_v6_plain,
    decode_version,
    encode_request_base,
    encode_response_base,
    encode_version,
)

__all__ = [
    "E_INVALIDDATA",
    "HMAC_SLOT_OFFSETS",
    "MAX_PID_SIZE",
    "REQUEST_V4_SIZE",
    "REQUEST_V5_SIZE",
    "SUPPORTED_MAJOR_VERSIONS",
    "Check",
    "OpenedRequest",
    "VerifiedResponse",
    "build_request",
    "build_response",
    "expected_response_size",
    "message_layout",
    "open_request",
    "open_response",
    "response_hash",
    "response_r_mask",
    "v6_response_hmac",
    "verify_response",
    "xor_block",
]

#: HRESULT a host returns for a malformed request or unsupported version (docs/kms-wire-protocol.md "0x8007000D").
E_INVALIDDATA = 0x8007000D
#: Major versions with a defined message layout (docs/kms-wire-protocol.md).
SUPPORTED_MAJOR_VERSIONS = (4, 5, 6)
#: v4 request: 236-byte base + 16-byte MAC (docs/kms-wire-protocol.md).
REQUEST_V4_SIZE = REQUEST_BASE_SIZE + MAC_SIZE
#: v5/v6 request: version + IV + CBC(base ‖ 04 04 04 04) (docs/kms-wire-protocol.md).
REQUEST_V5_SIZE = 4 + IV_SIZE + REQUEST_BASE_SIZE + 4
#: KmsPID holds at most 64 WCHAR including its NUL (docs/kms-wire-protocol.md).
MAX_PID_SIZE = 128
#: Slot offsets vlmcs tries when checking a v6 HMAC, in its order (docs/kms-wire-protocol.md, quirk Q5).
HMAC_SLOT_OFFSETS = (-1, 0, 1)


@dataclass(frozen=True, slots=True)
class OpenedRequest:
    """A request as a server sees it after decryption (docs/kms-wire-protocol.md)."""

    #: the clear version header (the only version of a v4 message)
    version: Version
    base: RequestBase
    #: the message as received
    raw: bytes
    #: v5/v6: the clear IV; None for v4
    iv: bytes | None = None
    #: v5/v6: D_K(IV), the raw block decryption of the IV (docs/kms-wire-protocol.md step 1)
    decrypted_iv: bytes | None = None
    #: v5/v6: the 4 decrypted bytes after the base (normally 04 04 04 04; servers ignore them)
    padding: bytes = b""
    #: v4: whether the MAC is right (servers do not reject on it, docs/kms-wire-protocol.md); None for v5/v6
    mac_ok: bool | None = None


Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Check:
    """One client-side check of docs/kms-wire-protocol.md, named after vlmcs's result flag."""

    name: str
    passed: bool
    severity: Severity = "error"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class VerifiedResponse:
    """A response with the outcome of every check vlmcs performs on it (docs/kms-wire-protocol.md)."""

    #: the clear version of the response (None if not even 4 bytes arrived)
    version: Version | None
    #: the decoded (decrypted) response, or None when it could not be decoded
    message: ResponseV4 | ResponseV5Plain | ResponseV6Plain | None
    checks: tuple[Check, ...] = field(default_factory=tuple)
    #: v5/v6: the clear response IV
    iv: bytes | None = None

    @property
    def ok(self) -> bool:
        """No error-severity check failed (warnings allowed, as vlmcs)."""
        return all(c.passed or c.severity != "error" for c in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the checks that did not pass (warnings included)."""
        return tuple(c.name for c in self.checks if not c.passed)

    def check(self, name: str) -> Check:
        """The check called ``name``.

        Raises:
            KeyError: no check of that name was run for this version.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def base(self) -> ResponseBase | None:
        return None if self.message is None else self.message.base

    @property
    def epid(self) -> str | None:
        return None if self.base is None else self.base.epid

    @property
    def count(self) -> int | None:
        return None if self.base is None else self.base.count

    @property
    def activation_interval(self) -> int | None:
        return None if self.base is None else self.base.activation_interval

    @property
    def renewal_interval(self) -> int | None:
        return None if self.base is None else self.base.renewal_interval

    @property
    def cmid(self) -> uuid.UUID | None:
        return None if self.base is None else self.base.cmid

    @property
    def client_time(self) -> int | None:
        return None if self.base is None else self.base.client_time

    @property
    def hwid(self) -> bytes | None:
        """v6 only: the host's 8-byte hardware id."""
        return self.message.hwid if isinstance(self.message, ResponseV6Plain) else None


def xor_block(a: bytes, b: bytes) -> bytes:
    """``a`` xor ``b``, two blocks of the same length (R masking, docs/kms-wire-protocol.md)."""
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def response_r_mask(major: int, request_iv: bytes) -> bytes:
    """D(request IV): what R is xored with in a v5/v6 response (for v6 also sent as ``xored_ivs``)."""
    return decrypt_block(major, request_iv)


def response_hash(r: bytes) -> bytes:
    """The v5/v6 response's hash field: SHA-256 of the random block R."""
    return hashlib.sha256(r).digest()


def v6_response_hmac(client_time: int, response_iv: bytes, signed: bytes) -> bytes:
    """The v6 response HMAC over D(response IV) ‖ ``signed`` (the plaintext before the HMAC),
    keyed with ``client_time``'s time slot (docs/kms-wire-protocol.md)."""
    return v6_hmac(v6_hmac_key(client_time), decrypt_block(6, response_iv) + signed)


# --- client: requests ------------------------------------------------------------------------


def _flipped(data: bytes) -> bytes:
    """``data`` with the lowest bit of its first byte inverted (a tampered checksum)."""
    return bytes([data[0] ^ 1]) + data[1:]


def message_layout(major: int) -> int:
    """The message layout and cipher a request of this major version is built with.

    4, 5 and 6 are themselves; vlmcs ``-K a.b`` sends other versions in the v4 layout below 5 and
    in the v6 layout (and cipher) above 6 (docs/kms-wire-protocol.md ``-K``; the ``badversion-K7.0`` captures decrypt
    with the v6 key). Hosts answer those with 0x8007000D, which is what such requests test.
    """
    if major < 5:
        return 4
    return 5 if major == 5 else 6


def build_request(base: RequestBase, rng: Rng | None = None, *, iv: bytes | None = None) -> bytes:
    """The KMS request message for ``base``, in the layout of :func:`message_layout` of its version.

    v4: base ‖ V4-MAC. v5/v6: version ‖ IV ‖ CBC(base ‖ 04 04 04 04), IV from ``rng`` unless ``iv``
    is given (test vectors). Other versions (conformance tests of hosts) use the v4 or v6 layout.

    Raises:
        UsageError: no randomness and no IV, or a bad IV/name.
    """
    major = message_layout(base.version.major)
    try:
        body = encode_request_base(base)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"cannot encode the request base: {exc}") from exc
    if major == 4:
        return body + v4_mac(body)
    if iv is None:
        if rng is None:
            raise UsageError("build_request needs an Rng or an explicit iv for v5/v6")
        iv = rng.bytes(IV_SIZE)
    if len(iv) != IV_SIZE:
        raise UsageError(f"the IV must be {IV_SIZE} bytes, got {len(iv)}")
    return encode_version(base.version) + iv + cbc_encrypt(major, iv, pkcs7_pad(body))


# --- server: open a request, build the response -------------------------------------------------


def _refuse(message: str) -> KmsError:
    return KmsError(message, wire_code=E_INVALIDDATA)


def open_request(data: bytes) -> OpenedRequest:
    """Decode (and for v5/v6 decrypt) a request received by a host.

    Raises:
        KmsError: ``wire_code`` 0x8007000D (what vlmcsd answers) for a version other than 4.0,
            5.0 or 6.0, or a message of the wrong size or with undecodable fields.
    """
    data = bytes(data)
    try:
        version = decode_version(data)
    except DecodeError as exc:
        raise _refuse(f"KMS request too short for a version header: {exc}") from exc
    if version.minor != 0 or version.major not in SUPPORTED_MAJOR_VERSIONS:
        raise _refuse(f"unsupported KMS protocol version {version} (4.0, 5.0 and 6.0 exist)")
    try:
        if version.major == 4:
            if len(data) != REQUEST_V4_SIZE:
                raise _refuse(f"a v4 request is {REQUEST_V4_SIZE} bytes, got {len(data)}")
            msg = decode_request_v4(data)
            return OpenedRequest(
                version=version, base=msg.base, raw=data, mac_ok=v4_mac(data[:REQUEST_BASE_SIZE]) == msg.mac
            )
        if len(data) != REQUEST_V5_SIZE:
            raise _refuse(f"a v{version.major} request is {REQUEST_V5_SIZE} bytes, got {len(data)}")
        env = decode_encrypted_message(data)
        decrypted_iv, plain = cbc_decrypt_with_iv(version.major, env.iv, env.ciphertext)  # D(IV): response_r_mask
        base = decode_request_base(plain[:REQUEST_BASE_SIZE])
    except DecodeError as exc:
        raise _refuse(f"undecodable v{version.major} request: {exc}") from exc
    return OpenedRequest(
        version=version,
        base=base,
        raw=data,
        iv=env.iv,
        decrypted_iv=decrypted_iv,
        padding=plain[REQUEST_BASE_SIZE:],
    )


def build_response(
    request: OpenedRequest,
    epid: str,
    count: int,
    activation_interval: int,
    renewal_interval: int,
    hwid: bytes,
    rng: Rng | None = None,
    response_iv: bytes | None = None,
    random_r: bytes | None = None,
    tamper: str | None = None,
) -> bytes:
    """The KMS response message answering ``request`` (docs/kms-wire-protocol.md).

    Version, CMID and ClientTime are echoed from the request. v5/v6: R (and for v6 the response
    IV, never equal to the request IV) come from ``rng`` unless given. The v6 HMAC is keyed with
    the request's ClientTime, as both emulators do (docs/kms-wire-protocol.md). ``hwid`` is used by v6 only.

    Raises:
        UsageError: bad sizes (hwid 8 bytes, IV and R 16), an ePID over 63 characters, missing
            randomness, or a field out of range.

    ``tamper`` (fault injection, :mod:`emu.kms.faults`) builds a response a client must reject:
    ``"hash"`` a wrong SHA-256 of R (V4: a wrong MAC), ``"hmac"`` a wrong V6 HMAC (V4/V5: as ``"hash"``).
    """
    major = request.version.major
    if len(epid) > MAX_PID_SIZE // 2 - 1:
        raise UsageError(f"an ePID has at most {MAX_PID_SIZE // 2 - 1} characters, got {len(epid)}")
    base = ResponseBase(
        version=request.base.version if major != 4 else request.version,
        epid=epid,
        cmid=request.base.cmid,
        client_time=request.base.client_time,
        count=count,
        activation_interval=activation_interval,
        renewal_interval=renewal_interval,
    )
    try:
        body = encode_response_base(base)
    except Exception as exc:  # construct raises its own errors for out-of-range integers
        raise UsageError(f"cannot encode the response base: {exc}") from exc
    if major == 4:
        mac = v4_mac(body)
        return body + (_flipped(mac) if tamper else mac)
    if request.iv is None or request.decrypted_iv is None:
        raise UsageError("a v5/v6 response needs the request's IV (use open_request)")

    def _random(given: bytes | None, what: str) -> bytes:
        if given is None:
            if rng is None:
                raise UsageError(f"build_response needs an Rng or an explicit {what}")
            given = rng.bytes(16)
        if len(given) != 16:
            raise UsageError(f"{what} must be 16 bytes, got {len(given)}")
        return given

    r = _random(random_r, "random_r")
    divreq = request.decrypted_iv
    digest = response_hash(r)
    if tamper == "hash" or (tamper == "hmac" and major == 5):
        digest = _flipped(digest)
    plain = body + xor_block(r, divreq) + digest
    header = encode_version(request.version)
    if major == 5:
        return header + request.iv + cbc_encrypt(5, request.iv, pkcs7_pad(plain))
    if len(hwid) != HWID_SIZE:
        raise UsageError(f"the HwId must be {HWID_SIZE} bytes, got {len(hwid)}")
    if response_iv is None:
        response_iv = _random(None, "response_iv")
        while response_iv == request.iv:  # equal IVs mark an emulator (docs/kms-wire-protocol.md)
            response_iv = _random(None, "response_iv")
    else:
        response_iv = _random(response_iv, "response_iv")
    plain += hwid + divreq
    mac = v6_response_hmac(base.client_time, response_iv, plain)
    if tamper == "hmac":
        mac = _flipped(mac)
    return header + response_iv + cbc_encrypt(6, response_iv, pkcs7_pad(plain + mac))


# --- client: verify a response ---------------------------------------------------------------


def expected_response_size(major: int, pid_size: int) -> int:
    """The response size vlmcs expects for a KmsPID of ``pid_size`` bytes (docs/kms-wire-protocol.md)."""
    if major == 4:
        return 60 + pid_size
    plain = (92 if major == 5 else 132) + pid_size
    return 20 + (plain // BLOCK_SIZE + 1) * BLOCK_SIZE


def _pid_check(base: ResponseBase | None) -> Check:
    if base is None:
        return Check("pid_length_ok", False, "error", "response could not be decoded")
    raw = base.pid_bytes
    size = len(raw)
    if size % 2 or not 2 <= size <= MAX_PID_SIZE:
        return Check("pid_length_ok", False, "error", f"PIDSize {size} is not an even 2..{MAX_PID_SIZE}")
    if raw[-2:] != b"\0\0":
        return Check("pid_length_ok", False, "error", "ePID is not NUL-terminated")
    return Check("pid_length_ok", True, "error", f"PIDSize {size}")


def _echo_checks(request: OpenedRequest, base: ResponseBase | None, outer: Version | None) -> list[Check]:
    """version_ok, cmid_ok, client_time_ok, pid_length_ok (docs/kms-wire-protocol.md end, 5.6)."""
    if base is None:
        why = "response could not be decoded"
        return [Check(n, False, "error", why) for n in ("version_ok", "cmid_ok", "client_time_ok", "pid_length_ok")]
    versions = {"request": request.version, "request base": request.base.version, "response base": base.version}
    if outer is not None and request.version.major != 4:
        versions["response"] = outer
    distinct = set(versions.values())
    return [
        Check(
            "version_ok",
            len(distinct) == 1,
            "error",
            ", ".join(f"{k} {v}" for k, v in versions.items()),
        ),
        Check(
            "cmid_ok",
            base.cmid == request.base.cmid,
            "error",
            f"response CMID {base.cmid}, request {request.base.cmid}",
        ),
        Check(
            "client_time_ok",
            base.client_time == request.base.client_time,
            "error",
            f"response ClientTime {base.client_time}, request {request.base.client_time}",
        ),
        _pid_check(base),
    ]


def _size_check(major: int, response: bytes, base: ResponseBase | None) -> Check:
    if base is None:
        return Check("size_ok", False, "warning", "response could not be decoded")
    expected = expected_response_size(major, len(base.pid_bytes))
    return Check("size_ok", len(response) == expected, "warning", f"{len(response)} bytes, expected {expected}")


def _verify_v4(request: OpenedRequest, response: bytes) -> VerifiedResponse:
    try:
        msg: ResponseV4 | None = decode_response_v4(response)
    except DecodeError as exc:
        msg, why = None, str(exc)
    checks: list[Check]
    if msg is None:
        checks = [Check("decode_ok", False, "error", why), Check("mac_ok", False, "error", "no MAC to check")]
    else:
        body = response[:-MAC_SIZE]
        mac_ok = v4_mac(body) == msg.mac
        checks = [Check("decode_ok", True), Check("mac_ok", mac_ok, "error", "" if mac_ok else "V4-MAC mismatch")]
    base = None if msg is None else msg.base
    checks += _echo_checks(request, base, None)
    checks.append(_size_check(4, response, base))
    version = msg.base.version if msg is not None else _safe_version(response)
    return VerifiedResponse(version=version, message=msg, checks=tuple(checks))


def _safe_version(data: bytes) -> Version | None:
    try:
        return decode_version(data)
    except DecodeError:
        return None


def _verify_encrypted(request: OpenedRequest, response: bytes) -> VerifiedResponse:
    major = request.version.major
    assert request.iv is not None and request.decrypted_iv is not None
    checks: list[Check] = []
    try:
        env = decode_encrypted_message(response)
    except DecodeError as exc:
        env = None
        checks.append(Check("decode_ok", False, "error", str(exc)))
    plain = b""
    if env is not None:
        if not env.ciphertext or len(env.ciphertext) % BLOCK_SIZE:
            checks.append(
                Check(
                    "decrypt_success", False, "error", f"ciphertext of {len(env.ciphertext)} bytes is not whole blocks"
                )
            )
        else:
            plain = cbc_decrypt(major, env.iv, env.ciphertext)
            try:
                pkcs7_unpad(plain)
                checks.append(Check("decrypt_success", True))
            except PaddingError as exc:
                checks.append(Check("decrypt_success", False, "error", str(exc)))
    else:
        checks.append(Check("decrypt_success", False, "error", "no ciphertext"))
    msg: ResponseV5Plain | ResponseV6Plain | None = None
    if plain:
        try:
            msg = decode_response_v5_plain(plain) if major == 5 else decode_response_v6_plain(plain)
            checks.insert(0, Check("decode_ok", True))
        except DecodeError as exc:
            checks.insert(0, Check("decode_ok", False, "error", str(exc)))
    elif env is not None:
        checks.insert(0, Check("decode_ok", False, "error", "nothing could be decrypted"))

    undecoded = "response could not be decoded"
    if msg is None:
        checks.append(Check("hash_ok", False, "error", undecoded))
    else:
        r = xor_block(msg.random_xored_ivs, request.decrypted_iv)
        ok = hashlib.sha256(r).digest() == msg.hash
        checks.append(Check("hash_ok", ok, "error", "" if ok else "Hash != SHA-256(RandomXoredIVs xor D(request IV))"))

    if major == 5:
        if env is None:
            checks.append(Check("ivs_ok", False, "error", undecoded))
        else:
            ok = env.iv == request.iv
            checks.append(Check("ivs_ok", ok, "error", "" if ok else "v5 response IV differs from the request IV"))
    else:
        assert msg is None or isinstance(msg, ResponseV6Plain)
        if msg is None:
            checks.append(Check("ivs_ok", False, "error", undecoded))
        else:
            ok = msg.xored_ivs == request.decrypted_iv
            checks.append(Check("ivs_ok", ok, "error", "" if ok else "XoredIVs != D(request IV)"))
        if env is None:
            checks.append(Check("iv_not_suspicious", False, "warning", undecoded))
        else:
            ok = env.iv != request.iv
            checks.append(
                Check(
                    "iv_not_suspicious",
                    ok,
                    "warning",
                    "" if ok else "response IV equals the request IV (emulator sign)",
                )
            )
        checks.append(_hmac_check(env.iv if env is not None else None, plain, msg))

    base = None if msg is None else msg.base
    checks += _echo_checks(request, base, None if env is None else env.version)
    checks.append(_size_check(major, response, base))
    return VerifiedResponse(
        version=None if env is None else env.version,
        message=msg,
        checks=tuple(checks),
        iv=None if env is None else env.iv,
    )


def _hmac_check(iv: bytes | None, plain: bytes, msg: ResponseV5Plain | ResponseV6Plain | None) -> Check:
    """HMAC recomputed with the response's ClientTime, slot offsets -1, 0, +1 (docs/kms-wire-protocol.md, Q5)."""
    if iv is None or not isinstance(msg, ResponseV6Plain):
        return Check("hmac_ok", False, "error", "response could not be decoded")
    signed_len = len(plain) - len(msg.padding) - len(msg.hmac)
    message = decrypt_block(6, iv) + plain[:signed_len]
    for offset in HMAC_SLOT_OFFSETS:
        if v6_hmac(v6_hmac_key(msg.base.client_time, offset), message) == msg.hmac:
            return Check("hmac_ok", True, "error", f"slot offset {offset:+d}")
    return Check("hmac_ok", False, "error", "HMAC matches no time slot (-1, 0, +1)")


def verify_response(request: bytes | OpenedRequest, response: bytes) -> VerifiedResponse:
    """Run every check vlmcs runs on a response to ``request`` (docs/kms-wire-protocol.md).

    Never raises on bad response bytes: undecodable responses give failed checks. Checks run, by
    version: v4 ``decode_ok``, ``mac_ok``; v5/v6 ``decode_ok``, ``decrypt_success``, ``hash_ok``,
    ``ivs_ok``, and for v6 ``iv_not_suspicious`` (warning) and ``hmac_ok``; every version
    ``version_ok``, ``cmid_ok``, ``client_time_ok``, ``pid_length_ok`` and ``size_ok`` (warning).

    Raises:
        KmsError: ``request`` is bytes that :func:`open_request` refuses.
    """
    opened = request if isinstance(request, OpenedRequest) else open_request(request)
    response = bytes(response)
    if opened.version.major == 4:
        return _verify_v4(opened, response)
    return _verify_encrypted(opened, response)


def open_response(request: bytes | OpenedRequest, response: bytes) -> ResponseV4 | ResponseV5Plain | ResponseV6Plain:
    """The decoded (for v5/v6 decrypted) response to ``request``, for display (``emu decode``).

    Raises:
        KmsError: ``request`` is bytes that :func:`open_request` refuses.
        VerificationError: the response cannot be decoded; ``failed`` names the failed checks.
    """
    verified = verify_response(request, response)
    if verified.message is None:
        raise VerificationError(
            f"response could not be decoded: {verified.check('decode_ok').detail}", failed=verified.failed
        )
    return verified.message
