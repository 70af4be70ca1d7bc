from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from experts.aggregate import SYNTHESIZE_PROMPT, normalise_answer, parse_index, pick_vote
from experts.pool import ExpertPool
from experts.types import ChatResult
from router.errors import RoutingError
from tests.experts.helpers import Router, decision, info, no_sleep, ok, refuse, request, snapshot, status


def make_pool(router, *experts, **kw) -> ExpertPool:
    kw.setdefault("health_interval_s", 0)
    return ExpertPool(snapshot(*experts), transport=router.transport(), sleep=no_sleep, retries=0, **kw)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("The answer is (B).", "choice:B"),
        ("answer: c", "text:answer c"),
        ("B) because it is", "choice:B"),
        ("D", "choice:D"),
        ("Answer: 1,024 apples", "num:1024"),
        ("so we get 3.50 then 7", "num:7"),
        ("x = 2.5", "num:2.5"),
        ("  Paris, France! ", "text:paris france"),
        ("a cat", "text:a cat"),
    ],
)
def test_normalise_answer(text, key):
    assert normalise_answer(text) == key


def test_pick_vote_majority_and_tie_break():
    rs = [ChatResult("a", "Answer: A"), ChatResult("b", "Answer: B"), ChatResult("c", "answer is B")]
    chosen, key = pick_vote(rs, {"a": 0.9, "b": 0.5, "c": 0.6})
    assert key == "choice:B" and chosen.expert == "c"  # the best-scored supporter's text
    rs = [ChatResult("a", "42"), ChatResult("b", "41")]
    assert pick_vote(rs, {"a": 0.3, "b": 0.8})[0].expert == "b"
    assert pick_vote(rs, {"a": 0.9, "b": 0.8})[0].expert == "a"


def test_parse_index():
    assert parse_index("Candidate 1 is best", 3) == 1
    assert parse_index("7 then 2", 3) == 2
    assert parse_index("none", 3) is None


async def test_vote_majority_usage_summed_and_contributors():
    r = Router(
        a=ok("Answer: 4", usage=(10, 1)), b=ok("the answer is 4", usage=(20, 2)), c=ok("5", usage=(30, 3))
    )
    async with make_pool(r, info("a", cost_output_per_m=1e6), info("b"), info("c")) as pool:
        res = await pool.complete(decision("a", "b", "c", aggregate="vote"), request())
    assert res.expert == "coe:vote" and normalise_answer(res.content) == "num:4"
    assert set(res.contributors) >= {"a", "b"}
    assert res.usage.prompt_tokens == sum({"a": 10, "b": 20, "c": 30}[n] for n in res.contributors)
    assert res.cost_usd == pytest.approx(1.0)


