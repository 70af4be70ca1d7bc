"""A client for one OpenAI-compatible expert (vLLM, the local CPU server, any /v1/chat/completions API).

Every failure leaves as one of the typed errors of `router/errors.py`:
  httpx timeouts                      → ExpertTimeout         (retryable)
  refused / reset / dropped mid-body  → ExpertConnectionError (retryable)
  4xx / 5xx                           → ExpertHTTPError       (retryable for 429 and 5xx; .upstream_status)
  malformed JSON or SSE, no choices   → ExpertBadResponse
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import httpx

from experts.tracecontext import OUTGOING_HEADERS
from experts.types import ChatChunk, ChatRequest, ChatResult, Usage
from router.errors import (
    ExpertBadResponse,
    ExpertConnectionError,
    ExpertError,
    ExpertHTTPError,
    ExpertTimeout,
)
from router.types import ExpertInfo

#: connect timeout cap: a dead host should fail fast even when the expert may think for minutes
CONNECT_TIMEOUT_S = 5.0


def estimate_tokens(text: str) -> int:
    """Rough token count (≈4 characters a token) for servers that report no usage."""
    return (len(text) + 3) // 4 if text else 0


def estimate_prompt_tokens(messages: tuple[Mapping[str, Any], ...]) -> int:
    total = 0
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            c = "".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
        total += estimate_tokens(str(c or "")) + 4  # role and separators
    return total


class OpenAIExpertClient:
    """Talks to one expert through a shared `httpx.AsyncClient` (the pool owns it; pooled connections)."""

    def __init__(
        self, info: ExpertInfo, http: httpx.AsyncClient, *, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.info = info
        self._http = http
        self._clock = clock
        self._root = info.base_url.rstrip("/")
        t = max(0.001, info.timeout_s)
        self._timeout = httpx.Timeout(t, connect=min(t, CONNECT_TIMEOUT_S))

    @property
    def name(self) -> str:
        return self.info.name

    # ------------------------------------------------------------------------------------- helpers
    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.info.api_key_env:
            key = os.environ.get(self.info.api_key_env)
            if key:
                h["Authorization"] = f"Bearer {key}"
        extra = OUTGOING_HEADERS.get()  # trace context of the request being served
        if extra:
            h.update(extra)
        return h

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        """The client's request as it sent it, with the expert's served model name. Streams always ask
        for usage (for cost accounting); the ingress drops the usage chunk if the client did not ask."""
        body: dict[str, Any] = {
            k: v for k, v in request.params.items() if k not in ("model", "stream", "stream_options")
        }
        body["model"] = self.info.model
        body["messages"] = list(request.messages)
        if stream:
            opts = request.params.get("stream_options")
            body["stream"] = True
            body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        return body

    def _transport_error(self, exc: httpx.HTTPError | httpx.InvalidURL) -> ExpertError:
        n = self.info.name
        if isinstance(exc, httpx.InvalidURL):
            return ExpertConnectionError(f"expert {n!r} has an invalid URL: {exc}", expert=n, retryable=False)
        if isinstance(exc, httpx.TimeoutException):
            return ExpertTimeout(
                f"expert {n!r} timed out after {self.info.timeout_s:g}s ({type(exc).__name__})", expert=n
            )
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError):
            return ExpertConnectionError(
                f"expert {n!r}: {type(exc).__name__}: {exc}", expert=n, retryable=False
            )
        if isinstance(exc, httpx.TransportError):
            return ExpertConnectionError(
                f"expert {n!r} connection failed ({type(exc).__name__}: {exc})", expert=n
            )
        if isinstance(exc, httpx.DecodingError):
            return ExpertBadResponse(f"expert {n!r} sent an undecodable body: {exc}", expert=n)
        return ExpertConnectionError(f"expert {n!r}: {type(exc).__name__}: {exc}", expert=n)

    def _status_error(self, status: int, body: bytes) -> ExpertHTTPError:
        detail = body[:300].decode("utf-8", "replace").strip()
        upstream: dict[str, Any] | None = None
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                err = parsed.get("error", parsed)
                detail = str(err.get("message", err) if isinstance(err, dict) else err)[:300]
                if isinstance(err, dict):
                    # vLLM: {"object": "error", "message", "type", "code": 400}; OpenAI: {"error": {...}}
                    upstream = {
                        "message": str(err.get("message", detail))[:2000],
                        "type": err.get("type") if isinstance(err.get("type"), str) else None,
                        "param": err.get("param") if isinstance(err.get("param"), str) else None,
                        "code": err.get("code") if isinstance(err.get("code"), str) else None,
                    }
        except ValueError:
            pass
        exc = ExpertHTTPError(
            f"expert {self.info.name!r} returned HTTP {status}: {detail}",
            expert=self.info.name,
            status_code=status,
            retryable=status == 429 or status >= 500,
        )
        exc.upstream_error = upstream
        return exc

    def _bad(self, what: str) -> ExpertBadResponse:
        return ExpertBadResponse(
            f"expert {self.info.name!r} sent a malformed response: {what}", expert=self.info.name
        )

    def _usage(self, raw: Any, request: ChatRequest, completion: str) -> Usage:
        if isinstance(raw, dict):
            pt, ct = raw.get("prompt_tokens"), raw.get("completion_tokens")
            if isinstance(pt, int) and isinstance(ct, int) and pt >= 0 and ct >= 0:
                return Usage(pt, ct)
        return Usage(estimate_prompt_tokens(request.messages), estimate_tokens(completion))

    def _cost(self, usage: Usage) -> float:
        return self.info.cost_usd(usage.prompt_tokens, usage.completion_tokens)

    # ---------------------------------------------------------------------------------------- API
    async def chat(self, request: ChatRequest) -> ChatResult:
        t0 = self._clock()
        resp = await self._ok("POST", "/chat/completions", json=self._body(request, stream=False))
        try:
            data = resp.json()
        except ValueError:
            raise self._bad("body is not JSON") from None
        if not isinstance(data, dict):
            raise self._bad("body is not a JSON object")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise self._bad("no choices")
        msg = choices[0].get("message")
        if not isinstance(msg, dict):
            raise self._bad("choice without a message")
        content = msg.get("content")
        if content is None:
            content = ""  # a tool-call answer, or a refusal
        if not isinstance(content, str):
            raise self._bad("message content is not text")
        completion = "".join(
            str(c.get("message", {}).get("content") or "")
            for c in choices
            if isinstance(c.get("message"), dict)
        )
        usage = self._usage(data.get("usage"), request, completion)
        return ChatResult(
            expert=self.info.name,
            content=content,
            finish_reason=choices[0].get("finish_reason"),
            usage=usage,
            cost_usd=self._cost(usage),
            latency_ms=(self._clock() - t0) * 1000.0,
            contributors=(self.info.name,),
            raw=data,
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatChunk, None]:
        """Yield every chunk the expert sends as it arrives (`raw`; `delta` = choice 0's text), then one
        final chunk with finish_reason, usage and cost (its `raw` is the expert's usage chunk, if any)."""
        n = self.info.name
        text: list[str] = []
        finish: str | None = None
        raw_usage: Any = None
        usage_chunk: dict[str, Any] | None = None
        done = False
        try:
            async with self._http.stream(
                "POST",
                f"{self._root}/chat/completions",
                json=self._body(request, stream=True),
                headers={**self._headers(), "Accept": "text/event-stream"},
                timeout=self._timeout,
            ) as resp:
                if resp.status_code >= 400:
                    raise self._status_error(resp.status_code, await resp.aread())
                async for line in resp.aiter_lines():
                    data = _sse_data(line)
                    if data is None:
                        continue
                    if data is _NOT_SSE:
                        raise self._bad(f"not an SSE line: {line[:80]!r}")
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        obj = json.loads(data)
                    except ValueError:
                        raise self._bad(f"SSE data is not JSON: {data[:80]!r}") from None
                    if not isinstance(obj, dict):
                        raise self._bad("SSE event is not a JSON object")
                    if "error" in obj and not obj.get("choices"):
                        err = obj["error"]
                        msg = err.get("message", err) if isinstance(err, dict) else err
                        raise ExpertHTTPError(
                            f"expert {n!r} failed mid-stream: {str(msg)[:300]}",
                            expert=n,
                            status_code=502,
                            retryable=True,
                        )
                    if obj.get("usage"):
                        raw_usage = obj["usage"]
                    choices = obj.get("choices")
                    if choices is None:
                        choices = []
                    if not isinstance(choices, list):
                        raise self._bad("choices is not a list")
                    if not choices:
                        if obj.get("usage"):
                            usage_chunk = obj  # the usage-only chunk: relayed at the end
                        continue
                    piece = ""
                    for ch in choices:
                        if not isinstance(ch, dict):
                            raise self._bad("choice is not an object")
                        delta = ch.get("delta") or {}
                        if not isinstance(delta, dict):
                            raise self._bad("delta is not an object")
                        content = delta.get("content")
                        if content is not None and not isinstance(content, str):
                            raise self._bad("delta content is not text")
                        if content and ch.get("index", 0) == 0:
                            piece += content
                        if ch.get("finish_reason") and ch.get("index", 0) == 0:
                            finish = ch["finish_reason"]
                    if piece:
                        text.append(piece)
                    yield ChatChunk(expert=n, delta=piece, raw=obj)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc) from exc
        if not done and finish is None:
            raise ExpertConnectionError(f"expert {n!r} stream ended before completion", expert=n)
        usage = self._usage(raw_usage, request, "".join(text))
        yield ChatChunk(
            expert=n, finish_reason=finish or "stop", usage=usage, cost_usd=self._cost(usage), raw=usage_chunk
        )

    async def models(self) -> list[str]:
        """Served model ids (GET /models); also the health probe."""
        limit = httpx.Timeout(
            min(self.info.timeout_s, 10.0), connect=min(self.info.timeout_s, CONNECT_TIMEOUT_S)
        )
        resp = await self._ok("GET", "/models", timeout=limit)
        try:
            data = resp.json()
            return [str(m["id"]) for m in data["data"]]
        except (ValueError, KeyError, TypeError):
            raise self._bad("models list is not {data: [{id: ...}]}") from None

    async def request(
        self, method: str, path: str, *, json: Any = None, timeout: float | httpx.Timeout | None = None
    ) -> httpx.Response:
        """One request to `<base_url><path>` with the expert's headers, its response as it came (any
        status, redirects not followed unless the shared client follows them): for callers that judge the
        answer themselves (experts/probe.py). Transport failures leave as the typed errors above; `timeout`
        (seconds for every phase, or an httpx.Timeout) replaces the expert's own."""
        try:
            return await self._http.request(
                method,
                self._root + path,
                json=json,
                headers=self._headers(),
                timeout=self._timeout if timeout is None else httpx.Timeout(timeout),
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc) from exc

    async def _ok(
        self, method: str, path: str, *, json: Any = None, timeout: httpx.Timeout | None = None
    ) -> httpx.Response:
        """`request`, and an expert's 4xx/5xx as ExpertHTTPError."""
        resp = await self.request(method, path, json=json, timeout=timeout)
        if resp.status_code >= 400:
            raise self._status_error(resp.status_code, resp.content)
        return resp


_NOT_SSE = "\x00not-sse"


def _sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line; None for blank lines, comments and other fields."""
    if not line or line.startswith(":"):
        return None
    if line.startswith("data:"):
        return line[5:].strip()
    if ":" in line and line.split(":", 1)[0] in ("event", "id", "retry"):
        return None
    if not line.strip():
        return None
    # a line that is not SSE at all: a server answering JSON or HTML to a streaming request
    return _NOT_SSE
