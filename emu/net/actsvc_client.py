"""Talking to an activation service: emu's online endpoint and BatchActivation, over urllib (HTTP(S))."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

from emu.errors import EmuError
from emu.mak import batch, online
from emu.mak.errors import ActivationError

__all__ = ["ServiceUnreachable", "batch_call", "online_activate"]


class ServiceUnreachable(EmuError):
    """The activation service could not be reached or answered with an HTTP error."""


def _post(url: str, path: str, body: bytes, headers: dict[str, str], cafile: Path | None, timeout: float) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    request = urllib.request.Request(url.rstrip("/") + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
            data: bytes = answer.read()
            return data
    except urllib.error.HTTPError as exc:
        data = exc.read()
        if exc.code == 500 and data:
            return data  # a SOAP fault travels as HTTP 500
        raise ServiceUnreachable(f"{url}{path}: HTTP {exc.code} {data[:200]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServiceUnreachable(f"cannot reach the activation service at {url}: {exc}") from None


def online_activate(
    url: str, key: str, iid: str, purpose: str = "client", *, cafile: Path | None = None, timeout: float = 10.0
) -> str:
    """The CID for ``iid`` from emu's online endpoint, or :class:`ActivationError` with the service's code."""
    body = online.build_request(online.OnlineRequest(key, iid, purpose))
    answer = _post(url, online.ONLINE_PATH, body, {"Content-Type": "text/xml; charset=utf-8"}, cafile, timeout)
    cid, code = online.parse_answer(answer)
    if cid is None:
        raise ActivationError(code, "refused by the activation service")
    return cid


def batch_call(
    url: str,
    request: batch.BatchRequest,
    *,
    digest_key: bytes = batch.LAB_DIGEST_KEY,
    cafile: Path | None = None,
    timeout: float = 30.0,
) -> tuple[batch.BatchResult, ...]:
    """One BatchActivate call; :class:`emu.mak.batch.BatchFault` for a SOAP fault."""
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{batch.SOAP_ACTION}"'}
    answer = _post(url, batch.BATCH_PATH, batch.build_envelope(request, digest_key), headers, cafile, timeout)
    return batch.parse_response(answer)
