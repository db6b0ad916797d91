"""Every HRESULT and licensing error code emu sends, decodes or explains: one table, one home.

Each entry has the code, its symbolic name (the ``slerror.h`` symbol where the Windows SDK has one, the
Win32 ``ERROR_*``/``DNS_*`` name otherwise), a one-line meaning, the activation paths it belongs to, the
situations that cause it and what to check. The host, the client, decode, ``emu explain`` and every later
tool take names and texts from here; nothing else in emu keeps a copy.

The 0xC004Cxxx codes are the activation service's ("clearing house") errors; 0xC004Fxxx are raised by the
client's licensing service; 0x8007xxxx are Win32 errors wrapped as HRESULTs (``0x8007`` + the Win32 code).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ERROR_CODES",
    "E_CLIENT_LIST_FULL",
    "E_INVALID_DATA",
    "E_INVALID_TIMESTAMP",
    "E_KMS_ID_MISMATCH",
    "E_KMS_NOT_ACTIVATED",
    "E_KMS_NOT_REACHABLE",
    "E_NOT_ENOUGH_COUNT",
    "S_OK",
    "ErrorCode",
    "describe",
    "lookup",
    "lookup_name",
    "symbol_of",
]


@dataclass(frozen=True)
class ErrorCode:
    """One code: what it is called, what it means, where it comes from and what to do about it."""

    code: int
    symbol: str
    meaning: str
    paths: tuple[str, ...]
    causes: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()

    @property
    def hex(self) -> str:
        return f"0x{self.code:08X}"


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(";") if part.strip())


def _e(code: int, symbol: str, meaning: str, paths: str, causes: str = "", checks: str = "") -> ErrorCode:
    """One entry; ``paths``, ``causes`` and ``checks`` are ``;``-separated lists."""
    return ErrorCode(code, symbol, meaning, _split(paths), _split(causes), _split(checks))


S_OK = 0x00000000
E_INVALID_DATA = 0x8007000D
E_KMS_ID_MISMATCH = 0xC004F042
E_INVALID_TIMESTAMP = 0xC004F06C
E_NOT_ENOUGH_COUNT = 0xC004F038
E_KMS_NOT_REACHABLE = 0xC004F074
E_KMS_NOT_ACTIVATED = 0xC004F041
E_CLIENT_LIST_FULL = 0xC004D104

#: The table, keyed by code.
ERROR_CODES: dict[int, ErrorCode] = {
    e.code: e
    for e in (
        _e(S_OK, "S_OK", "success: the host activated the request", "KMS"),
        # --- KMS: sent by hosts -------------------------------------------------------------------------
        _e(
            E_INVALID_DATA,
            "ERROR_INVALID_DATA",
            "the host could not accept the request: malformed, a protocol version it does not speak, or a "
            "required client count above 1000",
            "KMS host",
            "the request is shorter than its version's message; the protocol version is not 4.0, 5.0 or 6.0; "
            "RequiredClientCount above 1000",
            "the client's protocol version for this product (emu client activate -v); a middlebox altering the payload",
        ),
        _e(
            E_KMS_ID_MISMATCH,
            "SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH",
            "this KMS host cannot activate this product: its host key does not cover the client's KMS counted ID",
            "KMS host",
            "the host's key group is older than the client (e.g. a Windows Server 2019 host key and a "
            "Windows Server 2022 client); a host on a client OS (Windows 10 key group) asked by a server "
            "edition; the host OS lacks the update Microsoft lists for newer clients (KMS host required "
            "updates); a retail, preview or unknown KMS counted ID; an Office product on a host without that "
            "Office version's host key",
            "which host key group the host has and what it activates (emu explain 'Windows Server 2019'); "
            "which groups activate the product (emu explain PRODUCT); the host OS's updates; whether the "
            "client has a volume (GVLK) edition (emu explain GVLK)",
        ),
        _e(
            E_INVALID_TIMESTAMP,
            "SL_E_VL_INVALID_TIMESTAMP",
            "the client's clock differs from the host's by more than 4 hours",
            "KMS host",
            "a skewed client or host clock; a wrong time zone set as UTC",
            "both clocks (NTP); emu host serve --check-time-skew enforces it",
        ),
        _e(
            E_CLIENT_LIST_FULL,
            "SL_REMAPPING_SP_STATUS_INVALIDARG",
            "invalid argument; vlmcsd sends it when its client list would exceed 671 entries",
            "KMS host (vlmcsd)",
            "a vlmcsd host with -M1 and more than 671 distinct clients",
            "the host implementation; a real host never sends it for this reason",
        ),
        # --- KMS: raised by clients -------------------------------------------------------------------
        _e(
            E_NOT_ENOUGH_COUNT,
            "SL_E_VL_NOT_ENOUGH_COUNT",
            "the KMS host's count is below the product's threshold (25 for client OSes, 5 for servers and Office)",
            "KMS client",
            "too few distinct clients have asked this host within 30 days; clients sharing a CMID (cloned "
            "images without sysprep) count once",
            "the count the host returned (emu client activate -v); emu host status; distinct CMIDs",
        ),
        _e(
            E_KMS_NOT_REACHABLE,
            "SL_E_VL_BINDING_SERVICE_UNAVAILABLE",
            "no KMS host could be contacted",
            "KMS client; ADBA clients that fell back to KMS",
            "no _vlmcs._tcp SRV record or no answer from any host in it; TCP 1688 blocked; the host not running",
            "emu diagnose walks DNS, TCP and RPC step by step; the SRV records (emu dns dump); a firewall",
        ),
        _e(
            0xC004F039,
            "SL_E_VL_BINDING_SERVICE_NOT_ENABLED",
            "the KMS service is not enabled or did not answer",
            "KMS client",
            "the host answered nothing usable",
            "the host's log",
        ),
        _e(
            E_KMS_NOT_ACTIVATED,
            "SL_E_VL_KEY_MANAGEMENT_SERVICE_NOT_ACTIVATED",
            "the KMS host is not activated",
            "KMS client; KMS host",
            "a host whose KMS host key (CSVLK) has not been activated against the activation service",
            "activate the host (emu host serve --csvlk KEY --actsvc URL)",
        ),
        _e(
            0xC004F06B,
            "SL_E_VL_MACHINE_NOT_VIRTUAL_ALLOWED",
            "the KMS host refuses to run as a virtual machine",
            "KMS host",
            "a KMS host in a VM where policy forbids it",
            "the VM flag the client sends (emu decode shows it); the host's virtualisation policy",
        ),
        _e(
            0xC004F035,
            "SL_E_VL_NOT_WINDOWS_SLP",
            "a Windows 7 volume key needs a qualifying OEM BIOS marker",
            "KMS client (Windows 7)",
            "a Windows 7 volume edition installed on a computer without the BIOS marker the licence requires",
            "use a MAK or an upgrade licence on that computer; the KMS host is not at fault",
        ),
        _e(
            0xC004F009,
            "SL_E_GRACE_TIME_EXPIRED",
            "the grace period expired before activation; the system is in notification state",
            "all",
            "no successful activation within the grace period (KMS: 180 days after the last one)",
            "why renewals failed (emu diagnose)",
        ),
        _e(
            0xC004F014,
            "SL_E_PKEY_NOT_INSTALLED",
            "no product key is installed",
            "MAK; KMS client",
            "activation attempted before a key was installed",
            "install a key (emu client mak install)",
        ),
        _e(
            0xC004F015,
            "SL_E_PRODUCT_SKU_NOT_INSTALLED",
            "the licence for this product is not installed",
            "phone; deposit",
            "a confirmation ID deposited for a product the client does not have",
            "the product the ID was acquired for (emu explain PRODUCT shows its SKU ID)",
        ),
        # --- DNS discovery (Win32 DNS errors as HRESULTs) ---------------------------------------------
        _e(
            0x8007232B,
            "DNS_ERROR_RCODE_NAME_ERROR",
            "DNS name does not exist: no _vlmcs._tcp SRV record was found",
            "KMS client discovery",
            "the KMS host never published its SRV record; the client's DNS suffix is not the zone the host "
            "publishes in; the DNS server refused the host's dynamic update",
            "the SRV record (dig SRV _vlmcs._tcp.DOMAIN); the client's search suffixes; the DNS server's update policy",
        ),
        _e(
            0x8007251D,
            "DNS_INFO_NO_RECORDS",
            "no records of the asked type were found for the DNS name",
            "KMS client discovery",
            "the name exists without an SRV record, or the SRV target has no A/AAAA record",
            "dig SRV and A/AAAA for the target",
        ),
        _e(
            0x800706BA,
            "RPC_S_SERVER_UNAVAILABLE",
            "the RPC server is unavailable: nothing listens or the connection was refused",
            "KMS client",
            "the host is down or TCP 1688 is blocked",
            "TCP connect to the host (emu diagnose)",
        ),
        _e(
            0x0000071C,
            "RPC_S_COMM_FAILURE",
            "the connection failed during the exchange",
            "KMS client",
            "the host closed the connection between two requests",
            "the host's idle timeout and connection limit; a middlebox cutting long-lived TCP connections",
        ),
        # --- ADBA ---------------------------------------------------------------------------------------
        _e(
            0xC004F081,
            "SL_E_VL_AD_AO_NOT_FOUND",
            "no Active Directory activation object was found, or it is not valid",
            "ADBA",
            "no object under CN=Activation Objects whose msSPP-KMSIds holds the client's KMS counted ID; an "
            "object whose licence fails verification; a named object that does not exist",
            "emu adba list; the object's KMS IDs; whether the forest was activated for this product group",
        ),
        _e(
            0xC004F082,
            "SL_E_VL_AD_AO_NAME_TOO_LONG",
            "the activation object's name is longer than 40 characters",
            "ADBA creation",
        ),
        _e(
            0xC004F083,
            "SL_E_VL_AD_SCHEMA_VERSION_NOT_SUPPORTED",
            "the directory's schema does not support Active Directory-based activation",
            "ADBA creation; ADBA listing",
            "the msSPP schema or the Activation Objects container is missing (forest not prepared for "
            "Windows Server 2012 or later)",
            "the schema and CN=Activation Objects,CN=Microsoft SPP,CN=Services in the configuration partition",
        ),
        _e(
            0x80072030,
            "ERROR_DS_NO_SUCH_OBJECT",
            "there is no such object on the directory server (LDAP noSuchObject)",
            "ADBA listing; ADBA deletion",
            "the container or the named DN does not exist",
        ),
        _e(
            0x80072020,
            "ERROR_DS_OPERATIONS_ERROR",
            "the directory refused the operation (an LDAP error other than the ones named here)",
            "ADBA creation",
            "a schema violation (range, mandatory attribute, parent), missing rights, no bind",
            "the LDAP result code and diagnostic message in the error text",
        ),
        _e(
            0x80072032,
            "ERROR_DS_INVALID_DN_SYNTAX",
            "the distinguished name has an invalid syntax",
            "ADBA deletion",
        ),
        _e(
            0x80071392,
            "ERROR_OBJECT_ALREADY_EXISTS",
            "the object already exists",
            "ADBA creation",
            "an activation object with this name is already in the container",
            "emu adba list; pick another --name or delete the old object",
        ),
        # --- MAK, CSVLK and the activation service ------------------------------------------------------
        _e(
            0xC004B100,
            "SL_E_SRV_GENERAL_ERROR",
            "the activation server could not activate the product",
            "MAK online",
            "the key is known but cannot activate this product",
        ),
        _e(
            0xC004C001,
            "SL_E_CHPA_PRODUCT_KEY_OUT_OF_RANGE",
            "the activation server reported the product key as invalid",
            "MAK online; CSVLK online",
            "a key the activation service does not know",
        ),
        _e(
            0xC004C003,
            "SL_E_CHPA_PRODUCT_KEY_BLOCKED",
            "the activation server reported the product key as blocked",
            "MAK online; CSVLK online; phone",
            "the key was blocked (emu actsvc keys block)",
        ),
        _e(
            0xC004C004,
            "SL_E_CHPA_INVALID_PRODUCT_KEY",
            "the activation server reported the product key as invalid",
            "online",
            "a malformed or unregistered key",
        ),
        _e(
            0xC004C008,
            "SL_E_CHPA_MAXIMUM_UNLOCK_EXCEEDED",
            "the key has exceeded its unlock limit",
            "CSVLK host activation; ADBA forest activation",
            "a KMS host key used on a seventh host, or an eleventh activation on one host (six hosts, each "
            "activated once and reactivated up to nine times)",
            "the key's activations (emu actsvc keys list)",
        ),
        _e(
            0xC004C020,
            "SL_E_CHPA_DMAK_LIMIT_EXCEEDED",
            "the Multiple Activation Key has exceeded its limit",
            "MAK online; MAK proxy; phone",
            "every activation the MAK allows has been used",
            "the remaining count (emu vamt remaining, emu actsvc keys list)",
        ),
        _e(
            0xC004C021,
            "SL_E_CHPA_DMAK_EXTENSION_LIMIT_EXCEEDED",
            "the Multiple Activation Key extension limit has been exceeded",
            "MAK",
        ),
        _e(
            0xC004C4A2,
            "SL_E_VALIDATION_BLOCKED_PRODUCT_KEY",
            "genuine validation: the product key is blocked",
            "validation",
        ),
        _e(
            0xC004F00F,
            "SL_E_HWID_CHANGED",
            "the hardware changed beyond the tolerance of the activation",
            "MAK; KMS client; KMS host",
            "a hardware change after activation; a MAK-activated machine needs to reactivate",
        ),
        _e(
            0xC004F02C,
            "SL_E_INVALID_OFFLINE_DATA_FORMAT",
            "the offline (phone) activation data is in the wrong format",
            "phone",
            "a confirmation ID of the wrong length or with characters other than digits",
        ),
        _e(
            0xC004F04D,
            "SL_E_CIDIID_INVALID_CHECK_DIGITS",
            "the installation ID or confirmation ID is not valid: a check digit is wrong",
            "phone; proxy",
            "a digit mistyped while reading the ID over the phone",
            "re-enter the ID group by group",
        ),
        _e(
            0xC004F050,
            "SL_E_INVALID_PRODUCT_KEY",
            "the product key is not valid",
            "key installation",
            "a key with a wrong format or check character, or one emu's key registry does not know",
        ),
        _e(
            0xC004F051,
            "SL_E_BLOCKED_PRODUCT_KEY",
            "the product key is blocked",
            "MAK; KMS",
        ),
        _e(
            0xC004F07D,
            "SL_E_INVALID_PRODUCT_KEY_TYPE",
            "the product key cannot be used for this type of activation",
            "ADBA creation; MAK",
            "a MAK or GVLK given where a KMS host key is needed, or the reverse",
        ),
        _e(
            0xC004F07E,
            "SL_E_CIDIID_MISMATCHED_PKEY",
            "the installation ID or confirmation ID does not match the product key",
            "phone; proxy; ADBA phone",
            "a confirmation ID acquired for another key",
        ),
        _e(
            0xC004F07F,
            "SL_E_CIDIID_NOT_BOUND",
            "the installation ID or confirmation ID is not bound to this environment",
            "phone; proxy",
            "a confirmation ID acquired for another machine or forest",
        ),
        _e(
            0xC004D302,
            "SL_REMAPPING_SP_PUB_TS_REARMED",
            "the trusted store was rearmed; a restart is pending",
            "rearm",
        ),
        _e(
            0xC004D307,
            "SL_REMAPPING_SP_PUB_TS_MAX_REARM_REACHED",
            "the maximum allowed number of rearms has been exceeded",
            "rearm",
            "the rearm counter is used up (1001, or 3 for the Windows 7 generation)",
        ),
    )
}

_BY_SYMBOL = {e.symbol.upper(): e for e in ERROR_CODES.values()}


def lookup(code: int) -> ErrorCode | None:
    """The entry for ``code`` (an unsigned 32-bit value), or None for a code emu does not know."""
    return ERROR_CODES.get(code & 0xFFFFFFFF)


def lookup_name(name: str) -> ErrorCode | None:
    """The entry whose symbol is ``name`` (case-insensitive), or None."""
    return _BY_SYMBOL.get(name.strip().upper())


def symbol_of(code: int) -> str | None:
    """The symbolic name of ``code``, or None."""
    entry = lookup(code)
    return entry.symbol if entry else None


def describe(code: int) -> str:
    """``0xC004F042 (SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH)``, or the bare hex for an unknown code."""
    entry = lookup(code)
    return f"0x{code & 0xFFFFFFFF:08X}" + (f" ({entry.symbol})" if entry else "")
