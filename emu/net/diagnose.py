"""``emu diagnose``: walk what a KMS client does, step by step, and stop at the first step that fails.

The steps, in a client's order: the DNS domains to search, the ``_vlmcs._tcp`` SRV lookup, the RFC 2782
order of its targets, their A/AAAA addresses, a TCP connection, the DCE/RPC bind, the activation request,
the response's checks, the count against the product's threshold, and the clock (a host that enforces the
4-hour skew rule refuses with 0xC004F06C). A static ``host[:port]`` skips the DNS steps.

Each step records what it saw and how long it took. The first failing step names the error a real
Windows client would report there (from emu's one error table, :mod:`emu.hresults`) and what to check.
Which code Windows reports for a failure that happens after the TCP connection (a broken bind, an
unreadable response) is not documented; emu reports 0xC004F074 there, as for an unreachable host
(inferred; docs/diagnose.md says so).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from dnslib import SRV

from emu.clock import unix_to_filetime
from emu.dns.publish import srv_owner
from emu.dns.srv_select import SrvRecord, order_srv
from emu.errors import EmuError, ProtocolError
from emu.hresults import E_INVALID_TIMESTAMP, E_KMS_NOT_REACHABLE, E_NOT_ENOUGH_COUNT, lookup
from emu.kms import products
from emu.kms.client import RequestTemplate
from emu.kms.messages import build_request, verify_response
from emu.net.dns_client import query
from emu.rng import Rng, system_rng
from emu.rpc.client import BindAccepted, ClientAssociation, FaultReceived, Reply, SendAlterContext
from emu.wire.dns import canonical_name

__all__ = ["STEPS", "DiagnoseConfig", "Diagnosis", "Step", "diagnose"]

#: The steps in order, with the exit code ``emu diagnose`` returns when that step fails.
STEPS: dict[str, int] = {
    "dns-suffixes": 10,
    "srv-lookup": 11,
    "srv-order": 12,
    "address": 13,
    "tcp-connect": 14,
    "rpc-bind": 15,
    "activation-request": 16,
    "verification": 17,
    "threshold": 18,
    "clock-skew": 19,
}
_NAME_ERROR = 0x8007232B  # DNS_ERROR_RCODE_NAME_ERROR
_NO_RECORDS = 0x8007251D  # DNS_INFO_NO_RECORDS
_A, _AAAA, _SRV = 1, 28, 33
_NXDOMAIN = 3


@dataclass(frozen=True)
class DiagnoseConfig:
    """What to diagnose.

    Attributes:
        product: the client's product (any name emu's product matcher knows).
        static: a host to dial directly (skips DNS), or None.
        domains: DNS domains to search for ``_vlmcs._tcp`` (when ``static`` is None).
        dns_server: the DNS server to ask.
        timeout: seconds for each DNS query, connection and reply.
        time_offset: seconds added to the client's clock (stages a skewed client).
        cmid: the client machine ID sent (a fresh one by default).
    """

    product: str = "win10ent"
    static: tuple[str, int] | None = None
    domains: tuple[str, ...] = ()
    dns_server: tuple[str, int] | None = None
    timeout: float = 3.0
    time_offset: float = 0.0
    cmid: uuid.UUID | None = None


@dataclass
class Step:
    """One step: its name, whether it passed, what it saw, and how long it took (ms)."""

    name: str
    ok: bool
    detail: str
    ms: float
    data: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


@dataclass
class Diagnosis:
    """The walk: the steps taken and, when one failed, the code a client would report there."""

    steps: list[Step] = field(default_factory=list)
    failed_step: str | None = None
    code: int | None = None

    @property
    def ok(self) -> bool:
        return self.failed_step is None

    @property
    def exit_code(self) -> int:
        return 0 if self.failed_step is None else STEPS[self.failed_step]

    def as_dict(self) -> dict[str, Any]:
        entry = lookup(self.code) if self.code is not None else None
        return {
            "ok": self.ok,
            "failed_step": self.failed_step,
            "code": None if self.code is None else f"0x{self.code:08X}",
            "symbol": entry.symbol if entry else None,
            "meaning": entry.meaning if entry else None,
            "checks": list(entry.checks) if entry else [],
            "steps": [
                {"name": s.name, "ok": s.ok, "skipped": s.skipped, "detail": s.detail, "ms": round(s.ms, 2), **s.data}
                for s in self.steps
            ],
        }


class _Stop(Exception):
    """A step failed: the walk ends with this code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Walk:
    def __init__(self, config: DiagnoseConfig, rng: Rng) -> None:
        self.config = config
        self.rng = rng
        self.result = Diagnosis()
        self._started = 0.0

    def begin(self) -> None:
        self._started = time.perf_counter()

    def done(self, name: str, ok: bool, detail: str, code: int | None = None, **data: Any) -> None:
        self.result.steps.append(Step(name, ok, detail, (time.perf_counter() - self._started) * 1000, data))
        if not ok:
            self.result.failed_step = name
            raise _Stop(code if code is not None else E_KMS_NOT_REACHABLE)
        self.begin()

    def skip(self, name: str, why: str) -> None:
        self.result.steps.append(Step(name, True, why, 0.0, skipped=True))

    async def run(self) -> Diagnosis:
        self.begin()
        try:
            sku = products.lookup(self.config.product)
            hosts = await self._hosts()
            reader, writer, where = await self._connect(hosts)
            try:
                await self._exchange(sku, reader, writer, where)
            finally:
                writer.close()
        except _Stop as stop:
            self.result.code = stop.code
        return self.result

    # -- DNS ------------------------------------------------------------------------------------------

    async def _hosts(self) -> list[tuple[str, int]]:
        config = self.config
        if config.static is not None:
            for name in ("dns-suffixes", "srv-lookup", "srv-order", "address"):
                self.skip(name, f"static host {_where(config.static)}: no DNS lookup")
            self.begin()
            return [config.static]
        if not config.domains:
            self.done("dns-suffixes", False, "no DNS domain to search: give --domain or a .domain target", _NAME_ERROR)
        if config.dns_server is None:
            self.done("dns-suffixes", False, "no DNS server: give --dns-server", _NAME_ERROR)
        assert config.dns_server is not None
        self.done("dns-suffixes", True, f"searching {', '.join(config.domains)} via {_where(config.dns_server)}")
        records: list[SrvRecord] = []
        seen: list[str] = []
        nxdomain = True
        for domain in config.domains:
            owner = srv_owner(domain)
            try:
                answer = await query(owner, _SRV, config.dns_server, rng=self.rng, timeout=config.timeout)
            except EmuError as exc:
                self.done("srv-lookup", False, f"{owner}: the DNS server did not answer usably ({exc})", _NAME_ERROR)
            found = [
                SrvRecord(rr.rdata.priority, rr.rdata.weight, rr.rdata.port, canonical_name(rr.rdata.target))
                for rr in answer.answers
                if rr.rtype == _SRV and isinstance(rr.rdata, SRV)
            ]
            rcode = answer.header.flags & 0xF
            seen.append(f"{owner}: {len(found)} record(s)" if found else f"{owner}: {_rcode_text(rcode)}")
            nxdomain = nxdomain and rcode == _NXDOMAIN
            if found:
                records = found
                break
        if not records:
            code = _NAME_ERROR if nxdomain else _NO_RECORDS
            self.done("srv-lookup", False, "; ".join(seen), code)
        self.done("srv-lookup", True, "; ".join(seen), records=[_srv_text(r) for r in records])
        ordered = order_srv(records, self.rng)
        self.done("srv-order", True, "RFC 2782 order: " + ", ".join(_srv_text(r) for r in ordered))
        hosts: list[tuple[str, int]] = []
        for record in ordered:
            for rtype in (_A, _AAAA):
                try:
                    reply = await query(record.target, rtype, config.dns_server, rng=self.rng, timeout=config.timeout)
                except EmuError:
                    continue
                hosts += [(str(rr.rdata), record.port) for rr in reply.answers if rr.rtype == rtype]
        if not hosts:
            targets = ", ".join(r.target for r in ordered)
            self.done("address", False, f"no A or AAAA record for {targets}", _NO_RECORDS)
        self.done("address", True, "try order: " + ", ".join(_where(h) for h in hosts))
        return hosts

    # -- the host ----------------------------------------------------------------------------------------

    async def _connect(self, hosts: list[tuple[str, int]]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        failures = []
        for host in hosts:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*host), self.config.timeout)
            except (OSError, TimeoutError) as exc:
                failures.append(f"{_where(host)}: {_os_reason(exc)}")
                continue
            tried = f" (after {'; '.join(failures)})" if failures else ""
            self.done("tcp-connect", True, f"connected to {_where(host)}{tried}")
            return reader, writer, _where(host)
        self.done("tcp-connect", False, "no host accepted a TCP connection: " + "; ".join(failures))
        raise AssertionError("unreachable")  # done() raised

    async def _read(self, client: ClientAssociation, reader: asyncio.StreamReader) -> list[Any]:
        data = await asyncio.wait_for(reader.read(65536), self.config.timeout)
        if not data:
            raise ConnectionError("the host closed the connection")
        return client.receive_data(data)

    async def _exchange(self, sku: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str) -> None:
        client = ClientAssociation()
        try:
            writer.write(client.bind())
            bound = False
            while not bound:
                for event in await self._read(client, reader):
                    if isinstance(event, SendAlterContext):
                        writer.write(event.data)
                    elif isinstance(event, BindAccepted):
                        bound = True
        except (OSError, TimeoutError, ConnectionError, ProtocolError) as exc:
            self.done("rpc-bind", False, f"{where}: the bind failed: {_os_reason(exc)}")
        syntaxes = ", ".join(s.name for s in client.contexts) or "no context"
        self.done("rpc-bind", True, f"bound; transfer syntaxes accepted: {syntaxes}")
        now = time.time() + self.config.time_offset
        cmid = self.config.cmid or uuid.UUID(int=self.rng.randint(1, 2**128 - 1))
        base = RequestTemplate.of(sku, "emu-diagnose.lab.test").base(cmid, unix_to_filetime(now))
        message = build_request(base, self.rng)
        try:
            writer.write(client.request(message))
            event = None
            while event is None:
                event = next(
                    (e for e in await self._read(client, reader) if isinstance(e, (Reply, FaultReceived))), None
                )
        except (OSError, TimeoutError, ConnectionError, ProtocolError) as exc:
            self.done("activation-request", False, f"{sku.name} (v{sku.protocol}): no answer: {_os_reason(exc)}")
        if isinstance(event, FaultReceived):
            self.done("activation-request", False, f"the host answered with DCE/RPC fault 0x{event.status:08X}")
        assert isinstance(event, Reply)
        if event.hresult == E_INVALID_TIMESTAMP:
            self.done("activation-request", True, "the host answered (with a refusal: see clock-skew)")
            for name in ("verification", "threshold"):
                self.skip(name, "no response to check: the host refused the request")
            self.begin()
            offset = (
                f" (this client's clock is {self.config.time_offset:+.0f} s off)" if self.config.time_offset else ""
            )
            self.done("clock-skew", False, f"the host refused the client's time{offset}", E_INVALID_TIMESTAMP)
        if event.hresult or event.kms_response is None:
            entry = lookup(event.hresult)
            name = f" ({entry.symbol})" if entry else ""
            self.done(
                "activation-request", False, f"the host refused {sku.name}: 0x{event.hresult:08X}{name}", event.hresult
            )
        assert event.kms_response is not None
        self.done("activation-request", True, f"{sku.name}: answered ({len(event.kms_response)} bytes)")
        verified = verify_response(message, event.kms_response)
        if not verified.ok:
            self.done("verification", False, "the response fails: " + ", ".join(verified.failed))
        self.done("verification", True, f"{sum(c.passed for c in verified.checks)} checks passed; ePID {verified.epid}")
        count = verified.count or 0
        if count < sku.threshold:
            detail = f"count {count} is below {sku.name}'s threshold of {sku.threshold}"
            self.done("threshold", False, detail, E_NOT_ENOUGH_COUNT, count=count, threshold=sku.threshold)
        self.done(
            "threshold", True, f"count {count} >= threshold {sku.threshold}", count=count, threshold=sku.threshold
        )
        self.done("clock-skew", True, "the host accepted the client's time")


async def diagnose(config: DiagnoseConfig, rng: Rng | None = None) -> Diagnosis:
    """Walk the client's steps against the real network; never raises for a failing network."""
    return await _Walk(config, rng or system_rng()).run()


def _where(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _srv_text(record: SrvRecord) -> str:
    return f"{record.target}:{record.port} (priority {record.priority}, weight {record.weight})"


def _rcode_text(rcode: int) -> str:
    return {0: "no SRV record (NOERROR, no answer)", 3: "NXDOMAIN", 2: "SERVFAIL", 5: "REFUSED"}.get(
        rcode, f"RCODE {rcode}"
    )


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's own text repeats the address
    return str(exc) or type(exc).__name__
