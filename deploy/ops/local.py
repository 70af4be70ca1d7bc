"""`coe up`: the embedded default on one machine, offline.

local expert server (SmolLM2 personas) → registry schema + first-run seed → local Ray → Serve HTTP
on loopback → the app → wait for /readyz → ready line (or, with `check`, one real query) → clean
shutdown on Ctrl-C / SIGTERM: drain the ingress, then serve.shutdown, ray.shutdown, stop the expert
server (deploy/serve/drain.py); a second signal stops at once."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deploy.serve.drain import ForcedShutdown, ShutdownRequested, ShutdownSignals, drain_app
from deploy.serve.env import INGRESS_SWITCHES, haproxy_binary, local_ports_env, serve_env
from deploy.settings import REPO_ROOT, Settings
from experts.net import free_port
from router.errors import ArtifactError, CoeError

SMOKE_QUESTION = "What is the derivative of x^2 with respect to x?"
_RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@dataclass
class Stack:
    """What `coe up` started, so it can stop exactly that."""

    settings: Settings
    base: str = ""
    expert_server: Any = None
    ray_started: bool = False
    serve_started: bool = False

    def close(self, say: Callable[[str], None] = lambda _m: None, *, force: bool = False) -> None:
        """Stop Serve (its replicas drain for up to their graceful_shutdown_timeout_s; skipped when
        `force`), Ray (every process of the local node: GCS, raylet, agents, workers), the expert server."""
        if self.serve_started and not force:
            with contextlib.suppress(Exception):
                from ray import serve

                serve.shutdown()
        self.serve_started = False
        if self.ray_started:
            with contextlib.suppress(Exception):
                import ray

                ray.shutdown()
            self.ray_started = False
        if self.expert_server is not None:
            with contextlib.suppress(Exception):
                self.expert_server.stop()
            self.expert_server = None
        say("stopped")


def _prepare_env(settings: Settings) -> None:
    """The environment the local Ray starts with (its processes inherit it): Serve's switches for the
    front door `settings.serve_ingress` (they follow the setting), free ports for the ones Serve would
    otherwise bind at fixed numbers, and what the replicas need to import the checkout."""
    for k, v in {**_RAY_ENV, **serve_env(settings.serve_ingress)}.items():
        if k in INGRESS_SWITCHES:
            os.environ[k] = v
        else:
            os.environ.setdefault(k, v)
    for k, v in local_ports_env(settings.serve_ingress, free_port).items():
        os.environ.setdefault(k, v)
    # Ray workers inherit this environment: make the source checkout importable in replicas.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])


def _cpus_needed(settings: Settings) -> int:
    from deploy.serve.app import deployment_specs

    top = settings.autoscale_max_replicas if settings.autoscale else 1
    need = sum(s.cpus * max(s.replicas, top) for s in deployment_specs(settings))
    return max(os.cpu_count() or 1, math.ceil(need) + 1)


def start(
    settings: Settings,
    say: Callable[[str], None] = print,
    *,
    verbose: bool = False,
    ready_timeout_s: float = 600.0,
    signals: ShutdownSignals | None = None,
) -> Stack:
    """Bring the stack up and wait until /readyz says so; the caller owns `Stack.close()`. The
    start-up checks (deploy/ops/preflight.py) run first: a newcomer's mistakes fail before anything starts."""
    _prepare_env(settings)
    from deploy.ops.preflight import preflight

    if settings.port == 0:
        settings = settings.model_copy(update={"port": free_port(settings.host)})
    preflight(settings)
    if settings.serve_ingress == "haproxy" and not settings.ray_address:
        haproxy_binary()  # the local Ray's Serve runs it: say so now if there is none
    stack = Stack(settings)
    checkpoint = signals.checkpoint if signals is not None else (lambda: None)
    try:
        _prepare_registry(settings, stack, say)
        checkpoint()
        _start_serve(settings, stack, say, verbose=verbose, signals=signals, checkpoint=checkpoint)
        stack.base = f"http://{settings.host}:{settings.port}"
        wait_ready(stack.base, ready_timeout_s, checkpoint)
    except ForcedShutdown:
        stack.close(force=True)
        raise
    except BaseException:
        try:
            stack.close()
        except ForcedShutdown:
            stack.close(force=True)
        raise
    return stack


