"""Service overhead: end-to-end latency and throughput of POST /v1/chat/completions through the full CoE
service, in both topologies (onehop: Serve proxy -> CoeIngress -> expert; split: proxy -> CoeIngress ->
CoeRouter -> CoeGateway -> expert), against calling the same expert server directly, against the LiteLLM
proxy configured for the same expert, and against the in-process encoder floor (raw sentence-transformers,
torch, batch 1, the same prompts): the issue-13 targets are printed as ratios measured in this run.

Prompts: MT-Bench and Vicuna-bench first turns (short chat, ../shared/data/mt_bench) and MMLU-Pro
questions (../shared/data/mmlu_pro), cycled request by request; without ../shared a fixed question.

Part 1, instant-answer stub (only overhead is measured): the FastAPI stub of bench/gateway_overhead.py,
called with the same request body by every path:
  direct    POST the stub's /v1/chat/completions                              (the baseline)
  coe-name  POST CoE with model=<expert name>: no routing, ingress -> gateway -> stub
  coe-auto  POST CoE with model=auto: ingress -> router (embed, classify, decide) -> gateway -> stub
  litellm   POST the LiteLLM proxy (openai/ provider, api_base = the stub)
Part 2, real expert: the SmolLM2-135M CPU server of experts/local_server.py, greedy, a fixed small
max_tokens, a handful of requests at concurrency 1, the paths interleaved request by request.

The stack is the real one (deploy.ops.local.start: local Ray on 127.0.0.1, Ray Serve,
deploy.serve.app.build_app)
with a temporary SQLite registry holding the stub (mapped to every category) and the local expert.
LiteLLM runs from its own venv, .venv-peers/litellm (bench/peers_litellm.sh); without it that row is
skipped. All traffic stays on 127.0.0.1. Besides latency and throughput it prints where the time goes:
the `coe.timings_ms` stages of the responses, the CPU each process burns per request (psutil), and a
concurrency-1 ladder that adds one piece of the service path at a time (/healthz, /v1/route, chat).
Writes bench/results/service_overhead.json.

Usage: python bench/service_overhead.py [--requests 80] [--rounds 2] [--concurrency 1 8 16 32]
           [--topology onehop split] [--prompts chat mmlu]
           [--ladder-requests 60] [--real-requests 4] [--max-tokens 16] [--no-real] [--no-litellm]
           [--set torch_threads=1 --set batch_wait_s=0 ...]   (Settings overrides for the CoE stack)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import drive, machine, offline_env, pct, table, write  # noqa: E402
from gateway_overhead import free_port, start_stub  # noqa: E402

LITELLM_VENV = ROOT / ".venv-peers" / "litellm"
LITELLM_BIN = LITELLM_VENV / "bin" / "litellm"
STUB_MODEL = "stub"  # the stub's model, the CoE expert's name and the LiteLLM model_name: one `model`
REAL_MODEL = "smollm2-135m-instruct"  # the local server's base persona; same trick
QUESTION = "What is 6*7?"
REAL_QUESTION = "Name the largest planet in the solar system."
STAGES = ("embed", "classify", "policy", "batch_size", "expert", "completion_tokens")

# LiteLLM offline: the bundled cost map / beta headers / blog posts / policy templates instead of
# fetching them from GitHub at start-up; no database; telemetry off on the command line.
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOG": "ERROR",
    "DISABLE_ADMIN_UI": "True",
}

Call = Callable[[], Awaitable[dict[str, float] | None]]

SHARED = ROOT.parent / "shared" / "data"


def load_prompts(kind: str, limit: int = 200) -> list[str]:
    """`chat`: MT-Bench + Vicuna-bench first turns; `mmlu`: MMLU-Pro questions (a fixed sample)."""
    import json
    import random

    if kind == "chat":
        out = []
        for name in ("mt_bench_question.jsonl", "vicuna_bench_question.jsonl"):
            path = SHARED / "mt_bench" / name
            if path.is_file():
                out += [
                    json.loads(line)["turns"][0] for line in path.read_text().splitlines() if line.strip()
                ]
        return out[:limit] or [QUESTION]
    if kind == "mmlu":
        if not (SHARED / "mmlu_pro" / "eval_results").is_dir():
            return [QUESTION]
        from eval.data.datasets import load_mmlu_pro

        texts = [e.text for e in load_mmlu_pro(SHARED / "mmlu_pro" / "eval_results")]
        random.Random(0).shuffle(texts)
        return texts[:limit]
    raise ValueError(f"unknown prompt set {kind!r}")


def encoder_floor(prompts: list[str], threads: int) -> dict[str, float]:
    """Raw sentence-transformers (torch) on one prompt at a time, in this process: the embedding a
    routed request cannot avoid."""
    import torch
    from sentence_transformers import SentenceTransformer

    from router.embedder import resolve_model

    torch.set_num_threads(threads)
    model = SentenceTransformer(resolve_model("default")[0], device="cpu")
    for p in prompts[:10]:
        model.encode([p])
    lats = []
    for p in prompts:
        a = time.perf_counter()
        model.encode([p], normalize_embeddings=True)
        lats.append(time.perf_counter() - a)
    return {"p50_ms": pct(lats, 50), "p99_ms": pct(lats, 99), "n": len(lats)}


def say(msg: str) -> None:
    print(f"[service_overhead] {msg}", flush=True)


# ----- the CoE stack --------------------------------------------------------------------------------


def seed_registry(url: str, stub_base: str, real_base: str | None) -> list[str]:
    """Register the stub (every category -> stub) and, when given, the local SmolLM2 server."""
    from deploy.settings import DEFAULT_ROUTER_ARTIFACT
    from eval.training.seed import artifact_categories
    from registry import Registry
    from registry import repository as repo

    categories = list(artifact_categories(DEFAULT_ROUTER_ARTIFACT))
    with Registry(url) as reg, reg.session() as s:
        repo.add_expert(
            s, name=STUB_MODEL, base_url=stub_base, model=STUB_MODEL, max_concurrency=256, timeout_s=30
        )
        if real_base is not None:
            repo.add_expert(
                s, name=REAL_MODEL, base_url=real_base, model=REAL_MODEL, max_concurrency=4, timeout_s=300
            )
        for cat in categories:
            repo.add_category(s, name=cat)
            repo.map_expert(s, category=cat, expert=STUB_MODEL, rank=1)
    return categories


@contextlib.contextmanager
def stub_service(prefix: str, log: Callable[[str], None] = say, **overrides: Any) -> Iterator[Any]:
    """The instant stub, a fresh SQLite registry (every category -> the stub) in a temporary folder named
    `prefix...`, and the CoE stack on it (deploy.ops.local.start, Settings `overrides`); yields the
    stack; stops the stack and the stub and removes the folder."""
    from deploy.ops.local import start
    from deploy.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    stub, stub_base = start_stub()
    stack = None
    try:
        url = f"sqlite:///{tmp / 'coe.db'}"
        seed_registry(url, stub_base, None)
        settings = Settings(
            database_url=url, data_dir=tmp, local_experts=False, port=0, health_interval_s=0, **overrides
        )
        stack = start(settings, log, ready_timeout_s=300)
        yield stack
    finally:
        if stack is not None:
            stack.close()
        stub.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def remap_to(url: str, categories: list[str], old: str, new: str) -> None:
    from registry import Registry
    from registry import repository as repo

    with Registry(url) as reg, reg.session() as s:
        for cat in categories:
            repo.unmap_expert(s, category=cat, expert=old)
            repo.map_expert(s, category=cat, expert=new, rank=1)


def wait_routed_to(base: str, expert: str, timeout_s: float = 60.0) -> None:
    """Until the router replica has picked up the registry change (it polls every registry_poll_s)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    body = {"model": "auto", "messages": [{"role": "user", "content": REAL_QUESTION}]}
    while time.monotonic() < deadline:
        r = httpx.post(f"{base}/v1/route", json=body, timeout=30)
        if r.status_code == 200 and r.json().get("experts", [{}])[0].get("name") == expert:
            time.sleep(3.0)  # the gateway and ingress replicas poll on their own clocks
            return
        time.sleep(0.5)
    raise RuntimeError(f"the router did not switch to {expert} in {timeout_s:.0f}s")


