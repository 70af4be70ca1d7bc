"""`coe experts profile --from-eval` against a temp SQLite registry, and `coe eval live` against a small
OpenAI-compatible FastAPI stub on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from eval.routing.live import LiveItem, extract_letter, extract_number, run_live, summarise
from eval.routing.profile import apply_profiles, parse_map, plan, read_profiles
from experts.net import free_port
from router.errors import BadRequest, NotFound

RESULT = {
    "skills": {
        "scores": {"model-a": {"math": 0.8, "law": 0.3}, "model-b": {"math": 0.4, "law": 0.6}},
        "n": {"math": 10, "law": 5},
    }
}


@pytest.fixture
def registry(tmp_path):
    from registry import Registry
    from registry import repository as repo

    reg = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    with reg.session() as s:
        repo.add_expert(s, name="alpha", base_url="http://127.0.0.1:9/v1", model="a")
        repo.add_expert(s, name="model-b", base_url="http://127.0.0.1:9/v1", model="b")
        repo.add_category(s, name="math")
        repo.add_category(s, name="law")
    yield reg
    reg.close()


def _scores(reg):
    from registry import repository as repo

    with reg.session(write=False) as s:
        return {(r.expert, r.category): (r.score, r.n, r.source) for r in repo.list_skill_scores(s)}


def test_profile_writes_mapped_scores(tmp_path, registry):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(RESULT))
    scores, counts = read_profiles(path)
    writes = plan(scores, counts, parse_map(["model-a=alpha"]))
    apply_profiles(registry, writes, source="test-run")
    got = _scores(registry)
    assert got[("alpha", "math")] == (0.8, 10, "test-run")
    assert got[("model-b", "law")] == (0.6, 5, "test-run")
    assert len(got) == 4


def test_profile_unknown_expert_writes_nothing(tmp_path, registry):
    writes = plan(RESULT["skills"]["scores"], RESULT["skills"]["n"], {})  # model-a is not an expert
    with pytest.raises(NotFound, match="model-a.*nothing written"):
        apply_profiles(registry, writes, source="x")
    assert _scores(registry) == {}
    with pytest.raises(BadRequest, match="MODEL=EXPERT"):
        parse_map(["no-equals-sign"])


def test_answer_extraction():
    assert extract_letter("Let's think. The answer is (C).") == "C"
    assert extract_letter("Answer: B") == "B"
    assert extract_letter("no idea") is None
    assert extract_number("so 3 + 4 = 7\n#### 1,234") == "1234"
    assert extract_number("The total is 42.") == "42"


@pytest.fixture
def stub_service():
    """A tiny OpenAI-compatible service: routes math to 'mathy', the rest to 'wordy'; both answer 'B'
    or '#### 7'. Records the chat requests it saw."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    seen: list[dict] = []

    @app.post("/v1/route")
    async def route(body: dict):
        text = body["messages"][-1]["content"]
        expert = "mathy" if "####" in text else "wordy"
        return {"object": "coe.route", "experts": [{"name": expert, "score": 1.0}], "categories": []}

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        seen.append(body)
        text = body["messages"][-1]["content"]
        answer = "so #### 7" if body["model"] == "mathy" else "The answer is (B)"
        if "fail" in text:
            answer = "I cannot"
        return {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
            ],
        }

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    thread.join(timeout=10)


def test_live_eval_routes_groups_and_scores(stub_service):
    url, seen = stub_service
    items = [
        LiveItem("q1 A. x B. y", "B", "choice", "law"),
        LiveItem("q2 fail", "B", "choice", "law"),
        LiveItem("add 3+4 ####", "7", "number", "math"),
        LiveItem("add 2+2 ####", "4", "number", "math"),
    ]
    outcomes = asyncio.run(run_live(items, url=url, progress=False))
    assert {o.expert for o in outcomes} == {"mathy", "wordy"}
    assert sorted(b["model"] for b in seen) == ["mathy", "mathy", "wordy", "wordy"]
    s = summarise(outcomes)
    assert s["overall"]["correct"] == 2 and s["overall"]["n"] == 4
    assert s["per_expert"]["mathy"]["accuracy"] == 0.5
    assert s["per_category"]["law"]["accuracy"] == 0.5
