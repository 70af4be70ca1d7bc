"""Two ingress replicas of the real service (`coe up`, local Ray, Ray Serve, COE_ROUTER_REPLICAS=2, the
real router artifact, a real loopback stub expert; tests/deploy/replicas_stack.py): what the service
reports and what it enforces is the whole service's, whichever replica answers.

- every scrape of /metrics through the Serve proxy, every /admin/v1/status and `coe status` report all
  of the requests, which both replicas served;
- a per-key rpm limit admits at most the limit across the replicas (`R·ceil(limit/R)`);
- a budget is held across the replicas (overspend at most one flush interval of the other replica);
- every completion's decision is in the registry's decision log, and feedback on a completion is
  accepted whichever replica answered it and whichever replica gets the feedback;
- the response cache is per replica: a repeated request misses at most once per replica;
- SIGTERM to `coe up` under load drains both replicas: every request accepted before or during the drain
  is answered (200); the others are refused cleanly (503 shutting_down, or no connection once the proxy
  is gone). This test stops the service, so it runs last."""

from __future__ import annotations

import asyncio
import glob
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import run_coe
from tests.deploy.replicas_stack import SLOW, STUB, Stack, front_door, start_stack

pytestmark = [pytest.mark.serve, pytest.mark.slow]

REQUESTS = 300
CONCURRENCY = 16


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("coe-replicas"))
    try:
        _wait_for_both_replicas(s)
        yield s
    finally:
        s.stop()


def _status(stack: Stack) -> dict[str, Any]:
    r = httpx.get(f"{stack.base}/admin/v1/status", headers=stack.admin(), timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _wait_for_both_replicas(stack: Stack, timeout_s: float = 180.0) -> None:
    """Until the hub has heard from both replicas (each starts its exchange at its first health check)."""
    deadline = time.monotonic() + timeout_s
    while True:
        scope = _status(stack)["scope"]
        if scope["replicas"] == stack.replicas:
            return
        assert time.monotonic() < deadline, scope
        time.sleep(1.0)


def _stub_calls_in_status(status: dict[str, Any]) -> int:
    return int({e["name"]: e["calls"] for e in status["experts"]}[STUB])


def _scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{stack.base}/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }


