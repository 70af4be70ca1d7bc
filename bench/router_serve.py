"""Routing through Ray Serve: the CoeRouter deployment (as deploy/serve/app.py builds it, with @serve.batch
dynamic batching) at concurrency 1, 8 and 32, against an equally batched encoder-only deployment (the
floor), then router replicas 1 -> 2 at concurrency 32.

What runs:
  * a local Ray (address="local", loopback only, no dashboard, no HTTP proxy) and Serve;
  * app "coe" = deploy.serve.app.build_app(settings): ingress, gateway and the CoeRouter deployment, on a
    temporary SQLite registry seeded with six experts (five specialists and a generalist over the
    artifact's 14 categories; they never answer: nothing here calls an expert, and health checks are
    off). The client calls CoeRouter.route(text, RoutingOptions(policy="category")) through a
    DeploymentHandle, one text per request: the embed + classify + policy decision, batched on the
    replica by @serve.batch (max_batch_size / batch_wait_s from the settings);
  * app "floor" = EncoderFloor: the same SentenceTransformerEmbedder behind the same @serve.batch
    settings, the same ray_actor_options and max_ongoing_requests, returning the embedding. So the floor
    pays the same handle, queueing and batching costs, and the router/floor gap is what routing adds
    (classifier, policy, the router service's bookkeeping) over embedding itself.
The client is an asyncio loop in this process with N workers, each sending its next text when the
previous answer arrives, for --budget-s seconds per cell; the two paths alternate (ABBA) over
--rounds rounds. Everything shares this machine's cores with the client, so these are not the
capacity of a dedicated node.

Replicas: at concurrency 32, the sweep's router app (1 replica, default threads: the baseline) stays
deployed, and each other configuration is deployed beside it as a second app; the two take turns
(ABBA), so each ratio compares measurements taken under the same background load. Torch threads per
replica are part of the configuration: 2 replicas x 1 thread uses as many threads as 1 x 2 (the fair
test on 2 cores); 2 x 2 oversubscribes and 1 x 1 undersubscribes.

Usage: python bench/router_serve.py [--budget-s 3] [--rounds 2] [--threads 0] [--no-replicas]
Writes bench/results/router_serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, offline_env, pct, table, write  # noqa: E402

APP = "coe"
FLOOR_APP = "floor"
ALT_APP = "coe-alt"
CONCURRENCY = (1, 8, 32)


def _env() -> None:
    offline_env()
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:  # replicas import the checkout
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])


def seed_registry(url: str, categories: tuple[str, ...]) -> None:
    """Six experts like bench/routing_overhead.py's snapshot: five specialists plus a generalist."""
    from registry import Registry
    from registry import repository as repo

    groups = {
        "math": ("math", "physics", "engineering", "chemistry"),
        "code": ("computer science",),
        "medical": ("health", "biology", "psychology"),
        "humanities": ("law", "history", "philosophy", "economics", "business"),
    }
    with Registry(url) as reg:
        reg.revision()  # creates the schema
        with reg.session() as s:
            for g in groups:
                repo.add_expert(s, name=f"x-{g}", base_url="http://127.0.0.1:9/v1", model=g)
            repo.add_expert(
                s, name="x-general", base_url="http://127.0.0.1:9/v1", model="general", tags=("generalist",)
            )
            for cat in categories:
                repo.add_category(s, name=cat)
                ranked = [f"x-{g}" for g, cs in groups.items() if cat in cs] + ["x-general"]
                for rank, name in enumerate(ranked, start=1):
                    repo.map_expert(s, category=cat, expert=name, rank=rank)


class EncoderFloor:
    """The raw encoder behind the router's batching: one text in, its embedding out."""

    def __init__(self, threads: int) -> None:
        from router.embedder import SentenceTransformerEmbedder

        self.embedder = SentenceTransformerEmbedder("default", threads=threads)

    async def embed_batch(self, texts: list[str]) -> list[Any]:
        vecs = await asyncio.to_thread(self.embedder.embed, list(texts))
        return [vecs[i] for i in range(len(texts))]

    async def embed(self, text: str) -> Any:
        return await self.embed_batch(text)  # type: ignore[arg-type]  # @serve.batch takes one item

    async def threads(self) -> int:
        import torch

        return int(torch.get_num_threads())


