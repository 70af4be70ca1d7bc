"""Builders for the expert tests: registry values, OpenAI bodies, a routed MockTransport, a fake clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from experts.types import ChatRequest
from router.types import ExpertChoice, ExpertInfo, RegistrySnapshot, RouteDecision

Handler = Callable[[httpx.Request], httpx.Response]


def info(name: str, **kw: Any) -> ExpertInfo:
    kw.setdefault("base_url", f"http://{name}.test/v1")
    kw.setdefault("model", f"{name}-model")
    kw.setdefault("timeout_s", 5.0)
    return ExpertInfo(name=name, **kw)


def snapshot(*experts: ExpertInfo, revision: int = 1) -> RegistrySnapshot:
    return RegistrySnapshot(revision=revision, experts={e.name: e for e in experts}, category_experts={})


def decision(
    *experts: str | tuple[str, float], alternates: tuple[str, ...] = (), aggregate: str | None = None
) -> RouteDecision:
    choices = tuple(
        ExpertChoice(e, 1.0 - i * 0.1) if isinstance(e, str) else ExpertChoice(*e)
        for i, e in enumerate(experts)
    )
    return RouteDecision(
        categories=(("math", 1.0),), experts=choices, alternates=alternates, aggregate=aggregate
    )


def request(text: str = "What is 2+2?", **params: Any) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), params=params)


def completion(
    content: str, *, usage: tuple[int, int] | None = (10, 5), finish: str = "stop"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        ],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
        }
    return body


def sse(
    *pieces: str, usage: tuple[int, int] | None = (7, 3), finish: str = "stop", done: bool = True
) -> bytes:
    out = []
    for p in pieces:
        out.append({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
    out.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        out.append({"choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}})
    text = "".join(f"data: {json.dumps(o)}\n\n" for o in out)
    if done:
        text += "data: [DONE]\n\n"
    return text.encode()


class Router:
    """A MockTransport handler that dispatches on the host name (<expert>.test) and counts calls."""

    def __init__(self, **handlers: Handler) -> None:
        self.handlers = dict(handlers)
        self.calls: list[tuple[str, str]] = []
        self.bodies: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, req: httpx.Request) -> httpx.Response:
        name = req.url.host.removesuffix(".test")
        self.calls.append((name, req.url.path))
        if req.method == "POST":
            self.bodies.setdefault(name, []).append(json.loads(req.content))
        return self.handlers[name](req)

    def count(self, name: str, path: str = "/v1/chat/completions") -> int:
        return sum(1 for n, p in self.calls if n == name and p == path)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def ok(content: str = "4", **kw: Any) -> Handler:
    def h(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        if json.loads(req.content).get("stream"):
            return httpx.Response(
                200, content=sse(*content.split(" ")), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json=completion(content, **kw))

    return h


def status(code: int) -> Handler:
    return lambda req: httpx.Response(code, json={"error": {"message": f"boom {code}"}})


def refuse(req: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=req)


def timeout(req: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=req)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


async def no_sleep(_: float) -> None:
    return None


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """One HTTP/1.1 request off a raw socket (the fault servers' parser): its head, and whether its JSON
    body asks for a stream. Raises IncompleteReadError when the client has gone."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length) if length else b""
    return head, b'"stream": true' in body or b'"stream":true' in body
