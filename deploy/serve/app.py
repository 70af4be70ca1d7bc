"""`build_app(settings)`: the one place that applies Ray Serve decorators and binds the graph, in one of
two topologies (`COE_TOPOLOGY`):

    onehop (default)   proxy ──▶ CoeIngress: auth, parse, embed + classify (batched continuously across
                       the replica's requests, in a worker thread), decide, ExpertPool, aggregation. No
                       DeploymentHandle call on the request path; the load bias reads this replica's pool.

    split              proxy ──▶ CoeIngress ──route──▶ CoeRouter (embed + classify, decide)
                                    └──complete/stream──▶ CoeGateway (ExpertPool, aggregation)
                       for clusters that put the embedder on its own (GPU) nodes.

The deployment classes are plain classes (deploy/pipeline/ingress.py, deploy/serve/onehop.py,
deploy/pipeline/router_service.py, deploy/pipeline/gateway.py); this module only wraps them.
`deployment_specs(settings)` is the one table of deployment names, replicas, CPUs, resources, targets and
graceful-shutdown options, read by `build_app` and by `coe deploy render`.

Graceful shutdown of a replica (redeploy, scale-down, `serve.shutdown`): Serve stops routing to it, then
checks every `graceful_shutdown_wait_loop_s` (COE_SHUTDOWN_WAIT_LOOP_S, default 2) whether its requests
and streams have finished, and kills it after `graceful_shutdown_timeout_s` (COE_SHUTDOWN_GRACE_S, default
30) at the latest. `coe up` drains its ingress replicas itself before that (deploy/serve/drain.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from deploy.pipeline.gateway import ServeGateway
from deploy.pipeline.ingress import ServeIngress
from deploy.pipeline.metrics import MetricsHub
from deploy.pipeline.router_service import RouterService, ServeRouter
from deploy.serve.onehop import OneHopIngress
from deploy.settings import Settings

APP_NAME = "coe"
TOPOLOGIES = ("onehop", "split")

#: the ingress replicas log every chat request on `coe.access` (deploy/pipeline/observe.py); Serve's own
#: per-request line in the replica (0.4 ms a request, profiled) is off. The proxy still logs each request.
REPLICA_LOGGING = {"enable_access_log": False}


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """One Serve deployment of the app: what build_app passes to serve.deployment and render writes."""

    name: str
    replicas: int
    cpus: float
    target_ongoing: float  # autoscaling target
    max_ongoing: int
    resources: dict[str, float] = field(default_factory=dict)
    graceful_wait_loop_s: float = 2.0  # Serve's graceful_shutdown_wait_loop_s
    graceful_timeout_s: float = 30.0  # Serve's graceful_shutdown_timeout_s


def graceful(spec: DeploymentSpec) -> dict[str, Any]:
    """The deployment options that make Serve drain a replica it stops (redeploy, scale-down, shutdown)."""
    return {
        "graceful_shutdown_wait_loop_s": spec.graceful_wait_loop_s,
        "graceful_shutdown_timeout_s": spec.graceful_timeout_s,
    }


def deployment_specs(settings: Settings) -> list[DeploymentSpec]:
    """The app's deployments for `settings.topology`, ingress first.

    One-hop: the single CoeIngress replica embeds, so it is sized by the router settings (`router_replicas`,
    `router_cpus`, `router_resources`) plus the gateway's CPU share."""
    batch_target = max(1.0, settings.batch_max_size / 2)
    wait_loop_s = float(getattr(settings, "shutdown_wait_loop_s", 2.0))
    timeout_s = float(getattr(settings, "shutdown_grace_s", 30.0))
    return [
        dataclasses.replace(s, graceful_wait_loop_s=wait_loop_s, graceful_timeout_s=timeout_s)
        for s in _specs(settings, batch_target)
    ]


