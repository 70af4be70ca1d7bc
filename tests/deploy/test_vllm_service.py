"""CoE against the real vLLM engine (its CPU build from .venv-vllm): `coe up` with COE_LOCAL_ENGINE=vllm
serves the local SmolLM2 personas through vLLM, and every request here goes through CoE's HTTP API with
the official OpenAI SDK (or httpx where the test needs the raw stream): chat, streamed usage, n, logprobs,
guided JSON and forced tool calls, vLLM's own 400 for a prompt over --max-model-len, the health probe and
/v1/models, and a client that goes away mid-stream making vLLM abort. Failover to a larger context runs
through CoE's ExpertPool between two real engines (2048 and 4096 tokens). One `coe up` per module;
COE_TEST_VLLM=0 skips (tests/vllm_engine.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from deploy.settings import REPO_ROOT
from experts.pool import ExpertPool
from experts.vllm_server import VllmServerHandle, start_vllm_server
from router.types import ExpertInfo, RegistrySnapshot
from tests.deploy.conftest import (
    ENV,
    QUICK,
    Service,
    coe_up_env,
    free_port,
    launch_coe_up,
    router_artifact,
    wait_until_up,
)
from tests.experts.helpers import decision, request
from tests.vllm_engine import SKIP_VLLM, finished, require_vllm, wait_for

pytestmark = [pytest.mark.vllm, pytest.mark.slow, SKIP_VLLM]

EXPERT = "local-math"  # a persona expert of the embedded default, served by vLLM here
LONG = "smollm2-long"
# over 2100 tokens for SmolLM2's tokenizer (" x" is one token) in 4200 characters: over vLLM's 2048-token
# --max-model-len and under the second engine's 4096, while CoE's own estimate (characters / 4) stays
# under every limit of its own
OVERLONG = "Count these:" + " x" * 2100
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@dataclass
class Stack:
    service: Service
    engine: str  # the vLLM server of the local experts (no /v1)
    long: VllmServerHandle  # a second engine with a 4096-token context


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_vllm()
    from registry import Registry

    tmp = tmp_path_factory.mktemp("coe-up-vllm")
    artifact = router_artifact(tmp)
    port = free_port()
    env = coe_up_env(
        tmp,
        port,
        artifact,
        **QUICK,
        COE_LOCAL_ENGINE="vllm",
        COE_VLLM_ARGS="--enable-log-requests",  # vLLM logs aborted requests (the disconnect test)
        COE_TOPOLOGY="onehop",
    )
    db, data_dir = env["COE_DATABASE_URL"], Path(env["COE_DATA_DIR"])
    log = tmp / "up.log"
    with ThreadPoolExecutor(1) as pool:  # the second engine starts while `coe up` does
        long_future = pool.submit(
            start_vllm_server,
            0,
            data_dir=data_dir,
            served=[LONG],
            max_model_len=4096,
            log_path=tmp / "vllm-long.log",
        )
        proc = launch_coe_up(env, log)
        svc = Service(f"http://127.0.0.1:{port}", db, artifact, tmp, proc, log, "onehop")
        long = None
        try:
            long = long_future.result()
            wait_until_up(proc, log, timeout=900)
            with Registry(db) as reg:
                engine = reg.snapshot().experts[EXPERT].base_url.removesuffix("/v1")
            yield Stack(svc, engine, long)
        finally:
            svc.stop()
            if long is not None:
                long.stop()
            shutil.rmtree(tmp / "artifact-copy", ignore_errors=True)


def _client(stack: Stack) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{stack.service.base}/v1", api_key="none", max_retries=0, timeout=300)


def _experts(res: Any) -> list[str]:
    """The experts CoE chose, from the response's routing trace."""
    return [e["name"] for e in res.model_extra["coe"]["experts"]]


