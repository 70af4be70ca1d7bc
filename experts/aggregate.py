"""Combining several experts' answers (experts/dispatch.py calls it when a decision chose more than one
expert).

Modes, by name (`decision.aggregate`; default `synthesize` when an expert tagged "aggregator" exists,
else `best`):
  synthesize  Mixture-of-Agents: the aggregator expert reads the question and the candidate answers and
              writes the final answer (streamable).
  vote        majority over normalised short answers (experts/answers.py: the stated option letter, else
              the final number, else normalised text; the live eval reads answers by the same rules); ties
              go to the answer backed by the highest-scored expert; stops early (cancelling the rest) as
              soon as one answer holds a majority of all candidates.
  best        a judge expert (tag "judge", else "aggregator") picks one candidate by index; without a
              judge, or when it fails, the highest-scored answering candidate wins.
Candidates run concurrently under `pool.aggregate_deadline_s`; failing candidates are dropped. If none
answers, the pool fails over along `decision.alternates` as for a single expert.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

from experts.answers import normalise_answer
from experts.attempt import CANCELLED_EARLY, DEADLINE, Attempt, as_dicts
from experts.failover import FailoverPool
from experts.types import ChatChunk, ChatRequest, ChatResult, Usage
from router.defaults import AGGREGATION_MODES
from router.errors import CoeError, RoutingError
from router.types import AGGREGATOR_TAG, JUDGE_TAG, RouteDecision

MODES = AGGREGATION_MODES
#: each candidate answer is cut to this many characters in the aggregator's and judge's prompts
MAX_CANDIDATE_CHARS = 2000

# The aggregate-and-synthesize prompt of Mixture-of-Agents (Wang et al., 2024).
SYNTHESIZE_PROMPT = (
    "You have been provided with a set of responses from various models to the latest user query. "
    "Your task is to synthesize these responses into a single, high-quality response. It is crucial to "
    "critically evaluate the information provided in these responses, recognizing that some of it may be "
    "biased or incorrect. Your response should not simply replicate the given answers but should offer a "
    "refined, accurate, and comprehensive reply to the instruction. Ensure your response is well-structured, "
    "coherent, and adheres to the highest standards of accuracy and reliability.\n\nResponses from models:"
)

JUDGE_PROMPT = (
    "You are a strict judge. Read the question and the numbered candidate answers, and decide which "
    "candidate answers the question best. Reply with the number of the best candidate only."
)


def resolve_mode(decision: RouteDecision, pool: FailoverPool) -> str:
    mode = decision.aggregate
    if mode is None:
        return "synthesize" if pool.snapshot.tagged(AGGREGATOR_TAG) else "best"
    if mode not in MODES:
        raise RoutingError(f"unknown aggregation {mode!r}; known: {', '.join(MODES)}", param="aggregate")
    return mode


# ------------------------------------------------------------------------------------- candidates
async def gather_candidates(
    pool: FailoverPool,
    names: Sequence[str],
    request: ChatRequest,
    attempts: list[Attempt],
    *,
    stop_when: Callable[[list[ChatResult]], bool] | None = None,
) -> list[ChatResult]:
    """Call `names` concurrently; return the answers in the order they arrived. Failures and the calls
    still pending at the deadline (or when `stop_when` says the answers suffice) are recorded and dropped."""
    tasks: dict[asyncio.Task[ChatResult], str] = {
        asyncio.ensure_future(pool.call_expert(n, request, attempts)): n for n in names
    }
    results: list[ChatResult] = []
    pending = set(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + pool.aggregate_deadline_s
    reason = DEADLINE
    try:
        while pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            done, pending = await asyncio.wait(
                pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for t in sorted(done, key=lambda t: list(tasks).index(t)):
                exc = t.exception()
                if exc is None:
                    results.append(t.result())
                elif not isinstance(exc, CoeError):
                    raise exc
            if stop_when is not None and results and pending and stop_when(results):
                reason = CANCELLED_EARLY
                break
    finally:
        for t in pending:
            t.cancel()
            attempts.append(Attempt.skipped(tasks[t], reason))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    return results


def _total(results: Sequence[ChatResult]) -> tuple[Usage, float]:
    usage = Usage()
    cost = 0.0
    for r in results:
        usage = usage + r.usage
        cost += r.cost_usd
    return usage, cost


def _question(request: ChatRequest) -> str:
    for m in reversed(request.messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return str(c or "")
    return ""


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_CANDIDATE_CHARS else text[:MAX_CANDIDATE_CHARS] + " …"


def synthesize_request(request: ChatRequest, answers: Sequence[str]) -> ChatRequest:
    """The aggregator's request: the MoA system prompt with the numbered answers, then the conversation."""
    numbered = "\n".join(f"{i}. {_clip(a)}" for i, a in enumerate(answers, 1))
    system = f"{SYNTHESIZE_PROMPT}\n{numbered}"
    msgs = [m for m in request.messages if m.get("role") != "system"]
    return ChatRequest(messages=({"role": "system", "content": system}, *msgs), params=request.params)


