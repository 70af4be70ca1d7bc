"""Service-wide figures in process: two ingress replicas (plain Ingress objects behind their FastAPI apps)
share their counters through one MetricsHub, and every scrape of either replica, and its admin status,
reports both replicas' requests. The merge rules (sums, live gauges, highest revision) are checked on
their own. The same property through the real Serve app with 2 replicas: tests/deploy/test_replicas.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.pipeline.ingress import Ingress
from deploy.pipeline.metrics import STALE_S, Metrics, MetricsHub, merge, snapshot_of
from deploy.pipeline.ray_export import RayExport
from deploy.settings import Settings
from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter

MSG = [{"role": "user", "content": "What is 2+2?"}]


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def replica(tmp_path: Any, hub: MetricsHub | None, name: str) -> Ingress:
    settings = Settings(database_url="sqlite://", data_dir=tmp_path, registry_poll_s=60)
    ingress = Ingress(settings, FakeRouter(), FakeGateway(), registry=FakeRegistry())
    if hub is not None:
        ingress.metrics.attach(hub.exchange, name, interval_s=60)  # only the scrape-time exchange
    return ingress


def client(ingress: Ingress) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://coe")


async def test_every_replica_reports_the_whole_service(tmp_path: Any) -> None:
    hub = MetricsHub()
    a, b = replica(tmp_path, hub, "a"), replica(tmp_path, hub, "b")
    async with client(a) as ca, client(b) as cb:
        for i in range(7):  # 4 on a, 3 on b, as a proxy spreads them
            c = ca if i % 2 == 0 else cb
            r = await c.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
            assert r.status_code == 200, r.text
        for shared in (a.metrics, b.metrics):  # each replica's periodic push, done at once
            await shared.sync()
        for c in (ca, cb, ca):
            m = scrape((await c.get("/metrics")).text)
            assert m[("coe_requests_total", (("endpoint", "chat"), ("status", "200")))] == 7
            assert m[("coe_stage_latency_seconds_count", (("stage", "total"),))] == 7
            assert (
                sum(v for (n, _), v in m.items() if n == "coe_expert_calls_total") == 14
            )  # answer + attempt
            assert m[("coe_metrics_replicas", ())] == 2
            assert not any(n.endswith("_created") for n, _ in m)
        for c in (ca, cb):
            status = (await c.get("/admin/v1/status")).json()
            assert status["scope"]["totals"] == "service" and status["scope"]["replicas"] == 2
            assert status["scope"]["expert_health"] == "replica"
            calls = {e["name"]: e["calls"] for e in status["experts"]}
            assert calls["math"] == 7, status["experts"]
            assert sum(e["prompt_tokens"] for e in status["experts"]) == 70


async def test_without_a_hub_the_figures_are_the_replicas_own(tmp_path: Any) -> None:
    a = replica(tmp_path, None, "a")
    async with client(a) as ca:
        await ca.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
        status = (await ca.get("/admin/v1/status")).json()
        assert status["scope"]["totals"] == "replica"
        assert {e["name"]: e["calls"] for e in status["experts"]}["math"] == 1


async def test_an_unreachable_hub_leaves_the_last_figures_and_says_why(tmp_path: Any) -> None:
    m = Metrics()

    async def broken(_replica: str, _snap: Any) -> Any:
        raise ConnectionError("hub gone")

    m.attach(broken, "a")
    m.requests.labels("chat", "200").inc()
    await m.sync()
    assert m.hub_error is not None and "hub gone" in m.hub_error
    assert (
        scrape(m.render()[0].decode())[("coe_requests_total", (("endpoint", "chat"), ("status", "200")))] == 1
    )


def test_merge_sums_counters_and_histograms_and_keeps_only_live_gauges() -> None:
    a, b, gone = Metrics(), Metrics(), Metrics()
    for m, n in ((a, 2), (b, 3), (gone, 5)):
        m.requests.labels("chat", "200").inc(n)
        m.stage("total", 0.003)
        m.in_flight.set(n)
    a.registry_revision.set(4)
    b.registry_revision.set(7)
    merged = merge(
        snapshot_of(a.local), [(0.1, snapshot_of(b.local)), (STALE_S + 1, snapshot_of(gone.local))]
    )
    flat = {(n, s, labels): v for n, _d, _t, samples in merged for s, labels, v in samples}
    assert flat[("coe_requests", "coe_requests_total", (("endpoint", "chat"), ("status", "200")))] == 10
    assert flat[("coe_stage_latency_seconds", "coe_stage_latency_seconds_count", (("stage", "total"),))] == 3
    assert flat[("coe_requests_in_flight", "coe_requests_in_flight", ())] == 5  # the stopped one's left out
    assert flat[("coe_registry_revision", "coe_registry_revision", ())] == 7
    assert flat[("coe_metrics_replicas", "coe_metrics_replicas", ())] == 2


@pytest.mark.parametrize("changed", [False, True])
async def test_unchanged_figures_are_not_resent(changed: bool) -> None:
    sent: list[Any] = []
    hub = MetricsHub()

    async def exchange(replica: str, snap: Any) -> Any:
        sent.append(snap)
        return await hub.exchange(replica, snap)

    m = Metrics()
    m.attach(exchange, "a")
    await m.sync()
    if changed:
        m.requests.labels("chat", "200").inc()
    await m.sync()
    assert sent[0] is not None and (sent[1] is not None) == changed


async def test_hub_forgets_the_longest_silent_replicas_beyond_its_bound() -> None:
    hub = MetricsHub(max_replicas=2)
    snap = snapshot_of(Metrics().local)
    for name in ("r1", "r2", "r3"):
        await hub.exchange(name, snap)
    assert set(await hub.exchange("x", None)) == {"r2", "r3"}


class _FakeRayMetric:
    """Records what RayExport sends to one Ray metric."""

    def __init__(self, kind: str, name: str, tag_keys: tuple[str, ...], bounds: list[float]) -> None:
        self.kind, self.name, self.tag_keys, self.bounds = kind, name, tag_keys, bounds
        self.calls: list[tuple[str, float, dict[str, str] | None]] = []

    def inc(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("inc", value, tags))

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("set", value, tags))

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.calls.append(("observe", value, tags))


def test_ray_export_adds_only_the_increase_and_replays_histogram_buckets() -> None:
    made: dict[str, _FakeRayMetric] = {}

    def factory(kind: str, name: str, _doc: str, tag_keys: tuple[str, ...], bounds: list[float]) -> Any:
        made[name] = _FakeRayMetric(kind, name, tag_keys, bounds)
        return made[name]

    m, export = Metrics(), RayExport(factory)
    m.requests.labels("chat", "200").inc(3)
    m.stage("total", 0.003)  # bucket (0.0025, 0.005]
    m.stage("total", 0.003)
    m.stage("total", 50.0)  # (30, 60]
    m.in_flight.set(2)
    export.push(snapshot_of(m.local))
    m.requests.labels("chat", "200").inc(2)
    m.stage("total", 0.0001)  # (0, 0.001]
    export.push(snapshot_of(m.local))
    export.push(snapshot_of(m.local))  # nothing new: nothing added
    req = made["coe_requests"]
    assert req.kind == "counter" and req.tag_keys == ("endpoint", "status")
    assert req.calls == [("inc", 3.0, {"endpoint": "chat", "status": "200"}), ("inc", 2.0, req.calls[0][2])]
    lat = made["coe_stage_latency_seconds"]
    assert lat.kind == "histogram" and lat.tag_keys == ("stage",) and lat.bounds[:2] == [0.001, 0.0025]
    observed = [v for op, v, tags in lat.calls if op == "observe" and tags == {"stage": "total"}]
    # each observation lands in the bucket it was counted in: same counts per bucket as /metrics
    assert observed == [0.00375, 0.00375, 45.0, 0.0005]
    assert made["coe_requests_in_flight"].calls[-1] == ("set", 2.0, None)
    assert export.error is None


def test_ray_export_failures_are_reported_not_raised() -> None:
    def broken(*_args: Any) -> Any:
        raise RuntimeError("no Ray here")

    m, export = Metrics(), RayExport(broken)
    m.requests.labels("chat", "200").inc()
    export.push(snapshot_of(m.local))
    assert export.error is not None and "no Ray here" in export.error
