"""The admin operations behind `/admin/v1` (deploy/ops/admin.py mounts them): registry reads and
writes through the repository functions the CLI uses, in a worker thread; the service status; the
recent-decisions ring; the playground. See deploy/ops/admin.py for the promises."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from deploy.api import admin_bodies as bodies
from deploy.api.auth import KeyChecker
from deploy.pipeline.cache import MemoryCache
from deploy.pipeline.metrics import Metrics
from deploy.serve.seams import GatewayClient, RouterClient, ServiceRegistry
from deploy.settings import Settings
from registry.records import ADMIN_SCOPE
from router.errors import ArtifactError, BadRequest, CoeError, Forbidden
from router.types import ExpertLoad, RegistrySnapshot, RouteDecision, RoutingOptions

TEXT_PREVIEW = 300  # characters of the routing text kept per recorded decision
LOOPBACK = ("127.", "::1", "localhost")


# ----- recent decisions -------------------------------------------------------------------------------


class RecentDecisions:
    """The last `size` routing decisions, newest last; `seq` numbers let a poller ask for what is new."""

    def __init__(self, size: int = 200, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)
        self._seq = itertools.count(1)
        self._clock = clock

    def record(self, text: str, decision: RouteDecision) -> None:
        from deploy.api.responses import route_trace

        self._ring.append(
            {
                "seq": next(self._seq),
                "time": self._clock(),
                "text": text[:TEXT_PREVIEW],
                **route_trace(decision),
            }
        )

    def recent(self, limit: int = 50, after: int = 0) -> list[dict[str, Any]]:
        items = [d for d in self._ring if d["seq"] > after]
        return items[-limit:] if limit > 0 else []


class RecordingRouter:
    """The ingress's router client, recording each decision in RecentDecisions (the dashboard's feed)."""

    def __init__(self, inner: RouterClient, log: RecentDecisions) -> None:
        self.inner = inner
        self.log = log

    async def route(self, text: str, options: RoutingOptions) -> RouteDecision:
        decision = await self.inner.route(text, options)
        self.log.record(text, decision)
        return decision

    async def route_embedded(self, text: str, options: RoutingOptions) -> tuple[RouteDecision, Any]:
        decision, vector = await self.inner.route_embedded(text, options)
        self.log.record(text, decision)
        return decision, vector

    async def status(self) -> dict[str, Any]:
        return await self.inner.status()

    def __getattr__(self, name: str) -> Any:  # aclose, refresh, … of the wrapped router
        return getattr(self.inner, name)


# ----- request bodies -----------------------------------------------------------------------------------


class AdminHost(Protocol):
    """What the admin API uses of the ingress it is mounted on (deploy/pipeline/ingress.py::Ingress)."""

    settings: Settings
    registry: ServiceRegistry
    snapshot: RegistrySnapshot
    router: RouterClient
    gateway: GatewayClient
    metrics: Metrics
    keys: KeyChecker
    cache: MemoryCache | None

    async def refresh(self) -> bool: ...


# ----- the API ------------------------------------------------------------------------------------------


class PoolView(Protocol):
    """What the status endpoint reads from an in-process ExpertPool (the one-hop topology)."""

    def load(self) -> dict[str, ExpertLoad]: ...

    def breaker_state(self, expert: str) -> str: ...


def _loopback(request: Any) -> bool:
    client = getattr(request, "client", None)
    host = getattr(client, "host", None) or ""
    return host.startswith(LOOPBACK)


class AdminAPI:
    """The admin operations over one ingress; the FastAPI routes below are one line each."""

    def __init__(self, ingress: AdminHost, *, decisions: int = 200) -> None:
        self.ingress = ingress
        self.decisions = RecentDecisions(decisions)
        inner = ingress.router
        self.router: RouterClient = inner.inner if isinstance(inner, RecordingRouter) else inner
        ingress.router = RecordingRouter(self.router, self.decisions)

    # --- plumbing
    async def authorize(self, request: Any) -> None:
        keys = self.ingress.keys
        if not await keys.auth_required():
            if not _loopback(request):
                raise Forbidden(
                    "the admin API is open only to loopback clients while no API key exists; "
                    f"create one with `coe keys create --scope {ADMIN_SCOPE}`",
                    code="admin_requires_key",
                )
            return
        await keys.check(request.headers.get("authorization"), scope=ADMIN_SCOPE)

    async def read(self, fn: Callable[..., Any], **kw: Any) -> Any:
        def run() -> Any:
            with self.ingress.registry.session(write=False) as s:
                return fn(s, **kw)

        return await asyncio.to_thread(run)

    async def write(self, fn: Callable[..., Any], **kw: Any) -> Any:
        def run() -> Any:
            with self.ingress.registry.session() as s:
                return fn(s, **kw)

        result = await asyncio.to_thread(run)
        await self.ingress.refresh()
        return result

    # --- experts
    async def list_experts(self) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import expert_dict

        return _list([expert_dict(e) for e in await self.read(repo.list_experts)])

    async def get_expert(self, name: str) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import expert_dict, skill_dict

        def show(s: Any) -> dict[str, Any]:
            data = expert_dict(repo.get_expert(s, name=name))
            data["categories"] = [
                {"category": c.name, "rank": r}
                for c in repo.list_categories(s)
                for n, r in c.experts
                if n == name
            ]
            data["skills"] = [skill_dict(k) for k in repo.list_skill_scores(s, expert=name)]
            return data

        return dict(await self.read(show))

    async def create_expert(self, body: bodies.ExpertCreate) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import expert_dict

        return expert_dict(await self.write(repo.add_expert, **body.model_dump()))

    async def update_expert(self, name: str, body: bodies.ExpertUpdate) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import expert_dict

        fields = body.model_dump(exclude_unset=True)
        if not fields:
            raise BadRequest("nothing to change: give at least one field", code="empty_update")
        return expert_dict(await self.write(repo.update_expert, name=name, **fields))

    async def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import expert_dict

        return expert_dict(await self.write(repo.set_expert_enabled, name=name, enabled=enabled))

    async def delete_expert(self, name: str) -> dict[str, Any]:
        from registry import repository as repo

        await self.write(repo.remove_expert, name=name)
        return {"object": "expert", "name": name, "deleted": True}

    async def probe_expert(self, name: str, body: bodies.ProbeBody | None) -> dict[str, Any]:
        from experts.probe import probe_expert
        from registry import repository as repo

        rec = await self.read(repo.get_expert, name=name)
        return dict(await asyncio.to_thread(probe_expert, rec, body.timeout if body else None))

    async def set_skills(self, name: str, body: bodies.SkillsBody) -> dict[str, Any]:
        from registry import repository as repo

        revision = await self.write(repo.set_skill_scores, expert=name, **body.model_dump())
        return {"object": "coe.skills", "expert": name, "revision": revision, **await self.list_skills(name)}

    async def list_skills(self, expert: str | None) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import skill_dict

        return _list([skill_dict(k) for k in await self.read(repo.list_skill_scores, expert=expert)])

    # --- categories
    async def list_categories(self) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import category_dict

        return _list([category_dict(c) for c in await self.read(repo.list_categories)])

    async def get_category(self, name: str) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import category_dict

        return category_dict(await self.read(repo.get_category, name=name))

    async def create_category(self, body: bodies.CategoryCreate) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import category_dict

        return category_dict(await self.write(repo.add_category, **body.model_dump()))

    async def update_category(self, name: str, body: bodies.CategoryUpdate) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import category_dict

        return category_dict(await self.write(repo.update_category, name=name, description=body.description))

    async def delete_category(self, name: str) -> dict[str, Any]:
        from registry import repository as repo

        await self.write(repo.remove_category, name=name)
        return {"object": "category", "name": name, "deleted": True}

    async def map_expert(self, category: str, expert: str, body: bodies.MapBody | None) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import category_dict

        rank = body.rank if body else 1
        return category_dict(await self.write(repo.map_expert, category=category, expert=expert, rank=rank))

    async def unmap_expert(self, category: str, expert: str) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import category_dict

        return category_dict(await self.write(repo.unmap_expert, category=category, expert=expert))

    # --- keys
    async def list_keys(self) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import key_dict

        return _list([key_dict(k) for k in await self.read(repo.list_api_keys)])

    async def create_key(self, body: bodies.KeyCreate) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import key_dict

        rec, plaintext = await self.write(repo.create_api_key, scopes=body.scopes, name=body.name)
        self.ingress.keys.invalidate()
        return {**key_dict(rec), "key": plaintext}

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        from registry import repository as repo
        from registry.views import key_dict

        rec = await self.write(repo.revoke_api_key, key_id=key_id)
        self.ingress.keys.invalidate()
        return key_dict(rec)

    # --- registry export / import
    async def export(self, fmt: str) -> tuple[str, str]:
        """(text, media type) of the registry file, as `coe registry export` writes it."""
        import yaml

        from registry import repository as repo

        data = await self.read(repo.export_registry)
        if fmt == "json":
            return json.dumps(data, indent=2, ensure_ascii=False), "application/json"
        if fmt == "yaml":
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
            return text, "application/yaml"
        raise BadRequest(f"unknown format {fmt!r}: choose json or yaml", param="format", code="invalid_value")

    async def import_(self, raw: bytes, content_type: str, *, dry_run: bool, replace: bool) -> dict[str, Any]:
        import yaml

        from registry import repository as repo

        limit = self.ingress.settings.max_body_bytes
        if len(raw) > limit:
            from router.errors import PayloadTooLarge

            raise PayloadTooLarge(f"registry file of {len(raw)} bytes is over the limit of {limit} bytes")
        try:
            text = raw.decode("utf-8")
            # YAML is a superset of JSON: one parser for both, as `coe registry import` reads either
            data = json.loads(text) if "json" in content_type else yaml.safe_load(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"registry file is not valid JSON: {exc}", code="invalid_json") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise BadRequest(
                f"registry file is not valid YAML{where}: {problem}", code="invalid_yaml"
            ) from None

        class _DryRun(Exception):
            pass

        def run() -> Any:
            summary = None
            try:
                with self.ingress.registry.session() as s:
                    summary = repo.import_registry(s, data=data, replace=replace)
                    if dry_run:
                        raise _DryRun
            except _DryRun:
                pass
            return summary

        summary = await asyncio.to_thread(run)
        if not dry_run:
            await self.ingress.refresh()
        return {
            "object": "coe.registry_import",
            "dry_run": dry_run,
            "added": summary.added,
            "updated": summary.updated,
            "removed": summary.removed,
            "revision": None if dry_run else summary.revision,
        }

    # --- router
    async def deploy_router(self, body: bodies.RouterDeployBody) -> dict[str, Any]:
        from deploy.pipeline.router_service import ARTIFACT_SETTING, validate_artifact

        try:
            path = Path(body.path).expanduser().resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, an unknown ~user, a loop
            raise BadRequest(f"invalid path {body.path!r}: {exc}", param="path") from None
        try:
            version = await asyncio.to_thread(validate_artifact, path, self.ingress.settings)
        except ArtifactError as exc:  # the caller named a bad artifact: their input, not our fault
            raise BadRequest(exc.message, param="path", code="invalid_artifact") from None
        revision = await asyncio.to_thread(self.ingress.registry.set_setting, ARTIFACT_SETTING, str(path))
        await self.ingress.refresh()
        return {
            "object": "coe.router_deploy",
            "router_version": version,
            "path": str(path),
            "revision": revision,
        }

    # --- live figures
    async def status(self) -> dict[str, Any]:
        ingress = self.ingress
        metrics = ingress.metrics
        await metrics.sync()  # the other replicas' latest figures (deploy/pipeline/metrics.py)
        router = await self._router_status()
        try:
            live_revision: int | None = await asyncio.wait_for(
                asyncio.to_thread(ingress.registry.revision), 5.0
            )
        except Exception:
            live_revision = None
        pool: PoolView | None = getattr(ingress.gateway, "pool", None)
        loads: dict[str, ExpertLoad] = dict(pool.load()) if pool is not None else {}
        usable: set[str] = set()
        if pool is None:
            try:
                usable = set((await asyncio.wait_for(ingress.gateway.status(), 10.0)).get("usable", []))
            except Exception:
                usable = set()
        totals = expert_totals(metrics)
        experts = [
            {
                "name": name,
                "enabled": info.enabled,
                "model": info.model,
                **live_row(name, info.enabled, pool, loads, usable),
                **totals_row(totals.get(name, {})),
            }
            for name, info in sorted(ingress.snapshot.experts.items())
        ]
        cache = {labels["result"]: int(v) for labels, v in metrics.totals(metrics.cache)}
        requests = sum(v for _, v in metrics.totals(metrics.requests))
        return {
            "object": "coe.status",
            "time": time.time(),
            "router": router,
            "registry": {"revision": live_revision, "seen_revision": ingress.snapshot.revision},
            "experts": experts,
            "cache": {k: cache.get(k, 0) for k in ("hit", "miss", "skip")}
            if ingress.cache is not None
            else None,
            "requests": int(requests),
            "in_flight": int(metrics.gauge(metrics.in_flight)),
            # requests, calls, errors, tokens, cost, cache, in_flight: the whole service; health,
            # breaker and the load window of each expert: the replica that answered
            "scope": {
                "totals": "service" if metrics.shared else "replica",
                "replicas": metrics.live_replicas(),
                "expert_health": "replica",
                "replica": metrics.replica_id,
                "by_replica": metrics.by_replica(),
                "hub_error": metrics.hub_error,
            },
        }

    async def _router_status(self) -> dict[str, Any]:
        try:
            r = await asyncio.wait_for(self.router.status(), 10.0)
        except Exception as exc:
            return {"ready": False, "error": f"unavailable: {type(exc).__name__}"}
        return {k: r.get(k) for k in ("ready", "router_version", "artifact", "revision", "last_swap_error")}

    def recent_decisions(self, limit: int, after: int) -> dict[str, Any]:
        return _list(self.decisions.recent(limit, after))

    async def playground(self, body: bodies.PlaygroundBody) -> dict[str, Any]:
        """What each policy would decide for `text`, with the reasons; nothing is sent to an expert."""
        from deploy.api.protocol import routing_options
        from deploy.api.responses import route_trace
        from router.policies import POLICIES

        settings = self.ingress.settings
        if not body.text.strip():
            raise BadRequest("text is empty", param="text", code="invalid_value")
        if len(body.text) > settings.max_prompt_chars:
            raise BadRequest(
                f"text is {len(body.text)} characters; the limit is {settings.max_prompt_chars}",
                param="text",
                code="context_length_exceeded",
            )
        names = body.policies or list(POLICIES)
        unknown = [p for p in names if p not in POLICIES]
        if unknown:
            raise BadRequest(
                f"unknown policy {unknown[0]!r}: choose from {', '.join(POLICIES)}", param="policies"
            )

        async def one(policy: str) -> dict[str, Any]:
            options = routing_options(
                None, policy, default_policy=settings.default_policy, threshold=settings.confidence_threshold
            )
            try:
                return {
                    "policy": policy,
                    "decision": route_trace(await self.router.route(body.text, options)),
                }
            except CoeError as exc:  # one policy failing (no eligible expert) does not hide the others
                return {"policy": policy, "error": {"message": exc.message, "type": exc.error_type}}

        results = [await one(p) for p in names]
        first = next((r["decision"] for r in results if "decision" in r), None)
        return {
            "object": "coe.playground",
            "text": body.text,
            "default_policy": settings.default_policy,
            "categories": first["categories"] if first else [],
            "router_version": first["router_version"] if first else None,
            "policies": results,
        }


def _list(data: list[Any]) -> dict[str, Any]:
    return {"object": "list", "data": data}


# ----- status rows ------------------------------------------------------------------------------------


def expert_totals(metrics: Metrics) -> dict[str, dict[str, float]]:
    """expert -> calls, errors, <kind>_tokens, cost_usd, decisions, summed over the service's replicas."""
    by_expert: dict[str, dict[str, float]] = {}

    def add(name: str, field: str, value: float) -> None:
        row = by_expert.setdefault(name, {})
        row[field] = row.get(field, 0.0) + value

    for labels, v in metrics.totals(metrics.expert_calls):
        add(labels["expert"], "calls", v)
    for labels, v in metrics.totals(metrics.expert_errors):
        add(labels["expert"], "errors", v)
    for labels, v in metrics.totals(metrics.expert_tokens):
        add(labels["expert"], f"{labels['kind']}_tokens", v)
    for labels, v in metrics.totals(metrics.expert_cost):
        add(labels["expert"], "cost_usd", v)
    for labels, v in metrics.totals(metrics.decisions):
        add(labels["expert"], "decisions", v)
    return by_expert


