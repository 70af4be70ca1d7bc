"""End to end: `coe up` (real Ray Serve, real router artifact, real SmolLM2 experts) driven with the
official openai SDK. Answers of the 135M model are never asserted, only their shape and the routing."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.deploy.conftest import Service
from tests.deploy.doubles import assert_chat_metrics

pytestmark = [pytest.mark.serve, pytest.mark.slow]

MATH = [{"role": "user", "content": "What is 12 times 7?"}]


def sdk(service: Service, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.base}/v1", api_key=key, max_retries=0, timeout=300)


def registry(service: Service) -> Any:
    from registry import Registry

    return Registry(service.database_url)


def eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached")
        time.sleep(0.25)


def test_ready_and_models(service: Service) -> None:
    ready = httpx.get(f"{service.base}/readyz", timeout=30).json()
    assert ready["ready"] is True and "local-general" in ready["experts"]["usable"]
    assert httpx.get(f"{service.base}/healthz").json() == {"status": "ok"}
    ids = [m.id for m in sdk(service).models.list()]
    assert ids[:5] == ["auto", "coe-category", "coe-top-k", "coe-top-p", "coe-cost"]
    assert {"local-math", "local-code", "local-medical", "local-general"} <= set(ids)


def test_chat_with_the_sdk(service: Service) -> None:
    raw = sdk(service).chat.completions.with_raw_response.create(model="auto", messages=MATH, max_tokens=8)
    resp = raw.parse()
    route = json.loads(raw.headers["x-coe-route"])
    assert resp.model in route["experts"] and resp.model.startswith("local-")
    assert isinstance(resp.choices[0].message.content, str)
    assert resp.usage is not None and 0 < resp.usage.completion_tokens <= 8
    coe = resp.model_extra["coe"]
    assert coe["policy"] == "category" and coe["router_version"]
    assert abs(sum(c["probability"] for c in coe["categories"]) - 1.0) < 1e-3
    assert {"embed", "classify", "policy", "expert"} <= set(coe["timings_ms"])


def test_stream_with_the_sdk(service: Service) -> None:
    stream = sdk(service).chat.completions.create(
        model="auto", messages=MATH, max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model.startswith("local-")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes and finishes[-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_routing_options_and_expert_by_name(service: Service) -> None:
    client = sdk(service)
    resp = client.chat.completions.create(
        model="coe-top-k", messages=MATH, max_tokens=6, extra_body={"routing": {"k": 2, "aggregate": "best"}}
    )
    coe = resp.model_extra["coe"]
    assert coe["policy"] == "top_k" and len(coe["experts"]) == 2
    assert resp.model == "coe:best" or resp.model in [e["name"] for e in coe["experts"]]
    direct = client.chat.completions.create(model="local-code", messages=MATH, max_tokens=4)
    assert direct.model == "local-code" and direct.model_extra["coe"]["policy"] == "direct"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="auto", messages=MATH, extra_body={"routing": {"policy": "nope"}}
        )
    assert info.value.body["param"] == "routing.policy"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="auto", messages=MATH, n=2)
    assert info.value.body["param"] == "n"


def test_route_endpoint(service: Service) -> None:
    r = httpx.post(
        f"{service.base}/v1/route", json={"text": "Solve x^2 - 4 = 0", "routing": {"policy": "top_p"}}
    )
    assert r.status_code == 200
    assert r.json()["policy"] == "top_p" and r.json()["experts"]


def test_pasted_code_keeps_the_question_s_expert(service: Service) -> None:
    """A question with a real function pasted after or before it, fenced or as it is (the committed
    sample built from ../shared/data by eval.data.long_prompts), sent with the SDK, reaches the expert the
    bare
    question reaches: the service reads the instruction, not the paste (router/text.py). A request that
    names no subject above pasted code and a traceback reaches the code expert (router/core.py)."""
    sample = Path(__file__).parents[1] / "router" / "data" / "long_prompts.jsonl"
    rows = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["label"] in ("math", "writing")][:3]
    assert rows
    client = sdk(service)
    for row in rows:
        bare = httpx.post(f"{service.base}/v1/route", json={"text": row["bare"]}, timeout=60).json()
        assert bare["experts"][0]["name"] != "local-code"
        for layout in ("code_first", "question_first_unfenced", "code_first_unfenced"):
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": row[layout]}], max_tokens=2
            )
            route = json.loads(raw.headers["x-coe-route"])
            assert route["experts"][0] == bare["experts"][0]["name"], (row["id"], layout, route)
    # an instruction that names no subject is about what it pasted: the code expert answers ("My script
    # crashes, how do I fix it?" names its subject now: the code expert answers it alone)
    ask = "Any idea what is going on?"
    alone = httpx.post(f"{service.base}/v1/route", json={"text": ask}, timeout=60).json()
    assert alone["experts"][0]["name"] != "local-code"
    pasted = (
        "import json\ndata = json.load(open('items.json'))\nprint(data['items'][0])\n\n"
        'Traceback (most recent call last):\n  File "app.py", line 3, in <module>\n'
        "    print(data['items'][0])\nIndexError: list index out of range"
    )
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": f"{ask}\n\n{pasted}"}], max_tokens=2
    )
    route = json.loads(raw.headers["x-coe-route"])
    assert route["experts"][0] == "local-code"
    assert route["reading"] == "pasted code", route  # the decision says which reading decided


#: the prompts of issue 25, as a new user asks them (the openai SDK, model "auto"), and the expert each
#: must reach in the registry `coe up` seeds
ISSUE_25 = [
    ("How do I center a div vertically and horizontally in CSS?", "local-code"),
    ("Prove that there are infinitely many primes.", "local-math"),
    ("Write a short poem about the sea at night.", "local-general"),
    ("My patient has a fever of 39C and a stiff neck. What should I consider?", "local-medical"),
]


@pytest.mark.parametrize(
    ("text", "expert"),
    ISSUE_25,
)
def test_real_requests_reach_the_expert_of_their_intent(service: Service, text: str, expert: str) -> None:
    """Coding, maths, writing and a clinical question, sent with the SDK through the service, reach the
    code, maths, general and medical experts; /v1/route names the intent and the reading that decided."""
    raw = sdk(service).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], max_tokens=2
    )
    assert json.loads(raw.headers["x-coe-route"])["experts"][0] == expert, text
    route = httpx.post(f"{service.base}/v1/route", json={"text": text}, timeout=60).json()
    assert route["experts"][0]["name"] == expert and route["intent"] == route["categories"][0]["category"]
    assert route["reading"] == "instruction", route


def test_decision_log_and_feedback_through_the_service(service: Service) -> None:
    """One-hop under Serve: the completion is logged by the replica's background writer, feedback lands."""
    from registry import decisions

    body = {"messages": MATH, "max_tokens": 4}
    r = httpx.post(f"{service.base}/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    f = httpx.post(f"{service.base}/v1/feedback", json={"id": cid, "score": 0.9}, timeout=30)
    assert f.status_code == 200, f.text
    assert httpx.post(f"{service.base}/v1/feedback", json={"id": "nope", "score": 0.9}).status_code == 404
    with registry(service) as reg, reg.session(write=False) as s:
        [d] = [d for d in decisions.list_decisions(s, limit=50) if d.id == cid]
    assert d.feedback_score == 0.9 and d.answered_by == r.json()["model"] and d.prompt is None


def test_registry_edits_apply_live_with_zero_failures(service: Service) -> None:
    """Disable the math expert while requests flow: the service stops choosing it, nothing fails."""
    from registry import repository as repo

    failures: list[str] = []
    experts_seen: list[str] = []
    stop = threading.Event()

    def traffic(chat: bool) -> None:
        with httpx.Client(base_url=service.base, timeout=300) as c:
            while not stop.is_set():
                if chat:
                    r = c.post("/v1/chat/completions", json={"messages": MATH, "max_tokens": 2})
                else:
                    r = c.post("/v1/route", json={"messages": MATH})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    experts_seen.append(r.headers["x-coe-route"])

    threads = [threading.Thread(target=traffic, args=(chat,)) for chat in (True, False, False)]
    for t in threads:
        t.start()
    reg = registry(service)
    try:
        time.sleep(1.0)
        with reg.session() as s:
            repo.set_expert_enabled(s, name="local-math", enabled=False)

        def math_gone() -> bool:
            r = httpx.post(f"{service.base}/v1/route", json={"messages": MATH}).json()
            models = httpx.get(f"{service.base}/v1/models").json()["data"]
            return "local-math" not in r["alternates"] + [
                e["name"] for e in r["experts"]
            ] and "local-math" not in [m["id"] for m in models]

        eventually(math_gone)
        time.sleep(1.0)  # more traffic on the new snapshot
    finally:
        stop.set()
        for t in threads:
            t.join(300)
        with reg.session() as s:
            repo.set_expert_enabled(s, name="local-math", enabled=True)
        reg.close()
    assert failures == []
    assert len(experts_seen) > 5
    eventually(
        lambda: "local-math" in [m["id"] for m in httpx.get(f"{service.base}/v1/models").json()["data"]]
    )


def test_new_router_artifact_is_swapped_in(service: Service) -> None:
    from deploy.pipeline.router_service import ARTIFACT_SETTING

    copy = service.tmp / "artifact-copy"
    shutil.copytree(service.artifact, copy)
    reg = registry(service)
    try:
        reg.set_setting(ARTIFACT_SETTING, str(copy))
    finally:
        reg.close()

    def swapped() -> bool:
        r = httpx.get(f"{service.base}/readyz", timeout=30).json()
        return r.get("router", {}).get("artifact") == str(copy)

    eventually(swapped, timeout=120)
    r = httpx.post(f"{service.base}/v1/route", json={"messages": MATH})
    assert r.status_code == 200


def test_metrics(service: Service) -> None:
    text = httpx.get(f"{service.base}/metrics").text
    assert_chat_metrics(text)
    assert 'coe_expert_tokens_total{expert="local-' in text
    assert "coe_route_decisions_total{" in text


@pytest.mark.service_last
def test_auth_when_keys_exist(service: Service) -> None:
    from registry import repository as repo

    reg = registry(service)
    try:
        with reg.session() as s:
            query_key, query_plain = repo.create_api_key(s, scopes=["query"], name="e2e")
            admin_key, admin_plain = repo.create_api_key(s, scopes=["admin"], name="e2e-admin")

        def locked() -> bool:
            return httpx.get(f"{service.base}/v1/models").status_code == 401

        eventually(locked)
        with pytest.raises(openai.AuthenticationError):
            sdk(service, "sk-not-a-key").models.list()
        with pytest.raises(openai.PermissionDeniedError):
            sdk(service, admin_plain).chat.completions.create(model="auto", messages=MATH, max_tokens=2)
        resp = sdk(service, query_plain).chat.completions.create(model="auto", messages=MATH, max_tokens=2)
        assert resp.model.startswith("local-")
        assert query_plain not in service.log_text()
    finally:
        with reg.session() as s:
            repo.revoke_api_key(s, key_id=query_key.id)
            repo.revoke_api_key(s, key_id=admin_key.id)
        reg.close()
    # revoked keys stop working; the service stays locked (revoking every key must not open it)
    eventually(lambda: httpx.get(f"{service.base}/v1/models", headers=bearer(query_plain)).status_code == 401)
    assert httpx.get(f"{service.base}/v1/models").status_code == 401


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.mark.service_last
def test_clean_shutdown(service: Service) -> None:
    assert service.stop() == 0
    assert "stopped" in service.log_text()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{service.base}/healthz", timeout=5)
