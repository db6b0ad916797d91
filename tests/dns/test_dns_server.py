"""The asyncio server on loopback high ports: UDP and TCP, IPv4 and IPv6, journal and restart."""

from __future__ import annotations

import asyncio
import socket
import struct

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from dns_testing import ZONE_TEXT, make_update

from emu.dns.zone import load_master_file
from emu.net.dns_server import DnsServer, parse_address

TIMEOUT = 3.0


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def zone():
    return load_master_file(ZONE_TEXT, "kms.test")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_udp_and_tcp_answers_on_ipv4(key):
    async def main():
        async with DnsServer([zone()], listen=[("127.0.0.1", 0)], keys=[key]) as server:
            host, port = server.addresses[0]
            query = dns.message.make_query("_vlmcs._tcp.kms.test.", "SRV")
            udp = await dns.asyncquery.udp(query, host, port=port, timeout=TIMEOUT)
            tcp = await dns.asyncquery.tcp(query, host, port=port, timeout=TIMEOUT)
            return udp, tcp

    udp, tcp = run(main())
    assert udp.answer == tcp.answer and udp.additional


@pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback")
def test_ipv6_loopback_serves_udp_and_tcp(key):
    async def main():
        async with DnsServer([zone()], listen=[("::1", 0), ("127.0.0.1", 0)], keys=[key]) as server:
            host, port = server.addresses[0]
            query = dns.message.make_query("kms1.kms.test.", "AAAA")
            return await dns.asyncquery.udp(query, host, port=port, timeout=TIMEOUT), await dns.asyncquery.tcp(
                query, host, port=port, timeout=TIMEOUT
            )

    udp, tcp = run(main())
    assert str(udp.answer[0][0]) == "fd00::1" and udp.answer == tcp.answer


def test_several_messages_on_one_tcp_connection(key):
    async def main():
        async with DnsServer([zone()], keys=[key]) as server:
            host, port = server.addresses[0]
            reader, writer = await asyncio.open_connection(host, port)
            queries = [dns.message.make_query("kms1.kms.test.", t) for t in ("A", "AAAA", "TXT")]
            for query in queries:  # pipelined: all sent before any answer is read
                wire = query.to_wire()
                writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            answers = []
            for _ in queries:
                length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), TIMEOUT))[0]
                answers.append(dns.message.from_wire(await reader.readexactly(length)))
            writer.close()
            return queries, answers

    queries, answers = run(main())
    assert [a.id for a in answers] == [q.id for q in queries]


def test_idle_tcp_connection_is_closed(key):
    async def main():
        async with DnsServer([zone()], keys=[key], tcp_idle_timeout=0.2) as server:
            host, port = server.addresses[0]
            reader, writer = await asyncio.open_connection(host, port)
            data = await asyncio.wait_for(reader.read(10), TIMEOUT)  # EOF after the idle timeout
            writer.close()
            return data

    assert run(main()) == b""


def test_garbage_datagram_gets_formerr_and_server_keeps_serving(key):
    async def main():
        async with DnsServer([zone()], keys=[key]) as server:
            host, port = server.addresses[0]
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            try:
                await loop.sock_sendto(sock, b"\x12\x34\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\xff", (host, port))
                reply = await asyncio.wait_for(loop.sock_recv(sock, 512), TIMEOUT)
            finally:
                sock.close()
            after = await dns.asyncquery.udp(
                dns.message.make_query("kms1.kms.test.", "A"), host, port=port, timeout=TIMEOUT
            )
            return reply, after

    reply, after = run(main())
    assert reply[:2] == b"\x12\x34" and reply[3] & 0xF == dns.rcode.FORMERR
    assert after.rcode() == dns.rcode.NOERROR


def test_truncated_udp_answer_is_retried_over_tcp_by_the_client(key):
    from emu.net.dns_client import query

    text = ZONE_TEXT + "".join(f'big TXT "{"y" * 200}{i}"\n' for i in range(8))

    async def main():
        async with DnsServer([load_master_file(text, "kms.test")], keys=[key]) as server:
            return await query("big.kms.test.", "TXT", server.addresses[0], timeout=TIMEOUT)

    answer = run(main())
    assert len(answer.answers) == 8


def test_signed_update_is_journaled_and_replayed_after_restart(tmp_path, key, keyring):
    state = tmp_path / "state.sqlite"

    async def update_then_stop():
        async with DnsServer([zone()], keys=[key], state=state) as server:
            host, port = server.addresses[0]
            update = make_update(keyring)
            update.add("_vlmcs._tcp.kms.test.", 600, "SRV", "0 0 1688 kms2.kms.test.")
            update.add("kms2.kms.test.", 600, "A", "10.0.0.2")
            update.delete("kms1.kms.test.", "AAAA")
            answer = await dns.asyncquery.udp(update, host, port=port, timeout=TIMEOUT)
            return answer.rcode()

    async def restart_and_ask():
        async with DnsServer([zone()], keys=[key], state=state) as server:
            host, port = server.addresses[0]
            srv = await dns.asyncquery.udp(
                dns.message.make_query("_vlmcs._tcp.kms.test.", "SRV"), host, port=port, timeout=TIMEOUT
            )
            soa = await dns.asyncquery.udp(dns.message.make_query("kms.test.", "SOA"), host, port=port, timeout=TIMEOUT)
            aaaa = await dns.asyncquery.udp(
                dns.message.make_query("kms1.kms.test.", "AAAA"), host, port=port, timeout=TIMEOUT
            )
            return srv, soa, aaaa

    assert run(update_then_stop()) == dns.rcode.NOERROR
    srv, soa, aaaa = run(restart_and_ask())
    assert sorted(str(r.target) for r in srv.answer[0]) == ["kms1.kms.test.", "kms2.kms.test."]
    assert soa.answer[0][0].serial == 2
    assert not aaaa.answer


def test_binding_a_taken_port_is_a_scenario_error(key):
    from emu.errors import ScenarioError

    async def main():
        async with DnsServer([zone()], keys=[key]) as first:
            second = DnsServer([zone()], keys=[key], listen=[first.addresses[0]])
            with pytest.raises(ScenarioError):
                await second.start()

    run(main())


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
        ("localhost", ("localhost", 53)),
    ],
)
def test_parse_address_forms(text, expected):
    assert parse_address(text) == expected