def live_row(
    name: str, enabled: bool, pool: PoolView | None, loads: dict[str, ExpertLoad], usable: set[str]
) -> dict[str, Any]:
    """Health and load of one expert: from the in-process pool (one-hop), or only health (split
    topology: the pool lives in the gateway deployment)."""
    if pool is None:  # the figures live in the gateway: none here
        unknown = ("breaker", "in_flight", "recent_requests", "latency_ms", "error_rate")
        return {"healthy": name in usable, **dict.fromkeys(unknown)}
    load = loads.get(name)
    return dict(
        healthy=bool(enabled and load is not None and load.healthy),
        breaker=pool.breaker_state(name),
        in_flight=load.in_flight if load else 0,
        recent_requests=load.recent_requests if load else 0,
        latency_ms=round(load.latency_ms, 3) if load else 0.0,
        error_rate=round(load.error_rate, 4) if load else 0.0,
    )


def totals_row(m: dict[str, float]) -> dict[str, Any]:
    return dict(
        calls=int(m.get("calls", 0)),
        errors=int(m.get("errors", 0)),
        prompt_tokens=int(m.get("prompt_tokens", 0)),
        completion_tokens=int(m.get("completion_tokens", 0)),
        cost_usd=round(m.get("cost_usd", 0.0), 8),
        decisions=int(m.get("decisions", 0)),
    )