# ----- LiteLLM --------------------------------------------------------------------------------------


def litellm_version() -> str | None:
    if not LITELLM_BIN.exists():
        return None
    stamps = sorted(LITELLM_VENV.glob(".installed-*"))
    return stamps[-1].name.removeprefix(".installed-") if stamps else "unknown"


def start_litellm(models: dict[str, str], workdir: Path) -> tuple[subprocess.Popen, str, Path]:
    """`litellm --config` on a free loopback port, one worker; `models` maps model_name -> api_base."""
    import httpx

    lines = ["model_list:"]
    for name, api_base in models.items():
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            f"      model: openai/{name}",
            f"      api_base: {api_base}",
            "      api_key: none",
            "      timeout: 300",
        ]
    lines += ["litellm_settings:", "  telemetry: false", "general_settings: {}", ""]
    cfg = workdir / "litellm.yaml"
    cfg.write_text("\n".join(lines))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL", "VIRTUAL_ENV")}
    env.update(LITELLM_ENV)
    log = workdir / "litellm.log"
    cmd = [str(LITELLM_BIN), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--num_workers", "1", "--telemetry", "False"]
    with open(log, "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"{base}/health/liveliness", timeout=2).status_code == 200:
                return proc, base, log
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    proc.wait(10)
    raise RuntimeError(f"the LiteLLM proxy did not start; log {log}:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ----- CPU accounting -------------------------------------------------------------------------------

#: process-name fragments (Ray sets worker titles like `ray::ServeReplica:coe:CoeIngress`) -> component
COMPONENTS = (
    ("ProxyActor", "serve proxy"),
    ("CoeIngress", "ingress"),
    ("CoeRouter", "router"),
    ("CoeGateway", "gateway"),
    ("ServeController", "ray other"),
    ("raylet", "ray other"),
    ("gcs_server", "ray other"),
)
CPU_COLUMNS = ["client", "stub", "serve proxy", "ingress", "router", "gateway", "ray other", "litellm"]


class CpuMeter:
    """CPU seconds (user+system) used by this benchmark's processes, grouped by component: the client
    (this process), the stub, LiteLLM, and every process of the local Ray cluster (all descendants of
    this process, since address="local" starts them from here), plus the whole machine's busy time."""

    def __init__(self, named: dict[str, int]) -> None:
        import psutil

        self._psutil = psutil
        me = psutil.Process()
        self.groups: dict[str, list[Any]] = {"client": [me]}
        known = {pid: name for name, pid in named.items()}
        for name, pid in named.items():
            try:
                proc = psutil.Process(pid)
                self.groups.setdefault(name, []).extend([proc, *proc.children(recursive=True)])
            except psutil.Error:
                pass
        taken = {p.pid for procs in self.groups.values() for p in procs}
        for proc in me.children(recursive=True):
            if proc.pid in taken or proc.pid in known:
                continue
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            group = next((g for key, g in COMPONENTS if key in cmd), "ray other")
            self.groups.setdefault(group, []).append(proc)

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for group, procs in self.groups.items():
            total = 0.0
            for proc in procs:
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except self._psutil.Error:
                    pass
            out[group] = total
        m = self._psutil.cpu_times()
        out["machine busy"] = m.user + m.system + m.nice + getattr(m, "irq", 0.0) + getattr(m, "softirq", 0.0)
        return out


# ----- driving --------------------------------------------------------------------------------------


def make_call(
    http: Any, url: str, body: dict[str, Any] | None, expect: str | None, prompts: list[str] | None = None
) -> Call:
    """POST `body` (GET when None), its user message cycling through `prompts` when given; returns the
    `coe` timings (with batch_size) and completion tokens."""
    turn = iter(range(10**9))

    async def call() -> dict[str, float] | None:
        payload = body
        if body is not None and prompts:
            text = prompts[next(turn) % len(prompts)]
            payload = {**body, "messages": [{"role": "user", "content": text}]}
        r = await (http.get(url) if payload is None else http.post(url, json=payload))
        if r.status_code != 200:
            raise RuntimeError(f"{url} -> HTTP {r.status_code}: {r.text[:300]}")
        data = r.json()
        info: dict[str, float] = {}
        if "choices" in data:
            content = data["choices"][0]["message"]["content"]
            if expect is not None and content != expect:
                raise RuntimeError(f"{url}: unexpected answer {content!r}")
            info["completion_tokens"] = float((data.get("usage") or {}).get("completion_tokens") or 0)
        timings = (data.get("coe") or data).get("timings_ms")
        if isinstance(timings, dict):
            info.update({k: float(v) for k, v in timings.items()})
        return info

    return call


def paths(
    http: Any,
    bases: dict[str, str],
    model: str,
    params: dict[str, Any],
    expect: str | None,
    prompts: list[str] | None = None,
) -> dict:
    """The same bodies for every path (the same prompt sequence); only `model` differs for coe-auto."""
    messages = [{"role": "user", "content": QUESTION if model == STUB_MODEL else REAL_QUESTION}]
    body = {"model": model, "messages": messages, **params}
    out = {"direct": make_call(http, f"{bases['direct']}/chat/completions", body, expect, prompts)}
    out["coe-name"] = make_call(http, f"{bases['coe']}/v1/chat/completions", body, expect, prompts)
    out["coe-auto"] = make_call(
        http, f"{bases['coe']}/v1/chat/completions", {**body, "model": "auto"}, expect, prompts
    )
    if "litellm" in bases:
        out["litellm"] = make_call(http, f"{bases['litellm']}/v1/chat/completions", body, expect, prompts)
    return out


async def measure(
    calls: dict[str, Call], concurrency: list[int], n: int, rounds: int, meter: CpuMeter | None = None
) -> dict:
    results: dict = {}
    for conc in concurrency:
        for _ in range(rounds):  # alternate paths each round: all see the same background load
            for name, fn in calls.items():
                before = meter.snapshot() if meter else {}
                lats, infos, wall = await drive(fn, n, conc)
                after = meter.snapshot() if meter else {}
                cell = results.setdefault(str(conc), {}).setdefault(
                    name, {"lat": [], "timings": [], "wall": 0.0, "n": 0, "cpu_s": {}}
                )
                cell["lat"] += lats
                cell["timings"] += infos
                cell["wall"] += wall
                cell["n"] += len(lats)
                for k, v in after.items():
                    cell["cpu_s"][k] = cell["cpu_s"].get(k, 0.0) + v - before.get(k, v)
        say(f"concurrency {conc}: done (load average {os.getloadavg()[0]:.2f})")
    return results


def ladder_calls(http: Any, bases: dict[str, str]) -> dict[str, Call]:
    """Concurrency-1 steps that add one piece of the service path at a time."""
    coe, direct = bases["coe"], bases["direct"]
    msgs = [{"role": "user", "content": QUESTION}]
    chat = {"model": STUB_MODEL, "messages": msgs, "max_tokens": 8}
    route_name = {"model": STUB_MODEL, "messages": msgs}
    route_auto = {"model": "auto", "messages": msgs}
    return {
        "direct GET /v1/models": make_call(http, f"{direct}/models", None, None),
        "coe GET /healthz": make_call(http, f"{coe}/healthz", None, None),
        "coe POST /v1/route model=stub": make_call(http, f"{coe}/v1/route", route_name, None),
        "coe POST /v1/route model=auto": make_call(http, f"{coe}/v1/route", route_auto, None),
        "direct POST chat": make_call(http, f"{direct}/chat/completions", chat, "42"),
        "coe POST chat model=stub": make_call(http, f"{coe}/v1/chat/completions", chat, "42"),
        "coe POST chat model=auto": make_call(
            http, f"{coe}/v1/chat/completions", {**chat, "model": "auto"}, "42"
        ),
    }


async def run_stub(
    args: argparse.Namespace, bases: dict[str, str], meter: CpuMeter, prompt_sets: dict[str, list[str]]
) -> tuple[dict, dict]:
    """Per prompt set: the paths at each concurrency; then the ladder (fixed question)."""
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=128)
    results: dict = {}
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        steps = ladder_calls(http, bases)
        for kind, prompts in prompt_sets.items():
            calls = paths(http, bases, STUB_MODEL, {"max_tokens": 8}, "42", prompts)
            for fn in calls.values():  # warm-up: connections, handles, the embedder
                await drive(fn, 40, 8)
            say(f"paths, {kind} prompts ({len(prompts)})")
            results[kind] = await measure(calls, args.concurrency, args.requests, args.rounds, meter)
        for fn in steps.values():
            await drive(fn, 20, 4)
        say("ladder (concurrency 1)")
        ladder = await measure(steps, [1], args.ladder_requests, args.rounds) if args.ladder_requests else {}
    return results, ladder.get("1", {})


async def run_real(args: argparse.Namespace, bases: dict[str, str]) -> dict:
    """Concurrency 1, the paths interleaved request by request (a slow, noisy CPU expert)."""
    import httpx

    params = {"max_tokens": args.max_tokens, "temperature": 0.0, "seed": 0}
    async with httpx.AsyncClient(timeout=600) as http:
        calls = paths(http, bases, REAL_MODEL, params, None)
        for fn in calls.values():  # warm-up (first generation pays one-off costs)
            await fn()
        results: dict = {name: {"lat": [], "timings": [], "wall": 0.0, "n": 0} for name in calls}
        for _ in range(args.real_requests):
            for name, fn in calls.items():
                lats, infos, wall = await drive(fn, 1, 1)
                cell = results[name]
                cell["lat"] += lats
                cell["timings"] += infos
                cell["wall"] += wall
                cell["n"] += 1
    return {"1": results}


# ----- reporting ------------------------------------------------------------------------------------


def cell_stats(c: dict) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "n": c["n"],
        "p50_ms": pct(c["lat"], 50),
        "p99_ms": pct(c["lat"], 99),
        "mean_ms": sum(c["lat"]) / len(c["lat"]) * 1000,
        "rps": c["n"] / c["wall"],
    }
    if c.get("cpu_s"):  # CPU ms per request by component; machine busy as a share of all cores
        cpu = {k: v * 1000 / c["n"] for k, v in c["cpu_s"].items() if k != "machine busy"}
        cell["cpu_ms_per_request"] = cpu
        busy = c["cpu_s"].get("machine busy", 0.0) / (c["wall"] * (os.cpu_count() or 1))
        cell["machine_busy_share"] = busy
        cell["ours_busy_share"] = sum(cpu.values()) * c["n"] / 1000 / (c["wall"] * (os.cpu_count() or 1))
    infos = [t for t in c["timings"] if t]
    if infos:  # medians of the `coe.timings_ms` stages (ms; embed/classify are per-query shares)
        cell["info_p50"] = {
            k: statistics.median(t[k] for t in infos if k in t) for k in STAGES if any(k in t for t in infos)
        }
    return cell


def summarise(raw: dict) -> tuple[dict, list[list[Any]]]:
    """Per concurrency and path: n, p50, p99, mean, req/s, and each path's ratio to `direct`."""
    rows: list[list[Any]] = []
    out: dict = {}
    for conc, cells_raw in raw.items():
        cells = {name: cell_stats(c) for name, c in cells_raw.items()}
        d = cells["direct"]
        for name, c in cells.items():
            if name == "direct":
                rows.append([conc, name, c["n"], c["p50_ms"], c["p99_ms"], c["rps"], "", "", ""])
                continue
            ratio = {
                "p50": c["p50_ms"] / d["p50_ms"],
                "p99": c["p99_ms"] / d["p99_ms"],
                "rps": c["rps"] / d["rps"],
                "added_p50_ms": c["p50_ms"] - d["p50_ms"],
            }
            c["ratio_over_direct"] = ratio
            rows.append(
                [conc, name, c["n"], c["p50_ms"], c["p99_ms"], c["rps"],
                 f"{ratio['p50']:.2f}x", f"{ratio['rps']:.2f}x", f"{ratio['added_p50_ms']:+.2f}"]
            )  # fmt: skip
        out[conc] = cells
    return out, rows


HEADERS = ["conc", "path", "n", "p50 ms", "p99 ms", "req/s", "p50/direct", "req/s/direct", "+p50 ms"]


def breakdown(cells: dict) -> list[list[Any]]:
    """Where a CoE request's time goes (p50s at one concurrency), from the `coe.timings_ms` field.
    embed/classify are reported per query; a request waits for its whole batch: (embed+classify)*batch."""
    rows: list[list[Any]] = []
    direct = cells["direct"]["p50_ms"]
    for name in ("coe-name", "coe-auto"):
        c = cells.get(name)
        if not c:
            continue
        t = c.get("info_p50", {})
        batch = t.get("batch_size", 0.0)
        router_wall = (t.get("embed", 0.0) + t.get("classify", 0.0)) * batch + t.get("policy", 0.0)
        expert = t.get("expert", float("nan"))
        rows.append(
            [name, c["p50_ms"], direct, expert, t.get("embed", 0.0), t.get("classify", 0.0), batch,
             router_wall, c["p50_ms"] - expert - router_wall]
        )  # fmt: skip
    return rows


BREAKDOWN_HEADERS = [
    "path", "e2e", "direct", "pool->stub", "embed/q", "classify/q", "batch", "router work",
    "rest: proxy, hops, JSON, pydantic, queueing",
]  # fmt: skip


def cpu_rows(cells: dict) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for name, c in cells.items():
        cpu = c.get("cpu_ms_per_request")
        if not cpu:
            continue
        rows.append(
            [name, *(cpu.get(k, 0.0) for k in CPU_COLUMNS), sum(cpu.values()),
             f"{c['ours_busy_share']:.0%}", f"{c['machine_busy_share']:.0%}"]
        )  # fmt: skip
    return rows


CPU_HEADERS = ["path", *CPU_COLUMNS, "total", "ours busy", "machine busy"]


#: each ladder step against the step it adds to, and what the difference is
LADDER_BASE = {
    "coe GET /healthz": ("direct GET /v1/models", "Serve HTTP proxy + ingress replica (FastAPI, middleware)"),
    "coe POST /v1/route model=stub": ("coe GET /healthz", "body, JSON, pydantic, auth, decision JSON"),
    "coe POST /v1/route model=auto": ("coe POST /v1/route model=stub", "router hop + embed/classify/decide"),
    "coe POST chat model=stub": ("coe POST /v1/route model=stub", "gateway hop + pool + stub call"),
    "coe POST chat model=auto": ("coe POST chat model=stub", "routing, in the chat path"),
}


def ladder_rows(cells: dict) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for name, c in cells.items():
        base, what = LADDER_BASE.get(name, ("", ""))
        added = f"{c['p50_ms'] - cells[base]['p50_ms']:+.2f}" if base in cells else ""
        rows.append([name, c["n"], c["p50_ms"], c["p99_ms"], added, f"{base}: {what}" if base else ""])
    return rows


LADDER_HEADERS = ["step (concurrency 1)", "n", "p50 ms", "p99 ms", "+p50 ms", "added to: what"]


# ----- main -----------------------------------------------------------------------------------------


def targets(cells: dict[str, dict], floor_p50: float, split_cells: dict | None) -> list[list[Any]]:
    """The issue-13 targets as ratios of this run (short chat prompts): by-name added p50 vs LiteLLM's
    (concurrency 1); auto added p50 vs by-name + encoder floor + 5 ms (concurrency 1); auto throughput vs
    by name (concurrency 16); one-hop auto vs split auto throughput (concurrency 16)."""
    rows: list[list[Any]] = []
    one, c16 = cells.get("1", {}), cells.get("16", {})

    def added(c: dict, name: str) -> float:
        return c[name]["p50_ms"] - c["direct"]["p50_ms"] if name in c else float("nan")

    if "litellm" in one:
        ours, theirs = added(one, "coe-name"), added(one, "litellm")
        rows.append(["by-name added p50 <= LiteLLM added p50", f"{ours:+.2f} vs {theirs:+.2f} ms",
                     f"{ours / theirs:.2f}x", "met" if ours <= theirs else "not met"])  # fmt: skip
    if one:
        auto, name = added(one, "coe-auto"), added(one, "coe-name")
        bound = name + floor_p50 + 5.0
        rows.append(["auto added p50 <= by-name + encoder floor + 5 ms", f"{auto:+.2f} vs {bound:.2f} ms",
                     f"{auto - name:.2f} ms over by-name (floor {floor_p50:.2f})",
                     "met" if auto <= bound else "not met"])  # fmt: skip
    if c16:
        r = c16["coe-auto"]["rps"] / c16["coe-name"]["rps"]
        got = f"{c16['coe-auto']['rps']:.1f} vs {c16['coe-name']['rps']:.1f}"
        rows.append(
            ["auto req/s >= 0.6 x by-name (conc 16)", got, f"{r:.2f}x", "met" if r >= 0.6 else "not met"]
        )
        if split_cells and "16" in split_cells:
            r2 = c16["coe-auto"]["rps"] / split_cells["16"]["coe-auto"]["rps"]
            rows.append(["auto req/s onehop >= 2.5 x split (conc 16)", f"{c16['coe-auto']['rps']:.1f} vs "
                         f"{split_cells['16']['coe-auto']['rps']:.1f}", f"{r2:.2f}x",
                         "met" if r2 >= 2.5 else "not met"])  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=80, help="stub requests per path per round")
    ap.add_argument("--ladder-requests", type=int, default=60, help="per step per round; 0 = no ladder")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16, 32])
    ap.add_argument("--topology", nargs="+", default=["onehop", "split"], choices=["onehop", "split"])
    ap.add_argument("--prompts", nargs="+", default=["chat", "mmlu"], choices=["chat", "mmlu"])
    ap.add_argument("--real-requests", type=int, default=4, help="real-expert requests per path")
    ap.add_argument("--max-tokens", type=int, default=16, help="real-expert max_tokens")
    ap.add_argument("--no-real", action="store_true", help="skip the SmolLM2 part")
    ap.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Settings override for the CoE stack, e.g. --set torch_threads=1 --set batch_wait_s=0",
    )
    args = ap.parse_args()
    overrides: dict[str, Any] = dict(kv.split("=", 1) for kv in args.set)
    offline_env()

    from deploy.ops.local import start
    from deploy.settings import Settings

    mach = machine()
    say(f"load average at start: {mach['loadavg_at_start']}")
    lite_ver = None if args.no_litellm else litellm_version()
    lite_note = ""
    if not args.no_litellm and lite_ver is None:
        lite_note = f"skipped: {LITELLM_BIN} not found (run `bash bench/peers_litellm.sh`)"
        say(f"LiteLLM {lite_note}")
    prompt_sets = {kind: load_prompts(kind) for kind in args.prompts}

    tmp = Path(tempfile.mkdtemp(prefix="coe-bench-service-"))
    stub_proc = lite_proc = None
    real_server = stack = None
    timeline: dict[str, float] = {}
    raw_stub: dict = {}
    raw_ladder: dict = {}
    raw_real: dict = {}
    floor: dict[str, dict[str, float]] = {}
    threads = 0
    try:
        t = time.monotonic()
        stub_proc, stub_base = start_stub()
        if not args.no_real:
            from experts.local_server import start_local_server

            say("starting the SmolLM2 server (converts the GGUF into .coe/models on first use)...")
            real_server = start_local_server(0, log_path=tmp / "local-expert.log")
            timeline["local_expert_start_s"] = time.monotonic() - t
        bases: dict[str, str] = {"direct": stub_base}
        if lite_ver is not None:
            models = {STUB_MODEL: stub_base}
            if real_server is not None:
                models[REAL_MODEL] = real_server.base_url
            t = time.monotonic()
            lite_proc, lite_base, _ = start_litellm(models, tmp)
            timeline["litellm_start_s"] = time.monotonic() - t
            bases["litellm"] = lite_base
            say(f"LiteLLM {lite_ver} ready at {lite_base}")
        for topology in args.topology:
            url = f"sqlite:///{tmp / f'coe-{topology}.db'}"
            categories = seed_registry(url, stub_base, real_server.base_url if real_server else None)
            settings = Settings(
                database_url=url,
                data_dir=tmp,
                local_experts=False,
                port=0,
                health_interval_s=0,  # no background health probes during the run
                registry_poll_s=1.0,
                topology=topology,
                **overrides,
            )
            threads = settings.torch_threads or min(os.cpu_count() or 1, 4)
            t = time.monotonic()
            for attempt in (1, 2):  # port=0 picks a free port another process may take before Serve binds
                try:
                    stack = start(settings, say, ready_timeout_s=300)
                    break
                except Exception as exc:
                    if attempt == 2 or "Failed to bind" not in str(exc):
                        raise
                    say(f"Serve could not bind its port ({exc.__class__.__name__}); retrying on another one")
            assert stack is not None
            timeline[f"coe_start_{topology}_s"] = time.monotonic() - t
            bases["coe"] = stack.base
            say(f"part 1 ({topology}): instant-answer stub")
            t = time.monotonic()
            named = {"stub": stub_proc.pid}
            if lite_proc is not None:
                named["litellm"] = lite_proc.pid
            if real_server is not None:
                named["local expert"] = real_server.process.pid
            meter = CpuMeter(named)
            raw_stub[topology], raw_ladder[topology] = asyncio.run(run_stub(args, bases, meter, prompt_sets))
            timeline[f"stub_part_{topology}_s"] = time.monotonic() - t
            if real_server is not None and topology == args.topology[0]:
                say(f"part 2 ({topology}): real SmolLM2 expert (routing switched to it)")
                remap_to(url, categories, STUB_MODEL, REAL_MODEL)
                wait_routed_to(stack.base, REAL_MODEL)
                real_bases = {**bases, "direct": real_server.base_url}
                t = time.monotonic()
                raw_real = asyncio.run(run_real(args, real_bases))
                timeline["real_part_s"] = time.monotonic() - t
            stack.close()
            stack = None
        say(f"encoder floor (in process, torch, {threads} threads, batch 1)")
        for kind, prompts in prompt_sets.items():
            floor[kind] = encoder_floor(prompts, threads)
    finally:
        if stack is not None:
            stack.close()
        stop(lite_proc)
        if real_server is not None:
            real_server.stop()
        stop(stub_proc)
    load_end = list(os.getloadavg())
    shutil.rmtree(tmp, ignore_errors=True)  # on success only: a failed run leaves its logs there

    stub_cells: dict = {}
    ladder_cells: dict = {}
    target_rows: dict[str, list[list[Any]]] = {}
    for topology in raw_stub:
        for kind, raw in raw_stub[topology].items():
            cells, rows = summarise(raw)
            stub_cells.setdefault(topology, {})[kind] = cells
            print(
                f"\nService overhead ({topology}, {kind} prompts) -- instant stub; CoE and LiteLLM vs direct"
            )
            print(table(HEADERS, rows))
            for conc in cells:
                print(f"\nWhere the time goes ({topology}, {kind}, concurrency {conc}; p50 ms):")
                print(table(BREAKDOWN_HEADERS, breakdown(cells[conc])))
            for conc in cells:
                print(f"\nCPU ms per request by process ({topology}, {kind}, concurrency {conc}):")
                print(table(CPU_HEADERS, cpu_rows(cells[conc])))
        if raw_ladder.get(topology):
            ladder_cells[topology] = {name: cell_stats(c) for name, c in raw_ladder[topology].items()}
            print(f"\nThe service path one piece at a time ({topology}, instant stub, concurrency 1):")
            print(table(LADDER_HEADERS, ladder_rows(ladder_cells[topology])))
    for kind, f in floor.items():
        print(
            f"\nencoder floor, {kind} prompts: p50 {f['p50_ms']:.2f} ms, "
            f"p99 {f['p99_ms']:.2f} ms (n={f['n']})"
        )
    if "onehop" in stub_cells:
        for kind in stub_cells["onehop"]:
            split = stub_cells.get("split", {}).get(kind)
            rows = targets(stub_cells["onehop"][kind], floor.get(kind, {}).get("p50_ms", float("nan")), split)
            target_rows[kind] = rows
            print(f"\nIssue-13 targets ({kind} prompts, one-hop, ratios of this run):")
            print(table(["target", "measured", "ratio", "verdict"], rows))
    real_cells: dict = {}
    if raw_real:
        real_cells, real_rows = summarise(raw_real)
        print(
            f"\nReal expert -- SmolLM2-135M on CPU, max_tokens={args.max_tokens}, temperature 0, "
            "concurrency 1, paths interleaved per request"
        )
        print(table(HEADERS, real_rows))
        toks = {k: c.get("info_p50", {}).get("completion_tokens") for k, c in real_cells["1"].items()}
        print(f"completion tokens (median per path): {toks}")
    if lite_note:
        print(f"\nLiteLLM {lite_note}")
    print(f"\nload average: start {mach['loadavg_at_start']}, end {[round(x, 2) for x in load_end]}")
    out = {
        "benchmark": "service_overhead",
        "machine": {**mach, "loadavg_at_end": load_end},
        "setup": {
            "stub": "FastAPI+uvicorn, 1 worker, own process, fixed completion (bench/gateway_overhead.py)",
            "coe": "deploy.ops.local.start: local Ray, Serve HTTP proxy, the app in each --topology, "
            "1 replica each, default settings except health_interval_s=0 and registry_poll_s=1",
            "settings_overrides": overrides,
            "ray_serve_env": {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")},
            "litellm": lite_ver or lite_note or "not run",
            "client": "httpx.AsyncClient in the benchmark process, same for every path",
            "prompts": {k: len(v) for k, v in prompt_sets.items()},
            "requests_per_path_per_round": args.requests,
            "rounds": args.rounds,
            "real_requests_per_path": 0 if args.no_real else args.real_requests,
            "real_max_tokens": args.max_tokens,
            "timeline_s": {k: round(v, 2) for k, v in timeline.items()},
        },
        "results": {
            "stub": stub_cells,
            "ladder": ladder_cells,
            "real": real_cells,
            "encoder_floor": floor,
            "targets": target_rows,
        },
    }
    print(f"\nwrote {write('service_overhead', out)}")


if __name__ == "__main__":
    main()