def floor_app(settings: Any, replicas: int) -> Any:
    from ray import serve

    batched = serve.batch(max_batch_size=settings.batch_max_size, batch_wait_timeout_s=settings.batch_wait_s)(
        EncoderFloor.embed_batch
    )
    cls = type("EncoderFloor", (EncoderFloor,), {"embed_batch": batched})
    dep = serve.deployment(
        cls,
        name="EncoderFloor",
        ray_actor_options={"num_cpus": settings.router_cpus},
        max_ongoing_requests=max(8, settings.batch_max_size * 2),  # as build_app gives CoeRouter
        num_replicas=replicas,
    )
    return dep.bind(settings.torch_threads)


async def drive(call: Any, texts: list[str], concurrency: int, budget_s: float) -> dict[str, Any]:
    """`concurrency` closed-loop workers for budget_s seconds; per-request latency and throughput."""
    lat: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + budget_s

    async def worker(i: int) -> None:
        k = i
        while time.perf_counter() < stop:
            text = texts[k % len(texts)]
            k += concurrency
            a = time.perf_counter()
            try:
                await call(text)
            except Exception as exc:  # a benchmark reports failures, it does not stop on them
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            lat.append(time.perf_counter() - a)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"lat": lat, "wall": wall, "errors": errors}


def merge(cells: list[dict[str, Any]]) -> dict[str, Any]:
    lat = [x for c in cells for x in c["lat"]]
    wall = sum(c["wall"] for c in cells)
    return {
        "n": len(lat),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "throughput_per_s": len(lat) / wall if wall else float("nan"),
        "errors": sum(len(c["errors"]) for c in cells),
        "first_error": next((c["errors"][0] for c in cells if c["errors"]), None),
    }