def _specs(settings: Settings, batch_target: float) -> list[DeploymentSpec]:
    if settings.topology == "onehop":
        return [
            DeploymentSpec(
                "CoeIngress",
                max(settings.router_replicas, settings.ingress_replicas),
                settings.router_cpus + settings.gateway_cpus,
                max(batch_target, 16.0),
                512,
                dict(settings.router_resources or settings.ingress_resources),
            )
        ]
    return [
        DeploymentSpec(
            "CoeIngress",
            settings.ingress_replicas,
            settings.ingress_cpus,
            64.0,
            512,
            settings.ingress_resources,
        ),
        DeploymentSpec(
            "CoeRouter",
            settings.router_replicas,
            settings.router_cpus,
            batch_target,
            max(8, settings.batch_max_size * 2),
            settings.router_resources,
        ),
        DeploymentSpec(
            "CoeGateway",
            settings.gateway_replicas,
            settings.gateway_cpus,
            32.0,
            256,
            settings.gateway_resources,
        ),
    ]


def scaling(
    spec: DeploymentSpec, autoscale: bool, max_replicas: int, **timing: float | None
) -> dict[str, Any]:
    """Fixed replicas, or Serve's autoscaling_config; `timing`: upscale_delay_s, downscale_delay_s,
    look_back_period_s where set (None: Serve's defaults)."""
    if autoscale:
        return {
            "autoscaling_config": {
                "min_replicas": max(1, spec.replicas),
                "max_replicas": max(spec.replicas, max_replicas, 1),
                "target_ongoing_requests": spec.target_ongoing,
                **{k: v for k, v in timing.items() if v is not None},
            }
        }
    return {"num_replicas": max(1, spec.replicas)}


def actor_options(cpus: float, resources: dict[str, float]) -> dict[str, Any]:
    """A replica's `ray_actor_options`: its CPUs, plus the custom resources that pin it to a node group."""
    options: dict[str, Any] = {"num_cpus": cpus}
    if resources:
        options["resources"] = dict(resources)
    return options


def batched_router_class(
    settings: Settings, base: type[RouterService] = RouterService
) -> type[RouterService]:
    """`base` with continuous embedding batching on (router_service.EmbedBatcher: concurrent
    requests on a replica share one embedding call, up to `batch_max_size`, with no timer)."""
    return type("CoeRouter", (base,), {"batched": True})


def build_app(settings: Settings) -> Any:
    """The bound Serve application (run it with `serve.run(build_app(settings), name=APP_NAME)`)."""
    from ray import serve

    specs = {s.name: s for s in deployment_specs(settings)}

    def deployment(cls: type, spec: DeploymentSpec) -> Any:
        # typed Any: with keyword options mypy picks serve.deployment's decorator overload
        return serve.deployment(
            cls,
            name=spec.name,
            ray_actor_options=actor_options(spec.cpus, spec.resources),
            max_ongoing_requests=spec.max_ongoing,
            logging_config=REPLICA_LOGGING,
            **graceful(spec),
            **scaling(
                spec,
                settings.autoscale,
                settings.autoscale_max_replicas,
                upscale_delay_s=settings.autoscale_upscale_delay_s,
                downscale_delay_s=settings.autoscale_downscale_delay_s,
                look_back_period_s=settings.autoscale_look_back_s,
            ),
        )

    # the service's figures (deploy/pipeline/metrics.py): one replica, no CPU, whatever the ingress scaling
    hub_deployment: Any = serve.deployment(
        type("CoeMetricsHub", (MetricsHub,), {}),
        name="CoeMetricsHub",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1000,
    )
    hub = hub_deployment.bind()
    if settings.topology == "onehop":
        ingress_cls = type(
            "CoeIngress", (OneHopIngress,), {"router_cls": batched_router_class(settings, RouterService)}
        )
        return deployment(serve.ingress()(ingress_cls), specs["CoeIngress"]).bind(settings, metrics_hub=hub)
    router: Any = deployment(batched_router_class(settings, ServeRouter), specs["CoeRouter"])
    gateway: Any = deployment(type("CoeGateway", (ServeGateway,), {}), specs["CoeGateway"])
    ingress: Any = deployment(serve.ingress()(type("CoeIngress", (ServeIngress,), {})), specs["CoeIngress"])
    gateway_app = gateway.bind(settings)
    router_app = router.bind(settings, gateway_app)
    return ingress.bind(settings, router_app, gateway_app, metrics_hub=hub)
