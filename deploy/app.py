"""`build_app(settings)`: the one place that applies Ray Serve decorators and binds the graph.

    Ingress (FastAPI, serve.ingress) ──route──▶ Router (embed+classify with @serve.batch, decide)
        │                                          │ polls expert load
        └──complete / stream (stream=True)──▶ Gateway (ExpertPool, aggregation)

The deployment classes are plain classes (deploy/ingress.py, deploy/router_service.py,
deploy/gateway.py); this module only wraps them. Replicas, CPUs, batching and autoscaling come from
settings."""

from __future__ import annotations

from typing import Any

from deploy.gateway import Gateway
from deploy.ingress import ServeIngress
from deploy.router_service import ServeRouter

APP_NAME = "coe"


def _scaling(settings: Any, replicas: int, target_ongoing: float) -> dict[str, Any]:
    if settings.autoscale:
        return {
            "autoscaling_config": {
                "min_replicas": max(1, replicas),
                "max_replicas": max(replicas, settings.autoscale_max_replicas),
                "target_ongoing_requests": target_ongoing,
            }
        }
    return {"num_replicas": replicas}


def actor_options(cpus: float, resources: dict[str, float]) -> dict[str, Any]:
    """A replica's `ray_actor_options`: its CPUs, plus the custom resources that pin it to a node group."""
    options: dict[str, Any] = {"num_cpus": cpus}
    if resources:
        options["resources"] = dict(resources)
    return options


def build_app(settings: Any) -> Any:
    """The bound Serve application (run it with `serve.run(build_app(settings), name=APP_NAME)`)."""
    from ray import serve

    batched = serve.batch(max_batch_size=settings.batch_max_size, batch_wait_timeout_s=settings.batch_wait_s)(
        ServeRouter.probabilities_batch
    )
    router_cls = type("CoeRouter", (ServeRouter,), {"batched": True, "probabilities_batch": batched})
    # typed Any: with keyword options mypy picks serve.deployment's decorator overload
    router: Any = serve.deployment(
        router_cls,
        name="CoeRouter",
        ray_actor_options=actor_options(settings.router_cpus, settings.router_resources),
        max_ongoing_requests=max(8, settings.batch_max_size * 2),
        **_scaling(settings, settings.router_replicas, max(1.0, settings.batch_max_size / 2)),
    )
    gateway: Any = serve.deployment(
        type("CoeGateway", (Gateway,), {}),
        name="CoeGateway",
        ray_actor_options=actor_options(settings.gateway_cpus, settings.gateway_resources),
        max_ongoing_requests=256,
        **_scaling(settings, settings.gateway_replicas, 32.0),
    )
    ingress: Any = serve.deployment(
        serve.ingress()(type("CoeIngress", (ServeIngress,), {})),
        name="CoeIngress",
        ray_actor_options=actor_options(settings.ingress_cpus, settings.ingress_resources),
        max_ongoing_requests=512,
        **_scaling(settings, settings.ingress_replicas, 64.0),
    )
    gateway_app = gateway.bind(settings)
    router_app = router.bind(settings, gateway_app)
    return ingress.bind(settings, router_app, gateway_app)
