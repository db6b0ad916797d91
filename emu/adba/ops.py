"""The four LDAP operations ADBA tools and clients need, as an interface with two implementations:
:class:`SessionOps` (in process, over emu's directory: tests, simulations) and the socket client in
``emu.net.ldap_client`` (any LDAP server: emu's, Samba)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from emu.adba.session import LdapSession
from emu.ldap import messages as m

__all__ = ["LdapOps", "SessionOps"]


class LdapOps(Protocol):
    def bind(self, name: str, password: str) -> m.LdapResult: ...

    def search(self, req: m.SearchRequest) -> tuple[list[m.SearchResultEntry], m.LdapResult]: ...

    def add(self, dn: str, attrs: Sequence[tuple[str, Sequence[bytes]]]) -> m.LdapResult: ...

    def delete(self, dn: str) -> m.LdapResult: ...


class SessionOps:
    """LdapOps over an in-process :class:`LdapSession` (no sockets; every message still goes through the
    BER codec, so what is tested is what a server would send)."""

    def __init__(self, session: LdapSession) -> None:
        self.session = session
        self._next = 1

    def _call(self, op: m.Operation) -> list[m.LdapMessage]:
        msg = m.LdapMessage(self._next, op)
        self._next += 1
        reply = self.session.handle(m.decode_message(m.encode_message(msg)))
        return [m.decode_message(m.encode_message(r)) for r in reply.responses]

    @staticmethod
    def _result(msgs: list[m.LdapMessage]) -> m.LdapResult:
        last = msgs[-1].op
        assert isinstance(last, m.BindResponse | m.SimpleResponse | m.SearchResultDone)
        return last.result

    def bind(self, name: str, password: str) -> m.LdapResult:
        return self._result(self._call(m.BindRequest(3, name, password.encode())))

    def search(self, req: m.SearchRequest) -> tuple[list[m.SearchResultEntry], m.LdapResult]:
        msgs = self._call(req)
        return [x.op for x in msgs if isinstance(x.op, m.SearchResultEntry)], self._result(msgs)

    def add(self, dn: str, attrs: Sequence[tuple[str, Sequence[bytes]]]) -> m.LdapResult:
        return self._result(self._call(m.AddRequest(dn, tuple((a, tuple(v)) for a, v in attrs))))

    def delete(self, dn: str) -> m.LdapResult:
        return self._result(self._call(m.DelRequest(dn)))
