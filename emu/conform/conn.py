"""A recorded TCP connection for probes: write bytes, read whole DCE/RPC PDUs, notice a close.

Reading is by frag_length; bytes that cannot start a PDU (not version 5.0) are skipped and kept in
:attr:`Conn.stray`, so one malformed answer does not spoil the probe's later reads, and a judge
can still see them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from emu.conform.model import ProbeFailed
from emu.conform.recorder import Recorder
from emu.wire.rpc import HEADER_LENGTH


class Conn:
    """One TCP connection to the target, every byte noted in the recorder."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, recorder: Recorder, number: int):
        self.reader, self.writer, self.recorder, self.number = reader, writer, recorder, number
        self.buffer = bytearray()
        self.stray = bytearray()
        self.eof = False

    @classmethod
    async def open(cls, ctx: Any) -> Conn:
        host, port = ctx.address
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), ctx.timeout)
        except (OSError, TimeoutError) as exc:
            raise ProbeFailed(f"cannot connect to {host}:{port}: {exc}") from exc
        sock = writer.get_extra_info("sockname")
        number = ctx.recorder.open((sock[0], sock[1]), (host, port))
        return cls(reader, writer, ctx.recorder, number)

    async def send(self, data: bytes) -> None:
        self.recorder.note(self.number, True, data)
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (OSError, RuntimeError):
            self.eof = True

    async def _fill(self, timeout: float) -> bool:
        """Read once more into the buffer; False on timeout or end of stream."""
        if self.eof:
            return False
        try:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
        except TimeoutError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
            self.recorder.closed(self.number, by_client=False)
            return False
        self.recorder.note(self.number, False, chunk)
        self.buffer += chunk
        return True

    async def read_pdu(self, timeout: float) -> bytes | None:
        """The next whole PDU, or None when the peer closed or stayed silent for ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while self.buffer and not (self.buffer[0] == 5 and (len(self.buffer) < 2 or self.buffer[1] <= 1)):
                self.stray.append(self.buffer.pop(0))
            if len(self.buffer) >= HEADER_LENGTH:
                frag = self.buffer[8] | self.buffer[9] << 8
                if frag < HEADER_LENGTH:
                    self.stray += self.buffer
                    self.buffer.clear()
                elif len(self.buffer) >= frag:
                    pdu = bytes(self.buffer[:frag])
                    del self.buffer[:frag]
                    return pdu
            left = deadline - loop.time()
            if left <= 0 or not await self._fill(left):
                return None

    async def linger(self, timeout: float) -> bytes:
        """Whatever else arrives within ``timeout`` (extra bytes after an answer)."""
        await self._fill(timeout)
        return bytes(self.buffer)

    async def closed_within(self, timeout: float) -> bool:
        """Whether the peer closes the connection within ``timeout`` (data read meanwhile is kept)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.eof:
            left = deadline - loop.time()
            if left <= 0:
                return False
            await self._fill(left)
        return True

    async def close(self) -> None:
        self.recorder.closed(self.number, by_client=True)
        self.writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await self.writer.wait_closed()
