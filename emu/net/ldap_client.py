"""A small blocking LDAP client over emu's codec: the :class:`emu.adba.ops.LdapOps` of ``emu adba`` and
``emu client activate --adba`` against any LDAP server (emu's directory, Samba). Plain LDAP only:
anonymous or simple binds, no signing (docs/adba.md "Binds")."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from emu.errors import DecodeError, ScenarioError
from emu.ldap import messages as m
from emu.ldap.framing import PduBuffer

__all__ = ["LdapClient"]


class LdapClient:
    """One TCP connection; every call sends a request and waits for its complete answer."""

    def __init__(self, host: str, port: int = 389, *, timeout: float = 5.0) -> None:
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ScenarioError(f"cannot connect to LDAP server {host}:{port}: {exc}") from exc
        self.local_port: int = self._sock.getsockname()[1]
        self._buffer = PduBuffer()
        self._pending: list[bytes] = []
        self._next = 1
        self.sent: list[m.LdapMessage] = []

    def __enter__(self) -> LdapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._sock.sendall(m.encode_message(m.LdapMessage(self._next, m.UnbindRequest())))
        except OSError:
            pass
        self._sock.close()

    def _receive(self) -> m.LdapMessage:
        while not self._pending:
            try:
                data = self._sock.recv(65536)
            except OSError as exc:
                raise ScenarioError(f"LDAP connection failed: {exc}") from exc
            if not data:
                raise ScenarioError("the LDAP server closed the connection")
            self._pending.extend(self._buffer.feed(data))
        try:
            return m.decode_message(self._pending.pop(0))
        except DecodeError as exc:
            raise ScenarioError(f"undecodable answer from the LDAP server: {exc}") from exc

    def call(self, op: m.Operation) -> list[m.LdapMessage]:
        """Send ``op``; return every answer up to the final one (search: entries, then done)."""
        msg = m.LdapMessage(self._next, op)
        self._next += 1
        self.sent.append(msg)
        self._sock.sendall(m.encode_message(msg))
        out: list[m.LdapMessage] = []
        while True:
            answer = self._receive()
            if answer.message_id == 0 and isinstance(answer.op, m.ExtendedResponse):
                raise ScenarioError(f"the LDAP server disconnected: {answer.op.result.message}")
            out.append(answer)
            if not isinstance(answer.op, m.SearchResultEntry | m.SearchResultReference):
                return out

    @staticmethod
    def _result(msgs: list[m.LdapMessage]) -> m.LdapResult:
        last = msgs[-1].op
        if not isinstance(last, m.BindResponse | m.SimpleResponse | m.SearchResultDone | m.ExtendedResponse):
            raise ScenarioError(f"unexpected LDAP answer {msgs[-1].op_name}")
        return last.result

    def bind(self, name: str, password: str) -> m.LdapResult:
        return self._result(self.call(m.BindRequest(3, name, password.encode())))

    def search(self, req: m.SearchRequest) -> tuple[list[m.SearchResultEntry], m.LdapResult]:
        msgs = self.call(req)
        return [x.op for x in msgs if isinstance(x.op, m.SearchResultEntry)], self._result(msgs)

    def add(self, dn: str, attrs: Sequence[tuple[str, Sequence[bytes]]]) -> m.LdapResult:
        return self._result(self.call(m.AddRequest(dn, tuple((a, tuple(v)) for a, v in attrs))))

    def delete(self, dn: str) -> m.LdapResult:
        return self._result(self.call(m.DelRequest(dn)))

    def modify(self, dn: str, changes: Sequence[m.Modification]) -> m.LdapResult:
        return self._result(self.call(m.ModifyRequest(dn, tuple(changes))))
