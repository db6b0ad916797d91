"""``emu probe --pcap FILE``: the same comparison as a live probe, from what a capture shows of a host.

A capture shows only what its clients asked, so fewer traits can be judged than by a live probe; each
is taken from passive evidence:

* the bind_acks: which transfer syntaxes were accepted when NDR32 and NDR64 were both offered, whether
  bind-time features were acknowledged, the association group ids;
* the answers: the counts against the distinct client machine IDs seen so far (a count that follows them
  is counting; every count exactly twice the client's threshold is the emulators' fixed answer, an
  inference), the ePIDs (one per host key, or a new one each time), the build they claim;
* the conversations: a second request answered on the same connection, or the connection closed after
  the first; a request of an unknown protocol version answered with an HRESULT or closed; faults and the
  call ids they carry; how long V4 answers took.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from emu.kms import epid as _epid
from emu.kms.profiles import Observations, classify
from emu.net.probe import ProbeReport
from emu.pcap.kms_decode import DecodedPdu, decode_capture
from emu.pcap.reader import read_conversations
from emu.wire.rpc import BindAck, decode_pdu, split_pdus

__all__ = ["probe_capture", "probe_capture_by_server"]

_NDR32 = "NDR32"
_NDR64 = "NDR64"


def _assoc_groups(path: str | Path, conversations: set[int]) -> dict[int, list[int]]:
    """The association group ids of the bind_acks of each KMS conversation."""
    out: dict[int, list[int]] = {}
    for conv in read_conversations(path):
        if conv.index not in conversations:
            continue
        groups = out.setdefault(conv.index, [])
        pdus, _rest = split_pdus(conv.server.data)
        for pdu in pdus:
            if len(pdu) > 2 and pdu[2] == 12:
                try:
                    ack = decode_pdu(pdu)
                except Exception:  # a broken bind_ack is simply no evidence
                    continue
                if isinstance(ack, BindAck):
                    groups.append(ack.assoc_group_id)
    return out


def probe_capture(path: str | Path) -> ProbeReport:
    """Classify the KMS host(s) of a capture from passive evidence (see the module docstring).

    Raises:
        UsageError/DecodeError: the file is not a capture emu can read.
    """
    decoded = decode_capture(path)
    by_conv: dict[int, list[DecodedPdu]] = defaultdict(list)
    for pdu in decoded.pdus:
        by_conv[pdu.conversation].append(pdu)
    groups = _assoc_groups(path, set(decoded.kms_conversations))
    return _observe(by_conv, [g for conv in sorted(groups) for g in groups[conv]])


def probe_capture_by_server(path: str | Path) -> dict[str, tuple[ProbeReport, list[int]]]:
    """One report per KMS host of the capture ("address:port"), with the conversations it served."""
    decoded = decode_capture(path)
    servers: dict[str, dict[int, list[DecodedPdu]]] = defaultdict(lambda: defaultdict(list))
    for pdu in decoded.pdus:
        server = pdu.dst if pdu.direction == "C->S" else pdu.src
        servers[server][pdu.conversation].append(pdu)
    groups = _assoc_groups(path, set(decoded.kms_conversations))
    out = {}
    for server, by_conv in sorted(servers.items()):
        assoc = [g for conv in sorted(by_conv) for g in groups.get(conv, [])]
        out[server] = (_observe(by_conv, assoc), sorted(by_conv))
    return out


def _observe(by_conv: dict[int, list[DecodedPdu]], assoc_groups: list[int]) -> ProbeReport:
    obs = Observations()
    obs.assoc_groups = assoc_groups
    if obs.assoc_groups:
        obs.evidence["assoc_group"] = ", ".join(f"0x{g:08X}" for g in obs.assoc_groups[:6])
    seen_cmids: dict[str, set[str]] = defaultdict(set)
    count_fits: list[bool] = []
    fixed: list[bool] = []
    epids: dict[str, set[str]] = defaultdict(set)
    builds: set[int | None] = set()
    answered_second: list[bool] = []
    for _conv, pdus in sorted(by_conv.items()):
        requests: dict[int, DecodedPdu] = {}
        answered = 0
        asked = 0
        for pdu in pdus:
            if pdu.ptype == "bind_ack" and pdu.results:
                _judge_bind(obs, pdu)
            elif pdu.ptype == "request":
                asked += 1
                if pdu.call_id is not None:
                    requests[pdu.call_id] = pdu
                if pdu.opnum not in (None, 0):
                    obs.unknown_opnum = obs.unknown_opnum or "answer"
            elif pdu.ptype == "fault":
                request = requests.get(pdu.call_id or -1)
                if request is not None and request.opnum not in (None, 0):
                    obs.unknown_opnum = "fault"
                if pdu.call_id is not None and pdu.call_id not in requests and requests:
                    obs.fault_call_id = "fixed"
                    obs.evidence["fault_call_id"] = f"a fault with call_id {pdu.call_id}, no request had it"
                elif request is not None:
                    obs.fault_call_id = obs.fault_call_id or "request"
            elif pdu.ptype == "response" and pdu.response is not None:
                answered += 1
                request = requests.get(pdu.call_id or -1)
                info = request.request if request is not None else None
                response = pdu.response
                if info is not None and info.refused and response.hresult:
                    obs.bad_version = "hresult"
                    obs.evidence["bad_version"] = f"version {info.version}: 0x{response.hresult:08X}"
                if info is not None and (info.required_client_count or 0) > 1000:
                    obs.refuses_large_n = response.hresult == 0x8007000D
                    obs.evidence["refuses_large_n"] = f"RequiredClientCount {info.required_client_count}: " + (
                        f"0x{response.hresult:08X}" if response.hresult else f"answered with count {response.count}"
                    )
                if info is None or response.count is None or info.cmid is None or info.app_id is None:
                    continue
                app = info.app_id
                new = info.cmid not in seen_cmids[app]
                seen_cmids[app].add(info.cmid)
                required = info.required_client_count or 0
                fixed.append(required > 0 and response.count == 2 * required)
                if len(seen_cmids[app]) > 1 or not new:
                    count_fits.append(response.count == len(seen_cmids[app]))
                if response.epid:
                    epids[info.kms_id or app].add(response.epid)
                    builds.add(_epid.parse_epid(response.epid).build)
                if (
                    info.version.startswith("4.")
                    and request is not None
                    and request.time is not None
                    and pdu.time is not None
                ):
                    obs.v4_delay = max(obs.v4_delay or 0.0, pdu.time - request.time)
        for pdu in pdus:
            if (
                pdu.ptype == "request"
                and pdu.request is not None
                and pdu.request.refused
                and not any(p.ptype == "response" and p.call_id == pdu.call_id for p in pdus)
            ):
                obs.bad_version = "close"
                obs.evidence["bad_version"] = f"version {pdu.request.version}: no answer"
        if asked >= 2:
            answered_second.append(answered >= 2)
    if answered_second:
        obs.keeps_connection = all(answered_second)
        obs.evidence["keeps_connection"] = (
            "second requests answered on their connection"
            if obs.keeps_connection
            else "a connection closed after its first answer"
        )
    if count_fits and all(count_fits):
        obs.counting = "distinct-cmids"
        obs.evidence["counting"] = f"{len(count_fits)} counts followed the distinct CMIDs seen"
    elif fixed and all(fixed):
        obs.counting = "fixed"
        obs.evidence["counting"] = f"all {len(fixed)} counts were 2 x the client's threshold"
    if any(len(v) > 1 for v in epids.values()):
        obs.epid_per_request = True
        obs.evidence["epid_per_request"] = "a host key answered with several ePIDs"
    elif sum(len(v) for v in epids.values()) and len(fixed) >= 2:
        obs.epid_per_request = False
        obs.evidence["epid_per_request"] = "one ePID per host key"
    if len(builds) == 1 and None not in builds:
        obs.epid_build = builds.pop()
        obs.evidence["epid_build"] = f"ePID build {obs.epid_build}"
    if obs.v4_delay is not None:
        obs.evidence["v4_delay"] = f"slowest V4 answer {obs.v4_delay * 1000:.0f} ms"
    return ProbeReport(obs, classify(obs))


def _judge_bind(obs: Observations, ack: DecodedPdu) -> None:
    """NDR32/NDR64/BTFN from a bind_ack's results (they come in the order of the offer)."""
    accepted = [r.transfer_syntax for r in ack.results if r.result == "acceptance"]
    rejected = {r.transfer_syntax for r in ack.results if r.result == "provider_rejection"}
    if any(_NDR64 in s for s in accepted) and any(_NDR32 in s for s in rejected):
        obs.ndr32_with_ndr64 = False
        obs.evidence["ndr32_with_ndr64"] = "NDR32 rejected next to an accepted NDR64"
    elif any(_NDR32 in s for s in accepted) and any(_NDR64 in s for s in rejected):
        obs.ndr32_with_ndr64 = True
        obs.evidence["ndr32_with_ndr64"] = "NDR64 rejected, NDR32 accepted"
    for r in ack.results:
        if r.result == "negotiate_ack":
            obs.btfn = True
            obs.evidence["btfn"] = "bind-time features acknowledged"
    if obs.btfn is None and len(ack.results) >= 3 and all(r.result != "negotiate_ack" for r in ack.results):
        obs.btfn = False
        obs.evidence["btfn"] = "bind-time features offered and not acknowledged"
