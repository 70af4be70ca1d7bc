"""Feedback on a completion another replica answered, in process: two Ingress replicas on one SQLite
registry; replica a answers and its decision-log writer is still lingering when the feedback reaches
replica b, which looks the id up again until a's writer has written it (pipeline/decisions.py SETTLE_S).
The same through the real 2-replica Serve app: tests/deploy/test_replicas.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from registry import Registry
from registry import decisions as dlog
from tests.deploy.doubles import FakeGateway, FakeRouter

MSG = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture
def registry(tmp_path: Any) -> Any:
    reg = Registry(f"sqlite:///{tmp_path / 'coe.db'}")
    yield reg
    reg.close()


def replica(tmp_path: Any, registry: Registry) -> Ingress:
    settings = Settings(database_url="sqlite://", data_dir=tmp_path, registry_poll_s=60, access_log=False)
    return Ingress(settings, FakeRouter(), FakeGateway(), registry=registry)


def client(ingress: Ingress) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://coe")


async def test_feedback_reaching_the_other_replica_before_the_decision_is_written(
    tmp_path: Any, registry: Registry
) -> None:
    a, b = replica(tmp_path, registry), replica(tmp_path, registry)
    assert a.observer.decisions is not None
    a.observer.decisions._linger_s = 0.4  # a's writer holds the decision back a while, as under load
    try:
        async with client(a) as ca, client(b) as cb:
            r = await ca.post("/v1/chat/completions", json={"messages": MSG})
            cid = r.json()["id"]
            with registry.session(write=False) as s:
                assert cid not in {d.id for d in dlog.list_decisions(s)}  # not written yet
            f = await cb.post("/v1/feedback", json={"id": cid, "score": 0.5})
            assert f.status_code == 200, f.text
            with registry.session(write=False) as s:
                assert {d.id: d.feedback_score for d in dlog.list_decisions(s)}[cid] == 0.5
            unknown = await cb.post("/v1/feedback", json={"id": "chatcmpl-never", "score": 0.5})
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "completion_not_found"
    finally:
        a.observer.close()
        b.observer.close()
