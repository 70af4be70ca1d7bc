"""Tool loops stay on their expert across ingress replicas: `coe up` in the split topology with two
ingress replicas (Ray Serve's proxy spreads requests over both, so a continuation often reaches the other
replica, which knows the loop only from the registry database), two tools-capable experts, a registry
edit that changes the ranking between a loop's first turn and its continuation, driven with the openai
SDK's `responses` and the anthropic SDK's `messages`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.deploy.agent_experts import AgentVLLM
from tests.deploy.conftest import Service, coe_up, run_coe
from tests.deploy.test_agents_e2e import ANTHROPIC_TOOL, TOOL, add_expert
from tests.deploy.test_e2e import eventually

pytestmark = [pytest.mark.serve, pytest.mark.slow]

LOOPS = 8


def answered_by(client: openai.OpenAI, text: str) -> str | None:
    """Who answers a tool request now (None while a replica's snapshot has no tools expert yet)."""
    try:
        return client.responses.create(model="auto", input=text, tools=[TOOL]).model
    except openai.BadRequestError:
        return None


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("coe-up-2-ingress")
    settings = {"COE_REGISTRY_POLL_S": "0.5", "COE_HEALTH_INTERVAL_S": "2", "COE_INGRESS_REPLICAS": "2"}
    with coe_up(tmp, "split", **settings) as svc:
        yield svc


def test_tool_loops_stay_on_their_expert_with_two_ingress_replicas(two_replicas: Service) -> None:
    service = two_replicas
    servers = {"tools-a": AgentVLLM(model="a-7b").start(), "tools-b": AgentVLLM(model="b-7b").start()}
    try:
        for name, server in servers.items():
            add_expert(service, name, server, "tools,json,vision")
        eventually(
            lambda: (
                set(servers)
                <= set(httpx.get(f"{service.base}/readyz", timeout=30).json()["experts"]["usable"])
            ),
            timeout=90,
        )
        client = openai.OpenAI(base_url=f"{service.base}/v1", api_key="none", max_retries=0, timeout=120)
        claude = anthropic.Anthropic(base_url=service.base, api_key="none", max_retries=0, timeout=120)
        # both ingress replicas must see both experts before the loops open
        eventually(lambda: all(answered_by(client, "Look up fig") == "tools-a" for _ in range(4)))
        opened = []
        for i in range(LOOPS):
            first = client.responses.create(model="auto", input=f"Look up word {i}", tools=[TOOL])
            assert first.model == "tools-a"
            opened.append(first)
        ask = {"role": "user", "content": "Look up the word kiwi"}
        message = claude.messages.create(model="auto", max_tokens=50, messages=[ask], tools=[ANTHROPIC_TOOL])
        assert message.model == "tools-a"

        categories = json.loads(run_coe(service, "categories", "list", "--json"))
        for c in categories:  # the ranking changes: tools-b becomes every category's first choice
            run_coe(service, "categories", "map", c["name"], "tools-b", "--rank", "1")
        eventually(lambda: all(answered_by(client, "Look up pear") == "tools-b" for _ in range(4)))

        for first in opened:
            call = next(item for item in first.output if item.type == "function_call")
            output = {"type": "function_call_output", "call_id": call.call_id, "output": "found"}
            second = client.responses.create(
                model="auto", previous_response_id=first.id, input=[output], tools=[TOOL]
            )
            assert second.model == "tools-a", (second.model_extra or {}).get("coe")
            assert (second.model_extra or {})["coe"]["affinity"]["applied"] is True
        use = next(b for b in message.content if b.type == "tool_use")
        result = {"type": "tool_result", "tool_use_id": use.id, "content": "found"}
        history = [
            ask,
            {"role": "assistant", "content": message.content},
            {"role": "user", "content": [result]},
        ]
        again = claude.messages.create(model="auto", max_tokens=50, messages=history, tools=[ANTHROPIC_TOOL])
        assert again.model == "tools-a" and again.content[0].text == "tool said: found"
        fresh = client.responses.create(model="auto", input="Look up plum", tools=[TOOL])
        assert fresh.model == "tools-b"  # a new loop takes the new ranking
    finally:
        for server in servers.values():
            server.stop()