async def warm(call: Any, texts: list[str], n: int = 8) -> None:
    await asyncio.gather(*(call(t) for t in texts[:n]))
    for t in texts[:3]:
        await call(t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="held-out texts to cycle through")
    ap.add_argument("--budget-s", type=float, default=3.0, help="seconds per cell per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per replica (0 = settings default)")
    ap.add_argument("--no-replicas", action="store_true", help="skip the replicas 1 -> 2 part")
    ap.add_argument(
        "--batch-wait-s", type=float, default=None, help="override settings.batch_wait_s (both deployments)"
    )
    ap.add_argument(
        "--batch-max-size", type=int, default=None, help="override settings.batch_max_size (both deployments)"
    )
    args = ap.parse_args()
    _env()

    import ray
    from ray import serve

    from deploy.serve.app import build_app
    from deploy.settings import DEFAULT_ROUTER_ARTIFACT, Settings
    from eval.data.datasets import load_mmlu_pro
    from eval.training.seed import artifact_categories
    from eval.training.train import split
    from router.embedder import default_threads
    from router.types import RoutingOptions

    info = machine()
    t0 = time.perf_counter()
    _, val = split(load_mmlu_pro(), 0.1, 0)
    texts = [e.text for e in random.Random(0).sample(val, min(args.n, len(val)))]
    load_data_s = time.perf_counter() - t0

    tmp = tempfile.TemporaryDirectory(prefix="coe-bench-serve-")
    url = f"sqlite:///{Path(tmp.name) / 'registry.db'}"
    seed_registry(url, artifact_categories(DEFAULT_ROUTER_ARTIFACT))

    batching: dict[str, Any] = {}
    if args.batch_wait_s is not None:
        batching["batch_wait_s"] = args.batch_wait_s
    if args.batch_max_size is not None:
        batching["batch_max_size"] = args.batch_max_size

    def settings_for(replicas: int, threads: int) -> Any:
        return Settings(
            **batching,
            database_url=url,
            data_dir=Path(tmp.name),
            local_experts=False,
            health_interval_s=0.0,  # the experts are fake: no background probes
            torch_threads=threads,
            router_replicas=replicas,
            autoscale=False,
        )

    base = settings_for(1, args.threads)
    threads_default = args.threads or default_threads()
    opts = RoutingOptions(policy="category", threshold=base.confidence_threshold)
    ray.init(
        address="local",
        num_cpus=8,  # logical slots for the replicas' num_cpus; the machine has os.cpu_count() cores
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=base.ray_object_store_bytes,
        log_to_driver=False,
        configure_logging=False,
    )
    results: dict[str, Any] = {}
    try:
        serve.start(proxy_location="Disabled")
        t0 = time.perf_counter()
        serve.run(build_app(base), name=APP, route_prefix="/coe", blocking=False)
        serve.run(floor_app(base, 1), name=FLOOR_APP, route_prefix="/floor", blocking=False)
        router_h = serve.get_deployment_handle("CoeRouter", app_name=APP)
        floor_h = serve.get_deployment_handle("EncoderFloor", app_name=FLOOR_APP)
        deploy_s = time.perf_counter() - t0

        stages: list[dict[str, float]] = []  # the router's own per-query timings, from its decisions

        async def call_router(text: str) -> Any:
            decision = await router_h.route.remote(text, opts)
            stages.append(dict(decision.timings_ms))
            return decision

        async def call_floor(text: str) -> Any:
            return await floor_h.embed.remote(text)

        async def sweep() -> dict[str, Any]:
            await warm(call_router, texts)
            await warm(call_floor, texts)
            floor_threads = await floor_h.threads.remote()
            out: dict[str, Any] = {"floor_replica_torch_threads": floor_threads}
            for c in CONCURRENCY:
                cells: dict[str, list[dict[str, Any]]] = {"floor": [], "router": []}
                stages.clear()
                for r in range(args.rounds):
                    order = ("floor", "router") if r % 2 == 0 else ("router", "floor")
                    for name in order:
                        fn = call_floor if name == "floor" else call_router
                        cells[name].append(await drive(fn, texts, c, args.budget_s))
                out[str(c)] = {name: merge(v) for name, v in cells.items()}
                out[str(c)]["router_stages_mean"] = {
                    k: sum(st.get(k, 0.0) for st in stages) / max(len(stages), 1)
                    for k in ("batch_size", "embed", "classify", "policy")
                }
                print(f"  concurrency {c}: done (load {os.getloadavg()[0]:.2f})", flush=True)
            return out

        print(f"deployed in {deploy_s:.1f}s; concurrency sweep ...", flush=True)
        results["sweep"] = asyncio.run(sweep())

        decision = asyncio.run(call_router(texts[0]))
        results["sample_decision"] = {
            "categories": [list(x) for x in decision.categories[:2]],
            "experts": [e.name for e in decision.experts],
            "timings_ms": decision.timings_ms,
        }

        if not args.no_replicas:
            # The sweep's app (1 replica, default threads) stays up as the baseline; each other
            # configuration runs as a second app beside it, and the two take turns (ABBA) at
            # concurrency 32, so each ratio compares two measurements taken under the same load.
            alts = [(2, 1), (2, threads_default), (1, 1)]
            results["replicas"] = {
                "baseline": {"replicas": 1, "torch_threads": threads_default},
                "configs": [],
            }
            for replicas, threads in dict.fromkeys(alts):
                if (replicas, threads) == (1, threads_default):
                    continue
                t0 = time.perf_counter()
                serve.run(
                    build_app(settings_for(replicas, threads)),
                    name=ALT_APP,
                    route_prefix="/alt",
                    blocking=False,
                )
                redeploy_s = time.perf_counter() - t0
                alt_h = serve.get_deployment_handle("CoeRouter", app_name=ALT_APP)

                async def call_alt(text: str, h: Any = alt_h) -> Any:
                    return await h.route.remote(text, opts)

                async def measure() -> dict[str, Any]:
                    await warm(call_alt, texts, 16)
                    await warm(call_router, texts, 16)
                    cells: dict[str, list[dict[str, Any]]] = {"baseline": [], "config": []}
                    for r in range(args.rounds):
                        order = ("baseline", "config") if r % 2 == 0 else ("config", "baseline")
                        for name in order:
                            fn = call_router if name == "baseline" else call_alt
                            cells[name].append(await drive(fn, texts, 32, args.budget_s))
                    return {name: merge(v) for name, v in cells.items()}

                m = asyncio.run(measure())
                serve.delete(ALT_APP)
                results["replicas"]["configs"].append(
                    {"replicas": replicas, "torch_threads": threads, "deploy_s": redeploy_s, **m}
                )
                print(
                    f"  {replicas} replica(s) x {threads} thread(s) vs baseline: done "
                    f"(load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            tmp.cleanup()

    # ----- report -------------------------------------------------------------------------------
    sweep_res = results["sweep"]
    print(
        f"\nRouting through Ray Serve: one text per request via DeploymentHandle, @serve.batch "
        f"(max_batch_size {base.batch_max_size}, wait {base.batch_wait_s * 1000:.0f} ms), 1 replica, "
        f"torch threads {threads_default}, {args.rounds} x {args.budget_s:.0f} s per cell"
    )
    print(
        "floor = EncoderFloor (SentenceTransformerEmbedder behind the same @serve.batch and deployment "
        "options); router = CoeRouter.route (embed + classify + category policy)"
    )
    rows = []
    for c in CONCURRENCY:
        f, r = sweep_res[str(c)]["floor"], sweep_res[str(c)]["router"]
        rows.append(
            [
                c,
                f["throughput_per_s"],
                r["throughput_per_s"],
                r["throughput_per_s"] / f["throughput_per_s"],
                f["p50_ms"],
                r["p50_ms"],
                f["p99_ms"],
                r["p99_ms"],
                f["errors"] + r["errors"],
            ]
        )
    print(
        table(
            [
                "concurrency",
                "floor req/s",
                "router req/s",
                "router/floor",
                "floor p50",
                "router p50",
                "floor p99",
                "router p99",
                "errors",
            ],
            rows,
        )
    )
    if "replicas" in results:
        b = results["replicas"]["baseline"]
        print(
            f"\nRouter replicas at concurrency 32: each configuration against the baseline "
            f"({b['replicas']} replica x {b['torch_threads']} threads, deployed beside it), taking turns"
        )
        rows = []
        for x in results["replicas"]["configs"]:
            bt, ct = x["baseline"]["throughput_per_s"], x["config"]["throughput_per_s"]
            rows.append(
                [
                    f"{x['replicas']} x {x['torch_threads']}",
                    ct,
                    bt,
                    ct / bt,
                    x["config"]["p50_ms"],
                    x["baseline"]["p50_ms"],
                    x["config"]["p99_ms"],
                    x["baseline"]["p99_ms"],
                    x["config"]["errors"] + x["baseline"]["errors"],
                ]
            )
        print(
            table(
                [
                    "replicas x threads",
                    "req/s",
                    "baseline req/s",
                    "vs baseline",
                    "p50",
                    "baseline p50",
                    "p99",
                    "baseline p99",
                    "errors",
                ],
                rows,
            )
        )
    print(
        "router's own timings, mean over its decisions (embed and classify are the per-query share of "
        "the replica's batch, in ms):"
    )
    for c in CONCURRENCY:
        st = sweep_res[str(c)]["router_stages_mean"]
        print(
            f"  concurrency {c}: batch size {st['batch_size']:.1f}, embed {st['embed']:.2f}, "
            f"classify {st['classify']:.2f}, policy {st['policy']:.3f}"
        )
    errs = [
        v.get("first_error")
        for c in CONCURRENCY
        for v in sweep_res[str(c)].values()
        if isinstance(v, dict) and v.get("first_error")
    ]
    if errs:
        print(f"first error: {errs[0]}")
    info["loadavg_at_end"] = list(os.getloadavg())
    print(
        "load average (1, 5, 15 min) at start "
        + ", ".join(f"{x:.2f}" for x in info["loadavg_at_start"])
        + "; at end "
        + ", ".join(f"{x:.2f}" for x in info["loadavg_at_end"])
    )
    out = {
        "benchmark": "router_serve",
        "machine": info,
        "settings": {
            "batch_max_size": base.batch_max_size,
            "batch_wait_s": base.batch_wait_s,
            "router_cpus": base.router_cpus,
            "torch_threads": threads_default,
            "budget_s": args.budget_s,
            "rounds": args.rounds,
        },
        "texts": {
            "source": "mmlu-pro held-out val split (seed 0, 0.1), random sample seed 0",
            "n": len(texts),
        },
        "setup_s": {"load_data": load_data_s},
        "floor": "EncoderFloor deployment: SentenceTransformerEmbedder behind the same @serve.batch",
        **results,
    }
    print(f"\nwrote {write('router_serve', out)}")


if __name__ == "__main__":
    main()
