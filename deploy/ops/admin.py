"""The admin REST API (`/admin/v1/…`) and the web dashboard (`/ui`), mounted on the ingress app by
`install_admin(app, ingress)`.

Promises:
- every `/admin/v1` route needs the `admin` scope (a query-only key gets 403, no key 401) once any key
  exists; while none exists it is open to loopback clients only (403 from anywhere else);
- it calls the registry's repository functions, the same ones `coe experts|categories|keys|registry`
  call, with their validation and their typed errors (mapped to OpenAI error JSON in deploy/api/errors.py);
- bodies and results use the field names of `coe registry export` and the `--json` listings
  (registry/views.py); lists are `{"object": "list", "data": [...]}`;
- registry reads and writes run in a worker thread, never on the event loop; after a write the ingress
  re-reads its snapshot at once (the router and the gateway follow within `COE_REGISTRY_POLL_S`);
- `/admin/v1/decisions/recent`: the last routing decisions this ingress replica made, from an in-memory
  ring (the router the ingress calls is wrapped by `RecordingRouter`); the playground's decisions are
  not recorded;
- the dashboard is static files from deploy/ops/ui/ (vanilla JS, no CDN); the page holds no data, every
  figure comes from this API with the admin key the user signs in with.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from deploy.api.admin_api import AdminAPI, AdminHost
from deploy.api.admin_bodies import (
    CategoryCreate,
    CategoryUpdate,
    ExpertCreate,
    ExpertUpdate,
    KeyCreate,
    MapBody,
    PlaygroundBody,
    ProbeBody,
    RouterDeployBody,
    SkillsBody,
)
from deploy.api.errors import ErrorResponse
from router.errors import NotFound

if TYPE_CHECKING:
    from fastapi import FastAPI

PREFIX = "/admin/v1"
UI_DIR = Path(__file__).with_name("ui")
UI_FILES = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}


# ----- routes -----------------------------------------------------------------------------------------


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:

    what = {
        400: "invalid input",
        401: "missing or unknown API key",
        403: "the key lacks the admin scope",
        404: "no such expert, category or key",
        409: "the name exists already",
        413: "body too large",
    }
    return {c: {"model": ErrorResponse, "description": what[c]} for c in (401, 403, *codes)}


def build_router(api: AdminAPI | None) -> APIRouter:
    """The `/admin/v1` routes (api=None: for the OpenAPI document only)."""

    def need() -> AdminAPI:
        assert api is not None
        return api

    async def authorized(request: Request) -> None:
        await need().authorize(request)

    r = APIRouter(prefix=PREFIX, dependencies=[Depends(authorized)], tags=["admin"])
    e400, e404, e409 = _responses(400), _responses(400, 404), _responses(400, 404, 409)

    @r.get("/experts", summary="List experts", responses=_responses())
    async def list_experts() -> Any:
        return await need().list_experts()

    @r.post("/experts", summary="Register an expert", status_code=201, responses=e409)
    async def create_expert(body: ExpertCreate) -> Any:
        return await need().create_expert(body)

    @r.get("/experts/{name}", summary="One expert with its categories and skill scores", responses=e404)
    async def get_expert(name: str) -> Any:
        return await need().get_expert(name)

    @r.patch("/experts/{name}", summary="Change fields of an expert (capabilities too)", responses=e404)
    async def update_expert(name: str, body: ExpertUpdate) -> Any:
        return await need().update_expert(name, body)

    @r.post("/experts/{name}/enable", summary="Enable an expert", responses=e404)
    async def enable_expert(name: str) -> Any:
        return await need().set_enabled(name, True)

    @r.post("/experts/{name}/disable", summary="Disable an expert (routing skips it)", responses=e404)
    async def disable_expert(name: str) -> Any:
        return await need().set_enabled(name, False)

    @r.delete("/experts/{name}", summary="Remove an expert with its mappings and scores", responses=e404)
    async def delete_expert(name: str) -> Any:
        return await need().delete_expert(name)

    @r.post(
        "/experts/{name}/probe", summary="GET /models and a 1-token chat against the expert", responses=e404
    )
    async def probe_expert(name: str, body: Annotated[ProbeBody | None, Body()] = None) -> Any:
        return await need().probe_expert(name, body)

    @r.put("/experts/{name}/skills", summary="Set the expert's skill scores by category", responses=e404)
    async def set_skills(name: str, body: SkillsBody) -> Any:
        return await need().set_skills(name, body)

    @r.get("/skills", summary="Skill scores (of one expert with ?expert=)", responses=_responses())
    async def list_skills(expert: str | None = None) -> Any:
        return await need().list_skills(expert)

    @r.get("/categories", summary="Categories with their ranked experts", responses=_responses())
    async def list_categories() -> Any:
        return await need().list_categories()

    @r.post("/categories", summary="Add a category", status_code=201, responses=e409)
    async def create_category(body: CategoryCreate) -> Any:
        return await need().create_category(body)

    @r.get("/categories/{name}", summary="One category", responses=e404)
    async def get_category(name: str) -> Any:
        return await need().get_category(name)

    @r.patch("/categories/{name}", summary="Change a category's description", responses=e404)
    async def update_category(name: str, body: CategoryUpdate) -> Any:
        return await need().update_category(name, body)

    @r.delete("/categories/{name}", summary="Remove a category", responses=e404)
    async def delete_category(name: str) -> Any:
        return await need().delete_category(name)

    @r.put("/categories/{category}/experts/{expert}", summary="Map an expert at a rank", responses=e404)
    async def map_expert(category: str, expert: str, body: Annotated[MapBody | None, Body()] = None) -> Any:
        return await need().map_expert(category, expert, body)

    @r.delete("/categories/{category}/experts/{expert}", summary="Unmap an expert", responses=e404)
    async def unmap_expert(category: str, expert: str) -> Any:
        return await need().unmap_expert(category, expert)

    @r.get("/keys", summary="API keys (never the keys themselves)", responses=_responses())
    async def list_keys() -> Any:
        return await need().list_keys()

    @r.post(
        "/keys",
        summary="Create an API key; the plaintext `key` is shown this once",
        status_code=201,
        responses=e400,
    )
    async def create_key(body: KeyCreate) -> Any:
        return await need().create_key(body)

    @r.delete("/keys/{key_id}", summary="Revoke an API key", responses=e404)
    async def revoke_key(key_id: str) -> Any:
        return await need().revoke_key(key_id)

    @r.get("/registry/export", summary="The registry file (`coe registry export`)", responses=e400)
    async def export(fmt: str = Query("json", alias="format", description="json or yaml")) -> Any:
        text, media = await need().export(fmt)
        return Response(text, media_type=media)

    @r.post(
        "/registry/import",
        summary="Import a registry file (JSON, or YAML with a yaml content type); all of it or nothing",
        responses=_responses(400, 413),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/yaml": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def import_(request: Request, dry_run: bool = False, replace: bool = False) -> Any:
        raw = await request.body()
        return await need().import_(
            raw, request.headers.get("content-type", ""), dry_run=dry_run, replace=replace
        )

    @r.post(
        "/router/deploy", summary="Validate a router artifact on the server and make it live", responses=e400
    )
    async def deploy_router(body: RouterDeployBody) -> Any:
        return await need().deploy_router(body)

    @r.get(
        "/status",
        summary="Live figures: per expert health, breaker, load, tokens, cost; router; registry",
        responses=_responses(),
    )
    async def status() -> Any:
        return await need().status()

    @r.get(
        "/decisions/recent",
        summary="The last routing decisions of this ingress replica",
        responses=_responses(),
    )
    async def recent(limit: int = Query(50, ge=0, le=1000), after: int = Query(0, ge=0)) -> Any:
        return need().recent_decisions(limit, after)

    @r.post("/playground", summary="What every policy would decide for a query, and why", responses=e400)
    async def playground(body: PlaygroundBody) -> Any:
        return JSONResponse(await need().playground(body))

    return r


def admin_openapi() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the admin API for /openapi.json, with our 400 for validation
    errors in place of FastAPI's 422."""
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title="admin", version="1", routes=build_router(None).routes)
    for ops in doc["paths"].values():
        for op in ops.values():
            responses = op.get("responses", {})
            responses.pop("422", None)
            if op.get("requestBody") or op.get("parameters"):
                responses.setdefault(
                    "400",
                    {
                        "description": "invalid input",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                        },
                    },
                )
            op["security"] = [{"bearer": []}]
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc["paths"], schemas


def install_admin(app: FastAPI, ingress: AdminHost) -> AdminAPI:
    """Mount the admin API and the dashboard on the ingress's app."""
    from fastapi.responses import FileResponse, RedirectResponse

    api = AdminAPI(ingress)
    app.include_router(build_router(api))

    @app.get("/ui", include_in_schema=False)
    async def ui() -> Any:
        return FileResponse(
            UI_DIR / "index.html", media_type="text/html", headers={"cache-control": "no-cache"}
        )

    @app.get("/ui/", include_in_schema=False)
    async def ui_slash() -> Any:
        return RedirectResponse("/ui")

    @app.get("/ui/{asset}", include_in_schema=False)
    async def ui_asset(asset: str) -> Any:
        if asset not in UI_FILES:
            raise NotFound(f"no dashboard file {asset!r}", code="not_found")
        return FileResponse(UI_DIR / asset, media_type=UI_FILES[asset], headers={"cache-control": "no-cache"})

    return api
