"""Ray Serve's request-path switches the service runs with (`SERVE_ENV`)."""

#: Ray Serve's request-path switches the service runs with. The Serve proxy and the replicas read them
#: from their environment when they start, so they must be set where the Ray node starts: `coe up`
#: puts them in the environment of the local Ray it starts (unless set already); a cluster started with
#: `ray start` needs them exported on every node. Serve's request-path log lines are written in blocks
#: (an ERROR flushes), which trims work from every request that crosses the proxy (BENCHMARKS.md §10).
#: Measured and left out: RAY_SERVE_PROXY_USE_GRPC=1 and RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0
#: (about 1 ms less per request together with the buffer; with them a request arriving while a 2-replica
#: service stopped got a 500 from the proxy instead of a 503, tests/deploy/test_replicas.py), and
#: RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0, since `coe up` (the driver) inherits this environment and its
#: blocking handle calls (the drain) need the router's own loop.
SERVE_ENV = {
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}
