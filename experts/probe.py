"""Probe an OpenAI-compatible expert the way an operator would: GET <base_url>/models (is the model
served?) and a 1-token chat completion. Synchronous (httpx.Client): the CLI calls it directly, the
admin API in a worker thread."""

from __future__ import annotations

import os
from typing import Any, Protocol


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
    headers: dict[str, str] = {}
    warning = None
    if expert.api_key_env:
        key = os.environ.get(expert.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        else:
            warning = f"environment variable {expert.api_key_env} is not set"
    checks = probe_checks(expert.base_url, expert.model, headers, timeout or expert.timeout_s)
    return {"expert": expert.name, "ok": all(c["ok"] for c in checks), "checks": checks, "warning": warning}


def probe_checks(base_url: str, model: str, headers: dict[str, str], timeout: float) -> list[dict[str, Any]]:
    import time

    import httpx

    results: list[dict[str, Any]] = []
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    # no redirects: a probe must not carry the expert's key to another host (nor report it as healthy)
    with httpx.Client(timeout=timeout, headers=headers, follow_redirects=False) as client:
        for check, method, path, payload in (
            ("models", "GET", "/models", None),
            ("chat_completion", "POST", "/chat/completions", body),
        ):
            start = time.perf_counter()
            error = None
            try:
                resp = client.request(method, base_url.rstrip("/") + path, json=payload)
                if resp.is_redirect:
                    where = resp.headers.get("location", "?")[:200]
                    error = f"HTTP {resp.status_code} redirect to {where} (the probe follows no redirects)"
                elif resp.status_code >= 400:
                    error = f"HTTP {resp.status_code}: {resp.text.strip()[:200]}"
                else:
                    data = resp.json()
                    if check == "models" and not isinstance(data.get("data"), list):
                        error = "response has no 'data' list"
                    elif check == "models" and model not in {m.get("id") for m in data["data"]}:
                        error = (
                            f"model {model!r} is not served (served: "
                            f"{', '.join(str(m.get('id')) for m in data['data'][:5])})"
                        )
                    elif check == "chat_completion" and not data.get("choices"):
                        error = "response has no choices"
            except httpx.TimeoutException:
                error = f"timed out after {timeout:g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            except (ValueError, AttributeError, TypeError) as exc:
                error = f"malformed response: {exc}"
            results.append(
                {
                    "check": check,
                    "ok": error is None,
                    "error": error,
                    "latency_ms": round((time.perf_counter() - start) * 1000, 1),
                }
            )
    return results
