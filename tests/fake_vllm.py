"""A small OpenAI-compatible test expert that behaves like vLLM with tool calling on
(`--enable-auto-tool-choice`), served over real HTTP by uvicorn in a thread.

It records every request body it receives (`FakeVLLM.bodies`) and answers from the request:
- `tools` offered (and `tool_choice` not "none"): a call to the chosen / first tool, `finish_reason`
  "tool_calls", arguments a JSON object filled from the tool's parameter schema;
- `response_format` json_object / json_schema: content is a JSON object (filled from the schema);
- `n`: that many choices; `logprobs` / `top_logprobs`: per-token logprobs like vLLM's;
- otherwise an echo of the last user text parts (`"echo: ..."`), and `[image]` for each image part;
- a prompt whose estimate (characters / 4 + max_tokens) exceeds `max_context`: vLLM's 400
  "This model's maximum context length is ..." error;
- `usage` with `prompt_tokens_details`, and a `system_fingerprint`; streams send tool-call deltas in
  two pieces, logprobs on content chunks, and a usage chunk when asked.
"""

# no `from __future__ import annotations`: FastAPI must see the real Request class
import json
import threading
import time
import uuid
from typing import Any

from experts.net import free_port

FINGERPRINT = "fp_fake_vllm"


def _fill(schema: Any) -> Any:
    """A value of the JSON schema's type (objects get every property)."""
    if not isinstance(schema, dict):
        return "x"
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {k: _fill(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_fill(schema.get("items", {}))]
    if kind == "integer":
        return 7
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if "enum" in schema:
        return schema["enum"][0]
    return "x"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for p in content:
            if p.get("type") == "text":
                out.append(p.get("text", ""))
            elif p.get("type") in ("image_url", "input_image"):
                out.append("[image]")
        return " ".join(out)
    return ""


class FakeVLLM:
    def __init__(self, *, max_context: int = 100_000, model: str = "fake-model") -> None:
        self.max_context = max_context
        self.model = model
        self.bodies: list[dict[str, Any]] = []
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # ----- answers ----------------------------------------------------------------------------------
    def _tool_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        tools = body.get("tools") or []
        choice = body.get("tool_choice", "auto")
        if not tools or choice == "none":
            return None
        fn = tools[0]["function"]
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name")
            fn = next((t["function"] for t in tools if t["function"]["name"] == wanted), fn)
        args = json.dumps(_fill(fn.get("parameters", {})))
        return {
            "id": f"call_{uuid.uuid4().hex[:8]}",
            "type": "function",
            "function": {"name": fn["name"], "arguments": args},
        }

    def _content(self, body: dict[str, Any]) -> str:
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            return json.dumps(_fill(fmt.get("json_schema", {}).get("schema", {})))
        if fmt.get("type") == "json_object":
            return json.dumps({"answer": "x"})
        users = [m for m in body["messages"] if m.get("role") == "user"]
        last_tool = [m for m in body["messages"] if m.get("role") == "tool"]
        if body["messages"][-1].get("role") == "tool" and last_tool:
            return f"tool said: {last_tool[-1].get('content')}"
        return "echo: " + (_text(users[-1].get("content")) if users else "")

    @staticmethod
    def _logprobs(text: str, top: int) -> dict[str, Any]:
        toks = text.split(" ")[:4] or [""]
        return {
            "content": [
                {
                    "token": t,
                    "logprob": -0.25,
                    "bytes": list(t.encode()),
                    "top_logprobs": [{"token": t, "logprob": -0.25, "bytes": list(t.encode())}] * top,
                }
                for t in toks
            ]
        }

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        chars = sum(len(_text(m.get("content"))) for m in body["messages"])
        return chars // 4 + 1

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        want = self._prompt_tokens(body) + int(
            body.get("max_tokens") or body.get("max_completion_tokens") or 0
        )
        if want > self.max_context:
            return 400, {
                "object": "error",
                "message": (
                    f"This model's maximum context length is {self.max_context} tokens. However, you "
                    f"requested {want} tokens. Please reduce the length of the messages or completion."
                ),
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            }
        fmt = body.get("response_format")
        if fmt is not None and fmt.get("type") not in ("text", "json_object", "json_schema"):
            return 400, {
                "object": "error",
                "message": f"unknown response_format {fmt.get('type')!r}",
                "type": "BadRequestError",
                "param": "response_format",
                "code": 400,
            }
        choices = []
        for i in range(int(body.get("n") or 1)):
            call = self._tool_call(body)
            if call is not None:
                msg: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
                finish = "tool_calls"
            else:
                msg = {"role": "assistant", "content": self._content(body), "tool_calls": []}
                finish = "stop"
            ch: dict[str, Any] = {"index": i, "message": msg, "finish_reason": finish, "logprobs": None}
            if body.get("logprobs"):
                ch["logprobs"] = self._logprobs(msg.get("content") or "", int(body.get("top_logprobs") or 0))
            choices.append(ch)
        pt = self._prompt_tokens(body)
        return 200, {
            "id": f"chatcmpl-fake{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": choices,
            "system_fingerprint": FINGERPRINT,
            "usage": {
                "prompt_tokens": pt,
                "completion_tokens": 5,
                "total_tokens": pt + 5,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }

    def chunks(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        status, full = self.answer(body)
        assert status == 200
        base = {
            "id": full["id"],
            "object": "chat.completion.chunk",
            "created": full["created"],
            "model": full["model"],
            "system_fingerprint": FINGERPRINT,
        }
        out: list[dict[str, Any]] = []
        usage_on = bool((body.get("stream_options") or {}).get("include_usage"))
        for ch in full["choices"]:
            i = ch["index"]
            out.append(
                {
                    **base,
                    "choices": [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                            "logprobs": None,
                        }
                    ],
                }
            )
            msg = ch["message"]
            for call in msg.get("tool_calls") or []:
                args = call["function"]["arguments"]
                half = len(args) // 2
                out.append(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "delta": {
                                    "tool_calls": [
                                        {
                                            "index": 0,
                                            "id": call["id"],
                                            "type": "function",
                                            "function": {
                                                "name": call["function"]["name"],
                                                "arguments": args[:half],
                                            },
                                        }
                                    ]
                                },
                                "finish_reason": None,
                                "logprobs": None,
                            }
                        ],
                    }
                )
                out.append(
                    {
                        **base,
                        "choices": [
                            {
                                "index": i,
                                "delta": {
                                    "tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]
                                },
                                "finish_reason": None,
                                "logprobs": None,
                            }
                        ],
                    }
                )
            if msg.get("content"):
                for word in msg["content"].split(" "):
                    lp = (
                        self._logprobs(word, int(body.get("top_logprobs") or 0))
                        if body.get("logprobs")
                        else None
                    )
                    out.append(
                        {
                            **base,
                            "choices": [
                                {
                                    "index": i,
                                    "delta": {"content": word + " "},
                                    "finish_reason": None,
                                    "logprobs": lp,
                                }
                            ],
                        }
                    )
            out.append(
                {
                    **base,
                    "choices": [
                        {"index": i, "delta": {}, "finish_reason": ch["finish_reason"], "logprobs": None}
                    ],
                }
            )
        if usage_on:
            out.append({**base, "choices": [], "usage": full["usage"]})
        return out

    # ----- server -----------------------------------------------------------------------------------
    def app(self) -> Any:
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, StreamingResponse

        app = FastAPI()
        fake = self

        @app.get("/v1/models")
        async def models() -> Any:
            return {"object": "list", "data": [{"id": fake.model, "object": "model", "owned_by": "fake"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = json.loads(await request.body())
            fake.bodies.append(body)
            if body.get("stream"):
                status, err = fake.answer(body)
                if status != 200:
                    return JSONResponse(err, status_code=status)

                async def events() -> Any:
                    for c in fake.chunks(body):
                        yield f"data: {json.dumps(c)}\n\n"
                    yield "data: [DONE]\n\n"

                return StreamingResponse(events(), media_type="text/event-stream")
            status, data = fake.answer(body)
            return JSONResponse(data, status_code=status)

        return app

    def start(self) -> "FakeVLLM":
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(
            self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake vLLM did not start")
            time.sleep(0.05)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def last(self) -> dict[str, Any]:
        return self.bodies[-1]
