"""``emu decode``: readable blocks with the key fields, JSON lines with stable keys, exit codes 0/1/2."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from emu_testing import VECTORS_DIR, requires_vectors
from pcap_craft import SERVER, exchange, packets, segments, write_pcap

from emu.cli import main

BASE = VECTORS_DIR / "pykms-vlmcsd-v6-windows10.pcap"
PDU_KEYS = {
    "record",
    "capture",
    "time",
    "conversation",
    "src",
    "dst",
    "direction",
    "offset",
    "size",
    "ptype",
    "call_id",
    "pfc_flags",
    "p_cont_id",
    "opnum",
    "syntax",
    "syntax_guessed",
    "contexts",
    "results",
    "fault_status",
    "fault_name",
    "request",
    "response",
    "error",
}


def _flipped(tmp_path: Path) -> Path:
    pdus = exchange(BASE)
    response = pdus[3][1]
    pos = 24 + 12 + 20 + 16 * 8 + 3
    pdus[3] = ("S", response[:pos] + bytes([response[pos] ^ 0x80]) + response[pos + 1 :])
    return write_pcap(tmp_path / "flipped.pcap", packets(segments(pdus)))


@requires_vectors
def test_human_output_shows_the_key_fields_and_exits_0(capsys):
    assert main(["decode", str(BASE)]) == 0
    out = capsys.readouterr().out
    for text in (
        "bind  116 B  call_id 1",
        "response  300 B  call_id 2",
        "KMS request v6.0",
        "product: Windows 10/11 Enterprise",
        "required client count (N): 25",
        "ePID: 05426-00206-555-072633-03-7194-9200.0000-3332025",
        "HwId: 3A1C049600B60076",
        "count: 50 (threshold 25)",
        "intervals: activation 120 min, renewal 10080 min",
        "HRESULT: 0x00000000 S_OK",
        "checks: decode_ok",
        "hmac_ok",
        "127.0.0.1:43744",
    ):
        assert text in out
    assert "failed:" not in out


@requires_vectors
def test_json_lines_parse_with_stable_keys(capsys):
    assert main(["decode", "--json", str(VECTORS_DIR / "vlmcs-vlmcsd-v6-ndr64-win10ent.pcap")]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 9
    *records, summary = records
    assert summary["record"] == "summary"
    assert summary["kms_conversations"] == 1 and summary["exchanges"] == 2 and summary["errors"] == 0
    assert summary["pdus"] == {
        "alter_context": 1,
        "alter_context_resp": 1,
        "bind": 1,
        "bind_ack": 1,
        "request": 2,
        "response": 2,
    }
    assert all(set(r) == PDU_KEYS for r in records)
    responses = [r for r in records if r["ptype"] == "response"]
    assert [r["syntax"] for r in responses] == ["NDR32", "NDR64"]
    assert all(r["response"]["verified"] is True and r["response"]["hresult"] == "0x00000000" for r in responses)
    assert all(r["response"]["epid"] for r in responses)
    assert records[0]["time"].endswith("Z")


@requires_vectors
def test_error_hresult_is_decoded_traffic_and_exits_0(capsys):
    assert main(["decode", str(VECTORS_DIR / "edge-vlmcs-vlmcsd-k3-unknown-kmsid-C004F042.pcap")]) == 0
    assert "HRESULT: 0xC004F042 SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH" in capsys.readouterr().out


@requires_vectors
def test_failed_verification_is_listed_and_exits_1(tmp_path: Path, capsys):
    assert main(["decode", str(_flipped(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "failed: hmac_ok" in out


@requires_vectors
def test_several_files_exit_1_when_any_fails(tmp_path: Path, capsys):
    assert main(["decode", "--json", str(BASE), str(_flipped(tmp_path))]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["capture"] for r in records} == {BASE.name, "flipped.pcap"}


def test_garbage_with_forced_port_reports_errors_and_exits_1(tmp_path: Path, capsys):
    rng = random.Random(5)
    path = write_pcap(tmp_path / "junk.pcap", packets(segments([("C", bytes(rng.randrange(256) for _ in range(100)))])))
    assert main(["decode", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 TCP conversations, 0 KMS" in out and "not KMS: 1 conversation(s)" in out
    assert main(["decode", "--port", str(SERVER[1]), str(path)]) == 1
    assert "error: 100 bytes that are not a DCE/RPC v5.0 PDU" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, b"hello, not a capture\n"])
def test_missing_or_non_capture_file_prints_one_line_and_exits_2(tmp_path: Path, capsys, content):
    path = tmp_path / "x.pcap"
    if content is not None:
        path.write_bytes(content)
    assert main(["decode", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("emu: error: ")
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_help_documents_json_keys_and_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["decode", "--help"])
    out = capsys.readouterr().out
    assert "exit status" in out and "checks[{name passed severity detail}]" in out
