"""The one-hop ingress: one Serve replica that authenticates, parses, embeds + classifies (batched across
the replica's concurrent requests by the router's EmbedBatcher, in a worker thread), decides, and calls
the experts through its own ExpertPool. No DeploymentHandle call sits on the request path.

The router's load bias reads this replica's own pool (per replica: with N replicas each balances the
traffic it sees, which the Serve proxy already spreads evenly). Router, gateway and ingress share one
registry connection pool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deploy.pipeline.gateway import Gateway
from deploy.pipeline.ingress import Ingress
from deploy.pipeline.metrics import attach_hub
from deploy.pipeline.router_service import RouterService
from deploy.serve.drain import replica_id
from deploy.serve.seams import ServiceRegistry
from deploy.settings import Settings
from router.types import ExpertLoad


class OneHopIngress(Ingress):
    #: the router class to run in-process; the app builder sets a subclass with batching on
    router_cls: type[RouterService] = RouterService

    def __init__(
        self, settings: Settings, *, registry: ServiceRegistry | None = None, metrics_hub: Any = None
    ) -> None:
        # the Serve entry point of the one-hop topology: Serve passes the settings and the handle of the
        # CoeMetricsHub deployment (deploy/pipeline/metrics.py: service-wide figures)
        if registry is None:
            from registry import Registry

            registry = Registry(settings.database_url)
        gateway = Gateway(settings, registry=registry)

        async def load_source() -> Mapping[str, ExpertLoad]:
            return await gateway.load()

        router = self.router_cls(settings, registry=registry, load_source=load_source)
        super().__init__(settings, router, gateway, registry=registry)
        attach_hub(self.metrics, metrics_hub, replica_id(self), settings.metrics_push_s)
        self.keys.prime()  # says at start-up when the service is open

    def __serve_build_asgi_app__(self) -> Any:
        return self.build_asgi_app()

    async def check_health(self) -> None:
        """Serve's periodic health check; starts the metrics exchange of a replica no request reached
        yet, so the service's figures count it from the start."""
        self.metrics.ensure_started()
