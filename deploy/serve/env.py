"""Ray Serve's request-path switches the service runs with (`SERVE_ENV`)."""

#: Ray Serve's request-path switches the service runs with. The Serve proxy and the replicas read them
#: from their environment when they start, so they must be set where the Ray node starts: `coe up`
#: puts them in the environment of the local Ray it starts (unless set already); a cluster started with
#: `ray start` needs them exported on every node. Each trims work from every request that crosses the
#: proxy (BENCHMARKS.md §10): the proxy calls the replica over gRPC instead of by Ray object reference,
#: the replica runs user code on its main event loop instead of a second thread and loop, and Serve's
#: request-path log lines are written in blocks (an ERROR flushes). Not set:
#: RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0, since `coe up` (the driver) inherits this environment and
#: its blocking handle calls (the drain) need the router's own loop.
SERVE_ENV = {
    "RAY_SERVE_PROXY_USE_GRPC": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}
