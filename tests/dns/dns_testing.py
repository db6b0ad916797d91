"""Fixtures of the DNS tests: a small KMS zone, a TSIG key, a resolver, dnspython helpers."""

from __future__ import annotations

import base64
import time

import dns.message
import dns.name
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
from emu_testing import require_tool  # noqa: F401  (re-exported for the interop tests)

from emu.dns.resolver import Peer, Resolver
from emu.dns.tsig import TsigKey
from emu.dns.zone import load_master_file

ZONE_TEXT = """$ORIGIN kms.test.
$TTL 3600
@            IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
@            NS   ns1
ns1          A    127.0.0.1
_vlmcs._tcp  600 IN SRV 0 0 1688 kms1
kms1         A    10.0.0.1
kms1         AAAA fd00::1
www          CNAME kms1
*.wild       TXT  "wildcard"
sub          NS   ns.sub
ns.sub       A    10.9.9.9
"""
SECRET = bytes(range(32))
KEY_NAME = "kms1-key"
NOW = int(time.time())  # dnspython checks response TSIG times against the real clock
PEER = Peer("127.0.0.1", 40000, "udp")


def key_file_text(name: str = KEY_NAME, secret: bytes = SECRET) -> str:
    return f'key "{name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{base64.b64encode(secret).decode()}";\n}};\n'


@pytest.fixture
def zone():
    return load_master_file(ZONE_TEXT, "kms.test")


@pytest.fixture
def key():
    return TsigKey.make(KEY_NAME, SECRET)


@pytest.fixture
def keyring():
    return {dns.name.from_text(KEY_NAME): dns.tsig.Key(KEY_NAME, SECRET, dns.tsig.HMAC_SHA256)}


@pytest.fixture
def resolver(zone, key):
    return Resolver([zone], [key])


def make_update(keyring=None, zone: str = "kms.test.") -> dns.update.UpdateMessage:
    return dns.update.UpdateMessage(zone, keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)


def ask(resolver: Resolver, message, *, peer: Peer = PEER, now: float = NOW, keyring=None):
    """Send a dnspython message through the resolver and decode the answer with dnspython."""
    wire = message.to_wire()
    out = resolver.handle(wire, peer, now)
    assert out is not None, "the resolver dropped the message"
    kwargs = {}
    if keyring is not None:
        kwargs = {"keyring": keyring, "request_mac": message.mac}
    return dns.message.from_wire(out, **kwargs)