def _prepare_registry(settings: Settings, stack: Stack, say: Callable[[str], None]) -> None:
    """Create or migrate the schema, check the router artifact, and (with local experts) start the
    SmolLM2 server and seed the registry with its personas, or point existing ones at it."""
    from deploy.pipeline.router_service import artifact_from_registry
    from eval.training.seed import point_local_experts, seed
    from registry import Registry

    with Registry(settings.database_url) as registry:
        registry.revision()  # creates or migrates the schema
        artifact = artifact_from_registry(registry, settings.router_artifact)
        if not (artifact / "manifest.json").is_file():
            raise ArtifactError(
                f"router artifact not found at {artifact} (build one with `make router-artifact`)"
            )
        if not settings.local_experts:
            return
        stack.expert_server = _start_local_experts(settings, say)
        base_url = stack.expert_server.base_url
        plan = seed(registry, artifact, base_url)
        if plan is not None:
            say(f"seeded the registry: {len(plan.experts)} local experts, {len(plan.mapping)} categories")
        else:
            moved = point_local_experts(registry, base_url)
            if moved:
                say(f"pointed {moved} local experts at {base_url}")
        _declare_engine_capabilities(registry, settings.local_engine)


#: what the local experts serve beyond text, by engine: vLLM decodes `response_format` and forced tool
#: calls against their JSON schema (guided decoding), the transformers server does neither
ENGINE_CAPABILITIES = {"vllm": ("json", "tools"), "transformers": ()}


def _declare_engine_capabilities(registry: Any, engine: str) -> None:
    """The `local` experts' capabilities follow the engine that serves them on this run."""
    from registry import repository as repo

    caps = ENGINE_CAPABILITIES[engine]
    with registry.session() as s:
        for e in repo.list_experts(s):
            if "local" in e.tags and tuple(sorted(e.capabilities)) != tuple(sorted(caps)):
                repo.update_expert(s, name=e.name, capabilities=caps)


def _start_local_experts(settings: Settings, say: Callable[[str], None]) -> Any:
    """The SmolLM2 persona server on the configured engine (`local_engine`: transformers or vllm)."""
    start: Callable[..., Any]
    if settings.local_engine == "vllm":
        from experts.vllm_server import start_vllm_server as start

        say(f"starting the local experts on vLLM's CPU engine (SmolLM2-135M personas) on {settings.host}...")
    else:
        from experts.local_server import start_local_server as start

        say(f"starting the local expert server (SmolLM2-135M personas) on {settings.host}...")
    return start(
        settings.local_expert_port,
        host=settings.host,
        model_path=settings.local_model_path,
        data_dir=settings.data_dir,
    )


def _start_serve(
    settings: Settings,
    stack: Stack,
    say: Callable[[str], None],
    *,
    verbose: bool,
    signals: ShutdownSignals | None,
    checkpoint: Callable[[], None],
) -> None:
    """Start (or join) Ray, start Serve's HTTP proxy, and deploy the CoE app without waiting for it."""
    import ray
    from ray import serve

    from deploy.serve.app import APP_NAME, build_app

    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=verbose)
    else:
        say("starting local Ray...")
        ray.init(
            address="local",
            num_cpus=_cpus_needed(settings),
            include_dashboard=False,
            object_store_memory=settings.ray_object_store_bytes,
            _node_ip_address="127.0.0.1",
            log_to_driver=verbose,
            configure_logging=verbose,
        )
    stack.ray_started = True
    if signals is not None:
        signals.install()  # ray.init replaced our SIGTERM handler with one that calls sys.exit
    serve.start(
        proxy_location=settings.proxy_location,
        http_options={
            "host": settings.host,
            "port": settings.port,
            "keep_alive_timeout_s": settings.keep_alive_s,
        },
    )
    stack.serve_started = True
    checkpoint()
    say(f"deploying the app ({settings.topology} topology)...")
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False)


def wait_ready(base: str, timeout_s: float, checkpoint: Callable[[], None] = lambda: None) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/readyz", timeout=15.0)
            if r.status_code == 200:
                return dict(r.json())
            last = r.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        checkpoint()
        time.sleep(0.5)
    raise CoeError(
        f"the service at {base} did not become ready in {timeout_s:.0f}s (last /readyz: {last[:300]})"
    )


def ready_message(base: str, auth: bool) -> str:
    key = "$COE_API_KEY" if auth else "none"
    hdr = ' -H "Authorization: Bearer $COE_API_KEY"' if auth else ""
    return (
        f"CoE Router ready at {base}/v1 (models: auto, coe-category, coe-top-k, coe-top-p, coe-cost)\n"
        f"  curl -s {base}/v1/chat/completions -H 'Content-Type: application/json'{hdr} \\\n"
        '    -d \'{"model": "auto", "messages": [{"role": "user", "content": "What is 12*7?"}]}\'\n'
        f"  python -c \"from openai import OpenAI; c = OpenAI(base_url='{base}/v1', api_key='{key}'); "
        "print(c.chat.completions.create(model='auto', "
        "messages=[{'role': 'user', 'content': 'What is 12*7?'}]).choices[0].message.content)\"\n"
        "Press Ctrl-C to stop."
    )


