"""emu.pcap.kms_decode: every reference capture decodes and verifies; odd captures never raise."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from emu_testing import VECTORS_DIR, requires_vectors, vector_files
from pcap_craft import CLIENT, SERVER, T0, exchange, packets, segments, write_pcap, write_pcapng

from emu.errors import UsageError
from emu.pcap.kms_decode import DecodedPdu, decode_capture, looks_like_rpc_header

BASE = "pykms-vlmcsd-v6-windows10.pcap"
VLMCSD_EPID = "05426-00206-555-072633-03-7194-9200.0000-3332025"


def _vector(name: str) -> Path:
    return VECTORS_DIR / name


def _of(pdus, ptype: str) -> list[DecodedPdu]:
    return [p for p in pdus if p.ptype == ptype]


# --- the reference captures -------------------------------------------------------------------


@requires_vectors
@pytest.mark.parametrize("path", vector_files(), ids=lambda p: p.name)
def test_every_reference_capture_decodes_without_error_and_every_response_passes_every_check(path: Path):
    result = decode_capture(path)
    assert result.pdus, "no KMS PDU found"
    assert result.ok
    assert all(p.error is None for p in result.pdus)
    for p in _of(result.pdus, "response"):
        if p.response.epid is not None:
            assert p.response.verified is True
            assert p.response.failed_checks == ()
            assert len(p.response.checks) >= 7


@requires_vectors
def test_pykms_client_against_vlmcsd_v6_shows_epid_hwid_count_and_intervals():
    result = decode_capture(_vector(BASE))
    assert [p.ptype for p in result.pdus] == ["bind", "bind_ack", "request", "response"]
    assert [p.size for p in result.pdus] == [116, 84, 292, 300]
    request, response = result.pdus[2], result.pdus[3]
    assert request.request.version == "6.0"
    assert request.request.product == "Windows 10/11 Enterprise"
    assert request.request.required_client_count == 25
    assert response.call_id == request.call_id == 2
    r = response.response
    assert (r.epid, r.hwid, r.count, r.threshold) == (VLMCSD_EPID, "3A1C049600B60076", 50, 25)
    assert (r.activation_interval, r.renewal_interval) == (120, 10080)
    assert r.cmid == request.request.cmid and r.client_time == request.request.client_time
    assert {c.name for c in r.checks} >= {"hash_ok", "hmac_ok", "ivs_ok", "cmid_ok", "client_time_ok"}


@requires_vectors
@pytest.mark.parametrize(
    "name, sizes",
    [
        ("edge-vlmcs-vlmcsd-v6-reject-ncount1001-8007000D.pcap", [36]),
        ("edge-vlmcs-vlmcsd-v6-reject-ncount1001-ndr64-8007000D.pcap", [36, 44]),
        ("edge-vlmcs-vlmcsd-badversion-K7.0-8007000D.pcap", [36]),
        ("edge-vlmcs-vlmcsd-badversion-K3.0-8007000D.pcap", [36]),
    ],
)
def test_refused_requests_show_the_8007000D_error_response(name: str, sizes: list[int]):
    responses = _of(decode_capture(_vector(name)).pdus, "response")
    assert [p.size for p in responses] == sizes
    for p in responses:
        assert p.response.hresult == 0x8007000D
        assert p.response.hresult_name == "ERROR_INVALID_DATA"
        assert p.response.epid is None and p.error is None


@requires_vectors
def test_bad_version_request_is_reported_with_its_version_not_as_an_error():
    (request,) = _of(decode_capture(_vector("edge-vlmcs-vlmcsd-badversion-K7.0-8007000D.pcap")).pdus, "request")
    assert request.request.version == "7.0"
    assert "7.0" in request.request.refused
    assert request.error is None


@requires_vectors
def test_unknown_kms_id_gets_C004F042():
    result = decode_capture(_vector("edge-vlmcs-vlmcsd-k3-unknown-kmsid-C004F042.pcap"))
    (request,) = _of(result.pdus, "request")
    (response,) = _of(result.pdus, "response")
    assert request.request.kms_id == "01234567-89ab-cdef-0123-456789abcdef"
    assert "unknown KMS ID" in request.request.product
    assert response.size == 36
    assert response.response.hresult == 0xC004F042
    assert response.response.hresult_name == "SL_E_VL_KEY_MANAGEMENT_SERVICE_ID_MISMATCH"


@requires_vectors
@pytest.mark.parametrize(
    "name, request_sizes, response_sizes",
    [
        ("vlmcs-vlmcsd-v4-ndr64-win10ent.pcap", [284, 292], [200, 212]),
        ("vlmcs-vlmcsd-v5-ndr64-win10ent.pcap", [292, 300], [252, 264]),
        ("vlmcs-vlmcsd-v6-ndr64-win10ent.pcap", [292, 300], [300, 312]),
    ],
)
def test_ndr64_files_carry_an_ndr32_then_an_ndr64_request(name, request_sizes, response_sizes):
    result = decode_capture(_vector(name))
    requests, responses = _of(result.pdus, "request"), _of(result.pdus, "response")
    assert [p.size for p in requests] == request_sizes
    assert [p.size for p in responses] == response_sizes
    assert [(p.syntax, p.p_cont_id, p.syntax_guessed) for p in requests] == [("NDR32", 0, False), ("NDR64", 1, False)]
    assert [p.syntax for p in responses] == ["NDR32", "NDR64"]
    (ack,) = _of(result.pdus, "bind_ack")
    assert [r.result for r in ack.results] == ["provider_rejection", "acceptance", "negotiate_ack"]
    assert _of(result.pdus, "alter_context_resp")[0].results[0].transfer_syntax == "NDR32"


@requires_vectors
def test_five_requests_on_one_connection_pair_with_their_responses_by_call_id():
    result = decode_capture(_vector("edge-vlmcs-vlmcsd-v6-5req-1conn-win10ent.pcap"))
    assert len(result.pdus) == 14 and result.kms_conversations == (0,)
    requests, responses = _of(result.pdus, "request"), _of(result.pdus, "response")
    assert [p.call_id for p in requests] == [2, 3, 4, 5, 6] == [p.call_id for p in responses]
    assert [p.syntax for p in requests] == ["NDR32"] + ["NDR64"] * 4
    assert all(p.response.verified and p.response.epid == VLMCSD_EPID for p in responses)
    assert [p.response.cmid for p in responses] == [p.request.cmid for p in requests]


@requires_vectors
@pytest.mark.parametrize(
    "name", ["edge-vlmcs-vlmcsd-v6-3req-newconn-each-T.pcap", "edge-vlmcs-pykms-v6-3req-newconn-each-T.pcap"]
)
def test_T_files_hold_three_kms_conversations(name: str):
    result = decode_capture(_vector(name))
    assert result.conversations == 3 and result.kms_conversations == (0, 1, 2)
    assert sorted({p.conversation for p in _of(result.pdus, "response")}) == [0, 1, 2]


@requires_vectors
def test_ipv6_endpoints_are_bracketed():
    result = decode_capture(_vector("edge-vlmcs-vlmcsd-ipv6-v6-ndr32-win10ent.pcap"))
    assert result.pdus[0].dst == "[::1]:17690"


@requires_vectors
def test_capture_where_the_server_never_answered_decodes_the_request():
    result = decode_capture(_vector("vlmcs-pykms-v6-ndr32-server2022dc.pcap"))
    assert [p.ptype for p in result.pdus] == ["bind", "bind_ack", "request"]
    assert result.ok


# --- a corrupted response ----------------------------------------------------------------------


def _flip_in_response(tmp_path: Path, offset_in_kms: int) -> Path:
    pdus = exchange(_vector(BASE))
    side, response = pdus[3]
    assert side == "S" and response[2] == 2
    pos = 24 + 12 + offset_in_kms  # RPC response header+body, NDR32 stub header, then the KMS message
    corrupted = response[:pos] + bytes([response[pos] ^ 0x01]) + response[pos + 1 :]
    pdus[3] = ("S", corrupted)
    return write_pcap(tmp_path / "flipped.pcap", packets(segments(pdus)))


@requires_vectors
def test_a_flipped_byte_in_the_encrypted_payload_fails_the_named_checks(tmp_path: Path):
    path = _flip_in_response(tmp_path, 20 + 16 * 8 + 3)  # inside the ciphertext, block 8 (hash / hwid region)
    result = decode_capture(path)
    (response,) = _of(result.pdus, "response")
    assert response.response.verified is False
    assert "hmac_ok" in response.response.failed_checks
    assert not result.ok and response.failed


@requires_vectors
def test_a_flipped_byte_in_the_last_block_fails_decrypt_success(tmp_path: Path):
    path = _flip_in_response(tmp_path, 260 - 5)
    (response,) = _of(decode_capture(path).pdus, "response")
    assert "decrypt_success" in response.response.failed_checks


# --- odd captures: decode what can be decoded, report the rest -----------------------------------


@requires_vectors
def test_crafted_capture_with_one_pdu_per_segment_decodes_like_the_original(tmp_path: Path):
    path = write_pcap(tmp_path / "plain.pcap", packets(segments(exchange(_vector(BASE)))))
    result = decode_capture(path)
    assert result.ok and len(result.pdus) == 4
    assert result.pdus[0].src == f"{CLIENT[0]}:{CLIENT[1]}" and result.pdus[0].dst == f"{SERVER[0]}:{SERVER[1]}"
    assert result.pdus[0].time == pytest.approx(T0)


@requires_vectors
def test_truncated_pcap_decodes_what_was_captured_and_reports_the_cut(tmp_path: Path):
    raw = _vector(BASE).read_bytes()
    records, pos = [], 24  # pcap global header, then 16-byte record headers
    while pos + 16 <= len(raw):
        caplen = int.from_bytes(raw[pos + 8 : pos + 12], "little")
        records.append((pos, caplen))
        pos += 16 + caplen
    response_record = [start for start, caplen in records if caplen >= 300][-1]
    path = tmp_path / "cut.pcap"
    path.write_bytes(raw[: response_record + 16 + 100])  # 100 bytes into the response's record
    result = decode_capture(path)
    assert [p.ptype for p in result.pdus] == ["bind", "bind_ack", "request", "response"]
    assert result.pdus[2].request is not None
    assert "truncated" in result.pdus[3].error
    assert not result.ok


@requires_vectors
def test_pcapng_decodes_like_pcap(tmp_path: Path):
    from scapy.utils import rdpcap

    path = write_pcapng(tmp_path / "same.pcapng", list(rdpcap(str(_vector(BASE)))))
    assert path.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    result = decode_capture(path)
    assert result.ok and [p.size for p in result.pdus] == [116, 84, 292, 300]
    assert _of(result.pdus, "response")[0].response.epid == VLMCSD_EPID


@requires_vectors
def test_non_tcp_packets_are_ignored(tmp_path: Path):
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import ICMP, IP, UDP
    from scapy.layers.l2 import ARP, Ether

    pkts = packets(segments(exchange(_vector(BASE))))
    noise = [
        Ether()
        / IP(src="10.1.0.9", dst="10.1.0.53")
        / UDP(sport=5353, dport=53)
        / DNS(qd=DNSQR(qname="_vlmcs._tcp.test", qtype="SRV")),
        Ether() / IP(src="10.1.0.9", dst="10.1.0.1") / ICMP(),
        Ether() / ARP(pdst="10.1.0.1"),
    ]
    for i, p in enumerate(noise):
        p.time = T0 + 0.0005 * (i + 1)
    mixed = pkts[:3] + noise + pkts[3:]
    result = decode_capture(write_pcap(tmp_path / "mixed.pcap", mixed))
    assert result.ok and len(result.pdus) == 4 and result.conversations == 1


@requires_vectors
def test_retransmitted_and_reordered_small_segments_reassemble(tmp_path: Path):
    segs = segments(exchange(_vector(BASE)), size=37)
    rng = random.Random(7)
    client = [s for s in segs if s.side == "C"]
    server = [s for s in segs if s.side == "S"]
    # reorder inside each direction (times keep rising so the exchange order survives), duplicate some
    shuffled = []
    for group in (client, server):
        times = sorted(s.time for s in group)
        order = group[:]
        rng.shuffle(order)
        order += [rng.choice(group) for _ in range(5)]
        for s, t in zip(order, times + [times[-1]] * 5):
            shuffled.append(type(s)(s.side, s.seq, s.payload, t))
    result = decode_capture(write_pcap(tmp_path / "shuffled.pcap", packets(shuffled)))
    assert all(p.error is None for p in result.pdus)
    assert [p.ptype for p in result.pdus].count("response") == 1
    assert _of(result.pdus, "response")[0].response.epid == VLMCSD_EPID


@requires_vectors
def test_several_pdus_per_segment_are_split_by_frag_length(tmp_path: Path):
    pdus = exchange(_vector("edge-vlmcs-vlmcsd-v6-5req-1conn-win10ent.pcap"))
    client = b"".join(d for s, d in pdus if s == "C")
    server = b"".join(d for s, d in pdus if s == "S")
    result = decode_capture(write_pcap(tmp_path / "bulk.pcap", packets(segments([("C", client), ("S", server)]))))
    responses = _of(result.pdus, "response")
    assert len(result.pdus) == 14 and len(responses) == 5
    assert all(p.error is None for p in result.pdus)
    assert all(p.response.verified for p in responses)


@requires_vectors
def test_half_conversation_with_only_the_server_side_still_shows_the_response(tmp_path: Path):
    server_only = [(s, d) for s, d in exchange(_vector(BASE)) if s == "S"]
    result = decode_capture(write_pcap(tmp_path / "half.pcap", packets(segments(server_only), handshake=False)))
    assert [p.ptype for p in result.pdus] == ["bind_ack", "response"]
    response = result.pdus[1]
    assert response.syntax_guessed and response.error is None
    assert response.response.epid == VLMCSD_EPID and response.response.hwid == "3A1C049600B60076"
    assert response.response.verified is None and "not verified" in response.response.note


@requires_vectors
def test_conversation_captured_mid_stream_skips_to_the_first_header(tmp_path: Path):
    pdus = exchange(_vector(BASE))
    pdus[0] = ("C", pdus[0][1][-50:])  # the capture starts 50 bytes before the end of the bind
    result = decode_capture(write_pcap(tmp_path / "mid.pcap", packets(segments(pdus), handshake=False)))
    first = result.pdus[0]
    assert first.ptype is None and "not a DCE/RPC" in first.error
    (request,) = _of(result.pdus, "request")
    assert request.syntax == "NDR32" and request.error is None
    assert _of(result.pdus, "response")[0].response.verified is True


def test_garbage_on_a_tcp_port_is_skipped_unless_the_port_is_forced(tmp_path: Path):
    rng = random.Random(3)
    junk = [("C", bytes(rng.randrange(256) for _ in range(300))), ("S", b"\x05\x00\x02\x03" + bytes(200))]
    path = write_pcap(tmp_path / "junk.pcap", packets(segments(junk)))
    assert decode_capture(path).pdus == ()
    forced = decode_capture(path, port=SERVER[1])
    assert forced.kms_conversations == (0,)
    assert forced.pdus and all(p.error for p in forced.pdus)
    assert not forced.ok


def test_rpc_header_recognition_needs_version_ptype_drep_and_length():
    header = bytes.fromhex("05000b0310000000") + (116).to_bytes(2, "little")
    assert looks_like_rpc_header(header)
    assert not looks_like_rpc_header(b"\x04" + header[1:])
    assert not looks_like_rpc_header(header[:2] + b"\x63" + header[3:])
    assert not looks_like_rpc_header(header[:4] + b"\x00\x00\x00\x00" + header[8:])
    assert not looks_like_rpc_header(header[:8] + (8).to_bytes(2, "little"))


def test_missing_file_and_non_capture_are_usage_errors(tmp_path: Path):
    with pytest.raises(UsageError, match="no such capture file"):
        decode_capture(tmp_path / "absent.pcap")
    text = tmp_path / "notes.pcap"
    text.write_text("not a capture\n")
    with pytest.raises(UsageError, match="not a pcap"):
        decode_capture(text)


# --- fuzz: mutated real streams never reach the internal-error net ----------------------------------


@requires_vectors
def test_mutated_streams_decode_without_internal_errors():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from emu.pcap.kms_decode import decode_conversation
    from emu.pcap.reader import Conversation, TcpStream

    pdus = exchange(_vector(BASE))
    client = b"".join(d for s, d in pdus if s == "C")
    server = b"".join(d for s, d in pdus if s == "S")

    def mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
        buf = bytearray(data)
        for pos, value in edits:
            buf[pos % len(buf)] = value
        return bytes(buf[: max(0, len(buf) - cut)])

    edits = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(edits, edits, st.integers(0, 400), st.integers(0, 400))
    def check(client_edits, server_edits, client_cut, server_cut):
        conv = Conversation(
            0,
            TcpStream(CLIENT, SERVER, mutate(client, client_edits, client_cut)),
            TcpStream(SERVER, CLIENT, mutate(server, server_edits, server_cut)),
            T0,
        )
        for record in decode_conversation(conv, "fuzz", force=True) or ():
            assert not (record.error or "").startswith("internal error"), record.error

    check()
