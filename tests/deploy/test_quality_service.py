"""A router artifact with a quality head, served: the service's router (RouterService, the class every
topology runs) hands each query's quality estimate to the policies, and `/v1/route` with `coe-quality`
or `coe-cost` routes by per-query predicted quality and cost (lambda / wtp_usd from the request)."""

from __future__ import annotations

import shutil
from typing import Any

import httpx
import pytest

from deploy.pipeline.ingress import Ingress
from deploy.pipeline.router_service import RouterService
from deploy.settings import Settings
from router.core import Router
from router.quality import update_defaults
from tests.deploy.doubles import FakeGateway, FakeRegistry
from tests.router.test_quality import BUNDLED, HashEmbedder, small_head, snapshot


@pytest.fixture
def service(tmp_path: Any) -> tuple[RouterService, FakeRegistry]:
    art = tmp_path / "art"
    shutil.copytree(BUNDLED, art)
    small_head().save(art)
    update_defaults(art, {"lambda": 0.0})
    reg = FakeRegistry()
    reg.snap = snapshot()
    settings = Settings(database_url="sqlite://", data_dir=tmp_path, registry_poll_s=30)
    router = Router.load(art, embedder=HashEmbedder())
    assert router.quality is not None
    return RouterService(settings, registry=reg, router=router), reg


async def test_the_service_router_passes_each_querys_estimate_to_the_policy(service: Any) -> None:
    svc, _ = service
    from router.types import RoutingOptions

    d, _ = await svc.route_embedded("Is 91 prime?", RoutingOptions(policy="quality", lambda_=0.0))
    assert "predicted quality (knn)" in d.experts[0].reason and "quality" in d.timings_ms
    # a huge price on cost: the cheap expert, whatever the predicted quality
    cheap, _ = await svc.route_embedded("Is 91 prime?", RoutingOptions(policy="quality", lambda_=1e9))
    assert cheap.expert_names == ("cheap",)


async def test_route_endpoint_with_coe_quality_and_a_willingness_to_pay(service: Any, tmp_path: Any) -> None:
    svc, reg = service
    ingress = Ingress(Settings(database_url="sqlite://", data_dir=tmp_path), svc, FakeGateway(), registry=reg)
    transport = httpx.ASGITransport(app=ingress.build_asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as c:
        r = await c.post(
            "/v1/route", json={"model": "coe-quality", "text": "Is 91 prime?", "routing": {"lambda": 1e9}}
        )
        assert r.status_code == 200, r.text
        assert r.json()["experts"][0]["name"] == "cheap" and r.json()["policy"] == "quality"
        r = await c.post("/v1/route", json={"model": "coe-quality", "text": "x", "routing": {"wtp_usd": 1e9}})
        assert r.status_code == 200 and "predicted quality" in r.json()["experts"][0]["reason"]
        r = await c.post("/v1/route", json={"model": "coe-quality", "text": "x", "routing": {"lambda": -1}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "routing.lambda"