def smoke(base: str, question: str = SMOKE_QUESTION, api_key: str | None = None) -> dict[str, Any]:
    """One real query through the whole stack."""
    import httpx

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    r = httpx.post(
        f"{base}/v1/chat/completions",
        headers=headers,
        timeout=300.0,
        json={"model": "auto", "messages": [{"role": "user", "content": question}], "max_tokens": 48},
    )
    if r.status_code != 200:
        raise CoeError(f"smoke query failed with HTTP {r.status_code}: {r.text[:500]}")
    return dict(r.json())


def up(
    settings: Settings,
    *,
    check: bool = False,
    question: str = SMOKE_QUESTION,
    verbose: bool = False,
    say: Callable[[str], None] = print,
) -> int:
    """Run until the expert server dies or a signal: the first SIGTERM/SIGINT drains (exit 0), a second
    one stops at once (exit 128 + signal). See deploy/serve/drain.py."""
    t0 = time.monotonic()
    signals = ShutdownSignals()
    signals.install()
    stack: Stack | None = None
    try:
        stack = start(settings, say, verbose=verbose, signals=signals)
        signals.checkpoint()
        signals.armed = True
        return _serve(stack, settings, check=check, question=question, t0=t0, say=say)
    except ShutdownRequested as req:
        if stack is None:
            say(f"interrupted during start-up ({signal.Signals(req.signum).name}); stopped")
            return 128 + req.signum
        return _drain_and_stop(stack, settings, req.signum, say)
    except ForcedShutdown as forced:
        if stack is not None:
            stack.close(say, force=True)
        say(f"forced stop ({signal.Signals(forced.signum).name})")
        return forced.exit_code
    finally:
        if stack is not None and (stack.ray_started or stack.expert_server is not None):
            try:
                stack.close(say)
            except ForcedShutdown:
                stack.close(say, force=True)
        signals.restore()


def _drain_and_stop(stack: Stack, settings: Settings, signum: int, say: Callable[[str], None]) -> int:
    from deploy.serve.app import APP_NAME

    sys.stdout.flush()
    say(f"shutting down ({signal.Signals(signum).name})...")
    try:
        try:
            report = drain_app(APP_NAME, settings.shutdown_grace_s, say=say)
        except ForcedShutdown:
            raise
        except Exception as exc:  # Serve already gone: nothing left to drain
            report = None
            say(f"drain skipped: {type(exc).__name__}: {exc}")
        stack.close(say)
    except ForcedShutdown as forced:
        stack.close(say, force=True)
        say(f"forced stop ({signal.Signals(forced.signum).name})")
        return forced.exit_code
    if report is not None:
        say(report.line())
    return 0


def _serve(
    stack: Stack, settings: Settings, *, check: bool, question: str, t0: float, say: Callable[[str], None]
) -> int:
    took = time.monotonic() - t0
    from registry import Registry

    with Registry(settings.database_url) as reg:
        auth = reg.has_api_keys()
    if check:
        say(f"ready in {took:.1f}s; sending one query...")
        body = smoke(stack.base, question, os.environ.get("COE_API_KEY"))
        say(f"Q: {question}")
        say(f"A ({body['model']}): {body['choices'][0]['message']['content'].strip()}")
        say(
            "route: "
            + json.dumps(
                {k: body["coe"][k] for k in ("policy", "categories", "experts", "fallback", "router_version")}
            )
        )
        return 0
    say(f"ready in {took:.1f}s")
    say(ready_message(stack.base, auth))
    if not auth:
        say(
            "warning: no API keys in the registry, so the API is open (bound to "
            f"{settings.host}); `coe keys create --scope query` locks it"
        )
    sys.stdout.flush()
    while True:
        time.sleep(1.0)
        if stack.expert_server is not None and not stack.expert_server.alive():
            say("the local expert server exited; shutting down")
            return 1


def main(argv: list[str] | None = None) -> None:
    """`python -m deploy.ops.local [--check]`: `coe up` without the CLI root."""
    import argparse

    from deploy.settings import load_settings

    ap = argparse.ArgumentParser(prog="python -m deploy.ops.local", description="Run the embedded default.")
    ap.add_argument("--check", action="store_true", help="one real query, then stop")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    raise SystemExit(up(load_settings(), check=args.check, verbose=args.verbose))


if __name__ == "__main__":
    main()
