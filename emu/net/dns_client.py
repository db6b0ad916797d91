"""A small async DNS client: queries and TSIG-signed updates, UDP with TCP fallback on TC.

Messages are built with dnslib (or by :mod:`emu.dns.publish`) and signed with emu's own TSIG
(:mod:`emu.dns.tsig`), so the same code talks to emu's server and to BIND ``named``.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from dnslib import DNSHeader, DNSQuestion, DNSRecord

from emu.clock import Clock, WallClock
from emu.dns.tsig import DEFAULT_FUDGE, TsigKey, sign_request, verify_response
from emu.errors import DecodeError, DnsUpdateError, ScenarioError
from emu.rng import Rng, system_rng
from emu.wire.dns import DnsMessage, Opcode, Rcode, decode_message

__all__ = ["DEFAULT_TIMEOUT", "exchange", "query", "send_update"]

#: Seconds to wait for one answer before giving up (per try).
DEFAULT_TIMEOUT = 2.0
#: UDP tries before giving up (RFC 1123 6.1.3.3 asks for retransmission with back-off).
UDP_TRIES = 2


class _OneAnswer(asyncio.DatagramProtocol):
    def __init__(self, query_id: int) -> None:
        self.query_id = query_id
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) >= 2 and struct.unpack_from("!H", data)[0] == self.query_id and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _udp(wire: bytes, server: tuple[str, int], timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    query_id = struct.unpack_from("!H", wire)[0]
    transport, protocol = await loop.create_datagram_endpoint(lambda: _OneAnswer(query_id), remote_addr=server)
    try:
        for attempt in range(UDP_TRIES):
            transport.sendto(wire)
            try:
                return await asyncio.wait_for(asyncio.shield(protocol.answer), timeout * (attempt + 1) / UDP_TRIES)
            except TimeoutError:
                continue
            except OSError as exc:  # ICMP port unreachable and the like
                raise ScenarioError(
                    f"no answer from {server[0]} port {server[1]} over UDP: {exc.strerror or exc}"
                ) from exc
        raise ScenarioError(f"no answer from {server[0]} port {server[1]} over UDP within {timeout:.1f} s")
    finally:
        transport.close()


async def _tcp(wire: bytes, server: tuple[str, int], timeout: float) -> bytes:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*server), timeout)
    except (TimeoutError, OSError) as exc:
        raise ScenarioError(f"cannot connect to {server[0]} port {server[1]} over TCP: {exc}") from exc
    try:
        writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
        return await asyncio.wait_for(reader.readexactly(length), timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        raise ScenarioError(f"no answer from {server[0]} port {server[1]} over TCP: {exc!r}") from exc
    finally:
        writer.close()


async def exchange(
    wire: bytes, server: tuple[str, int], *, timeout: float = DEFAULT_TIMEOUT, tcp: bool = False
) -> DnsMessage:
    """Send one message and return the decoded answer; over UDP, retry over TCP when TC is set.

    Raises:
        ScenarioError: no answer (timeout, connection refused).
        DecodeError: the answer cannot be decoded.
    """
    if not tcp:
        raw = await _udp(wire, server, timeout)
        answer = decode_message(raw)
        if not answer.header.flags & 0x0200:
            return answer
    return decode_message(await _tcp(wire, server, timeout))


async def query(
    name: str,
    rtype: int | str,
    server: tuple[str, int],
    *,
    rng: Rng | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tcp: bool = False,
) -> DnsMessage:
    """Ask one question (RD clear: we ask authoritative servers).

    Raises:
        ScenarioError: no answer. DecodeError: an undecodable answer.
    """
    rng = rng or system_rng()
    record = DNSRecord(
        DNSHeader(id=rng.randint(0, 0xFFFF), bitmap=0),
        q=DNSQuestion(name, rtype if isinstance(rtype, int) else _qtype(rtype)),
    )
    return await exchange(bytes(record.pack()), server, timeout=timeout, tcp=tcp)


def _qtype(text: str) -> int:
    from dnslib import QTYPE

    return int(getattr(QTYPE, text.upper()))


def tsig_fudge(clock: Clock) -> int:
    """The TSIG fudge to sign with: the standard 300 s, or on a lab's scaled clock (emu.clock.ScaledClock) the
    virtual time of half a real second (at most 65535 s, the field's limit), because a few milliseconds of
    real latency are minutes of virtual time there (emu-defined, docs/scenarios.md)."""
    from emu.clock import ScaledClock

    if isinstance(clock, ScaledClock):
        return min(0xFFFF, max(DEFAULT_FUDGE, int(clock.scale * 0.5)))
    return DEFAULT_FUDGE


async def send_update(
    wire: bytes,
    server: tuple[str, int],
    *,
    key: TsigKey | None = None,
    clock: Clock | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tcp: bool = False,
) -> DnsMessage:
    """Send an UPDATE (signed with ``key`` if given), check the signed answer, raise on failure.

    Raises:
        DnsUpdateError: the server answered another rcode than NOERROR (``wire_code`` is it), or
            the answer's TSIG is missing or wrong.
        ScenarioError: no answer.
    """
    clock = clock or WallClock()
    request_mac = b""
    if key is not None:
        wire, request_mac = sign_request(wire, key, int(clock.wall()), tsig_fudge(clock))
    try:
        answer = await exchange(wire, server, timeout=timeout, tcp=tcp)
    except DecodeError as exc:
        raise DnsUpdateError(f"undecodable answer from {server[0]}: {exc}", wire_code=Rcode.FORMERR) from exc
    rcode = answer.header.flags & 0xF
    if answer.header.opcode != Opcode.UPDATE or answer.header.id != struct.unpack_from("!H", wire)[0]:
        raise DnsUpdateError("the answer does not match the update", wire_code=Rcode.FORMERR)
    if key is not None and (answer.tsig is not None or rcode == Rcode.NOERROR):
        verify_response(answer, key, request_mac, int(clock.wall()))
    if rcode != Rcode.NOERROR:
        raise DnsUpdateError(f"{server[0]} refused the update: {_rcode_name(rcode)}", wire_code=rcode)
    return answer


def _rcode_name(code: int) -> str:
    try:
        return Rcode(code).name
    except ValueError:
        return str(code)


async def find_zone(
    name: str, server: tuple[str, int], *, rng: Rng | None = None, timeout: float = DEFAULT_TIMEOUT
) -> str:
    """The zone holding ``name``: the owner of the SOA in the answer or authority of an SOA
    query, as nsupdate and Windows clients find it (docs/dns.md).

    Raises:
        DnsUpdateError: the server gave no SOA (REFUSED: it serves no zone holding the name).
        ScenarioError: no answer.
    """
    answer = await query(name, "SOA", server, rng=rng, timeout=timeout)
    for rr in answer.answers + answer.authority:
        if rr.rtype == 6:
            return str(rr.rname).lower()
    raise DnsUpdateError(
        f"{server[0]} port {server[1]} has no zone for {name} (rcode {answer.header.flags & 0xF})",
        wire_code=answer.header.flags & 0xF,
    )


__all__.append("find_zone")
