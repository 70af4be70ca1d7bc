"""Integration with a real vLLM OpenAI server (skipped unless COE_TEST_VLLM=1; see docs/experts.md).

    COE_TEST_VLLM=1 [COE_VLLM_PYTHON=/path/to/vllm-venv/bin/python] [COE_VLLM_ARGS="--dtype bfloat16"] \
        .venv/bin/python -m pytest -m vllm tests/experts/test_vllm.py
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import httpx
import pytest

from experts.local_model import ensure_converted
from experts.local_server import default_data_dir, free_port
from experts.pool import ExpertPool
from router.types import ExpertInfo, RegistrySnapshot
from tests.experts.helpers import decision, request

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("COE_TEST_VLLM") != "1", reason="set COE_TEST_VLLM=1 to run against vLLM"
    ),
]

SERVED = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory):
    model_dir = ensure_converted(default_data_dir())
    port = free_port()
    python = os.environ.get("COE_VLLM_PYTHON") or sys.executable
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        SERVED,
        "--enforce-eager",
        "--max-model-len",
        "2048",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # tool calling on, as a tools expert would be served (SmolLM2's template has no tool section:
        # see test_tools_and_json_schema_pass_through_to_vllm)
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        *shlex.split(os.environ.get("COE_VLLM_ARGS", "")),
    ]
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + float(os.environ.get("COE_VLLM_START_TIMEOUT", "900"))
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"vLLM did not start (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _pool(vllm_base: str) -> ExpertPool:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    experts = {
        "dead": ExpertInfo("dead", dead, SERVED, timeout_s=5),
        "vllm": ExpertInfo("vllm", vllm_base, SERVED, timeout_s=120, cost_output_per_m=1.0),
    }
    return ExpertPool(
        RegistrySnapshot(revision=1, experts=experts, category_experts={}), retries=0, health_interval_s=0
    )


async def test_models_chat_stream_and_failover(vllm_url):
    async with _pool(vllm_url) as pool:
        assert SERVED in await pool.client("vllm").models()
        req = request("What is 2+2?", max_tokens=8, temperature=0)
        res = await pool.complete(decision("vllm"), req)
        assert res.expert == "vllm" and 0 < res.usage.completion_tokens <= 8 and res.usage.prompt_tokens > 0
        assert res.cost_usd == pytest.approx(res.usage.completion_tokens / 1e6)
        chunks = [c async for c in pool.stream(decision("vllm"), req)]
        assert len(chunks) >= 2 and chunks[-1].usage is not None and chunks[-1].finish_reason
        failed_over = await pool.complete(decision("dead", alternates=("vllm",)), req)
        assert failed_over.expert == "vllm" and failed_over.attempts[0]["error"] == "ExpertConnectionError"
        streamed = [c async for c in pool.stream(decision("dead", alternates=("vllm",)), req)]
        assert {c.expert for c in streamed} == {"vllm"}


async def test_tools_and_json_schema_pass_through_to_vllm(vllm_url):
    """What SmolLM2-135M can do behind vLLM: JSON-schema output is enforced by vLLM's structured decoding
    whatever the model, so such an expert may declare `json`; tool calls need a model trained for them and
    a chat template that renders `tools` (SmolLM2's does not), so vLLM accepts the request and the model
    answers in text: it must not declare `tools`."""
    from experts.types import ChatRequest

    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}, "unit": {"type": "string", "maxLength": 8}},
        "required": ["answer", "unit"],
        "additionalProperties": False,
    }
    async with _pool(vllm_url) as pool:
        req = ChatRequest(
            messages=({"role": "user", "content": "How many legs does a cat have? Answer in JSON."},),
            params={
                "max_tokens": 40,
                "temperature": 0,
                "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
            },
        )
        res = await pool.complete(decision("vllm"), req)
        data = json.loads(res.content)
        assert set(data) == {"answer", "unit"} and isinstance(data["answer"], int)
        assert res.raw is not None and res.raw["choices"][0]["message"]["role"] == "assistant"

        tool = {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
        req = ChatRequest(
            messages=({"role": "user", "content": "What is the weather in Paris?"},),
            params={"max_tokens": 32, "temperature": 0, "tools": [tool], "tool_choice": "auto"},
        )
        res = await pool.complete(decision("vllm"), req)  # accepted (200): tools passed through
        msg = res.raw["choices"][0]["message"]
        assert res.raw["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
        for call in msg.get("tool_calls") or []:  # if the model did call, it is well formed
            assert call["function"]["name"] == "get_weather"
            json.loads(call["function"]["arguments"])
