"""The HTTP ingress: a plain class that owns auth, validation, the registry snapshot it needs for
`/v1/models` and expert-by-name requests, metrics, and thin FastAPI routes built by `build_asgi_app()`.

It talks to the router and the gateway through two narrow protocols. In the Ray Serve app those are
DeploymentHandles wrapped by `HandleRouter` / `HandleGateway`; in unit tests they are the plain
`RouterService` / `Gateway` classes or small doubles."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from deploy.api.auth import QUERY_SCOPE, KeyChecker
from deploy.api.native_responses import NativeResponses
from deploy.api.protocol import (
    AUTO_MODEL,
    POLICY_ALIASES,
    RouteBody,
    direct_decision,
    parse_chat,
    resolve_model,
    routing_options,
    routing_text,
)
from deploy.api.replies import ChatEncoder, Turn, cached_body, cached_chunks, encode, stream_chunks
from deploy.api.responses import completion_response, route_header, route_trace
from deploy.api.security import (
    ADMIN_SCOPE,
    AuthBackoff,
    authorization_of,
    client_id,
    metrics_policy,
    owner_id,
    read_body,
    reject_query_keys,
)
from deploy.pipeline.affinity import Affinity
from deploy.pipeline.cache import CacheKey, MemoryCache, cache_key, cacheable
from deploy.pipeline.metrics import Metrics, attach_hub
from deploy.pipeline.observe import Observer, RequestObs, key_id_of
from deploy.pipeline.staying import Staying
from deploy.serve.drain import Drain, replica_id
from deploy.serve.handles import HandleGateway, HandleRouter, unwrap
from deploy.serve.seams import GatewayClient, RouterClient, ServiceRegistry
from deploy.serve.watch import SnapshotWatcher
from deploy.settings import Settings
from experts.types import ChatRequest, ChatResult, Usage
from router.defaults import POLICY_NAMES
from router.errors import (
    BadRequest,
    CoeError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from router.types import RegistrySnapshot, RouteDecision, RoutingOptions

log = logging.getLogger("coe.ingress")


# ----- the ingress ----------------------------------------------------------------------------------


def _key_id(request: Any) -> str:
    """Who is asking, for cache isolation: a digest of the credential (never the key)."""
    return owner_id(authorization_of(request, x_api_key=True))


class Ingress:
    def __init__(
        self,
        settings: Settings,
        router: RouterClient,
        gateway: GatewayClient,
        *,
        registry: ServiceRegistry,
        metrics: Metrics | None = None,
        key_ttl_s: float = 5.0,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.gateway = gateway
        self.registry = registry
        self.metrics = metrics or Metrics()
        self.keys = KeyChecker(registry, ttl_s=key_ttl_s)
        self.auth_backoff = AuthBackoff()
        self.snapshot: RegistrySnapshot = registry.snapshot()
        self.metrics.registry_revision.set(self.snapshot.revision)
        self._watcher = SnapshotWatcher(
            registry,
            self._apply_snapshot,
            interval_s=settings.registry_poll_s,
            revision=self.snapshot.revision,
            name="ingress",
        )
        self.policies = POLICY_NAMES
        self.created = int(time.time())
        # tracing, access log, key limits and usage, decision log (deploy/pipeline/observe.py)
        self.observer = observer or Observer.from_settings(
            settings, registry, on_drop=self.metrics.decisions_dropped.inc
        )
        self.drain = Drain()
        self.cache: MemoryCache | None = None
        if settings.cache != "off":
            self.cache = MemoryCache(
                mode=settings.cache,
                ttl_s=settings.cache_ttl_s,
                max_entries=settings.cache_max_entries,
                threshold=settings.cache_threshold,
            )
        # Responses requests for experts that serve the Responses API themselves (capability `responses`)
        self.native = NativeResponses()
        # tool loops and conversations stay on their expert (deploy/pipeline/affinity.py)
        self.affinity: Staying | None = None
        if settings.session_affinity != "off":
            self.affinity = Staying(
                Affinity(
                    registry,
                    settings.session_affinity,
                    ttl_s=settings.affinity_ttl_s,
                    max_entries=settings.affinity_max_entries,
                )
            )

    def _apply_snapshot(self, snapshot: RegistrySnapshot) -> None:
        self.snapshot = snapshot
        self.keys.invalidate()  # new/revoked keys bump the revision
        self.metrics.registry_revision.set(snapshot.revision)

    async def refresh(self) -> bool:
        return await self._watcher.poll_once()

    # ----- request handling (framework-free apart from the Request object) ----------------------
    async def _body(self, request: Any) -> Any:
        """The JSON object of the body; bodies over `max_body_bytes` are refused with 413 before they
        are parsed (images travel base64-encoded, so this limit is in bytes, not prompt characters)."""
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(
                f"request body of {length} bytes is over the limit of {limit} bytes",
                code="request_too_large",
            )
        raw = await read_body(request, self.settings.body_timeout_s)
        if len(raw) > limit:
            raise PayloadTooLarge(
                f"request body of {len(raw)} bytes is over the limit of {limit} bytes",
                code="request_too_large",
            )
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object", code="invalid_json")
        return data

    async def _auth(
        self, request: Any, scope: str = QUERY_SCOPE, *, authorization: str | None = None
    ) -> None:
        """Keys only from the Authorization header (or the `authorization` a front door read from its
        own header: Anthropic's x-api-key); a client whose keys keep failing backs off
        (deploy/api/security.py)."""
        await self._watcher.start()
        reject_query_keys(request.url.query)
        client = client_id(request)
        self.auth_backoff.check(client)
        try:
            await self.keys.check(authorization or request.headers.get("authorization"), scope)
        except Unauthorized as exc:
            self.auth_backoff.failure(client)  # logged without the key: only who, and why
            log.info("auth failure from %s: %s", client, exc.code)
            raise
        self.auth_backoff.success(client)

    async def body(self, request: Any) -> Any:
        """The request's JSON object (size-limited; front doors call this)."""
        return await self._body(request)

    async def authenticate(self, request: Any, authorization: str | None = None) -> None:
        await self._auth(request, authorization=authorization)

    @staticmethod
    def key_id(authorization: str | None) -> str | None:
        """The public id of the key in `authorization` (for the access log and limits)."""
        return key_id_of(authorization)

    async def check_metrics(self, request: Any) -> None:
        if metrics_policy(self.settings.metrics_access, self.settings.host) == "admin":
            await self._auth(request, ADMIN_SCOPE)

    def _check_size(self, chars: int, param: str) -> None:
        limit = self.settings.max_prompt_chars
        if chars > limit:
            raise BadRequest(
                f"prompt is {chars} characters; the limit is {limit}",
                param=param,
                code="context_length_exceeded",
            )

    def _options(self, body_routing: Any, policy: str | None, **needs: Any) -> RoutingOptions:
        return routing_options(
            body_routing,
            policy,
            default_policy=self.settings.default_policy,
            threshold=self.settings.confidence_threshold,
            **needs,
        )

    async def _decide(
        self, model: str, routing: Any, text: str, *, embedding: bool = False, **needs: Any
    ) -> tuple[RouteDecision, Any]:
        """(decision, the routing text's embedding when asked for and computed). `needs`: the
        request's requirements (capabilities, context tokens, single expert), which every policy
        honours; a request for an expert by name goes to that expert as it is (no embedding)."""
        policy, expert = resolve_model(model, routing, self.policies, self.snapshot.experts)
        vector = None
        if expert is not None:
            decision = direct_decision(expert)
        elif embedding:
            decision, vector = await self.router.route_embedded(text, self._options(routing, policy, **needs))
        else:
            decision = await self.router.route(text, self._options(routing, policy, **needs))
        self.metrics.decision(decision)
        return decision, vector

    async def chat(self, request: Any) -> Any:
        """`POST /v1/chat/completions`: the chat front door (the pipeline's own format, relayed)."""
        from fastapi.responses import JSONResponse, StreamingResponse

        obs = self.observer.start(request)
        try:
            await self.admit(request, obs)
            turn = await self.turn(request, await self._body(request), obs)
            if turn.items is not None:
                return StreamingResponse(
                    encode(turn.items, ChatEncoder()),
                    media_type="text/event-stream",
                    headers={**turn.headers, "cache-control": "no-cache"},
                )
            return JSONResponse(turn.response, headers=turn.headers)
        except BaseException as exc:
            obs.failed(exc)
            raise

    async def admit(self, request: Any, obs: RequestObs, authorization: str | None = None) -> None:
        """Authenticate (the Authorization header, or `authorization` as a front door read it) and
        admit the key under its limits."""
        await self._auth(request, authorization=authorization)
        await self.observer.limiter.admit(obs.key_id)

    async def turn(
        self,
        request: Any,
        data: dict[str, Any],
        obs: RequestObs,
        *,
        session: str | None = None,
        previous_response_id: str | None = None,
        reply_id: str | None = None,
        divert: Callable[[Turn], Awaitable[Any]] | None = None,
    ) -> Turn:
        """The one request pipeline, for every front door: a Chat Completions body (a front door's
        request translated) -> routing text and needs -> affinity -> decision -> cache -> the expert(s);
        observed throughout. The caller authenticated and admitted the request (`admit`). `session`: the
        client's session key (x-coe-session); `reply_id`: the id the front door gives the reply (a
        Responses `resp_…`), remembered as a continuation key. `divert`: called with the decided turn
        before the cache and the expert call; when it answers (not None: a Responses request an expert
        serves natively), that answer is `turn.native` and the pipeline stops there."""
        body, chat_request = parse_chat(data)
        self._check_size(body.prompt_chars(), "messages")
        text, needs = routing_text(body.messages), body.needs()
        obs.parsed(body.model, bool(body.stream), text)
        obs.routing()
        use_cache = self.cache is not None and cacheable(
            chat_request.params, body.routing.cache if body.routing else None
        )
        context_tokens = body.context_tokens()
        decision, vector = await self._decide(
            body.model,
            body.routing,
            text,
            embedding=use_cache and self.settings.cache == "semantic",
            needs=needs,
            context_tokens=context_tokens,
            single=body.single_expert(needs),
            max_tokens=body.max_completion_tokens or body.max_tokens,
        )
        keys, affinity = None, None
        if self.affinity is not None and decision.policy != "direct":
            keys = self.affinity.keys(
                data,
                session=session or request.headers.get("x-coe-session"),
                previous_response_id=previous_response_id,
                owner=_key_id(request),
            )
            decision, affinity = await self.affinity.stay(
                decision, keys, self.snapshot, needs, context_tokens
            )
        obs.decided(decision)
        headers = {"x-coe-route": route_header(decision)}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        turn = Turn(decision, headers, body.model, affinity=affinity)
        if keys is not None and self.affinity is not None:
            staying, continuation = self.affinity, keys
            turn.remember = lambda expert, reply: staying.remember(continuation, expert, reply, reply_id)
        if divert is not None:
            turn.native = await divert(turn)
            if turn.native is not None:
                return turn
        key: CacheKey | None = None
        if self.cache is not None:
            if use_cache:
                key = cache_key(_key_id(request), ",".join(decision.expert_names), chat_request)
                t_cache = time.time_ns()
                hit = self.cache.get(key, vector, space=decision.router_version)
                self.metrics.cache.labels("hit" if hit is not None else "miss").inc()
                obs.looked_up("hit" if hit is not None else "miss", t_cache)
                if hit is not None:
                    reply = cached_body(hit, decision, obs)
                    self._trace_affinity(reply["coe"], affinity)
                    if body.stream:
                        turn.items = cached_chunks(reply, include_usage)
                    else:
                        turn.response = reply
                    return turn
            else:
                self.metrics.cache.labels("skip").inc()

        def store(result: ChatResult) -> None:
            if key is not None and self.cache is not None:
                self.cache.put(
                    key, vector, dataclasses.replace(result, attempts=()), space=decision.router_version
                )

        if body.stream:
            with obs.expert_call(decision):
                items = await stream_chunks(
                    self.gateway,
                    self.metrics,
                    self._cost,
                    decision,
                    chat_request,
                    include_usage,
                    on_done=store if key else None,
                    cached="miss" if key else None,
                    obs=obs,
                )
            if keys is not None and self.affinity is not None:
                items = self.affinity.remembering(items, keys, reply_id)
            turn.items = items
            return turn
        with obs.expert_call(decision):
            result = await self._complete(decision, chat_request)
        response = completion_response(result, decision)
        if key is not None:
            store(result)
            response["coe"]["cache"] = "miss"
        self._trace_affinity(response["coe"], affinity)
        obs.answered(str(response.get("id")), result)
        if keys is not None and self.affinity is not None:
            await self.affinity.remember(keys, result.expert, response, reply_id)
        turn.response = response
        return turn

    @staticmethod
    def _trace_affinity(trace: dict[str, Any], affinity: dict[str, Any] | None) -> None:
        if affinity is not None:
            trace["affinity"] = affinity

    async def _complete(self, decision: RouteDecision, chat_request: ChatRequest) -> ChatResult:
        try:
            result = await self.gateway.complete(decision, chat_request)
        except CoeError as exc:
            self.metrics.expert_error(getattr(exc, "expert", None))
            raise
        self.metrics.result(result)
        return result

    def _cost(self, expert: str, usage: Usage) -> float | None:
        info = self.snapshot.experts.get(expert)
        return info.cost_usd(usage.prompt_tokens, usage.completion_tokens) if info else None

    async def feedback(self, request: Any) -> Any:
        """`POST /v1/feedback`: a score for a completion (query or admin scope); pipeline/decisions.py."""
        from fastapi.responses import JSONResponse

        from deploy.pipeline.decisions import store_feedback

        await self._watcher.start()
        authorization = request.headers.get("authorization")
        try:
            await self.keys.check(authorization, QUERY_SCOPE)
        except Forbidden:
            await self.keys.check(authorization, "admin")
        key_id = key_id_of(authorization)
        return JSONResponse(
            await store_feedback(self.registry, self.observer.decisions, await self._body(request), key_id)
        )

    async def route(self, request: Any) -> Any:
        from fastapi.responses import JSONResponse

        await self._auth(request)
        body = RouteBody.model_validate(await self._body(request))
        text = body.routing_text(self.settings.max_prompt_chars)
        decision, _ = await self._decide(body.model, body.routing, text)
        return JSONResponse(
            {"object": "coe.route", **route_trace(decision)}, headers={"x-coe-route": route_header(decision)}
        )

    def _model_cards(self) -> list[dict[str, Any]]:
        cards = [
            {
                "id": AUTO_MODEL,
                "object": "model",
                "created": self.created,
                "owned_by": "coe",
                "coe": {"kind": "alias", "policy": self.settings.default_policy},
            }
        ]
        for alias, policy in POLICY_ALIASES.items():
            cards.append(
                {
                    "id": alias,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "coe",
                    "coe": {"kind": "alias", "policy": policy},
                }
            )
        for name, e in sorted(self.snapshot.experts.items()):
            if e.enabled:
                cards.append(
                    {
                        "id": name,
                        "object": "model",
                        "created": self.created,
                        "owned_by": "coe-expert",
                        "coe": {
                            "kind": "expert",
                            "model": e.model,
                            "tags": list(e.tags),
                            "cost_input_per_m": e.cost_input_per_m,
                            "cost_output_per_m": e.cost_output_per_m,
                        },
                    }
                )
        return cards

    async def models(self, request: Any) -> Any:
        from fastapi.responses import JSONResponse

        await self._auth(request)
        return JSONResponse({"object": "list", "data": self._model_cards()})

    async def model(self, request: Any, model_id: str) -> Any:
        from fastapi.responses import JSONResponse

        await self._auth(request)
        for card in self._model_cards():
            if card["id"] == model_id:
                return JSONResponse(card)
        raise NotFound(f"model '{model_id}' not found", param="model", code="model_not_found")

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the router is loaded and an expert is usable. The registry being unreachable
        does not make the replica unready: it serves on its last snapshot and says `degraded`."""
        checks: dict[str, Any] = {}
        ok = True
        degraded: list[str] = []
        try:
            checks["registry_revision"] = await asyncio.wait_for(
                asyncio.to_thread(self.registry.revision), 5.0
            )
        except Exception as exc:
            serving = self.snapshot.revision
            checks["registry"] = f"unavailable: {type(exc).__name__}; serving revision {serving}"
            degraded.append("registry")
        try:
            r = await asyncio.wait_for(self.router.status(), 10.0)
            keys = ("router_version", "artifact", "revision", "last_swap_error")
            checks["router"] = {k: r.get(k) for k in keys if k in r}
            ok = ok and bool(r.get("ready"))
        except Exception as exc:
            ok, checks["router"] = False, f"unavailable: {type(unwrap(exc)).__name__}"
        try:
            g = await asyncio.wait_for(self.gateway.status(), 10.0)
            checks["experts"] = {"enabled": g.get("enabled", []), "usable": g.get("usable", [])}
            ok = ok and bool(g.get("usable"))
        except Exception as exc:
            ok, checks["experts"] = False, f"unavailable: {type(unwrap(exc)).__name__}"
        if degraded:
            checks["degraded"] = degraded
        return ok, checks

    # ----- graceful shutdown (deploy/serve/drain.py; the driver calls these through the deployment handle) --
    async def begin_drain(self) -> dict[str, Any]:
        self.drain.begin()
        return {"replica": replica_id(self), **self.drain.state()}

    async def drain_state(self) -> dict[str, Any]:
        return {"replica": replica_id(self), **self.drain.state()}

    # ----- the FastAPI app (deploy/api/routes.py) ------------------------------------------------
    def build_asgi_app(self) -> Any:
        from deploy.api.routes import build_asgi_app

        return build_asgi_app(self)


class ServeIngress(Ingress):
    """The ingress as Ray Serve constructs it: DeploymentHandles in, `__serve_build_asgi_app__` out
    (the builder applies `serve.ingress()` to this class)."""

    def __init__(
        self, settings: Settings, router_handle: Any, gateway_handle: Any, metrics_hub: Any = None
    ) -> None:
        from registry import Registry

        retries = settings.handle_retries
        router, gateway = HandleRouter(router_handle, retries), HandleGateway(gateway_handle, retries)
        super().__init__(settings, router, gateway, registry=Registry(settings.database_url))
        for client in (router, gateway):
            client.on_retry = lambda deployment: self.metrics.replica_retries.labels(deployment).inc()
        attach_hub(self.metrics, metrics_hub, replica_id(self), settings.metrics_push_s)
        self.keys.prime()  # says at start-up when the service is open

    def __serve_build_asgi_app__(self) -> Any:
        return self.build_asgi_app()
