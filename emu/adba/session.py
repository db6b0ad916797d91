"""One LDAP connection to emu's directory, sans-IO: decoded requests in, responses and changes out.

Binds (docs/adba.md "Binds"): anonymous and simple. A SASL bind gets authMethodNotSupported, as a
directory without SASL mechanisms answers; in "require signing" mode a simple bind on plain LDAP gets
strongerAuthRequired, as a DC that requires signing answers. Without a bind, only the rootDSE is readable
(operationsError otherwise, as AD answers anonymous reads). The ADBA container is readable by every
authenticated account (the msSPP classes' default security descriptor grants Authenticated Users read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from emu.adba import schema as sc
from emu.adba.directory import Change, Directory, DirectoryError, matches, select
from emu.adba.dn import DnError, normalise_dn
from emu.adba.forest import Forest
from emu.ldap import messages as m

__all__ = ["NOTICE_OF_DISCONNECTION", "Dsa", "LdapSession", "Reply"]

R = sc.ResultCode
NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
_BIND_FIRST = "In order to perform this operation a successful bind must be completed on the connection."


@dataclass
class Dsa:
    """The directory service: the tree, the forest's names, the accounts that may bind, the signing mode."""

    directory: Directory
    forest: Forest
    wall: Callable[[], float]
    passwords: dict[str, str] = field(default_factory=dict)  # normalised DN -> password
    require_signing: bool = False

    def account(self, name: str) -> str | None:
        """The normalised DN of the account called ``name`` (DN, UPN ``user@domain`` or ``DOMAIN\\user``)."""
        try:
            key = normalise_dn(name)
        except DnError:
            key = ""
        if key in self.passwords:
            return key
        user = name.split("\\", 1)[1] if "\\" in name else name.split("@", 1)[0] if "@" in name else name
        for dn_key in self.passwords:
            entry = self.directory.entries.get(dn_key)
            if entry is not None and (entry.first_text("sAMAccountName") or "").lower() == user.lower():
                return dn_key
        return None


@dataclass
class Reply:
    """What the I/O layer does next: commit ``changes``, then send ``responses``; close if ``close``."""

    responses: list[m.LdapMessage] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    close: bool = False
    log: str = ""


