"""The kms-client suite: emu plays the KMS host, the client under test talks to it, emu judges.

Each *scenario* is one scripted host behaviour (answer normally, answer below the threshold,
refuse with an HRESULT, fault, send a malformed bind_ack, stay silent, close after the bind). With
``--run "COMMAND {host} {port}"`` the client is started once per scenario; without it only the
``normal`` scenario runs and emu waits for the client to connect. Request rules are judged on
every request seen in the normal scenario; reaction rules on what the client did (exit status,
what it printed, how many connections it made).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from emu.clock import filetime_to_unix
from emu.conform.model import (
    Case,
    Evidence,
    Outcome,
    ProbeFailed,
    Result,
    Suite,
    check,
    failed,
    inconclusive,
    passed,
    skipped,
)
from emu.conform.recorder import Recorder
from emu.errors import EmuError
from emu.hresults import E_INVALID_DATA, E_INVALID_TIMESTAMP, E_KMS_ID_MISMATCH, E_NOT_ENOUGH_COUNT
from emu.kms import products
from emu.kms.host import HostConfig, KmsHost
from emu.kms.messages import OpenedRequest, build_response, open_request
from emu.rng import Rng
from emu.rpc.association import BadCall, Call, Close, Send, ServerAssociation, ServerRpcConfig
from emu.wire.kms import LicenseStatus
from emu.wire.rpc import KMS_INTERFACE, NCA_S_UNK_IF, NDR32_SYNTAX, Bind, decode_pdu

SUITE = "kms-client"
DOC = "docs/conformance.md"


@dataclass
class Seen:
    """What the scripted host saw in one scenario."""

    connections: int = 0
    binds: list[Any] = field(default_factory=list)
    requests: list[OpenedRequest] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    exit_code: int | None = None
    output: str = ""
    finished: bool = True
    conns: list[int] = field(default_factory=list)


@dataclass
class ClientContext:
    listen: tuple[str, int]
    run: str | None
    recorder: Recorder
    rng: Rng
    timeout: float = 5.0
    address: tuple[str, int] = ("127.0.0.1", 0)
    #: every decodable request of every scenario (a client keeps its CMID across runs)
    history: list[OpenedRequest] = field(default_factory=list)


class ScriptedHost:
    """A KMS host whose answers follow a scenario (``mode``) and which notes every request."""

    def __init__(self, ctx: ClientContext, mode: str, seen: Seen) -> None:
        self.ctx, self.mode, self.seen = ctx, mode, seen
        self.host = KmsHost(HostConfig(), ctx.rng, time.time())
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, self.ctx.listen[0], self.ctx.listen[1])
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    def _answer(self, call: Call, assoc: ServerAssociation) -> bytes | None:
        try:
            opened = open_request(call.kms_request)
        except EmuError as exc:
            self.seen.undecodable.append(str(exc))
            return assoc.respond(call, None, E_INVALID_DATA)
        self.seen.requests.append(opened)
        self.ctx.history.append(opened)
        mode = self.mode
        if mode == "silent_request":
            return None
        if mode.startswith("hresult:"):
            return assoc.respond(call, None, int(mode.split(":")[1], 16))
        if mode == "fault":
            return assoc.fault(call, NCA_S_UNK_IF)
        threshold = opened.base.required_client_count
        count = 1 if mode == "below" else max(threshold, 1)
        response = build_response(
            opened, epid=self.host.epid_for(opened.base.kms_id) if opened.base.kms_id in self.host.kms_ids else
            self.host.epid_for(next(iter(self.host.kms_ids))), count=count, activation_interval=120,
            renewal_interval=10080, hwid=self.host.config.hwid, rng=self.ctx.rng,
        )  # fmt: skip
        return assoc.respond(call, response, 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        conn = self.ctx.recorder.open((peer[0], peer[1]), (sock[0], sock[1]))
        self.seen.conns.append(conn)
        self.seen.connections += 1
        assoc = ServerAssociation(ServerRpcConfig())
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), self.ctx.timeout * 3)
                if not data:
                    self.ctx.recorder.closed(conn, by_client=True)
                    return
                self.ctx.recorder.note(conn, True, data)
                if self.mode == "silent":
                    continue
                for action in assoc.receive_data(data):
                    out: bytes | None = None
                    if isinstance(action, Send):
                        raw = action.data
                        if raw[2] == 12:  # bind_ack: note the bind that asked for it
                            with contextlib.suppress(EmuError):
                                self.seen.binds.append(decode_pdu(_first_pdu(data)))
                        if self.mode == "bad_bind_ack" and raw[2] == 12:
                            raw = raw[:8] + (len(raw) + 7).to_bytes(2, "little") + raw[10:]
                        out = raw
                    elif isinstance(action, Call):
                        if self.mode == "close_after_bind":
                            self.ctx.recorder.closed(conn, by_client=False)
                            return
                        out = self._answer(action, assoc)
                    elif isinstance(action, BadCall):
                        self.seen.undecodable.append(action.reason)
                        out = assoc.respond(action, None, E_INVALID_DATA)
                    elif isinstance(action, Close):
                        self.ctx.recorder.closed(conn, by_client=False)
                        return
                    if out:
                        self.ctx.recorder.note(conn, False, out)
                        writer.write(out)
                await writer.drain()
        except (TimeoutError, OSError, EmuError):
            return
        finally:
            writer.close()


def _first_pdu(data: bytes) -> bytes:
    frag = data[8] | data[9] << 8
    return data[:frag]


async def probe_scenario(ctx: ClientContext, case: Case) -> Evidence:
    """Run the client once against a host following scenario ``mode``."""
    mode = case.send_arg("mode", "normal")
    if ctx.run is None and mode != "normal":
        return Evidence({"no_run": True})
    seen = Seen()
    host = ScriptedHost(ctx, mode, seen)
    try:
        address = await host.start()
    except OSError as exc:
        raise ProbeFailed(f"cannot listen on {ctx.listen[0]}:{ctx.listen[1]}: {exc}") from exc
    ctx.address = address
    try:
        if ctx.run is not None:
            await _run_client(ctx, address, seen)
        else:
            deadline = time.monotonic() + ctx.timeout * 6
            while not seen.requests and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
    finally:
        await host.stop()
    return Evidence({"seen": seen, "mode": mode, "no_run": ctx.run is None}, list(seen.conns))


async def _run_client(ctx: ClientContext, address: tuple[str, int], seen: Seen) -> None:
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    argv = [part.format(host=host, port=address[1]) for part in shlex.split(ctx.run or "")]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        raise ProbeFailed(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), ctx.timeout * 6)
        seen.output = out.decode("utf-8", "replace")
        seen.exit_code = proc.returncode
    except TimeoutError:
        seen.finished = False
        proc.kill()
        await proc.wait()


async def probe_history(ctx: ClientContext, case: Case) -> Evidence:
    """Every request of the scenarios run so far (this case runs last)."""
    return Evidence({"seen": Seen(requests=list(ctx.history))})


# -- judges -------------------------------------------------------------------------------------------


def _requests(ev: Evidence) -> tuple[list[OpenedRequest], Outcome | None]:
    seen: Seen = ev["seen"]
    if seen.undecodable:
        return [], failed(f"undecodable request: {seen.undecodable[0]}")
    if not seen.requests:
        return [], inconclusive(
            "the client sent no request" + (f" (exit {seen.exit_code})" if seen.exit_code is not None else "")
        )
    return seen.requests, None


def j_bind(ev: Evidence, case: Case) -> Outcome:
    seen: Seen = ev["seen"]
    if not seen.binds:
        return inconclusive("no bind seen")
    for bind in seen.binds:
        if not isinstance(bind, Bind) or (bind.rpc_vers, bind.rpc_vers_minor) != (5, 0):
            return failed(f"first PDU is not a DCE/RPC 5.0 bind: {bind}")
        if any(e.abstract_syntax != KMS_INTERFACE for e in bind.context_elements):
            return failed("a context offers another interface than KMS 1.0")
        if not any(NDR32_SYNTAX in e.transfer_syntaxes for e in bind.context_elements):
            return failed("NDR32 is not offered")
    n = len(seen.binds[0].context_elements)
    return passed(f"{len(seen.binds)} binds: KMS interface, NDR32 offered, {n} contexts")


def j_request_field(ev: Evidence, case: Case) -> Outcome:
    """One field of every request (``field`` names the check)."""
    requests, problem = _requests(ev)
    if problem:
        return problem
    name = case.expect("field")
    for r in requests:
        b = r.base
        sku = products.sku_by_id(b.sku_id) if _known_sku(b.sku_id) else None
        if name == "version":
            if sku is None:
                return inconclusive(f"unknown SKU {b.sku_id}")
            if r.version.major != sku.protocol:
                return failed(f"{sku.name} sent V{r.version.major}, its protocol is V{sku.protocol}")
        elif name == "cmid" and b.cmid.int == 0:
            return failed("CMID is all zeros")
        elif name == "previous_cmid" and b.previous_cmid == b.cmid:
            return failed("previous CMID equals the CMID")
        elif name == "workstation" and not _workstation_ok(b.workstation_name):
            return failed(f"workstation name {b.workstation_name!r} is not a host name")
        elif name == "required":
            if sku is None:
                return inconclusive(f"unknown SKU {b.sku_id}")
            if b.required_client_count != sku.threshold:
                return failed(f"N = {b.required_client_count}, {sku.name}'s threshold is {sku.threshold}")
        elif name == "time":
            skew = filetime_to_unix(b.client_time) - time.time()
            if abs(skew) > 600:
                return failed(f"ClientTime {skew:+.0f} s from now")
        elif name == "license" and b.license_status not in set(LicenseStatus):
            return failed(f"licence status {b.license_status} is not a defined state")
        elif name == "v4_mac" and r.version.major == 4 and not r.mac_ok:
            return failed("V4 MAC does not verify")
        elif name == "encryption" and r.version.major in (5, 6) and r.padding != b"\x04" * 4:
            return failed(f"V{r.version.major} request decrypts to padding {r.padding.hex()}, not 04040404")
    if name == "v4_mac" and not any(r.version.major == 4 for r in requests):
        return skipped("no V4 request seen")
    if name == "encryption" and not any(r.version.major in (5, 6) for r in requests):
        return skipped("no V5/V6 request seen")
    return passed(f"{len(requests)} requests: {name} ok")


def _known_sku(sku_id: uuid.UUID) -> bool:
    try:
        products.sku_by_id(sku_id)
    except EmuError:
        return False
    return True


_HOSTNAME = set(string.ascii_letters + string.digits + "-.")


def _workstation_ok(name: str) -> bool:
    return 0 < len(name) <= 63 and set(name) <= _HOSTNAME and not name.startswith(("-", "."))


def j_cmid_stable(ev: Evidence, case: Case) -> Outcome:
    requests, problem = _requests(ev)
    if problem:
        return problem
    if len(requests) < 2:
        return inconclusive("one request seen: the rule needs several requests of the client")
    cmids = {r.base.cmid for r in requests}
    return check(
        len(cmids) == 1, f"one CMID over {len(requests)} requests", f"{len(cmids)} CMIDs over {len(requests)} requests"
    )


def j_reaction(ev: Evidence, case: Case) -> Outcome:
    """What the client did: ``success`` (exit 0) or a failure report (non-zero exit, the code printed)."""
    if ev.get("no_run"):
        return skipped("needs --run to start the client per scenario")
    seen: Seen = ev["seen"]
    if not seen.finished:
        return failed("the client did not finish (killed after the timeout)")
    if case.expect("success"):
        return check(
            seen.exit_code == 0,
            f"exit 0 after {len(seen.requests)} requests",
            f"exit {seen.exit_code}: {_last(seen.output)}",
        )
    if seen.exit_code == 0:
        return failed(f"exit 0 although the host {case.expect('host_did')}: {_last(seen.output)}")
    code = case.expect("code")
    if code is not None and not re.search(f"{code:08X}", seen.output, re.I):
        return failed(f"exit {seen.exit_code} but 0x{code:08X} is not reported: {_last(seen.output)}")
    return passed(f"exit {seen.exit_code} after {seen.connections} connections: {_last(seen.output)}")


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:120] if lines else "(no output)"


JUDGES = {"bind": j_bind, "request_field": j_request_field, "cmid_stable": j_cmid_stable, "reaction": j_reaction}
PROBES = {"scenario": probe_scenario, "history": probe_history}


def _c(id: str, text: str, source: str, judge: str, mode: str = "normal", **expects: Any) -> Case:
    return Case(
        id, SUITE, id.split(".")[0], text, source, "scenario", judge, (("mode", mode),), tuple(sorted(expects.items()))
    )


CASES: tuple[Case, ...] = (
    _c("request.bind", "The bind offers the KMS interface 1.0 with NDR32 over DCE/RPC 5.0", f"C706 12.6.4.3; {DOC} kms-client", "bind"),
    _c("request.version", "The request's protocol version is the product's (V4/V5/V6)", f"{DOC} KMS messages", "request_field", field="version"),
    _c("request.cmid", "The CMID is never all zeros", f"{DOC} kms-client", "request_field", field="cmid"),
    _c("request.previous_cmid", "The previous CMID is not the CMID itself", f"{DOC} kms-client", "request_field", field="previous_cmid"),
    _c("request.workstation", "The workstation name is a host name (letters, digits, '-', '.')", f"{DOC} kms-client", "request_field", field="workstation"),
    _c("request.required", "N (required client count) equals the product's threshold", f"{DOC} Counting", "request_field", field="required"),
    _c("request.time", "ClientTime is within 10 minutes of now", f"{DOC} Refusals", "request_field", field="time"),
    _c("request.license", "The licence status is a defined state", f"{DOC} kms-client", "request_field", field="license"),
    _c("request.v4_mac", "A V4 request's MAC verifies", f"{DOC} KMS messages", "request_field", field="v4_mac"),
    _c("request.encryption", "A V5/V6 request decrypts with the version's key (padding 04 04 04 04)", f"{DOC} KMS messages", "request_field", field="encryption"),
    _c("react.activated", "Answered with a count at the threshold, the client reports success", f"{DOC} Counting", "reaction", success=True),
    _c("react.below", "Answered below the threshold, the client does not report success", f"{DOC} Counting", "reaction", "below", host_did="answered count 1"),
    _c("react.uncovered", "Refused with 0xC004F042, the client fails and reports the code", f"{DOC} Refusals", "reaction", f"hresult:{E_KMS_ID_MISMATCH:08X}", code=E_KMS_ID_MISMATCH, host_did="refused"),
    _c("react.invalid_data", "Refused with 0x8007000D, the client fails and reports the code", f"{DOC} Refusals", "reaction", f"hresult:{E_INVALID_DATA:08X}", code=E_INVALID_DATA, host_did="refused"),
    _c("react.time", "Refused with 0xC004F06C, the client fails and reports the code", f"{DOC} Refusals", "reaction", f"hresult:{E_INVALID_TIMESTAMP:08X}", code=E_INVALID_TIMESTAMP, host_did="refused"),
    _c("react.not_enough", "Refused with 0xC004F038, the client fails and reports the code", f"{DOC} Refusals", "reaction", f"hresult:{E_NOT_ENOUGH_COUNT:08X}", code=E_NOT_ENOUGH_COUNT, host_did="refused"),
    _c("react.fault", "Answered with an RPC fault, the client fails", "C706 12.6.4.7", "reaction", "fault", host_did="faulted"),
    _c("react.bad_bind_ack", "A bind_ack whose frag_length is wrong makes the client fail, not hang", "C706 12.6.3.1", "reaction", "bad_bind_ack", host_did="sent a malformed bind_ack"),
    _c("react.silent", "A host that never answers makes the client give up within its timeout", f"{DOC} kms-client", "reaction", "silent", host_did="stayed silent"),
    _c("react.close_after_bind", "A host closing after the bind makes the client fail (or retry), never succeed", f"{DOC} kms-client", "reaction", "close_after_bind", host_did="closed after the bind"),
    Case("request.cmid_stable", SUITE, "request", "One client keeps one CMID across its requests and runs (every scenario)", f"{DOC} Counting", "history", "cmid_stable"),
)  # fmt: skip

KMS_CLIENT = Suite(SUITE, CASES, PROBES, JUDGES)


def run_client_suite(listen: tuple[str, int], run: str | None, options: Any, rng: Rng, timeout: float) -> list[Result]:
    """Run the selected kms-client cases (each scenario once, its evidence shared by its cases)."""
    from emu.conform.runner import run as run_suite

    return run_suite(KMS_CLIENT, ClientContext(listen, run, Recorder(), rng, timeout), options)