def test_health_probe_and_models_with_vllm_experts(stack: Stack) -> None:
    assert "vLLM" in stack.service.log_text()  # `coe up` said which engine it started
    ready = httpx.get(f"{stack.service.base}/readyz", timeout=30)
    assert ready.status_code == 200
    assert EXPERT in ready.json()["experts"]["usable"]
    served = httpx.get(f"{stack.engine}/v1/models", timeout=10).json()["data"]
    assert served[0]["id"] == "smollm2-135m-instruct" and served[0]["max_model_len"] == 2048
    assert served[0]["owned_by"] == "vllm"
    ids = {m.id for m in _client(stack).models.list().data}
    assert {"auto", EXPERT, "local-general"} <= ids


def test_chat_stream_usage_n_and_logprobs_through_coe(stack: Stack) -> None:
    client = _client(stack)
    msgs = [{"role": "user", "content": "What is 12 times 7?"}]
    res = client.chat.completions.create(model=EXPERT, messages=msgs, max_tokens=12, temperature=0)
    assert res.choices[0].message.content and res.system_fingerprint.startswith("vllm-")
    assert 0 < res.usage.completion_tokens <= 12 and res.usage.prompt_tokens > 0
    assert res.model == EXPERT and _experts(res) == [EXPERT]

    chunks = list(
        client.chat.completions.create(
            model=EXPERT,
            messages=msgs,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == res.choices[0].message.content  # greedy: the stream says what the answer said
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == res.usage.completion_tokens

    two = client.chat.completions.create(
        model=EXPERT, messages=msgs, max_tokens=6, n=2, logprobs=True, top_logprobs=2, seed=1
    )
    assert sorted(c.index for c in two.choices) == [0, 1]
    for choice in two.choices:
        tokens = choice.logprobs.content
        assert tokens and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    assert two.usage.completion_tokens == sum(len(c.logprobs.content) for c in two.choices)


def test_json_schema_is_guided_by_vllm(stack: Stack) -> None:
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "integer"},
            "unit": {"type": "string", "enum": ["legs", "paws"]},
        },
        "required": ["answer", "unit"],
        "additionalProperties": False,
    }
    res = _client(stack).chat.completions.create(
        model=EXPERT,
        messages=[{"role": "user", "content": "How many legs does a cat have?"}],
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "legs", "schema": schema}},
    )
    jsonschema.validate(json.loads(res.choices[0].message.content), schema)


@pytest.mark.parametrize(
    "tool_choice", [{"type": "function", "function": {"name": "get_weather"}}, "required"]
)
def test_forced_tool_choice_is_a_valid_call(stack: Stack, tool_choice: Any) -> None:
    """vLLM (--tool-strict-level parameter) decodes the call against the tool's schema: even a 135M model
    whose chat template knows nothing of tools returns a well-formed call of that tool."""
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    tools = [WEATHER] if tool_choice == "required" else [other, WEATHER]
    res = _client(stack).chat.completions.create(
        model=EXPERT,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        max_tokens=60,
        temperature=0,
        tools=tools,
        tool_choice=tool_choice,
    )
    calls = res.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])


