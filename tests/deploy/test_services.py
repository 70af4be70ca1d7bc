"""RouterService, Gateway, the seed plan and the app builder, as plain objects (no Ray cluster)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deploy.pipeline.gateway import Gateway
from deploy.pipeline.router_service import ARTIFACT_SETTING, RouterService
from deploy.settings import Settings
from experts.types import ChatChunk, ChatRequest, ChatResult
from router.types import ExpertChoice, ExpertLoad, RouteDecision, RoutingOptions
from tests.deploy.doubles import FakeRegistry


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url="sqlite://", data_dir=tmp_path, registry_poll_s=0.05, router_artifact=tmp_path / "a"
    )


class FakeCoreRouter:
    categories = ("math", "other")

    def __init__(self, version: str) -> None:
        self.version = version
        self.last_timings_ms = {"embed": 2.0, "classify": 1.0}
        self.batches: list[list[str]] = []

    def probabilities(self, texts: list[str]) -> np.ndarray:
        self.batches.append(texts)
        return np.tile(np.array([0.9, 0.1]), (len(texts), 1))

    def decide(self, probs_row: Any, snapshot: Any, load: Any, options: RoutingOptions) -> RouteDecision:
        return RouteDecision(
            categories=(("math", float(probs_row[0])),),
            experts=(ExpertChoice("math", 0.9),),
            policy=options.policy,
            router_version=self.version,
            timings_ms={"policy": 0.3},
        )


async def test_router_service_routes_and_swaps_artifacts(settings: Settings) -> None:
    reg = FakeRegistry()
    loaded: list[Path] = []

    def loader(path: Any, _settings: Any) -> FakeCoreRouter:
        loaded.append(Path(path))
        return FakeCoreRouter(Path(path).name)

    svc = RouterService(settings, registry=reg, loader=loader)
    d = await svc.route("what is 2+2", RoutingOptions(policy="top_k"))
    assert d.router_version == "a" and d.policy == "top_k"
    assert (
        d.timings_ms["embed"] == 2.0 and d.timings_ms["policy"] == 0.3 and d.timings_ms["batch_size"] == 1.0
    )
    reg.settings[ARTIFACT_SETTING] = str(settings.data_dir / "b")
    reg.bump()
    assert await svc.refresh()
    assert (await svc.route("x", RoutingOptions())).router_version == "b"
    assert svc.swaps == 1 and loaded[-1].name == "b"
    status = await svc.status()
    assert status["router_version"] == "b" and status["revision"] == reg.snap.revision
    await svc.aclose()


async def test_router_service_keeps_the_old_router_when_a_new_one_fails(settings: Settings) -> None:
    reg = FakeRegistry()

    def loader(path: Any, _settings: Any) -> FakeCoreRouter:
        if Path(path).name == "broken":
            raise ValueError("corrupt")
        return FakeCoreRouter(Path(path).name)

    svc = RouterService(settings, registry=reg, loader=loader)
    reg.settings[ARTIFACT_SETTING] = "/nowhere/broken"
    reg.bump()
    await svc.refresh()
    assert (await svc.route("x", RoutingOptions())).router_version == "a"
    assert "corrupt" in (svc.last_swap_error or "")
    await svc.aclose()


async def test_router_service_polls_expert_load(settings: Settings) -> None:
    async def load_source() -> dict[str, ExpertLoad]:
        return {"math": ExpertLoad(in_flight=3)}

    svc = RouterService(
        settings, registry=FakeRegistry(), router=FakeCoreRouter("v"), load_source=load_source
    )
    await svc.route("x", RoutingOptions())
    for _ in range(50):
        if svc.load:
            break
        await asyncio.sleep(0.02)
    assert svc.load["math"].in_flight == 3
    await svc.aclose()


class FakePool:
    def __init__(self) -> None:
        self.started = self.closed = False
        self.snapshots: list[Any] = []

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True

    def update_snapshot(self, snapshot: Any) -> None:
        self.snapshots.append(snapshot)

    def load(self) -> dict[str, ExpertLoad]:
        return {"math": ExpertLoad(healthy=False), "general": ExpertLoad()}

    async def complete(self, decision: RouteDecision, request: ChatRequest) -> ChatResult:
        return ChatResult(expert=decision.expert_names[0], content="ok")

    async def stream(self, decision: RouteDecision, request: ChatRequest) -> Any:
        yield ChatChunk(expert="math", delta="o")
        yield ChatChunk(expert="math", delta="k", finish_reason="stop")


async def test_gateway_runs_the_pool_and_applies_new_snapshots(settings: Settings) -> None:
    reg, pool = FakeRegistry(), FakePool()
    gw = Gateway(settings, registry=reg, pool=pool)
    decision = RouteDecision(categories=(), experts=(ExpertChoice("math", 1.0),))
    request = ChatRequest(messages=({"role": "user", "content": "hi"},))
    assert (await gw.complete(decision, request)).content == "ok" and pool.started
    assert "".join([c.delta async for c in gw.stream(decision, request)]) == "ok"
    status = await gw.status()
    assert status["enabled"] == ["general", "math"] and status["usable"] == ["general"]
    reg.bump(disabled=("math",))
    assert await gw.refresh()
    assert pool.snapshots[-1].revision == reg.snap.revision
    await gw.aclose()
    assert pool.closed


def test_seed_plan_maps_categories_to_personas() -> None:
    from eval.training.seed import plan

    p = plan(
        ["math", "physics", "computer science", "health", "law", "history", "other", "cooking"]
        + ["business", "economics", "coding", "reasoning", "writing", "chat", "extraction"],
        "http://127.0.0.1:9/v1",
    )
    mapping = dict(p.mapping)
    assert mapping["coding"] == ("local-code", "local-general")
    assert mapping["reasoning"] == ("local-math", "local-general")
    # open-ended traffic goes to the generalist, never to a specialist persona
    assert mapping["writing"] == mapping["chat"] == mapping["extraction"] == ("local-general",)
    assert mapping["math"] == ("local-math", "local-general")
    assert mapping["physics"] == ("local-math", "local-general")
    assert mapping["computer science"] == ("local-code", "local-general")
    assert mapping["health"] == ("local-medical", "local-general")
    # business questions are mostly commercial arithmetic: the step-by-step persona; economics stays
    assert mapping["business"] == ("local-math", "local-general")
    assert mapping["economics"] == mapping["law"] == ("local-humanities", "local-general")
    assert mapping["other"] == ("local-general",) and mapping["cooking"] == ("local-general",)
    general = next(e for e in p.experts if e.name == "local-general")
    assert {"generalist", "aggregator", "judge"} <= set(general.tags)
    assert all(e.base_url == "http://127.0.0.1:9/v1" for e in p.experts)


def test_seed_runs_once_on_a_real_registry(tmp_path: Path) -> None:
    import json

    from eval.training.seed import seed
    from registry import Registry

    art = tmp_path / "art"
    art.mkdir()
    (art / "manifest.json").write_text(json.dumps({"categories": ["math", "computer science", "other"]}))
    with Registry(f"sqlite:///{tmp_path / 'r.db'}") as reg:
        assert seed(reg, art, "http://127.0.0.1:9/v1") is not None
        snap = reg.snapshot()
        assert snap.category_experts["computer science"] == ("local-code", "local-general")
        assert snap.generalist == "local-general"
        assert seed(reg, art, "http://127.0.0.1:9/v1") is None  # second run keeps the registry


#: the Serve settings the builder tests read back from the bound deployments
SERVE = {"router_replicas": 2, "router_cpus": 0.5, "batch_max_size": 8, "autoscale": False}


def test_builder_wires_one_hop_by_default(settings: Settings) -> None:
    pytest.importorskip("ray.serve")
    from deploy.serve.app import build_app
    from deploy.serve.onehop import OneHopIngress

    s = settings.model_copy(update={**SERVE, "gateway_cpus": 0.25})
    assert s.topology == "onehop"
    ingress = build_app(s)._bound_deployment
    assert ingress.name == "CoeIngress" and ingress.num_replicas == 2 and ingress.init_args == (s,)
    assert ingress.ray_actor_options["num_cpus"] == 0.75
    cls = ingress.func_or_class
    assert issubclass(cls, OneHopIngress)
    assert cls.router_cls.batched is True


def test_builder_wires_three_deployments_when_split(settings: Settings) -> None:
    pytest.importorskip("ray.serve")
    from deploy.serve.app import build_app

    s = settings.model_copy(update={**SERVE, "topology": "split"})
    app = build_app(s)
    ingress = app._bound_deployment
    assert ingress.name == "CoeIngress"
    router = ingress.init_args[1]._bound_deployment
    gateway = ingress.init_args[2]._bound_deployment
    assert router.name == "CoeRouter" and router.num_replicas == 2
    assert router.ray_actor_options["num_cpus"] == 0.5
    assert gateway.name == "CoeGateway"
    cls = router.func_or_class
    assert cls.batched is True
    scaled = build_app(s.model_copy(update={"autoscale": True, "autoscale_max_replicas": 5}))
    cfg = scaled._bound_deployment.init_args[1]._bound_deployment._deployment_config.autoscaling_config
    assert cfg.max_replicas == 5


async def test_a_lone_request_runs_at_once_and_concurrent_ones_share_batches(settings: Settings) -> None:
    seen: list[list[str]] = []

    class Batched(RouterService):
        batched = True

        async def probabilities_batch(self, texts: list[str]) -> Any:
            seen.append(list(texts))
            await asyncio.sleep(0.01)  # a batch takes a while; others arrive meanwhile
            return [
                (np.array([0.9, 0.1]), {"embed": 1.0, "batch_size": len(texts)}, None, None) for _ in texts
            ]

    svc = Batched(
        settings.model_copy(update={"batch_max_size": 3}),
        registry=FakeRegistry(),
        router=FakeCoreRouter("v1"),
    )
    options = RoutingOptions(policy="category")
    d = await svc.route("alone", options)
    assert d.categories[0][0] == "math" and d.timings_ms["batch_size"] == 1
    assert seen == [["alone"]]

    first = asyncio.ensure_future(svc.route("q0", options))
    await asyncio.sleep(0.002)  # q0's batch is running when the next four arrive
    rest = await asyncio.gather(*(svc.route(f"q{i}", options) for i in range(1, 5)))
    await first
    # q1..q4 queued while q0 ran: the next batches take them, at most batch_max_size at a time
    assert seen[1:] == [["q0"], ["q1", "q2", "q3"], ["q4"]]
    assert [r.timings_ms["batch_size"] for r in rest] == [3, 3, 3, 1]
    status = await svc.status()
    assert status["batches"] == 4 and status["batched_texts"] == 6
    await svc.aclose()


async def test_the_first_call_of_a_router_or_gateway_replica_sees_the_registry_of_now(
    settings: Settings,
) -> None:
    # built, then the registry changes before any request: the first call must not decide on the
    # snapshot of the moment it was built (its watcher's first poll comes before it)
    reg, pool = FakeRegistry(), FakePool()
    svc = RouterService(settings, registry=reg, loader=lambda path, _s: FakeCoreRouter(Path(path).name))
    gw = Gateway(settings, registry=reg, pool=pool)
    reg.bump(disabled=("math",))
    await svc.route("what is 2+2", RoutingOptions())
    assert svc.snapshot.revision == reg.snap.revision
    decision = RouteDecision(categories=(), experts=(ExpertChoice("general", 1.0),))
    await gw.complete(decision, ChatRequest(messages=({"role": "user", "content": "hi"},)))
    assert pool.snapshots[-1].revision == reg.snap.revision
    await svc.aclose()
    await gw.aclose()
