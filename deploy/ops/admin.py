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

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from deploy.api.admin_api import AdminAPI, AdminHost
from deploy.api.admin_bodies import (
    MapBody,
    PlaygroundBody,
    ProbeBody,
    RouterDeployBody,
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


def build_router(api: AdminAPI) -> APIRouter:
    """The `/admin/v1` routes."""

    async def authorized(request: Request) -> None:
        await api.authorize(request)

    r = APIRouter(prefix=PREFIX, dependencies=[Depends(authorized)], tags=["admin"])
    every, e400, e404, e409 = _responses(), _responses(400), _responses(400, 404), _responses(400, 404, 409)

    # the routes that are one AdminAPI method: its parameters (path names, the body's model) are the route's;
    # a create_* method answers 201 Created
    forwarded: list[tuple[str, str, dict[int | str, dict[str, Any]], Callable[..., Awaitable[Any]]]] = [
        ("GET /experts", "List experts", every, api.list_experts),
        ("POST /experts", "Register an expert", e409, api.create_expert),
        ("GET /experts/{name}", "One expert with its categories and skill scores", e404, api.get_expert),
        ("PATCH /experts/{name}", "Change fields of an expert (capabilities too)", e404, api.update_expert),
        ("DELETE /experts/{name}", "Remove an expert with its mappings and scores", e404, api.delete_expert),
        ("PUT /experts/{name}/skills", "Set the expert's skill scores by category", e404, api.set_skills),
        ("GET /categories", "Categories with their ranked experts", every, api.list_categories),
        ("POST /categories", "Add a category", e409, api.create_category),
        ("GET /categories/{name}", "One category", e404, api.get_category),
        ("PATCH /categories/{name}", "Change a category's description", e404, api.update_category),
        ("DELETE /categories/{name}", "Remove a category", e404, api.delete_category),
        ("DELETE /categories/{category}/experts/{expert}", "Unmap an expert", e404, api.unmap_expert),
        ("GET /keys", "API keys (never the keys themselves)", every, api.list_keys),
        ("POST /keys", "Create an API key; the plaintext `key` is shown this once", e400, api.create_key),
        ("DELETE /keys/{key_id}", "Revoke an API key", e404, api.revoke_key),
    ]
    for route, summary, responses, call in forwarded:
        method, path = route.split(" ")
        created = call.__name__.startswith("create_")
        r.add_api_route(
            path,
            call,
            methods=[method],
            status_code=201 if created else 200,
            summary=summary,
            responses=responses,
            response_model=Any,  # any JSON, as the `-> Any` endpoints: `dict[str, Any]` is no schema
        )

    @r.post("/experts/{name}/enable", summary="Enable an expert", responses=e404)
    async def enable_expert(name: str) -> Any:
        return await api.set_enabled(name, True)

    @r.post("/experts/{name}/disable", summary="Disable an expert (routing skips it)", responses=e404)
    async def disable_expert(name: str) -> Any:
        return await api.set_enabled(name, False)

    @r.post(
        "/experts/{name}/probe", summary="GET /models and a 1-token chat against the expert", responses=e404
    )
    async def probe_expert(name: str, body: Annotated[ProbeBody | None, Body()] = None) -> Any:
        return await api.probe_expert(name, body)

    @r.get("/skills", summary="Skill scores (of one expert with ?expert=)", responses=every)
    async def list_skills(expert: str | None = None) -> Any:
        return await api.list_skills(expert)

    @r.put("/categories/{category}/experts/{expert}", summary="Map an expert at a rank", responses=e404)
    async def map_expert(category: str, expert: str, body: Annotated[MapBody | None, Body()] = None) -> Any:
        return await api.map_expert(category, expert, body)

    @r.get("/registry/export", summary="The registry file (`coe registry export`)", responses=e400)
    async def export(fmt: str = Query("json", alias="format", description="json or yaml")) -> Any:
        text, media = await api.export(fmt)
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
        return await api.import_(
            raw, request.headers.get("content-type", ""), dry_run=dry_run, replace=replace
        )

    @r.post(
        "/router/deploy", summary="Validate a router artifact on the server and make it live", responses=e400
    )
    async def deploy_router(body: RouterDeployBody) -> Any:
        return await api.deploy_router(body)

    @r.get(
        "/status",
        summary="Live figures: per expert health, breaker, load, tokens, cost; router; registry",
        responses=every,
    )
    async def status() -> Any:
        return await api.status()

    @r.get(
        "/decisions/recent",
        summary="The last routing decisions of this ingress replica",
        responses=every,
    )
    async def recent(limit: int = Query(50, ge=0, le=1000), after: int = Query(0, ge=0)) -> Any:
        return api.recent_decisions(limit, after)

    @r.post("/playground", summary="What every policy would decide for a query, and why", responses=e400)
    async def playground(body: PlaygroundBody) -> Any:
        return JSONResponse(await api.playground(body))

    return r


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
