"""``emu dc serve`` against real LDAP peers: OpenLDAP's ldapsearch/ldapadd/ldapdelete, ldap3, tshark;
state survives kill -9; bad bytes get a clean close and the server keeps serving."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from dc_process import ADMIN, CONTAINER, PASSWORD, DcProcess
from emu_testing import TSHARK_ENV, require_tool

from emu.ldap import messages as m
from emu.net.ldap_client import LdapClient

WIN10_ESCAPED = r"\4f\13\e2\58\11\8e\17\4d\9c\b2\91\06\9c\15\11\48"
AO_LDIF = f"""dn: CN=ldapadd object,{CONTAINER}
objectClass: top
objectClass: msSPP-ActivationObject
msSPP-CSVLKSkuId:: AAAAAAAAAAAAAAAAAAAAAA==
msSPP-KMSIds:: TxPiWBGOF02cspEGnBURSA==
msSPP-CSVLKPid: 03612-00206-556-123727-03-1033-17763.0000-2972018
msSPP-CSVLKPartialProductKey: ABCDE
"""


@pytest.fixture
def dc(tmp_path: Path):
    proc = DcProcess(tmp_path / "dc.sqlite", "--seed-group", "Windows")
    yield proc
    proc.stop()


def _ldap(tool: str, port: int, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    path = require_tool(tool)
    cmd = [path, "-x", "-H", f"ldap://127.0.0.1:{port}", "-D", ADMIN, "-w", PASSWORD, *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=20)


def test_ldapsearch_reads_rootdse_and_finds_the_object_by_binary_kms_id(dc: DcProcess):
    out = _ldap("ldapsearch", dc.port, "-LLL", "-b", "", "-s", "base", "configurationNamingContext")
    assert "configurationNamingContext: CN=Configuration,DC=kms,DC=test" in out.stdout
    flt = f"(&(objectClass=msSPP-ActivationObject)(msSPP-KMSIds={WIN10_ESCAPED}))"
    out = _ldap("ldapsearch", dc.port, "-LLL", "-b", CONTAINER, "-s", "one", flt, "cn")
    assert out.returncode == 0, out.stderr
    assert "cn: Windows (emu lab)" in out.stdout


def test_ldapadd_schema_violation_gets_the_result_code_and_valid_add_survives_kill9(dc: DcProcess):
    bad = AO_LDIF.replace("ABCDE", "ABCD")
    out = _ldap("ldapadd", dc.port, stdin=bad)
    assert out.returncode == 21, out.stderr  # invalidAttributeSyntax, as Samba answers
    out = _ldap("ldapadd", dc.port, stdin=AO_LDIF)
    assert out.returncode == 0, out.stderr
    dc.kill9()
    again = DcProcess(dc.state, port=dc.port)
    try:
        out = _ldap("ldapsearch", again.port, "-LLL", "-b", f"CN=ldapadd object,{CONTAINER}", "-s", "base", "cn")
        assert "cn: ldapadd object" in out.stdout
        assert _ldap("ldapdelete", again.port, f"CN=ldapadd object,{CONTAINER}").returncode == 0
    finally:
        again.stop()


def test_ldap3_binds_searches_and_is_refused_with_bad_password(dc: DcProcess):
    import ldap3

    server = ldap3.Server("127.0.0.1", port=dc.port, get_info=ldap3.NONE)
    conn = ldap3.Connection(server, ADMIN, PASSWORD)
    assert conn.bind()
    kms_id = bytes.fromhex("4f13e258118e174d9cb291069c151148")
    flt = "(&(objectClass=msSPP-ActivationObject)(msSPP-KMSIds=" + "".join(f"\\{b:02x}" for b in kms_id) + "))"
    assert conn.search(CONTAINER, flt, ldap3.LEVEL, attributes=["msSPP-KMSIds", "cn"])
    assert kms_id in conn.entries[0]["msSPP-KMSIds"].values
    conn.unbind()
    bad = ldap3.Connection(server, ADMIN, "wrong")
    assert not bad.bind() and bad.result["result"] == 49


@pytest.mark.parametrize("junk", [b"\x00\x01garbage", b"\x30\x05\x02\x01\x01\xff\xff", b"\x30\x84\xff\xff\xff\xff"])
def test_bad_bytes_close_the_connection_cleanly_and_the_server_keeps_serving(dc: DcProcess, junk: bytes):
    with socket.create_connection(("127.0.0.1", dc.port), timeout=5) as s:
        s.sendall(junk)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    if data:
        notice = m.decode_message(data)
        assert isinstance(notice.op, m.ExtendedResponse) and notice.op.result.code == 2
    with LdapClient("127.0.0.1", dc.port) as client:
        assert client.bind(ADMIN, PASSWORD).code == 0
    assert "Notice of Disconnection" in dc.log.read_text()


def test_tshark_dissects_emus_ldap_without_malformed_packets(dc: DcProcess, tmp_path: Path):
    from scapy.layers.inet import IP, TCP
    from scapy.utils import wrpcap

    tshark = require_tool("tshark")
    with LdapClient("127.0.0.1", dc.port) as client:
        client.bind(ADMIN, PASSWORD)
        flt = m.And((m.Equality("objectClass", b"msSPP-ActivationObject"), m.Present("msSPP-KMSIds")))
        client.search(m.SearchRequest(CONTAINER, 1, flt))
        exchange = [(msg, True) for msg in client.sent]
    # replay the same requests in process to get the server's bytes, and frame both directions
    from emu.adba.session import LdapSession
    from emu.net.dc_runner import DcOptions, open_dsa, seed_activation_object

    dsa, _ = open_dsa(DcOptions())
    seed_activation_object(dsa, None, "Windows")
    session = LdapSession(dsa)
    frames = []
    seq = {True: 1000, False: 5000}
    for msg, _ in exchange:
        for wire, from_client in [(m.encode_message(msg), True)] + [
            (m.encode_message(r), False) for r in session.handle(msg).responses
        ]:
            sport, dport = (40000, 389) if from_client else (389, 40000)
            frames.append(
                IP(src="127.0.0.1", dst="127.0.0.1")
                / TCP(sport=sport, dport=dport, flags="PA", seq=seq[from_client])
                / wire
            )
            seq[from_client] += len(wire)
    pcap = tmp_path / "ldap.pcap"
    wrpcap(str(pcap), frames)
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-Y", "ldap"], capture_output=True, text=True, timeout=60, env=TSHARK_ENV
    )
    assert "searchResEntry" in out.stdout and "bindResponse" in out.stdout, out.stdout + out.stderr
    bad = subprocess.run(
        [tshark, "-r", str(pcap), "-Y", "_ws.malformed || _ws.expert.severity >= warning"],
        capture_output=True,
        env=TSHARK_ENV,
        text=True,
        timeout=60,
    )
    assert bad.stdout.strip() == ""
