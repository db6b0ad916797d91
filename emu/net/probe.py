"""``emu probe TARGET``: which implementation does a KMS host behave like? Observe it, then compare.

The probe is a handful of short, valid (or deliberately odd) conversations, each on its own connection:

1. a bind offering NDR32, NDR64 and bind-time feature negotiation, as Windows clients do: which syntaxes
   are accepted, whether the features are acknowledged, the association group id;
2. on that connection, activation requests for three new client machine IDs and one repeated: does the
   count follow the distinct clients or stay fixed, does the ePID change, is the second request answered;
3. a second connection: its association group id and ePID (stable per host key?);
4. a request for an operation the interface does not have (opnum 1): a fault, and with which call id?
5. a request with protocol version 7.0: 0x8007000D, or a closed connection?
6. a request with RequiredClientCount 1001: refused with 0x8007000D (vlmcsd, emu) or answered (py-kms)?
7. a V4 request, timed (py-kms waits a second before V4 answers).

The observations go to :func:`emu.kms.profiles.classify`, which compares them with the table of known
implementations. Probing is not free: the host counts the probe's clients (about eight new ones).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from emu.clock import unix_to_filetime
from emu.errors import ProtocolError
from emu.kms import epid as _epid
from emu.kms import products
from emu.kms.client import RequestTemplate
from emu.kms.messages import build_request, verify_response
from emu.kms.profiles import Observations, Verdict, classify
from emu.rng import Rng, system_rng
from emu.rpc.client import BindAccepted, ClientAssociation, FaultReceived, Reply, SendAlterContext
from emu.wire.kms import Version
from emu.wire.rpc import BindAck, ContextResult, decode_pdu, split_pdus

__all__ = ["ProbeReport", "probe_host"]

_PTYPE_BIND_ACK = 12


@dataclass
class ProbeReport:
    """The observations, the verdict, and one line of evidence per trait."""

    observations: Observations
    verdict: Verdict

    def as_dict(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "behaves_like": v.behaves_like,
            "confidence": v.confidence,
            "scores": v.scores,
            "matches": v.matches,
            "mismatches": v.mismatches,
            "observations": self.observations.as_dict(),
        }


class _Conn:
    """One probe connection: raw bytes in and out, with a sans-IO client association on top."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.client = ClientAssociation()
        self.bind_ack: BindAck | None = None
        self.faults: list[tuple[int, int]] = []  # (status, call_id)
        self._pending = b""

    async def read_events(self) -> list[Any]:
        data = await asyncio.wait_for(self.reader.read(65536), self.timeout)
        if not data:
            raise ConnectionError("closed")
        pdus, self._pending = split_pdus(self._pending + data)
        for pdu in pdus:
            if pdu[2] == _PTYPE_BIND_ACK and self.bind_ack is None:
                decoded = decode_pdu(pdu)
                if isinstance(decoded, BindAck):
                    self.bind_ack = decoded
            if pdu[2] == 3 and len(pdu) >= 28:  # a fault: remember its status and call id
                self.faults.append((int.from_bytes(pdu[24:28], "little"), int.from_bytes(pdu[12:16], "little")))
        return self.client.receive_data(data)

    async def bind(self) -> None:
        self.writer.write(self.client.bind())
        while True:
            for event in await self.read_events():
                if isinstance(event, SendAlterContext):
                    self.writer.write(event.data)
                elif isinstance(event, BindAccepted):
                    return

    async def call(self, pdu: bytes) -> Reply | FaultReceived:
        self.writer.write(pdu)
        while True:
            for event in await self.read_events():
                if isinstance(event, (Reply, FaultReceived)):
                    return event

    def close(self) -> None:
        self.writer.close()