def judge_request(request: ChatRequest, answers: Sequence[str]) -> ChatRequest:
    body = [f"Question:\n{_question(request)}", ""]
    body += [f"Candidate {i}:\n{_clip(a)}\n" for i, a in enumerate(answers)]
    body.append(f"Which candidate (0-{len(answers) - 1}) is best? Reply with the number only.")
    return ChatRequest(
        messages=({"role": "system", "content": JUDGE_PROMPT}, {"role": "user", "content": "\n".join(body)}),
        params={"temperature": 0.0, "max_tokens": 8},
    )


def parse_index(text: str, n: int) -> int | None:
    for m in re.finditer(r"\d+", text):
        i = int(m.group())
        if 0 <= i < n:
            return i
    return None


def _majority(results: Sequence[ChatResult], n_candidates: int) -> bool:
    counts: dict[str, int] = {}
    for r in results:
        k = normalise_answer(r.content)
        counts[k] = counts.get(k, 0) + 1
    return max(counts.values()) * 2 > n_candidates


def pick_vote(results: Sequence[ChatResult], scores: dict[str, float]) -> tuple[ChatResult, str]:
    """The majority answer; ties go to the answer whose best supporter has the highest score."""
    groups: dict[str, list[ChatResult]] = {}
    for r in results:
        groups.setdefault(normalise_answer(r.content), []).append(r)

    def rank(item: tuple[str, list[ChatResult]]) -> tuple[int, float, float]:
        _, rs = item
        ss = [scores.get(r.expert, 0.0) for r in rs]
        return (len(rs), max(ss), sum(ss))

    key, rs = max(groups.items(), key=rank)
    return max(rs, key=lambda r: scores.get(r.expert, 0.0)), key


def _by_score(results: Sequence[ChatResult], scores: dict[str, float]) -> ChatResult:
    return max(results, key=lambda r: scores.get(r.expert, 0.0))


# ------------------------------------------------------------------------------------------- modes
@dataclasses.dataclass(frozen=True)
class Round:
    """What a mode combines: the candidates' answers to `request`, their routing scores, and the pool
    (with the request's attempts) for the extra calls a mode makes."""

    pool: FailoverPool
    request: ChatRequest
    results: list[ChatResult]
    scores: dict[str, float]
    attempts: list[Attempt]

    def best(self) -> ChatResult:
        """The best-scored answer."""
        return _by_score(self.results, self.scores)


#: a mode combines a round's answers into the final content, with the extra calls it made (judge,
#: aggregator), whose usage and cost the result adds
Combine = Callable[[Round], Awaitable[tuple[str, list[ChatResult]]]]


async def _vote(r: Round) -> tuple[str, list[ChatResult]]:
    return pick_vote(r.results, r.scores)[0].content, []


async def _best(r: Round) -> tuple[str, list[ChatResult]]:
    chosen = r.best()
    judges = r.pool.snapshot.tagged(JUDGE_TAG) or r.pool.snapshot.tagged(AGGREGATOR_TAG)
    if len(r.results) < 2 or not judges:
        return chosen.content, []
    ask = judge_request(r.request, [x.content for x in r.results])
    try:
        verdict = await r.pool.failover(judges, ask, r.attempts)
    except CoeError:
        return chosen.content, []  # no judge answered: the best-scored candidate's answer
    i = parse_index(verdict.content, len(r.results))
    return (r.results[i] if i is not None else chosen).content, [verdict]


