"""Probe an OpenAI-compatible expert the way an operator would: GET <base_url>/models (is the model
served?) and a 1-token chat completion, through the expert client the router uses (experts/client.py),
following no redirect. `probe_expert` runs it to completion (the CLI calls it directly, the admin API in
a worker thread); `probe_expert_async` is the same probe on the caller's event loop."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Protocol

import httpx

from experts.client import OpenAIExpertClient
from router.errors import ExpertError, ExpertTimeout
from router.types import ExpertInfo


class Probeable(Protocol):
    """What a probe reads (read-only: ExpertRecord and ExpertInfo are frozen)."""

    @property
    def name(self) -> str: ...

    @property
    def base_url(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def api_key_env(self) -> str | None: ...

    @property
    def timeout_s(self) -> float: ...


def probe_expert(expert: Probeable, timeout: float | None = None) -> dict[str, Any]:
    """`{"expert", "ok", "checks": [{check, ok, error, latency_ms}], "warning"}`; the key comes from
    the expert's `api_key_env` (a warning, and no key, when that variable is not set)."""
    return asyncio.run(probe_expert_async(expert, timeout))


async def probe_expert_async(expert: Probeable, timeout: float | None = None) -> dict[str, Any]:
    """`probe_expert` on the running event loop."""
    warning = None
    if expert.api_key_env and not os.environ.get(expert.api_key_env):
        warning = f"environment variable {expert.api_key_env} is not set"
    info = ExpertInfo(
        name=expert.name,
        base_url=expert.base_url,
        model=expert.model,
        api_key_env=expert.api_key_env,
        timeout_s=timeout or expert.timeout_s,
    )
    checks = await probe_checks(info)
    return {"expert": expert.name, "ok": all(c["ok"] for c in checks), "checks": checks, "warning": warning}


async def probe_checks(info: ExpertInfo) -> list[dict[str, Any]]:
    """The two checks, each `{check, ok, error, latency_ms}`, every request limited to `info.timeout_s`."""
    results: list[dict[str, Any]] = []
    body = {"model": info.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    # no redirects: a probe must not carry the expert's key to another host (nor report it as healthy)
    async with httpx.AsyncClient(follow_redirects=False) as http:
        client = OpenAIExpertClient(info, http)
        for check, method, path, payload in (
            ("models", "GET", "/models", None),
            ("chat_completion", "POST", "/chat/completions", body),
        ):
            start = time.perf_counter()
            error = await _check(client, check, method, path, payload)
            results.append(
                {
                    "check": check,
                    "ok": error is None,
                    "error": error,
                    "latency_ms": round((time.perf_counter() - start) * 1000, 1),
                }
            )
    return results


async def _check(client: OpenAIExpertClient, check: str, method: str, path: str, payload: Any) -> str | None:
    """What is wrong with one check's answer, or None."""
    timeout = client.info.timeout_s
    model = client.info.model
    try:
        resp = await client.request(method, path, json=payload, timeout=timeout)
        if resp.is_redirect:
            where = resp.headers.get("location", "?")[:200]
            return f"HTTP {resp.status_code} redirect to {where} (the probe follows no redirects)"
        if resp.status_code >= 400:
            return f"HTTP {resp.status_code}: {resp.text.strip()[:200]}"
        data = resp.json()
        if check == "models" and not isinstance(data.get("data"), list):
            return "response has no 'data' list"
        if check == "models" and model not in {m.get("id") for m in data["data"]}:
            return (
                f"model {model!r} is not served (served: "
                f"{', '.join(str(m.get('id')) for m in data['data'][:5])})"
            )
        if check == "chat_completion" and not data.get("choices"):
            return "response has no choices"
    except ExpertTimeout:
        return f"timed out after {timeout:g} s"
    except ExpertError as exc:
        return exc.message if exc.__cause__ is None else _transport_words(exc.__cause__)
    except (ValueError, AttributeError, TypeError) as exc:
        return f"malformed response: {exc}"
    return None


def _transport_words(exc: BaseException) -> str:
    """`ConnectError: [Errno 111] Connection refused`: the httpx error's name and the socket's words.
    The async transport (anyio) wraps a failed connect in "All connection attempts failed", which hides
    whether the port refused or the host was unreachable: below that wrapper lies the socket's error,
    worded here as the OS words it (as the synchronous transport the probe used before reported it)."""
    inner: BaseException | None = exc
    while inner is not None:
        cause = inner.__cause__
        if isinstance(inner, OSError) and inner.errno is None and isinstance(cause, BaseExceptionGroup):
            cause = cause.exceptions[0]  # several addresses tried: the first one's error, as socket does
        if isinstance(inner, OSError) and inner.errno is None and isinstance(cause, OSError) and cause.errno:
            return f"{type(exc).__name__}: [Errno {cause.errno}] {os.strerror(cause.errno)}"
        inner = cause or inner.__context__
    return f"{type(exc).__name__}: {exc}"
