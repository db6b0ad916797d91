"""emu replay --dns: captured DNS queries and updates re-sent to emu's DNS server, answers compared."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from emu_testing import ROOT

from emu.cli import main
from emu.dns.tsig import TsigKey
from emu.dns.zone import load_master_file
from emu.net.dns_server import DnsServer
from emu.pcap.replay import DnsReplayOptions, replay_dns

PCAPS = ROOT / "pcaps"
#: The zone and key scripts/make-pcaps used for the emu-dns-* captures.
ZONE_TEXT = """\
$TTL 3600
@ IN SOA ns1.kms.test. hostmaster.kms.test. 2025112401 3600 600 86400 300
@ IN NS ns1.kms.test.
ns1 IN A 10.0.0.53
"""
KEY = TsigKey.make("emu-test-key.", bytes(range(32)))


def _server() -> DnsServer:
    return DnsServer([load_master_file(ZONE_TEXT, "kms.test.")], listen=[("127.0.0.1", 0)], keys=[KEY])


async def _publish_then_discover(key, tcp: bool = False):
    async with _server() as srv:
        options = DnsReplayOptions(target=srv.addresses[0], key=key, tcp=tcp, timeout=3.0)
        return [await replay_dns(PCAPS / name, options) for name in ("emu-dns-publish.pcap", "emu-dns-discovery.pcap")]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_re_signed_update_then_srv_query_get_the_captured_answers(tcp: bool):
    publish, discover = asyncio.run(_publish_then_discover(KEY, tcp))
    assert [(v.ptype, v.verdict) for v in publish.verdicts] == [("dns-update", "same")], publish.to_json()
    assert [(v.ptype, v.verdict) for v in discover.verdicts] == [("dns-query", "same")], discover.to_json()


def test_discovery_before_publication_differs_in_the_answer_section():
    async def run():
        async with _server() as srv:
            return await replay_dns(
                PCAPS / "emu-dns-discovery.pcap", DnsReplayOptions(target=srv.addresses[0], timeout=3.0)
            )

    [verdict] = asyncio.run(run()).verdicts
    assert verdict.verdict == "differs"
    fields = {d.split(":")[0] for d in verdict.differences}
    assert {"answer", "additional"} <= fields and "flags" not in fields, verdict.differences


def test_stale_signature_without_a_key_is_named_in_the_verdict():
    publish, _ = asyncio.run(_publish_then_discover(None))
    [verdict] = publish.verdicts
    assert verdict.verdict == "differs"
    assert any(d.startswith("rcode: 'NOTAUTH'") for d in verdict.differences), verdict.differences
    assert any(d.startswith("tsig:") for d in verdict.differences), verdict.differences


def test_unreachable_dns_target_is_an_error_verdict():
    report = asyncio.run(
        replay_dns(PCAPS / "emu-dns-discovery.pcap", DnsReplayOptions(target=("127.0.0.1", 9), timeout=0.5))
    )
    assert [v.verdict for v in report.verdicts] == ["error"]


def test_cli_replay_dns_with_a_key_file(tmp_path, capsys):
    key_file = tmp_path / "key.conf"
    key_file.write_text(
        f'key "emu-test-key" {{\n algorithm hmac-sha256;\n secret "{base64.b64encode(KEY.secret).decode()}";\n}};\n'
    )
    codes: list[int] = []

    async def run():
        async with _server() as srv:
            target = f"127.0.0.1:{srv.addresses[0][1]}"
            for name in ("emu-dns-publish.pcap", "emu-dns-discovery.pcap"):
                args = ["replay", "--dns", str(PCAPS / name), "--target", target, "--tsig-key", str(key_file), "--json"]
                codes.append(await asyncio.to_thread(main, args))

    asyncio.run(run())
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert codes == [0, 0] and all(r["ok"] for r in reports), reports