def _stub_calls_in_scrape(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> int:
    return int(m.get(("coe_expert_calls_total", (("expert", STUB),)), 0))


async def _load(
    stack: Stack, n: int, concurrency: int, body: dict[str, Any], key: str
) -> list[httpx.Response]:
    """n POSTs of `body` from `concurrency` workers, each on its own connection pool."""
    out: list[httpx.Response] = []
    left = n

    async def worker() -> None:
        nonlocal left
        async with httpx.AsyncClient(base_url=stack.base, timeout=60, headers=stack.auth(key)) as c:
            while left > 0:
                left -= 1
                out.append(await c.post("/v1/chat/completions", json=body))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def ask(text: str, model: str = "auto", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def test_every_scrape_and_the_status_report_every_replicas_calls(stack: Stack) -> None:
    before_status = _stub_calls_in_status(_status(stack))
    before_scrape = _stub_calls_in_scrape(_scrape(stack))
    assert before_status == before_scrape
    answers = asyncio.run(
        _load(stack, REQUESTS, CONCURRENCY, ask("What is 6*7?", model=STUB), stack.keys.query)
    )
    assert [r.status_code for r in answers] == [200] * REQUESTS
    time.sleep(3 * 0.5)  # one COE_METRICS_PUSH_S (0.5 s) for the last requests of the other replica, thrice
    seen_replicas: set[str] = set()
    for _ in range(5):
        m = _scrape(stack)
        assert _stub_calls_in_scrape(m) == before_scrape + REQUESTS
        assert m[("coe_metrics_replicas", ())] == stack.replicas
        status = _status(stack)
        assert _stub_calls_in_status(status) == before_status + REQUESTS
        scope = status["scope"]
        assert scope["totals"] == "service" and scope["replicas"] == stack.replicas, scope
        seen_replicas.add(scope["replica"])
        by_replica = scope["by_replica"]
        # both replicas served some of the load (so a per-replica figure could not have passed)
        assert len(by_replica) == stack.replicas and all(r["chat_requests"] > 0 for r in by_replica.values())
    stdout = run_coe(stack.service, "status", "--url", stack.base, "--json", "--api-key", stack.keys.admin)
    import json

    assert _stub_calls_in_status(json.loads(stdout)) == before_status + REQUESTS


def _ray_endpoint(stack: Stack) -> str:
    """Ray's Prometheus endpoint on the node `coe up` started: the metrics export port its Ray session
    (named after the driver's pid) recorded."""
    found = glob.glob(f"/tmp/ray/session_*_{stack.service.process.pid}/metrics_export_port_*")
    assert len(found) == 1, found
    return f"http://127.0.0.1:{Path(found[0]).read_text().strip()}/metrics"


def _ray_totals(url: str) -> tuple[float, float, set[str]]:
    """Ray's figures summed over replicas: the stub's expert calls, the chat requests, the replicas."""
    text = httpx.get(url, timeout=30).text
    calls = chats = 0.0
    replicas: set[str] = set()
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == "ray_coe_expert_calls_total" and s.labels.get("expert") == STUB:
                calls += s.value
                replicas.add(s.labels.get("replica", ""))
            elif s.name == "ray_coe_requests_total" and s.labels.get("endpoint") == "chat":
                chats += s.value
    return calls, chats, replicas


def test_rays_metrics_endpoint_agrees_with_the_proxy_scrape(stack: Stack) -> None:
    """Each replica mirrors its figures into ray.serve.metrics (deploy/pipeline/ray_export.py); summed over
    replicas, Ray's endpoint reports what a scrape through the proxy reports."""
    asyncio.run(_load(stack, REQUESTS, CONCURRENCY, ask("What is 6*7?", model=STUB), stack.keys.query))
    time.sleep(3 * 0.5)
    m = _scrape(stack)
    want_calls = _stub_calls_in_scrape(m)
    want_chats = sum(
        v for (n, labels), v in m.items() if n == "coe_requests_total" and ("endpoint", "chat") in labels
    )
    url = _ray_endpoint(stack)
    deadline = time.monotonic() + 90  # Ray's agent exports what its workers last reported
    while (got := _ray_totals(url))[:2] != (want_calls, want_chats) and time.monotonic() < deadline:
        time.sleep(2.0)
    assert got[:2] == (want_calls, want_chats), (got, want_calls, want_chats)
    assert len(got[2]) == stack.replicas, got[2]  # both replicas' series, told apart by Serve's tag
    assert _stub_calls_in_scrape(_scrape(stack)) == want_calls  # nothing ran meanwhile


def test_rpm_limit_holds_across_the_replicas(stack: Stack) -> None:
    answers = asyncio.run(_load(stack, 4 * stack.rpm, 4, ask("What is 2+2?"), stack.keys.rpm))
    codes = [r.status_code for r in answers]
    per_replica = -(-stack.rpm // stack.replicas)
    admitted = codes.count(200)
    assert per_replica <= admitted <= stack.replicas * per_replica, codes
    refused = [r for r in answers if r.status_code == 429]
    assert len(refused) == len(codes) - admitted
    for r in refused:
        assert r.json()["error"]["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1


def test_budget_holds_across_the_replicas(stack: Stack) -> None:
    admitted = 0
    with httpx.Client(base_url=stack.base, timeout=60, headers=stack.auth(stack.keys.budget)) as c:
        for _ in range(4 * stack.budget_answers):
            r = c.post("/v1/chat/completions", json=ask("Name a prime number."))
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "insufficient_quota"
                break
            assert r.status_code == 200, r.text
            admitted += 1
            time.sleep(0.6)  # a little over COE_USAGE_FLUSH_S: the spend reaches the other replica
        else:
            pytest.fail(f"the budget of {stack.budget_answers} answers was never enforced")
    # documented overspend: what the other replica spent in one flush interval (+ its sync lag)
    assert stack.budget_answers <= admitted <= stack.budget_answers + 2


def test_decision_log_and_feedback_on_another_replicas_completion(stack: Stack) -> None:
    from registry import Registry
    from registry.decisions import list_decisions

    n = 24
    answers = asyncio.run(_load(stack, n, 4, ask("How do I reverse a list in Python?"), stack.keys.query))
    ids = [r.json()["id"] for r in answers]
    assert len(set(ids)) == n

    async def feedback_all() -> list[int]:
        # one connection per feedback: the proxy spreads them, so about half reach the other replica
        async def one(cid: str) -> int:
            async with httpx.AsyncClient(base_url=stack.base, timeout=30, headers=stack.auth()) as c:
                r = await c.post("/v1/feedback", json={"id": cid, "score": 0.75})
                return r.status_code

        return list(await asyncio.gather(*(one(cid) for cid in ids)))

    assert asyncio.run(feedback_all()) == [200] * n
    with Registry(stack.service.database_url) as reg, reg.session() as s:
        logged = {d.id: d for d in list_decisions(s, limit=None)}
    assert set(ids) <= set(logged)
    assert all(logged[cid].feedback_score == 0.75 for cid in ids)


def test_recent_decisions_are_per_replica_as_documented(stack: Stack) -> None:
    """/admin/v1/decisions/recent is the answering replica's own ring (docs/observability.md): each answer
    holds only that replica's decisions, and the two replicas' answers together hold every decision."""
    n = 40
    texts = [f"Recent-decisions probe {i}: how do I sort a list in Python?" for i in range(n)]

    async def ask_each() -> list[int]:
        async def one(text: str) -> int:
            async with httpx.AsyncClient(base_url=stack.base, timeout=60, headers=stack.auth()) as c:
                return (await c.post("/v1/chat/completions", json=ask(text))).status_code

        return [await one(t) for t in texts]  # a fresh connection each: the proxy spreads them

    assert asyncio.run(ask_each()) == [200] * n
    answers: list[frozenset[str]] = []
    for _ in range(16):  # fresh connections: both replicas answer some of these
        with httpx.Client(base_url=stack.base, timeout=30, headers=stack.admin()) as c:
            r = c.get("/admin/v1/decisions/recent", params={"limit": 1000})
        assert r.status_code == 200, r.text
        answers.append(frozenset(d["text"] for d in r.json()["data"] if d["text"].startswith("Recent-")))
    rings = set(answers)
    assert len(rings) == stack.replicas, [len(a) for a in rings]  # one ring per replica
    a, b = rings
    assert a and b and not (a & b)  # each replica recorded only what it routed
    assert a | b == set(texts)  # together: every decision


def test_response_cache_is_per_replica(stack: Stack) -> None:
    before = _status(stack)["cache"]
    n = 20
    body = ask("What is the capital of France?", temperature=0)
    answers = asyncio.run(_load(stack, n, 1, body, stack.keys.query))
    marks = [r.json()["coe"]["cache"] for r in answers]
    assert marks.count("miss") <= stack.replicas and marks.count("hit") >= n - stack.replicas, marks
    time.sleep(3 * 0.5)
    after = _status(stack)["cache"]
    assert (after["hit"] - before["hit"]) + (after["miss"] - before["miss"]) == n
    assert after["hit"] - before["hit"] == marks.count("hit")


def _in_flight(stack: Stack) -> float:
    return _scrape(stack)[("coe_requests_in_flight", ())] - 1  # less this scrape


def port_of(stack: Stack) -> int:
    return int(stack.base.rsplit(":", 1)[1])


def test_the_front_door_is_haproxy_and_spreads_over_the_replicas(stack: Stack) -> None:
    # COE_SERVE_INGRESS=haproxy (the default): HAProxy on COE_PORT, no Serve proxy on the request path
    assert front_door(port_of(stack)) == "haproxy"
    before = _status(stack)["scope"]["by_replica"]
    answers = asyncio.run(_load(stack, 64, CONCURRENCY, ask("What is 2+2?"), stack.keys.query))
    assert [r.status_code for r in answers] == [200] * 64, [r.text for r in answers if r.status_code != 200]
    assert all(r.json()["coe"]["categories"] for r in answers)  # model=auto: each one was classified
    time.sleep(3 * 0.5)
    after = _status(stack)["scope"]["by_replica"]
    assert len(after) == stack.replicas
    assert all(after[r]["chat_requests"] > before.get(r, {}).get("chat_requests", 0) for r in after), after


def test_sigterm_with_two_replicas_under_load_loses_no_accepted_request(stack: Stack) -> None:
    sigterm_under_load_loses_nothing(stack)


def sigterm_under_load_loses_nothing(stack: Stack) -> None:
    # requests to the slow expert, in flight on both replicas at the signal (SLOW_S = 10 s each: all of
    # them arrive before the first one ends, even on a loaded machine)
    held = 16
    outcomes: list[tuple[str, Any]] = []
    stop = threading.Event()

    def slow_one() -> None:
        try:
            r = httpx.post(
                f"{stack.base}/v1/chat/completions",
                json=ask("Hold on.", model=SLOW),
                headers=stack.auth(),
                timeout=120,
            )
            outcomes.append(("held", r.status_code))
        except httpx.HTTPError as exc:
            outcomes.append(("held", type(exc).__name__))

    def steady(name: str) -> None:
        """New requests all along, each on a new connection: answered, refused (503), or not connected
        once the proxy is gone. A connection the stopping proxy closes before it read the request ends
        in RemoteProtocolError without a response, or in a connection reset: at most once per client, at
        the very end (the held requests, the ones the service accepted, must all be answered)."""
        while not stop.is_set():
            try:
                r = httpx.post(
                    f"{stack.base}/v1/chat/completions",
                    json=ask("What is 1+1?", model=STUB),
                    headers={**stack.auth(), "connection": "close"},
                    timeout=120,
                )
                try:
                    code = r.json()["error"]["code"] if r.status_code == 503 else None
                except ValueError:  # a 503 that is not the service's (the front door's own page)
                    code = f"{r.headers.get('content-type')}: {r.text[:300]}"
                if r.status_code not in (200, 503):  # must not happen: keep what answered it, to see who
                    code = f"{r.headers.get('content-type')}: {r.text[:300]}"
                outcomes.append((name, (r.status_code, code)))
            except httpx.ConnectError:
                outcomes.append((name, "not connected"))
                time.sleep(0.05)
            except httpx.RemoteProtocolError as exc:
                outcomes.append((name, "closed unanswered" if "without sending" in str(exc) else repr(exc)))
                time.sleep(0.05)
            except httpx.ReadError as exc:  # the stopping proxy reset a connection it had not answered
                outcomes.append((name, "closed unanswered" if "reset by peer" in str(exc) else repr(exc)))
                time.sleep(0.05)
            except httpx.HTTPError as exc:  # a request lost after it was read: must not happen
                outcomes.append((name, repr(exc)))

    threads = [threading.Thread(target=slow_one) for _ in range(held)]
    threads += [threading.Thread(target=steady, args=(f"steady{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while _in_flight(stack) < held and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _in_flight(stack) >= held, "the held requests never arrived"
    by_replica = _status(stack)["scope"]["by_replica"]
    assert len(by_replica) == stack.replicas
    stack.service.process.send_signal(signal.SIGTERM)
    assert stack.service.process.wait(180) == 0, stack.service.log_text()[-3000:]
    stop.set()
    for t in threads:
        t.join(120)
    held_codes = [o for kind, o in outcomes if kind == "held"]
    assert held_codes == [200] * held, held_codes
    allowed = {(200, None), (503, "shutting_down"), "not connected", "closed unanswered"}
    for name in ("steady0", "steady1"):
        mine = [o for kind, o in outcomes if kind == name]
        assert mine and set(mine) <= allowed, [o for o in mine if o not in allowed]
        assert mine.count("closed unanswered") <= 1, mine
        assert (200, None) in mine
    out = stack.service.log_text()
    assert f"drained {stack.replicas} ingress replica(s)" in out and "all finished" in out, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
