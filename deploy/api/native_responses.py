"""A Responses request for an expert that serves the Responses API itself (capability `responses`: a vLLM
server's `/v1/responses`): the client's own body goes to `{base_url}/responses`, with `model` = the
expert's model, the stored turns of `previous_response_id` expanded into `input` (the expert never saw
CoE's ids) and `store: false` (CoE stores the answer, so GET/DELETE and continuations work the same as for
translated answers). The answer comes back as the expert sent it, with `model` = the expert's name and
CoE's `coe` trace; a stream is relayed event by event as it arrives.

Failures map onto the one error tree (router/errors.py): the expert's own 400/413/422 is relayed
(`ExpertRejected`), any other status is an `ExpertHTTPError` (502), a timeout `ExpertTimeout` (504), a
refused connection `ExpertConnectionError` (502), malformed JSON `ExpertBadResponse` (502). The native
call goes from the ingress straight to the expert: one try, without the expert pool's failover and
circuit breaker (an expert that does not declare `responses` gets the translated request through the pool)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from deploy.api import openai_responses as oai
from experts.tracecontext import OUTGOING_HEADERS
from router.errors import (
    ExpertBadResponse,
    ExpertConnectionError,
    ExpertError,
    ExpertHTTPError,
    ExpertRejected,
    ExpertTimeout,
)
from router.types import ExpertInfo

#: request fields that are CoE's business, never the expert's
_OWN = ("previous_response_id", "store", "routing")


def upstream_body(
    body: Mapping[str, Any], history: Sequence[Mapping[str, Any]], info: ExpertInfo
) -> dict[str, Any]:
    """The client's Responses body as the expert gets it."""
    out = {k: v for k, v in body.items() if k not in _OWN}
    out["model"] = info.model
    if history:
        out["input"] = [*history, *oai.input_items(body)]
    out["store"] = False
    return out


def _headers(info: ExpertInfo) -> dict[str, str]:
    headers = {"content-type": "application/json", **(OUTGOING_HEADERS.get() or {})}
    key = os.environ.get(info.api_key_env) if info.api_key_env else None
    if key:
        headers["authorization"] = f"Bearer {key}"
    return headers


def _failure(info: ExpertInfo, status: int, text: str) -> ExpertError | ExpertRejected:
    try:
        err = json.loads(text).get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    message = str(err.get("message") or text[:300] or f"HTTP {status}")
    if status in (400, 413, 422):
        return ExpertRejected(
            message,
            status=status,
            error_type=str(err.get("type") or "invalid_request_error"),
            expert=info.name,
            param=err.get("param"),
            code=err.get("code"),
        )
    exc = ExpertHTTPError(
        f"expert {info.name} answered {status}: {message}", expert=info.name, status_code=status
    )
    exc.upstream_error = err or None
    return exc


class NativeResponses:
    """The ingress's HTTP client for native Responses calls (one connection pool, opened on first use)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(transport=self._transport)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def _send(self, info: ExpertInfo, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST `body` to the expert's /responses; a timeout or a dead expert as the typed errors."""
        url = f"{info.base_url.rstrip('/')}/responses"
        request = self._client().build_request(
            "POST", url, json=body, headers=_headers(info), timeout=info.timeout_s
        )
        try:
            return await self._client().send(request, stream=stream)
        except httpx.TimeoutException:
            raise ExpertTimeout(f"expert {info.name} timed out", expert=info.name) from None
        except httpx.TransportError as exc:
            raise ExpertConnectionError(
                f"expert {info.name}: {type(exc).__name__}", expert=info.name
            ) from None

    async def create(self, info: ExpertInfo, body: dict[str, Any]) -> dict[str, Any]:
        """A complete Response from the expert."""
        r = await self._send(info, body, stream=False)
        if r.status_code >= 300:
            raise _failure(info, r.status_code, r.text)
        try:
            data = r.json()
        except ValueError:
            raise ExpertBadResponse(f"expert {info.name} sent malformed JSON", expert=info.name) from None
        if not isinstance(data, dict):
            raise ExpertBadResponse(f"expert {info.name} sent no Response object", expert=info.name)
        return data

    async def stream(self, info: ExpertInfo, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The expert's stream events as dicts; opened before the first is returned, so a refusal or a
        dead expert raises before the client's response starts."""
        r = await self._send(info, body, stream=True)
        if r.status_code >= 300:
            text = (await r.aread()).decode(errors="replace")
            await r.aclose()
            raise _failure(info, r.status_code, text)
        return _events(r, info)


async def _events(r: httpx.Response, info: ExpertInfo) -> AsyncIterator[dict[str, Any]]:
    try:
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if not payload or payload == "[DONE]":
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                raise ExpertBadResponse(
                    f"expert {info.name} sent a malformed event", expert=info.name
                ) from None
            if isinstance(event, dict):
                yield event
    except httpx.TimeoutException:
        raise ExpertTimeout(f"expert {info.name} timed out mid-stream", expert=info.name) from None
    except httpx.TransportError as exc:
        raise ExpertConnectionError(f"expert {info.name}: {type(exc).__name__}", expert=info.name) from None
    finally:
        await r.aclose()
