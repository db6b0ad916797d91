"""``emu dc serve``'s network side: an asyncio LDAP server over emu's sans-IO directory session.

Per connection: cut the stream into PDUs, decode, let :class:`emu.adba.session.LdapSession` answer,
commit the changes to the state file, then send. Bad input never stops the server: a PDU that cannot be
decoded gets a Notice of Disconnection (protocolError) and the connection is closed, with a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from emu.adba.session import NOTICE_OF_DISCONNECTION, Dsa, LdapSession, Reply
from emu.errors import DecodeError
from emu.ldap import messages as m
from emu.ldap.framing import PduBuffer
from emu.net.dc_store import DcStore

__all__ = ["LdapServer"]

log = logging.getLogger(__name__)
PROTOCOL_ERROR = 2


class LdapServer:
    """Serves one :class:`Dsa` on TCP addresses; ``store`` (optional) persists every change first."""

    def __init__(
        self,
        dsa: Dsa,
        *,
        listen: list[tuple[str, int]],
        store: DcStore | None = None,
        idle_timeout: float = 120.0,
        on_reply: Callable[[Reply], None] | None = None,
    ) -> None:
        self.dsa = dsa
        self.listen = listen
        self.store = store
        self.idle_timeout = idle_timeout
        self.on_reply = on_reply
        self._servers: list[asyncio.Server] = []
        self.addresses: list[tuple[str, int]] = []
        self.connections = 0
        self.errors = 0

    async def start(self) -> None:
        for host, port in self.listen:
            server = await asyncio.start_server(self._client, host, port)
            self._servers.append(server)
            for sock in server.sockets:
                name = sock.getsockname()
                self.addresses.append((name[0], name[1]))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.connections += 1
        session = LdapSession(self.dsa)
        buffer = PduBuffer()
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                except TimeoutError:
                    log.info("ldap %s: idle for %.0f s, closing", peer, self.idle_timeout)
                    return
                if not data:
                    return
                try:
                    pdus = buffer.feed(data)
                except DecodeError as exc:
                    await self._disconnect(writer, peer, f"bad LDAP framing: {exc}")
                    return
                for pdu in pdus:
                    try:
                        msg = m.decode_message(pdu)
                    except DecodeError as exc:
                        await self._disconnect(writer, peer, f"undecodable LDAP message: {exc}")
                        return
                    reply = session.handle(msg)
                    if reply.changes and self.store is not None:
                        self.store.commit(reply.changes)
                    log.info("ldap %s: #%d %s", peer, msg.message_id, reply.log)
                    if self.on_reply is not None:
                        self.on_reply(reply)
                    writer.write(b"".join(m.encode_message(r) for r in reply.responses))
                    await writer.drain()
                    if reply.close:
                        return
        except (ConnectionError, OSError) as exc:
            log.info("ldap %s: connection lost: %s", peer, exc)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def _disconnect(self, writer: asyncio.StreamWriter, peer: object, why: str) -> None:
        self.errors += 1
        log.warning("ldap %s: %s; sending Notice of Disconnection", peer, why)
        notice = m.ExtendedResponse(m.LdapResult(PROTOCOL_ERROR, "", why[:200]), NOTICE_OF_DISCONNECTION)
        try:
            writer.write(m.encode_message(m.LdapMessage(0, notice)))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