async def test_vote_early_exit_cancels_the_slow_one():
    slow_started = asyncio.Event()
    cancelled = asyncio.Event()

    class T(httpx.AsyncBaseTransport):
        async def handle_async_request(self, req):
            name = req.url.host.removesuffix(".test")
            if name == "c":
                slow_started.set()
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise
            return httpx.Response(
                200,
                json={
                    "choices": [{"message": {"content": "Answer: B"}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 1},
                },
            )

    pool = ExpertPool(snapshot(info("a"), info("b"), info("c")), transport=T(), health_interval_s=0)
    async with pool:
        res = await pool.complete(decision("a", "b", "c", aggregate="vote"), request())
    assert res.content == "Answer: B" and set(res.contributors) == {"a", "b"}
    assert cancelled.is_set()
    assert {"expert": "c", "error": "cancelled_early", "message": "cancelled_early"} in res.attempts
    assert res.usage.prompt_tokens == 10


async def test_vote_drops_failed_candidates():
    r = Router(a=refuse, b=ok("Answer: 9"), c=status(500))
    async with make_pool(r, info("a"), info("b"), info("c")) as pool:
        res = await pool.complete(decision("a", "b", "c", aggregate="vote"), request())
    assert res.expert == "coe:vote" and res.content == "Answer: 9" and res.contributors == ("b",)
    assert {a["expert"] for a in res.attempts} == {"a", "c"}


async def test_all_candidates_fail_then_fail_over_to_alternate():
    r = Router(a=refuse, b=refuse, z=ok("Z"))
    async with make_pool(r, info("a"), info("b"), info("z")) as pool:
        res = await pool.complete(decision("a", "b", alternates=("z",), aggregate="vote"), request())
    assert res.expert == "z" and res.content == "Z"


async def test_deadline_drops_slow_candidate():
    class T(httpx.AsyncBaseTransport):
        async def handle_async_request(self, req):
            if req.url.host == "b.test":
                await asyncio.sleep(30)
            return httpx.Response(200, json={"choices": [{"message": {"content": "fast"}}]})

    pool = ExpertPool(
        snapshot(info("a"), info("b")), transport=T(), health_interval_s=0, aggregate_deadline_s=0.05
    )
    async with pool:
        res = await pool.complete(decision("a", "b", aggregate="best"), request())
    assert res.content == "fast" and res.contributors == ("a",)
    assert any(a["expert"] == "b" and a["error"] == "deadline" for a in res.attempts)


async def test_synthesize_prompt_contents_and_result():
    r = Router(a=ok("Paris is the capital."), b=ok("It is Paris."), agg=ok("Final: Paris", usage=(100, 7)))
    async with make_pool(r, info("a"), info("b"), info("agg", tags=("aggregator",))) as pool:
        res = await pool.complete(decision("a", "b"), request("Capital of France?"))  # default: synthesize
    assert res.expert == "coe:synthesize" and res.content == "Final: Paris"
    assert set(res.contributors) == {"a", "b", "agg"}
    assert res.usage.prompt_tokens == 10 + 10 + 100 and res.usage.completion_tokens == 5 + 5 + 7
    body = r.bodies["agg"][0]
    system = body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith(SYNTHESIZE_PROMPT)
    assert "Paris is the capital." in system["content"] and "It is Paris." in system["content"]
    assert body["messages"][1:] == [{"role": "user", "content": "Capital of France?"}]
    assert body["model"] == "agg-model"


async def test_synthesize_aggregator_failure_falls_back_to_best_scored():
    r = Router(a=ok("from a"), b=ok("from b"), agg=status(500))
    async with make_pool(r, info("a"), info("b"), info("agg", tags=("aggregator",))) as pool:
        res = await pool.complete(decision(("a", 0.2), ("b", 0.9), aggregate="synthesize"), request())
    assert res.expert == "coe:synthesize" and res.content == "from b"


async def test_best_with_judge_picks_index():
    r = Router(a=ok("answer A"), b=ok("answer B"), j=ok("1"))
    async with make_pool(r, info("a"), info("b"), info("j", tags=("judge",))) as pool:
        res = await pool.complete(decision("a", "b", aggregate="best"), request("q?"))
    assert res.expert == "coe:best" and "j" in res.contributors
    judge_prompt = r.bodies["j"][0]["messages"][1]["content"]
    assert "q?" in judge_prompt and "Candidate 0" in judge_prompt and "Candidate 1" in judge_prompt
    order = [c for c in res.contributors if c != "j"]
    assert res.content == f"answer {order[1].upper()}"


async def test_best_without_judge_uses_score_and_default_mode():
    r = Router(a=ok("answer A"), b=ok("answer B"))
    async with make_pool(r, info("a"), info("b")) as pool:
        res = await pool.complete(decision(("a", 0.1), ("b", 0.7)), request())  # no aggregator -> best
    assert res.expert == "coe:best" and res.content == "answer B"


async def test_unknown_mode_is_routing_error():
    r = Router(a=ok(), b=ok())
    async with make_pool(r, info("a"), info("b")) as pool:
        with pytest.raises(RoutingError, match="synthesize"):
            await pool.complete(decision("a", "b", aggregate="median"), request())


async def test_synthesize_streams_aggregator_tokens_with_summed_usage():
    r = Router(a=ok("x"), b=ok("y"), agg=ok("final answer here"))
    async with make_pool(r, info("a"), info("b"), info("agg", tags=("aggregator",))) as pool:
        chunks = [c async for c in pool.stream(decision("a", "b"), request())]
    # the aggregator's chunks as it sent them (its finish chunk too), then the final usage chunk
    assert [c.delta for c in chunks[:-1]] == ["final", "answer", "here", ""]
    assert chunks[-2].raw["choices"][0]["finish_reason"] == "stop"
    assert {c.expert for c in chunks} == {"coe:synthesize"}
    assert chunks[-1].usage.prompt_tokens == 10 + 10 + 7
    assert json.loads(json.dumps(r.bodies["agg"][0]))["stream"] is True


async def test_vote_stream_is_one_chunk_plus_final():
    r = Router(a=ok("Answer: C"), b=ok("Answer: C"))
    async with make_pool(r, info("a"), info("b")) as pool:
        chunks = [c async for c in pool.stream(decision("a", "b", aggregate="vote"), request())]
    assert [c.delta for c in chunks] == ["Answer: C", ""] and chunks[-1].usage.prompt_tokens == 20


def test_every_mode_has_a_combiner():
    from experts.aggregate import COMBINE, MODES

    assert set(COMBINE) == set(MODES)