def test_responses_and_messages_through_coe_to_vllm(stack: Stack) -> None:
    """The two agent front doors over the real engine: CoE translates each to Chat Completions for vLLM
    and back; a forced tool call (vLLM's guided decoding) comes back as each API's own tool call, valid
    against the tool's schema, and streams end with each API's closing event."""
    import anthropic

    client = _client(stack)
    r = client.responses.create(model=EXPERT, input="What is 2+2?", max_output_tokens=16, temperature=0)
    assert r.status in ("completed", "incomplete") and r.output_text.strip()
    assert (r.model_extra or {})["coe"]["answered_by"] == EXPERT
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    tool = {
        "type": "function",
        "name": "get_weather",
        **{k: v for k, v in WEATHER["function"].items() if k != "name"},
    }
    r = client.responses.create(
        model=EXPERT,
        input="What is the weather in Paris?",
        tools=[tool],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=60,
        temperature=0,
    )
    calls = [item for item in r.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["function"]["parameters"])
    with client.responses.create(
        model=EXPERT, input="Name a colour.", max_output_tokens=8, stream=True
    ) as events:
        kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_text.delta" in kinds

    claude = anthropic.Anthropic(base_url=stack.service.base, api_key="none", max_retries=0, timeout=300)
    m = claude.messages.create(
        model=EXPERT, max_tokens=16, messages=[{"role": "user", "content": "What is 2+2?"}]
    )
    assert m.content[0].type == "text" and m.content[0].text.strip()
    assert m.stop_reason in ("end_turn", "max_tokens") and m.usage.output_tokens > 0
    m = claude.messages.create(
        model=EXPERT,
        max_tokens=60,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    uses = [b for b in m.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and m.stop_reason == "tool_use"
    jsonschema.validate(uses[0].input, WEATHER["function"]["parameters"])
    with claude.messages.stream(
        model=EXPERT, max_tokens=8, messages=[{"role": "user", "content": "Name a colour."}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.stop_reason in ("end_turn", "max_tokens")


def test_vllm_context_error_is_relayed(stack: Stack) -> None:
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as info:
        _client(stack).chat.completions.create(
            model=EXPERT, messages=[{"role": "user", "content": OVERLONG}], max_tokens=8
        )
    err = info.value
    assert err.status_code == 400
    assert "maximum context length is 2048 tokens" in err.message  # vLLM's own words
    assert err.body["type"] != "server_error"


async def test_failover_past_a_dead_url_and_vllm_context_error_to_the_larger_engine(stack: Stack) -> None:
    """CoE's ExpertPool over real HTTP: a dead URL (connection refused), then vLLM at 2048 tokens (its
    400), then the 4096-token engine, which answers; streamed the same way."""
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    experts = {
        "dead": ExpertInfo("dead", dead, LONG, max_context=8192, timeout_s=5),
        "small": ExpertInfo("small", f"{stack.engine}/v1", "smollm2-math", max_context=2048, timeout_s=120),
        "long": ExpertInfo("long", stack.long.base_url, LONG, max_context=4096, timeout_s=120),
    }
    snapshot = RegistrySnapshot(revision=1, experts=experts, category_experts={})
    route = decision("small", alternates=("dead", "long"))
    try:
        async with ExpertPool(snapshot, retries=0, health_interval_s=0) as pool:
            res = await pool.complete(route, request(OVERLONG, max_tokens=4))
            assert res.expert == "long" and res.usage.prompt_tokens > 2048
            tried = {a["expert"]: a for a in res.attempts}
            assert tried["small"]["status"] == 400 and tried["dead"]["error"] == "ExpertConnectionError"
            chunks = [c async for c in pool.stream(route, request(OVERLONG, max_tokens=4))]
            assert {c.expert for c in chunks} == {"long"} and chunks[-1].usage is not None
    finally:
        stack.long.stop()  # not needed after this test: its memory back before the serve_llm deployment


def test_client_disconnect_aborts_the_vllm_request(stack: Stack) -> None:
    """A client that goes away mid-stream: CoE closes its upstream stream and vLLM aborts the request
    (its log says so, and its metrics show nothing running and no request finished)."""
    host_port = stack.engine.removeprefix("http://")
    log = (
        Path(os.environ.get("COE_TEST_DATA_DIR", REPO_ROOT / ".coe"))
        / f"vllm-expert-{host_port.split(':')[1]}.log"
    )
    before = finished(stack.engine)
    body = {
        "model": EXPERT,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}],
        "max_tokens": 1500,
        "ignore_eos": True,  # a vLLM extra, passed through: the answer cannot end on its own
        "stream": True,
    }
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", f"{stack.service.base}/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            got: list[str] = []
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    got.append(line)
                if len(got) >= 3:
                    break
    assert len(got) == 3
    aborted = wait_for(lambda: "Aborted request(s)" in log.read_text(errors="replace"), timeout=60)
    assert aborted, f"vLLM did not abort the request; its log ({log}) ends:\n{log.read_text()[-2000:]}"
    running = httpx.get(f"{stack.engine}/metrics", timeout=10).text
    assert re.search(r"^vllm:num_requests_running\{[^}]*\} 0\.0$", running, re.M)
    assert finished(stack.engine) == before  # aborted, not run to its 1500 tokens


def test_serve_llm_rendered_app_deployed_and_reached_through_coe(stack: Stack) -> None:
    """A `vllm`-tagged expert -> `coe deploy render --cpu` -> that file's ray.serve.llm application
    deployed on a local Ray running vLLM's CPU engine (scripts/serve_llm_apps.py, in .venv-vllm) -> a
    request through CoE (`model: <expert>`) answered by it."""
    import yaml

    from experts.local_model import ensure_converted
    from experts.vllm_server import default_vllm_python
    from tests.deploy.conftest import run_coe

    svc = stack.service
    name, port = "serve-llm-smol", free_port()
    url = f"http://127.0.0.1:{port}/experts/{name}/v1"  # render.expert_base_url(name, port)
    run_coe(svc, "experts", "add", name, "--url", url, "--model", "smollm2-135m-instruct",
            "--tag", "vllm", "--max-context", "2048", "--timeout", "120")  # fmt: skip
    weights = ensure_converted(Path(os.environ.get("COE_TEST_DATA_DIR", REPO_ROOT / ".coe"))).resolve()
    cfg_path = svc.tmp / "serve.yaml"
    run_coe(svc, "deploy", "render", "--out", str(cfg_path), "--cpu", "--cpu-kvcache-gib", "1",
            "--model-source", f"{name}={weights}", "--expert-max-replicas", "1")  # fmt: skip
    config = yaml.safe_load(cfg_path.read_text())
    (app,) = [a for a in config["applications"] if a["import_path"] == "ray.serve.llm:build_openai_app"]
    assert app["route_prefix"] == f"/experts/{name}"
    assert app["args"]["llm_configs"][0]["accelerator_config"] == {"kind": "cpu"}

    log = svc.tmp / "serve-llm.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(ENV, COE_PARENT_PID=str(os.getpid()))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(default_vllm_python()), str(REPO_ROOT / "scripts" / "serve_llm_apps.py"), str(cfg_path),
             "--port", str(port), "--num-cpus", "4"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        up = wait_for(lambda: "ready" in log.read_text(errors="replace") or proc.poll() is not None, 900, 1)
        assert up and proc.poll() is None, log.read_text(errors="replace")[-3000:]
        served = httpx.get(f"{url}/models", timeout=10).json()["data"]
        assert served[0]["id"] == "smollm2-135m-instruct"
        # CoE sees the new expert (registry poll) and sends the request to the Ray Serve LLM app
        client = _client(stack)
        assert wait_for(lambda: name in {m.id for m in client.models.list().data}, 30)
        res = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
        )
        assert res.model == name and _experts(res) == [name]
        assert res.choices[0].message.content and 0 < res.usage.completion_tokens <= 8
        # the Ray Serve LLM app's own access line (replica logs reach the driver's stdout with a delay)
        line = f"POST /experts/{name}/v1/chat/completions 200"
        assert wait_for(lambda: line in log.read_text(errors="replace"), 60), log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        run_coe(svc, "experts", "remove", name)


def test_stopping_coe_up_stops_its_vllm_engine(stack: Stack) -> None:
    """Last in this module (it stops the service): Ctrl-C on `coe up` also ends vLLM, port freed."""
    host, port = stack.engine.removeprefix("http://").split(":")
    assert stack.service.stop() == 0

    def refused() -> bool:
        with socket.socket() as s:
            return s.connect_ex((host, int(port))) != 0

    assert wait_for(refused, timeout=60)