async def _synthesize(r: Round) -> tuple[str, list[ChatResult]]:
    best = r.best().content
    if len(r.results) < 2:
        return best, []
    aggs = r.pool.snapshot.tagged(AGGREGATOR_TAG)
    ask = synthesize_request(r.request, [x.content for x in r.results])
    try:
        final = await r.pool.failover(aggs, ask, r.attempts)
    except CoeError:
        return best, []  # fall back to the best-scored candidate's answer
    return final.content, [final]


COMBINE: dict[str, Combine] = {"synthesize": _synthesize, "vote": _vote, "best": _best}


async def aggregate(pool: FailoverPool, decision: RouteDecision, request: ChatRequest) -> ChatResult:
    mode = resolve_mode(decision, pool)
    t0 = time.perf_counter()
    attempts: list[Attempt] = []
    names = [n for n in decision.expert_names if n in pool.candidates(decision)]
    scores = {c.name: c.score for c in decision.experts}
    stop = (lambda rs: _majority(rs, len(names))) if mode == "vote" else None
    results = await gather_candidates(pool, names, request, attempts, stop_when=stop)
    if not results:
        # nobody answered: a single-expert failover along the alternates, so the request is not lost
        rest = [n for n in pool.candidates(decision) if n not in names]
        return await pool.failover(rest, request, attempts)
    content, extra = await COMBINE[mode](Round(pool, request, results, scores, attempts))
    usage, cost = _total([*results, *extra])
    return ChatResult(
        expert=f"coe:{mode}",
        content=content,
        finish_reason="stop",
        usage=usage,
        cost_usd=cost,
        latency_ms=(time.perf_counter() - t0) * 1000.0,
        contributors=tuple(dict.fromkeys([r.expert for r in [*results, *extra]])),
        attempts=as_dicts(attempts),
    )


async def aggregate_stream(
    pool: FailoverPool, decision: RouteDecision, request: ChatRequest
) -> AsyncGenerator[ChatChunk, None]:
    """Stream an aggregated answer: the aggregator's tokens as they come for `synthesize`; the chosen answer
    as one chunk for `vote` and `best` (they need every answer before choosing)."""
    mode = resolve_mode(decision, pool)
    name = f"coe:{mode}"
    if mode != "synthesize":
        r = await aggregate(pool, decision, request)
        yield ChatChunk(expert=r.expert, delta=r.content)
        yield ChatChunk(expert=r.expert, finish_reason=r.finish_reason, usage=r.usage, cost_usd=r.cost_usd)
        return
    attempts: list[Attempt] = []
    names = [n for n in decision.expert_names if n in pool.candidates(decision)]
    scores = {c.name: c.score for c in decision.experts}
    results = await gather_candidates(pool, names, request, attempts)
    if not results:
        rest = [n for n in pool.candidates(decision) if n not in names]
        async with contextlib.aclosing(pool.stream_failover(rest, request, attempts)) as chunks:
            async for chunk in chunks:
                yield chunk
        return
    usage, cost = _total(results)
    if len(results) > 1:
        aggs = pool.snapshot.tagged(AGGREGATOR_TAG)
        streamed = False
        try:
            agg_req = synthesize_request(request, [r.content for r in results])
            async with contextlib.aclosing(pool.stream_failover(aggs, agg_req, attempts)) as chunks:
                async for chunk in chunks:
                    streamed = True
                    if chunk.usage is not None or chunk.finish_reason is not None:
                        total = usage + (chunk.usage or Usage())
                        yield dataclasses.replace(
                            chunk, expert=name, usage=total, cost_usd=cost + (chunk.cost_usd or 0.0)
                        )
                    else:
                        yield dataclasses.replace(chunk, expert=name)
            return
        except CoeError:
            if streamed:  # the aggregator failed mid-answer: no fallback once tokens went out
                raise
    best = _by_score(results, scores)
    yield ChatChunk(expert=name, delta=best.content)
    yield ChatChunk(expert=name, finish_reason="stop", usage=usage, cost_usd=cost)
