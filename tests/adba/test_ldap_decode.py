"""``emu decode`` shows LDAP: bind, search with its filter, entries with msSPP GUIDs in Windows byte order."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from dc_process import ADMIN, CONTAINER, PASSWORD, write_ldap_pcap

from emu.adba.client import kms_id_filter
from emu.ldap import messages as m

WIN10 = uuid.UUID("58e2134f-8e11-4d17-9cb2-91069c151148")


def test_decode_shows_bind_search_filter_and_kms_ids_as_guid_strings(tmp_path):
    pcap = tmp_path / "adba.pcap"
    write_ldap_pcap(
        pcap,
        [
            m.LdapMessage(1, m.BindRequest(3, ADMIN, PASSWORD.encode())),
            m.LdapMessage(
                2, m.SearchRequest(CONTAINER, 1, kms_id_filter(WIN10), ("cn", "msSPP-KMSIds", "msSPP-OnlineLicense"))
            ),
            m.LdapMessage(3, m.UnbindRequest()),
        ],
    )
    out = subprocess.run(
        [sys.executable, "-m", "emu", "decode", "--json", str(pcap)], capture_output=True, text=True, timeout=60
    )
    records = [json.loads(line) for line in out.stdout.splitlines()]
    ldap = [r for r in records if r.get("record") == "ldap"]
    assert [r["op"] for r in ldap] == [
        "bindRequest",
        "bindResponse",
        "searchRequest",
        "searchResEntry",
        "searchResDone",
        "unbindRequest",
    ]
    assert "(msSPP-KMSIds=O\\13\\e2X" in ldap[2]["filter"]
    entry = ldap[3]["attributes"]
    assert str(WIN10) in entry["msSPP-KMSIds"]
    assert entry["msSPP-OnlineLicense"][0].startswith("<emu-licence/1")
    text = subprocess.run(
        [sys.executable, "-m", "emu", "decode", str(pcap)], capture_output=True, text=True, timeout=60
    ).stdout
    assert "LDAP C->S [2] searchRequest" in text and str(WIN10) in text
