"""The admin API (/admin/v1) through the ingress's FastAPI app in process, with a real SQLite registry and
the router/gateway doubles: every endpoint, each scope, bad input with the OpenAI error shape, and
concurrent edits from the API and the CLI."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from deploy.pipeline.ingress import Ingress
from deploy.settings import Settings
from registry import Registry
from registry import repository as repo
from tests.deploy.doubles import FakeGateway, FakeRouter
from tests.deploy.test_ingress import MSG, assert_error

EXPERT = {"name": "math-expert", "base_url": "http://127.0.0.1:9/v1", "model": "m"}


@pytest.fixture
def registry(sqlite_db_url: str) -> Any:
    with Registry(sqlite_db_url) as reg:
        yield reg


@pytest.fixture
def ingress(registry: Registry, tmp_path: Path) -> Ingress:
    settings = Settings(
        database_url=registry.url, data_dir=tmp_path, registry_poll_s=60, max_prompt_chars=2000
    )
    return Ingress(settings, FakeRouter(), FakeGateway(), registry=registry, key_ttl_s=0)


def client_for(ingress: Ingress, client: tuple[str, int] = ("127.0.0.1", 5000)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=ingress.build_asgi_app(), raise_app_exceptions=False, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://coe")


@pytest.fixture
async def client(ingress: Ingress) -> Any:
    async with client_for(ingress) as c:
        yield c


def read(registry: Registry, fn: Any, **kw: Any) -> Any:
    with registry.session(write=False) as s:
        return fn(s, **kw)


async def test_experts_crud_and_capabilities(client: httpx.AsyncClient, registry: Registry) -> None:
    r = await client.post("/admin/v1/experts", json={**EXPERT, "capabilities": ["tools"], "tags": ["x"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "math-expert" and body["capabilities"] == ["tools"] and body["enabled"] is True
    assert set(body) >= {"base_url", "model", "cost_input_per_m", "max_context", "created_at"}

    listed = (await client.get("/admin/v1/experts")).json()
    assert listed["object"] == "list" and [e["name"] for e in listed["data"]] == ["math-expert"]

    r = await client.patch(
        "/admin/v1/experts/math-expert", json={"capabilities": "tools,json", "max_context": 8192}
    )
    assert r.status_code == 200, r.text
    rec = read(registry, repo.get_expert, name="math-expert")
    assert set(rec.capabilities) == {"tools", "json"} and rec.max_context == 8192

    assert (await client.post("/admin/v1/experts/math-expert/disable")).json()["enabled"] is False
    assert read(registry, repo.get_expert, name="math-expert").enabled is False
    assert (await client.post("/admin/v1/experts/math-expert/enable")).json()["enabled"] is True

    shown = (await client.get("/admin/v1/experts/math-expert")).json()
    assert shown["categories"] == [] and shown["skills"] == []

    r = await client.delete("/admin/v1/experts/math-expert")
    assert r.json() == {"object": "expert", "name": "math-expert", "deleted": True}
    assert read(registry, repo.list_experts) == []


async def test_expert_errors_have_the_right_status(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.post("/admin/v1/experts", json={"name": "a"}),
        400,
        "base_url",
        "missing_required_parameter",
    )
    assert_error(
        await client.post("/admin/v1/experts", json={**EXPERT, "base_url": "ftp://x"}), 400, "base_url"
    )
    bad_name = await client.post("/admin/v1/experts", json={**EXPERT, "name": "bad name"})
    assert_error(bad_name, 400, "name")
    assert "invalid expert name 'bad name'" in bad_name.json()["error"]["message"]
    assert_error(
        await client.post("/admin/v1/experts", json={**EXPERT, "color": 1}),
        400,
        "color",
        "unsupported_parameter",
    )
    assert_error(
        await client.post("/admin/v1/experts", json={**EXPERT, "capabilities": ["telepathy"]}),
        400,
        "capabilities",
    )
    assert (await client.post("/admin/v1/experts", json=EXPERT)).status_code == 201
    assert_error(await client.post("/admin/v1/experts", json=EXPERT), 409, "name")
    assert_error(
        await client.patch("/admin/v1/experts/math-expert", json={"max_context": -1}), 400, "max_context"
    )
    assert_error(await client.patch("/admin/v1/experts/math-expert", json={}), 400, None, "empty_update")
    # {"tags": null} was a 500
    for field in ("tags", "notes", "enabled", "base_url", "max_context", "capabilities"):
        null = await client.patch("/admin/v1/experts/math-expert", json={field: None})
        assert_error(null, 400, field)
    assert_error(await client.patch("/admin/v1/experts/math-expert", json={"name": "b"}), 400, "name")
    # a NUL byte in an artifact path was a 500 (found by tests/deploy/test_admin_fuzz.py)
    assert_error(await client.post("/admin/v1/router/deploy", json={"path": "a\u0000b"}), 400, "path")
    cleared = await client.patch("/admin/v1/experts/math-expert", json={"api_key_env": None, "tags": []})
    assert cleared.status_code == 200 and cleared.json()["api_key_env"] is None
    assert_error(await client.patch("/admin/v1/experts/nope", json={"model": "x"}), 404, "expert")
    assert_error(await client.post("/admin/v1/experts/nope/disable"), 404, "expert")
    assert_error(await client.delete("/admin/v1/experts/nope"), 404, "expert")
    r = await client.post(
        "/admin/v1/experts", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400


async def test_categories_map_and_skills(client: httpx.AsyncClient, registry: Registry) -> None:
    await client.post("/admin/v1/experts", json=EXPERT)
    await client.post("/admin/v1/experts", json={**EXPERT, "name": "general"})
    assert (
        await client.post("/admin/v1/categories", json={"name": "math", "description": "sums"})
    ).status_code == 201
    assert_error(await client.post("/admin/v1/categories", json={"name": "math"}), 409, "name")
    r = await client.put("/admin/v1/categories/math/experts/math-expert", json={"rank": 1})
    assert r.json()["experts"] == [{"expert": "math-expert", "rank": 1}]
    r = await client.put("/admin/v1/categories/math/experts/general")  # rank defaults to 1, like the CLI
    assert r.status_code == 200, r.text
    r = await client.put("/admin/v1/categories/math/experts/general", json={"rank": 2})
    assert {m["expert"]: m["rank"] for m in r.json()["experts"]} == {"math-expert": 1, "general": 2}
    assert_error(await client.put("/admin/v1/categories/math/experts/general", json={"rank": 0}), 400, "rank")
    assert_error(
        await client.put("/admin/v1/categories/nope/experts/general", json={"rank": 1}), 404, "category"
    )
    assert_error(await client.put("/admin/v1/categories/math/experts/nope", json={"rank": 1}), 404, "expert")
    assert (await client.patch("/admin/v1/categories/math", json={"description": "numbers"})).json()[
        "description"
    ] == "numbers"
    cats = (await client.get("/admin/v1/categories")).json()
    assert cats["object"] == "list" and cats["data"][0]["name"] == "math"
    assert (await client.get("/admin/v1/categories/math")).json()["description"] == "numbers"

    r = await client.put(
        "/admin/v1/experts/math-expert/skills", json={"scores": {"math": 0.9}, "n": 10, "source": "t"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [
        {"expert": "math-expert", "category": "math", "score": 0.9, "n": 10, "source": "t"}
    ]
    assert_error(
        await client.put("/admin/v1/experts/math-expert/skills", json={"scores": {"math": 1.5}}), 400, "score"
    )
    assert_error(
        await client.put("/admin/v1/experts/math-expert/skills", json={"scores": {"zzz": 0.5}}),
        404,
        "category",
    )
    assert len((await client.get("/admin/v1/skills", params={"expert": "math-expert"})).json()["data"]) == 1

    r = await client.delete("/admin/v1/categories/math/experts/general")
    assert [m["expert"] for m in r.json()["experts"]] == ["math-expert"]
    assert (await client.delete("/admin/v1/categories/math")).json()["deleted"] is True
    assert read(registry, repo.list_categories) == []


async def test_keys_and_scopes(ingress: Ingress, registry: Registry) -> None:
    async with client_for(ingress) as c:
        # open on loopback while no key exists
        r = await c.post("/admin/v1/keys", json={"scopes": ["admin"], "name": "ops"})
        assert r.status_code == 201, r.text
        admin = r.json()
        assert (
            admin["key"].startswith("coe_") and admin["scopes"] == ["admin"] and admin["revoked_at"] is None
        )
        # a key exists now: no key 401, bad key 401
        assert_error(await c.get("/admin/v1/experts"), 401, None, "missing_api_key")
        assert_error(await c.get("/admin/v1/experts", headers={"authorization": "Bearer coe_x"}), 401, None)
        auth = {"authorization": f"Bearer {admin['key']}"}
        query = (await c.post("/admin/v1/keys", json={"scopes": ["query"]}, headers=auth)).json()
        q_auth = {"authorization": f"Bearer {query['key']}"}
        assert_error(await c.get("/admin/v1/experts", headers=q_auth), 403, None, "insufficient_scope")
        assert_error(await c.post("/admin/v1/playground", json={"text": "hi"}, headers=q_auth), 403, None)
        assert (await c.post("/v1/route", json={"messages": MSG}, headers=q_auth)).status_code == 200

        keys = (await c.get("/admin/v1/keys", headers=auth)).json()["data"]
        assert {k["id"] for k in keys} == {admin["id"], query["id"]}
        assert all("key" not in k for k in keys)
        assert_error(await c.post("/admin/v1/keys", json={"scopes": ["root"]}, headers=auth), 400, "scope")
        assert_error(await c.post("/admin/v1/keys", json={"scopes": []}, headers=auth), 400, "scope")
        assert_error(await c.delete("/admin/v1/keys/000000000000", headers=auth), 404, None)
        revoked = (await c.delete(f"/admin/v1/keys/{query['id']}", headers=auth)).json()
        assert revoked["revoked_at"]
        assert_error(await c.post("/v1/route", json={"messages": MSG}, headers=q_auth), 401, None)


async def test_open_admin_only_on_loopback(ingress: Ingress) -> None:
    async with client_for(ingress, client=("10.1.2.3", 5000)) as c:
        assert_error(await c.get("/admin/v1/experts"), 403, None, "admin_requires_key")
    async with client_for(ingress, client=("::1", 5000)) as c:
        assert (await c.get("/admin/v1/experts")).status_code == 200


async def test_export_and_import(client: httpx.AsyncClient, registry: Registry) -> None:
    await client.post("/admin/v1/experts", json=EXPERT)
    await client.post("/admin/v1/categories", json={"name": "math"})
    await client.put("/admin/v1/categories/math/experts/math-expert", json={"rank": 1})
    doc = (await client.get("/admin/v1/registry/export")).json()
    assert doc["version"] == 1 and doc["experts"][0]["name"] == "math-expert"
    with registry.session(write=False) as s:
        assert doc == repo.export_registry(s)  # the very file `coe registry export` writes
    y = await client.get("/admin/v1/registry/export", params={"format": "yaml"})
    assert y.headers["content-type"].startswith("application/yaml") and yaml.safe_load(y.text) == doc
    assert_error(await client.get("/admin/v1/registry/export", params={"format": "xml"}), 400, "format")

    doc["experts"].append({**EXPERT, "name": "second"})
    before = registry.revision()
    r = await client.post("/admin/v1/registry/import", params={"dry_run": "true"}, json=doc)
    assert r.status_code == 200, r.text
    assert r.json()["dry_run"] is True and r.json()["added"]["experts"] == 1 and r.json()["revision"] is None
    assert registry.revision() == before and len(read(registry, repo.list_experts)) == 1

    r = await client.post(
        "/admin/v1/registry/import", content=yaml.safe_dump(doc), headers={"content-type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["revision"] > before and len(read(registry, repo.list_experts)) == 2

    bad = await client.post(
        "/admin/v1/registry/import", content=b"experts: [", headers={"content-type": "text/yaml"}
    )
    assert_error(bad, 400, None, "invalid_yaml")
    bad = await client.post("/admin/v1/registry/import", json={"experts": [{"name": "x"}]})
    assert "missing 'base_url'" in assert_error(bad, 400, None)["message"]


async def test_router_deploy(client: httpx.AsyncClient, registry: Registry, tmp_path: Path) -> None:
    from deploy.pipeline.router_service import ARTIFACT_SETTING
    from deploy.settings import DEFAULT_ROUTER_ARTIFACT

    err = assert_error(
        await client.post("/admin/v1/router/deploy", json={"path": str(tmp_path / "no")}), 400, "path"
    )
    assert "not a directory" in err["message"]
    if not (DEFAULT_ROUTER_ARTIFACT / "manifest.json").is_file():
        pytest.skip("no bundled router artifact")
    r = await client.post("/admin/v1/router/deploy", json={"path": str(DEFAULT_ROUTER_ARTIFACT)})
    assert r.status_code == 200, r.text
    assert r.json()["router_version"] and registry.get_setting(ARTIFACT_SETTING) == str(
        DEFAULT_ROUTER_ARTIFACT.resolve()
    )


async def test_status_decisions_and_playground(client: httpx.AsyncClient, ingress: Ingress) -> None:
    from router.policies import POLICIES

    for name in ("math", "general"):
        await client.post("/admin/v1/experts", json={**EXPERT, "name": name})
    r = await client.post("/v1/chat/completions", json={"model": "auto", "messages": MSG})
    assert r.status_code == 200, r.text
    status = (await client.get("/admin/v1/status")).json()
    assert status["object"] == "coe.status" and status["router"]["router_version"] == "test-v1"
    assert status["registry"]["revision"] == status["registry"]["seen_revision"] > 0
    math = next(e for e in status["experts"] if e["name"] == "math")
    assert math["calls"] == 1 and math["prompt_tokens"] == 10 and math["completion_tokens"] == 3
    assert math["cost_usd"] == pytest.approx(1.6e-5) and math["decisions"] == 1
    assert math["healthy"] is True  # the double gateway has no pool: health from its status

    recent = (await client.get("/admin/v1/decisions/recent")).json()["data"]
    assert (
        len(recent) == 1 and recent[0]["text"] == "What is 2+2?" and recent[0]["experts"][0]["name"] == "math"
    )
    assert (await client.get("/admin/v1/decisions/recent", params={"after": recent[0]["seq"]})).json()[
        "data"
    ] == []
    assert_error(await client.get("/admin/v1/decisions/recent", params={"limit": -1}), 400, "query.limit")

    pg = (await client.post("/admin/v1/playground", json={"text": "What is 2+2?"})).json()
    assert [p["policy"] for p in pg["policies"]] == list(POLICIES)
    assert pg["categories"][0] == {"category": "math", "probability": 0.8}
    assert all(p["decision"]["experts"][0]["reason"] for p in pg["policies"])
    # the playground's decisions are not traffic
    assert len((await client.get("/admin/v1/decisions/recent")).json()["data"]) == 1
    assert_error(await client.post("/admin/v1/playground", json={"text": " "}), 400, "text")
    assert_error(await client.post("/admin/v1/playground", json={"text": "x" * 2001}), 400, "text")
    assert_error(
        await client.post("/admin/v1/playground", json={"text": "x", "policies": ["nope"]}), 400, "policies"
    )


async def test_probe(client: httpx.AsyncClient) -> None:
    await client.post("/admin/v1/experts", json={**EXPERT, "timeout_s": 2})
    r = await client.post("/admin/v1/experts/math-expert/probe", json={"timeout": 1})
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is False and [c["check"] for c in r.json()["checks"]] == [
        "models",
        "chat_completion",
    ]
    assert_error(await client.post("/admin/v1/experts/nope/probe"), 404, "expert")


async def test_writes_refresh_the_ingress_snapshot(client: httpx.AsyncClient, ingress: Ingress) -> None:
    await client.post("/admin/v1/experts", json=EXPERT)
    assert "math-expert" in ingress.snapshot.experts  # at once, not after COE_REGISTRY_POLL_S (60 s here)
    await client.post("/admin/v1/experts/math-expert/disable")
    assert ingress.snapshot.experts["math-expert"].enabled is False


async def test_concurrent_edits_from_the_api_and_the_cli(
    client: httpx.AsyncClient, registry: Registry
) -> None:
    from deploy.ops.cli import _register, app

    _register()
    await client.post("/admin/v1/categories", json={"name": "math"})
    for i in range(6):
        await client.post("/admin/v1/experts", json={**EXPERT, "name": f"e{i}"})
    before = registry.revision()
    runner = CliRunner()
    cli_results: list[int] = []

    def cli_edits() -> None:
        for i in range(6):
            res = runner.invoke(
                app,
                ["experts", "update", f"e{i}", "--notes", f"cli {i}"],
                env={"COE_DATABASE_URL": registry.url},
            )
            cli_results.append(res.exit_code)

    thread = threading.Thread(target=cli_edits)
    thread.start()
    responses = await asyncio.gather(
        *(client.put(f"/admin/v1/categories/math/experts/e{i}", json={"rank": i + 1}) for i in range(6)),
        *(client.patch(f"/admin/v1/experts/e{i}", json={"max_context": 1000 + i}) for i in range(6)),
    )
    await asyncio.to_thread(thread.join)
    assert [r.status_code for r in responses] == [200] * 12, [
        r.text for r in responses if r.status_code != 200
    ]
    assert cli_results == [0] * 6
    assert registry.revision() == before + 18  # every write applied, one revision each
    experts = {e.name: e for e in read(registry, repo.list_experts)}
    assert all(
        experts[f"e{i}"].notes == f"cli {i}" and experts[f"e{i}"].max_context == 1000 + i for i in range(6)
    )
    assert dict(read(registry, repo.get_category, name="math").experts) == {f"e{i}": i + 1 for i in range(6)}


async def test_admin_endpoints_in_openapi(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in (
        "/admin/v1/experts",
        "/admin/v1/experts/{name}",
        "/admin/v1/status",
        "/admin/v1/keys",
        "/admin/v1/registry/import",
        "/admin/v1/router/deploy",
        "/admin/v1/playground",
        "/admin/v1/decisions/recent",
        "/admin/v1/categories/{category}/experts/{expert}",
    ):
        assert path in paths, path
    create = paths["/admin/v1/experts"]["post"]
    assert {"201", "400", "401", "403", "409"} <= set(create["responses"]) and "422" not in create[
        "responses"
    ]
    assert (
        "ExpertCreate" in doc["components"]["schemas"]
        and "HTTPValidationError" not in doc["components"]["schemas"]
    )
    json.dumps(doc)


async def test_dashboard_files(client: httpx.AsyncClient) -> None:
    page = await client.get("/ui")
    assert (
        page.status_code == 200
        and "/ui/app.js" in page.text
        and "http" not in page.text.replace("http-equiv", "")
    )
    assert (await client.get("/ui/app.js")).headers["content-type"].startswith("text/javascript")
    assert (await client.get("/ui/style.css")).status_code == 200
    assert_error(await client.get("/ui/secrets.txt"), 404, None)
