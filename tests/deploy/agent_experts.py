"""Tools-capable test experts for the agent-traffic tests: `AgentVLLM` answers like a vLLM server with tool
calling that, unlike `tests.fake_vllm.FakeVLLM` (which always calls a tool when tools are offered), answers
in text once the conversation ends with tool results, so agent loops finish; with `responses=True` it also
serves `/v1/responses` itself (as vLLM does), for the native pass-through. Every body it receives is
recorded (`.bodies` for Chat Completions, `.responses_bodies` for the Responses API)."""

# no `from __future__ import annotations`: FastAPI must see the real Request class
import json
import uuid
from typing import Any

from fastapi import Request

from tests.fake_vllm import FakeVLLM


def _input_text(body: dict[str, Any]) -> str:
    raw = body.get("input")
    if isinstance(raw, str):
        return raw
    for item in reversed(raw or []):
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            return f"tool said: {item.get('output')}"
    return ""


class AgentVLLM(FakeVLLM):
    def __init__(self, *, model: str, responses: bool = False) -> None:
        super().__init__(model=model)
        self.serves_responses = responses
        self.responses_bodies: list[dict[str, Any]] = []

    def _tool_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if body["messages"] and body["messages"][-1].get("role") == "tool":
            return None  # tool results in: answer them
        return super()._tool_call(body)

    def native(self, body: dict[str, Any]) -> dict[str, Any]:
        """A Response for a /v1/responses request: `native: <the last input text>`."""
        text = f"native: {_input_text(body)}"
        return {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": 1,
            "status": "completed",
            "model": body.get("model"),
            "output": [
                {
                    "id": f"msg_{uuid.uuid4().hex[:8]}",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
        }

    def native_events(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        final = self.native(body)
        item = final["output"][0]
        part = item["content"][0]
        where = {"output_index": 0, "item_id": item["id"], "content_index": 0}
        events = [
            {"type": "response.created", "response": {**final, "status": "in_progress", "output": []}},
            {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
            {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
            {"type": "response.output_text.delta", **where, "delta": part["text"], "logprobs": []},
            {"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []},
            {"type": "response.content_part.done", **where, "part": part},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": final},
        ]
        return [{**e, "sequence_number": i} for i, e in enumerate(events)]

    def app(self) -> Any:
        from fastapi.responses import JSONResponse, StreamingResponse

        app = super().app()
        fake = self

        if self.serves_responses:

            @app.post("/v1/responses")
            async def responses(request: Request) -> Any:
                body = json.loads(await request.body())
                fake.responses_bodies.append(body)
                if body.get("stream"):

                    async def events() -> Any:
                        for e in fake.native_events(body):
                            yield f"event: {e['type']}\ndata: {json.dumps(e)}\n\n"

                    return StreamingResponse(events(), media_type="text/event-stream")
                return JSONResponse(fake.native(body))

        return app


async def run_lookup_agent(client: Any, question: str, found: str) -> tuple[Any, list[str]]:
    """The OpenAI Agents SDK with its default (Responses) model on `client` (an openai.AsyncOpenAI), asked
    `question` with one `lookup` tool that answers `found`: the run's result, and what it looked up."""
    import agents

    looked_up: list[str] = []

    @agents.function_tool
    def lookup(q: str) -> str:
        """Look a word up."""
        looked_up.append(q)
        return found

    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")  # the SDK's default, said explicitly
    agent = agents.Agent(name="helper", instructions="Use the lookup tool.", tools=[lookup], model="auto")
    return await agents.Runner.run(agent, question), looked_up
