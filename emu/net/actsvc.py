"""The lab activation service over HTTP(S): BatchActivation SOAP, emu's online endpoint, one ledger.

Built on the standard library's ``http.server.ThreadingHTTPServer`` (no HTTP parsing of emu's own).
Every request that ends in an activation is committed to the SQLite ledger before the answer is
written. Bad input gets a SOAP fault (BatchActivation) or HTTP 400 (emu endpoint) and a log line; the
server keeps serving.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from emu.clock import Clock, WallClock
from emu.errors import ProtocolError
from emu.mak import batch, online
from emu.mak.errors import ActivationError
from emu.net.actsvc_store import LedgerStore

__all__ = ["MAX_BODY", "ActivationService", "ServiceConfig"]

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 0
    digest_key: bytes = batch.LAB_DIGEST_KEY
    certfile: Path | None = None
    keyfile: Path | None = None


class _Handler(BaseHTTPRequestHandler):
    server_version = "emu-actsvc/1"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a connection may sit idle or trickle a request (socket timeout per read)
    service: ActivationService  # set on the subclass each service makes

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _send(self, status: int, body: bytes, ctype: str = "text/xml; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == batch.BATCH_PATH and query.lower() == "wsdl":
            self._send(200, resources.files("emu").joinpath("data/batchactivation.wsdl").read_bytes())
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            log.warning("actsvc: %s sent a POST without Content-Length", self.client_address[0])
            self.close_connection = True
            self._send(411, b"Content-Length required\n", "text/plain")
            return
        if length < 0 or length > MAX_BODY:
            log.warning("actsvc: %s sent a %d-byte body", self.client_address[0], length)
            self.close_connection = True
            self._send(413, b"request body too large\n", "text/plain")
            return
        body = self.rfile.read(length)
        if path == batch.BATCH_PATH:
            self._batch(body)
        elif path == online.ONLINE_PATH:
            self._online(body)
        else:
            self._send(404, b"not found\n", "text/plain")

    def _batch(self, body: bytes) -> None:
        svc = self.service
        try:
            request = batch.parse_envelope(body, svc.config.digest_key)
        except batch.BatchFault as exc:
            log.warning("actsvc: BatchActivate fault for %s: %s", self.client_address[0], exc)
            self._send(500, batch.build_fault(str(exc)))
            return
        results = tuple(svc.batch_item(request.request_type, item) for item in request.items)
        self._send(200, batch.build_response(request.request_type, results))

    def _online(self, body: bytes) -> None:
        try:
            request = online.parse_request(body)
        except ProtocolError as exc:
            log.warning("actsvc: bad online request from %s: %s", self.client_address[0], exc)
            self._send(400, online.build_answer(None, 0x8007000D, str(exc)))
            return
        try:
            cid = self.service.store.activate(
                request.iid, self.service.clock.wall(), key=request.key, purpose=request.purpose, channel="online"
            )
        except ActivationError as exc:
            log.info("actsvc: online activation refused: %s", exc)
            self._send(200, online.build_answer(None, exc.code, str(exc)))
            return
        log.info("actsvc: online activation (%s) committed", request.purpose)
        self._send(200, online.build_answer(cid))


class ActivationService:
    """The service: a ledger, a clock, an HTTP(S) server on a thread (``start``/``stop``) or in the
    foreground (``serve_forever``)."""

    def __init__(self, store: LedgerStore, config: ServiceConfig, clock: Clock | None = None) -> None:
        self.store = store
        self.config = config
        self.clock: Clock = clock or WallClock()
        handler = type("Handler", (_Handler,), {"service": self})
        self.httpd = ThreadingHTTPServer((config.host, config.port), handler)
        self.httpd.daemon_threads = True
        if config.certfile is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(config.certfile), str(config.keyfile) if config.keyfile else None)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        scheme = "https" if self.config.certfile is not None else "http"
        host, port = self.address
        return f"{scheme}://{host}:{port}"

    def batch_item(self, request_type: int, item: batch.BatchItem) -> batch.BatchResult:
        """One Request of a BatchActivate call: a CID, a remaining count or a short error code."""
        try:
            if request_type == 1:
                assert item.iid is not None
                cid = self.store.activate(item.iid, self.clock.wall(), pid=item.pid, channel="batch")
                log.info("actsvc: BatchActivate CID for %s committed", item.pid)
                return batch.BatchResult(item.pid, cid=cid)
            return batch.BatchResult(item.pid, remaining=self.store.remaining_for_pid(item.pid))
        except ActivationError as exc:
            log.info("actsvc: BatchActivate refused for %s: %s", item.pid, exc)
            return batch.BatchResult(item.pid, error=batch.short_code_for(exc.code))

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="actsvc", daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