class _Prober:
    def __init__(self, target: tuple[str, int], timeout: float, rng: Rng) -> None:
        self.target, self.timeout, self.rng = target, timeout, rng
        self.obs = Observations()
        self.sku = products.lookup("win10ent")

    async def connect(self) -> _Conn:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.target), self.timeout)
        conn = _Conn(reader, writer, self.timeout)
        await conn.bind()
        if conn.bind_ack is not None:
            self.obs.assoc_groups.append(conn.bind_ack.assoc_group_id)
        return conn

    def message(
        self, cmid: uuid.UUID, sku: Any = None, version: Version | None = None, required: int | None = None
    ) -> bytes:
        sku = sku or self.sku
        template = RequestTemplate.of(sku, "emu-probe.lab.test", required=required)
        base = template.base(cmid, unix_to_filetime(time.time()))
        message = build_request(base, self.rng)
        if version is not None:  # an unknown version: the same bytes under another version header
            message = version.minor.to_bytes(2, "little") + version.major.to_bytes(2, "little") + message[4:]
        return message

    def new_cmid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.randint(1, 2**128 - 1))

    async def run(self) -> Observations:
        obs = self.obs
        await self._negotiation_and_counting()
        await self._second_connection()
        await self._unknown_opnum()
        await self._bad_version()
        await self._large_n()
        await self._v4_timing()
        return obs

    async def _negotiation_and_counting(self) -> None:
        obs = self.obs
        conn = await self.connect()
        ack = conn.bind_ack
        if ack is not None and len(ack.results) >= 2:
            ndr32, ndr64 = ack.results[0], ack.results[1]
            if ndr64.result == ContextResult.ACCEPTANCE:
                obs.ndr32_with_ndr64 = ndr32.result == ContextResult.ACCEPTANCE
                obs.evidence["ndr32_with_ndr64"] = f"NDR32 {ndr32.result.name.lower()}, NDR64 accepted"
            else:
                obs.ndr32_with_ndr64 = True
                obs.evidence["ndr32_with_ndr64"] = f"NDR64 {ndr64.result.name.lower()}: NDR32 only"
            if len(ack.results) >= 3:
                obs.btfn = ack.results[2].result == ContextResult.NEGOTIATE_ACK
                obs.evidence["btfn"] = f"bind-time features: {ack.results[2].result.name.lower()}"
        cmids = [self.new_cmid() for _ in range(3)]
        counts: list[int] = []
        epids: list[str] = []
        for i, cmid in enumerate([*cmids, cmids[-1]]):
            message = self.message(cmid)
            try:
                event = await conn.call(conn.client.request(message))
            except (OSError, TimeoutError, ConnectionError, ProtocolError) as exc:
                if i >= 1:
                    obs.keeps_connection = False
                    obs.evidence["keeps_connection"] = f"request {i + 1} on one connection: {exc or 'closed'}"
                conn.close()
                conn = await self.connect()
                event = await conn.call(conn.client.request(message))
            if isinstance(event, Reply) and event.kms_response is not None and not event.hresult:
                verified = verify_response(message, event.kms_response)
                if verified.count is not None and verified.epid is not None:
                    counts.append(verified.count)
                    epids.append(verified.epid)
        conn.close()
        if obs.keeps_connection is None and len(counts) == 4:
            obs.keeps_connection = True
            obs.evidence["keeps_connection"] = "four requests answered on one connection"
        if len(counts) == 4:
            distinct = counts[1] == counts[0] + 1 and counts[2] == counts[1] + 1 and counts[3] == counts[2]
            fixed = len(set(counts)) == 1
            obs.counting = "distinct-cmids" if distinct else ("fixed" if fixed else None)
            obs.evidence["counting"] = f"counts for 3 new CMIDs and a repeat: {counts}"
        if epids:
            obs.epid_per_request = len(set(epids)) > 1
            obs.evidence["epid_per_request"] = f"{len(set(epids))} distinct ePID(s) in {len(epids)} answers"
            builds = {_build_of(e) for e in epids}
            if len(builds) == 1 and None not in builds:
                obs.epid_build = builds.pop()
                obs.evidence["epid_build"] = f"ePID build {obs.epid_build}"
        self._epids = epids

    async def _second_connection(self) -> None:
        conn = await self.connect()
        try:
            message = self.message(self.new_cmid())
            event = await conn.call(conn.client.request(message))
            if isinstance(event, Reply) and event.kms_response is not None and not event.hresult:
                verified = verify_response(message, event.kms_response)
                if verified.epid and self._epids and self.obs.epid_per_request is False:
                    same = verified.epid == self._epids[0]
                    self.obs.epid_per_request = not same
                    self.obs.evidence["epid_per_request"] += (
                        "; the same on a new connection" if same else "; another on a new connection"
                    )
        finally:
            conn.close()
        groups = self.obs.assoc_groups
        if len(groups) >= 2:
            self.obs.evidence["assoc_group"] = ", ".join(f"0x{g:08X}" for g in groups)

    async def _unknown_opnum(self) -> None:
        obs = self.obs
        conn = await self.connect()
        try:
            pdu = bytearray(conn.client.request(self.message(self.new_cmid())))
            pdu[22:24] = (1).to_bytes(2, "little")  # opnum 1: the interface has only RequestActivation
            call_id = int.from_bytes(pdu[12:16], "little")
            event = await conn.call(bytes(pdu))
        except (OSError, TimeoutError, ConnectionError, ProtocolError) as exc:
            obs.evidence["unknown_opnum"] = f"opnum 1: {exc or 'closed'}"
            return
        finally:
            conn.close()
        if isinstance(event, FaultReceived):
            obs.unknown_opnum = "fault"
            got = next((c for s, c in conn.faults if s == event.status), None)
            if got is not None:
                obs.fault_call_id = "request" if got == call_id else "fixed"
            obs.evidence["unknown_opnum"] = (
                f"opnum 1: fault 0x{event.status:08X} with call_id {got} (request's {call_id})"
            )
        else:
            obs.unknown_opnum = "answer"
            obs.evidence["unknown_opnum"] = "opnum 1: answered as RequestActivation"

    async def _bad_version(self) -> None:
        obs = self.obs
        conn = await self.connect()
        try:
            event = await conn.call(conn.client.request(self.message(self.new_cmid(), version=Version(7, 0))))
        except (OSError, TimeoutError, ConnectionError, ProtocolError) as exc:
            obs.bad_version = "close"
            obs.evidence["bad_version"] = f"version 7.0: {exc or 'closed'} without an answer"
            return
        finally:
            conn.close()
        if isinstance(event, Reply) and event.hresult:
            obs.bad_version = "hresult"
            obs.evidence["bad_version"] = f"version 7.0: 0x{event.hresult:08X}"

    async def _large_n(self) -> None:
        obs = self.obs
        conn = await self.connect()
        try:
            event = await conn.call(conn.client.request(self.message(self.new_cmid(), required=1001)))
        except (OSError, TimeoutError, ConnectionError, ProtocolError) as exc:
            obs.evidence["refuses_large_n"] = f"RequiredClientCount 1001: {exc or 'closed'}"
            return
        finally:
            conn.close()
        if isinstance(event, Reply):
            obs.refuses_large_n = event.hresult == 0x8007000D
            result = f"0x{event.hresult:08X}" if event.hresult else "answered"
            obs.evidence["refuses_large_n"] = f"RequiredClientCount 1001: {result}"

    async def _v4_timing(self) -> None:
        v4 = next((s for s in products.all_skus() if s.protocol == 4 and s.app_id == self.sku.app_id), None)
        if v4 is None:  # pragma: no cover - the product data has V4 products
            return
        conn = await self.connect()
        try:
            started = time.monotonic()
            event = await conn.call(conn.client.request(self.message(self.new_cmid(), v4)))
            took = time.monotonic() - started
        except (OSError, TimeoutError, ConnectionError, ProtocolError):
            return
        finally:
            conn.close()
        if isinstance(event, Reply):
            self.obs.v4_delay = round(took, 3)
            self.obs.evidence["v4_delay"] = f"a V4 answer took {took * 1000:.0f} ms"


def _build_of(epid: str) -> int | None:
    return _epid.parse_epid(epid).build  # None when the text is not in the ePID format


async def probe_host(target: tuple[str, int], *, timeout: float = 3.0, rng: Rng | None = None) -> ProbeReport:
    """Probe ``target`` and classify it.

    Raises:
        OSError, TimeoutError: the host cannot be reached at all (the first connection fails).
    """
    obs = await _Prober(target, timeout, rng or system_rng()).run()
    return ProbeReport(obs, classify(obs))