class LdapSession:
    """State of one connection (who is bound)."""

    def __init__(self, dsa: Dsa) -> None:
        self.dsa = dsa
        self.bound_dn: str | None = None

    def handle(self, msg: m.LdapMessage) -> Reply:
        """Answer one request."""
        op = msg.op
        mid = msg.message_id
        if isinstance(op, m.UnbindRequest):
            return Reply(close=True, log="unbind")
        if isinstance(op, m.AbandonRequest):
            return Reply(log=f"abandon {op.message_id}")
        if isinstance(op, m.BindRequest):
            code, text = self._bind(op)
            return Reply(
                [m.LdapMessage(mid, m.BindResponse(m.LdapResult(code, "", text)))], log=f"bind {op.name!r} -> {code}"
            )
        if isinstance(op, m.SearchRequest):
            return self._search(mid, op)
        if isinstance(op, m.ExtendedRequest):
            result = m.LdapResult(R.PROTOCOL_ERROR, "", f"extended operation {op.name} is not supported")
            return Reply([m.LdapMessage(mid, m.ExtendedResponse(result))], log=f"extended {op.name}")
        kind = {
            m.AddRequest: "addResponse",
            m.DelRequest: "delResponse",
            m.ModifyRequest: "modifyResponse",
            m.ModifyDNRequest: "modDNResponse",
            m.CompareRequest: "compareResponse",
        }.get(type(op))
        if kind is None:  # a response type sent to the server
            notice = m.ExtendedResponse(
                m.LdapResult(R.PROTOCOL_ERROR, "", f"{msg.op_name} is not a request"), NOTICE_OF_DISCONNECTION
            )
            return Reply([m.LdapMessage(0, notice)], close=True, log=f"protocol error: {msg.op_name} from client")
        if self.bound_dn is None:
            result = m.LdapResult(R.OPERATIONS_ERROR, "", _BIND_FIRST)
            return Reply([m.LdapMessage(mid, m.SimpleResponse(kind, result))], log=f"{msg.op_name} refused: not bound")
        changes: list[Change] = []
        try:
            if isinstance(op, m.AddRequest):
                changes.append(self.dsa.directory.add(op.dn, op.attributes))
            elif isinstance(op, m.DelRequest):
                changes.append(self.dsa.directory.delete(op.dn))
            elif isinstance(op, m.ModifyRequest):
                changes.append(self.dsa.directory.modify(op.dn, op.changes))
            elif isinstance(op, m.CompareRequest):
                entry = self.dsa.directory.get(op.dn)
                if entry is None:
                    raise DirectoryError(R.NO_SUCH_OBJECT, f"{op.dn} does not exist")
                hit = matches(entry, m.Equality(op.attribute, op.value))
                result = m.LdapResult(R.COMPARE_TRUE if hit else R.COMPARE_FALSE)
                return Reply([m.LdapMessage(mid, m.SimpleResponse(kind, result))], log="compare")
            else:
                raise DirectoryError(R.UNWILLING_TO_PERFORM, "renaming entries is not supported by emu's directory")
            result = m.LdapResult(R.SUCCESS)
        except DirectoryError as exc:
            result = m.LdapResult(exc.code, exc.matched_dn, str(exc))
        return Reply(
            [m.LdapMessage(mid, m.SimpleResponse(kind, result))],
            changes,
            log=f"{msg.op_name} {getattr(op, 'dn', '')} -> {result.code}",
        )

    def _bind(self, op: m.BindRequest) -> tuple[int, str]:
        self.bound_dn = None
        if op.version != 3:
            return R.PROTOCOL_ERROR, f"LDAP version {op.version} is not supported"
        if op.sasl_mechanism is not None:
            if self.dsa.require_signing:
                return R.STRONGER_AUTH_REQUIRED, "SASL with signing (Kerberos) is required; emu offers none"
            return R.AUTH_METHOD_NOT_SUPPORTED, f"SASL mechanism {op.sasl_mechanism} is not supported"
        if not op.name and not op.password:
            return R.SUCCESS, ""  # anonymous
        if self.dsa.require_signing:
            return R.STRONGER_AUTH_REQUIRED, "the server requires signing: simple binds are refused"
        if not op.password:
            return R.UNWILLING_TO_PERFORM, "unauthenticated bind (name without password) refused"
        key = self.dsa.account(op.name)
        if key is None or self.dsa.passwords[key].encode() != op.password:
            return R.INVALID_CREDENTIALS, "invalid credentials"
        self.bound_dn = key
        return R.SUCCESS, ""

    def _search(self, mid: int, op: m.SearchRequest) -> Reply:
        out: list[m.LdapMessage] = []
        if not op.base.strip() and op.scope == 0:
            attrs = self.dsa.forest.root_dse(self.dsa.wall(), require_signing=self.dsa.require_signing)
            attrs = tuple((a, v) for a, v in attrs if v)
            entry = select("", attrs, op.attributes, op.types_only)
            probe = _Probe(attrs)
            if matches(probe, op.filter):  # type: ignore[arg-type]
                out.append(m.LdapMessage(mid, entry))
            out.append(m.LdapMessage(mid, m.SearchResultDone(m.LdapResult(R.SUCCESS))))
            return Reply(out, log="search rootDSE")
        if self.bound_dn is None:
            done = m.SearchResultDone(m.LdapResult(R.OPERATIONS_ERROR, "", _BIND_FIRST))
            return Reply([m.LdapMessage(mid, done)], log=f"search {op.base!r} refused: not bound")
        try:
            entries, code, text = self.dsa.directory.search(op)
            result = m.LdapResult(code, "", text)
        except DirectoryError as exc:
            entries, result = [], m.LdapResult(exc.code, exc.matched_dn, str(exc))
        out = [m.LdapMessage(mid, e) for e in entries]
        out.append(m.LdapMessage(mid, m.SearchResultDone(result)))
        return Reply(out, log=f"search {op.base!r} scope {op.scope} -> {len(entries)} entries, {result.code}")


class _Probe:
    """Filter evaluation over the computed rootDSE (duck-types Entry.values)."""

    def __init__(self, attrs: tuple[tuple[str, tuple[bytes, ...]], ...]) -> None:
        self._attrs = {a.lower(): list(v) for a, v in attrs}
        self._attrs.setdefault("objectclass", [b"top"])

    def values(self, name: str) -> list[bytes]:
        return self._attrs.get(name.lower(), [])


def make_dsa(
    domain: str,
    *,
    wall: Callable[[], float],
    new_guid: Callable[[], bytes],
    admin_password: str,
    schema_2012: bool = True,
    forest_prep: bool = True,
    require_signing: bool = False,
) -> Dsa:
    """A directory service for a fresh lab forest ``domain`` with CN=Administrator's password set."""
    from emu.adba.forest import build_forest

    forest = Forest(domain.lower().strip("."))
    directory = build_forest(forest, wall=wall, new_guid=new_guid, schema_2012=schema_2012, forest_prep=forest_prep)
    return Dsa(directory, forest, wall, {normalise_dn(forest.admin_dn): admin_password}, require_signing)
