"""The transparent proxy end to end: `coe up` (real Ray Serve) with a fake vLLM expert (tools, JSON
schema, vision) registered through the CLI, driven with the official openai SDK. Each feature arrives at
the expert unchanged and comes back unchanged; capability routing keeps tools away from the local
SmolLM2 experts (plain text only) and a local expert asked for tools by name answers an OpenAI 400."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

from deploy.settings import REPO_ROOT
from tests.deploy.conftest import ENV, Service
from tests.deploy.test_e2e import eventually, sdk
from tests.fake_vllm import FINGERPRINT, FakeVLLM

pytestmark = [pytest.mark.serve, pytest.mark.slow]

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}


def coe(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **ENV,
        "COE_DATABASE_URL": service.database_url,
        "PYTHONPATH": str(REPO_ROOT),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "deploy.ops.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def fake(service: Service) -> Iterator[FakeVLLM]:
    server = FakeVLLM(model="fake-tools-7b").start()
    r = coe(
        service,
        "experts",
        "add",
        "fake-vllm",
        "--url",
        server.base_url,
        "--model",
        server.model,
        "--capabilities",
        "tools,json,vision",
        "--max-context",
        "32768",
    )
    assert r.returncode == 0, r.stderr
    # last in rank for 'computer science': plain text keeps going to the local experts
    assert coe(service, "categories", "map", "computer science", "fake-vllm", "--rank", "99").returncode == 0
    shown = json.loads(coe(service, "experts", "show", "fake-vllm", "--json").stdout)
    assert shown["capabilities"] == ["json", "tools", "vision"]
    eventually(lambda: "fake-vllm" in [m.id for m in sdk(service).models.list()])
    eventually(
        lambda: "fake-vllm" in httpx.get(f"{service.base}/readyz", timeout=30).json()["experts"]["usable"]
    )
    yield server
    coe(service, "experts", "remove", "fake-vllm")
    server.stop()


def test_tools_json_schema_image_n_logprobs_and_extras_pass_through(service: Service, fake: FakeVLLM) -> None:
    client = sdk(service)
    msgs = [{"role": "user", "content": "Look up the capital of Peru"}]
    r = client.chat.completions.create(model="fake-vllm", messages=msgs, tools=[TOOL], tool_choice="required")
    body = fake.last()
    assert body["tools"] == [TOOL] and body["tool_choice"] == "required" and body["messages"] == msgs
    assert r.choices[0].finish_reason == "tool_calls" and r.model == "fake-vllm"
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"q": "x"}

    history = [
        *msgs,
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Lima"},
    ]
    r2 = client.chat.completions.create(model="fake-vllm", messages=history, tools=[TOOL])
    assert fake.last()["messages"] == history and r2.choices[0].message.tool_calls

    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "c",
            "schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    r3 = client.chat.completions.create(
        model="fake-vllm",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Which city?"}, image]}],
        response_format=schema,
        n=2,
        logprobs=True,
        top_logprobs=1,
        seed=3,
        extra_body={"top_k": 10, "repetition_penalty": 1.05, "guided_decoding_backend": "xgrammar"},
    )
    body = fake.last()
    assert body["response_format"] == schema and body["messages"][0]["content"][1] == image
    assert (body["n"], body["logprobs"], body["top_logprobs"], body["seed"]) == (2, True, 1, 3)
    assert (body["top_k"], body["repetition_penalty"], body["guided_decoding_backend"]) == (
        10,
        1.05,
        "xgrammar",
    )
    assert len(r3.choices) == 2 and json.loads(r3.choices[1].message.content) == {"city": "x"}
    assert r3.choices[0].logprobs.content[0].logprob == -0.25 and r3.system_fingerprint == FINGERPRINT


def test_streamed_tool_calls(service: Service, fake: FakeVLLM) -> None:
    stream = sdk(service).chat.completions.create(
        model="fake-vllm",
        messages=[{"role": "user", "content": "find it"}],
        tools=[TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        if c.choices
        for tc in (c.choices[0].delta.tool_calls or [])
    )
    assert json.loads(args) == {"q": "x"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None


def test_auto_sends_tools_only_to_a_tools_expert(service: Service, fake: FakeVLLM) -> None:
    n = len(fake.bodies)
    r = sdk(service).chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Write a Python function to sort a list"}],
        tools=[TOOL],
    )
    assert r.model == "fake-vllm" and len(fake.bodies) == n + 1
    plain = sdk(service).chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Write a Python function to sort a list"}],
        max_tokens=4,
    )
    assert plain.model.startswith("local-")


def test_audio_without_an_audio_expert_is_a_400_naming_it(service: Service, fake: FakeVLLM) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as ei:
        sdk(service).chat.completions.create(model="auto", messages=[{"role": "user", "content": [audio]}])
    assert "'audio'" in ei.value.message


def test_a_local_expert_asked_for_tools_by_name_answers_400(service: Service) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        sdk(service).chat.completions.create(
            model="local-general", messages=[{"role": "user", "content": "hi"}], tools=[TOOL]
        )
    assert "tools" in ei.value.message and ei.value.status_code == 400
