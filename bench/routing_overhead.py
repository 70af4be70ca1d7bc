"""Routing overhead: the router's per-query decision cost vs the raw sentence-transformers encoder
(the floor).

Same texts, same process, same embedder weights. Reports batch-1 latency p50/p99 of
  * floor:  SentenceTransformerEmbedder().embed([text])
  * router: Router.probabilities([text])
            + Router.decide(row, snapshot, load={}, RoutingOptions(policy="category"))
and throughput (texts/s) at 1, 8 and 32 texts per call, plus the router's accuracy on the texts' labels.
Texts: 200 MMLU-Pro questions from the artifact's held-out validation split (eval.training.train.split,
seed 0,
val_fraction 0.1 -- the split the bundled artifact was trained with), so accuracy is out-of-sample.

Peer: the aurelio `semantic-router` library (IndexedRouter + its local HuggingFaceEncoder on the same
MiniLM folder, one route per category built from the artifact's training split, --peer-utterances per
route), run in its own venv (.venv-peers/semantic-router, made by bench/peers.sh) through
bench/peers/semantic_router_peer.py, on the same 200 texts; skipped with a message when that venv is
missing. Each process measures its own encoder floor, and each router is reported as a ratio to the
floor measured in its own process.

Usage: python bench/routing_overhead.py [--n 200] [--artifact router/artifacts/default]
       [--peer-utterances 100] [--no-peers]
Writes bench/results/routing_overhead.json. The Ray Serve path (concurrency, replicas) is
bench/router_serve.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, pct, table, write  # noqa: E402

from router.types import ExpertInfo, RegistrySnapshot, RoutingOptions  # noqa: E402

PEER_VENV = ROOT / ".venv-peers" / "semantic-router"
PEER_SCRIPT = ROOT / "bench" / "peers" / "semantic_router_peer.py"


def snapshot(categories: tuple[str, ...]) -> RegistrySnapshot:
    """Six experts, like the bundled local personas: five specialists plus a generalist."""
    groups = {
        "math": ("math", "physics", "engineering", "chemistry"),
        "code": ("computer science",),
        "medical": ("health", "biology", "psychology"),
        "humanities": ("law", "history", "philosophy", "economics", "business"),
    }
    experts = {f"x-{g}": ExpertInfo(name=f"x-{g}", base_url="http://127.0.0.1:9/v1", model=g) for g in groups}
    experts["x-general"] = ExpertInfo(
        name="x-general", base_url="http://127.0.0.1:9/v1", model="general", tags=("generalist",)
    )
    cmap = {c: tuple(f"x-{g}" for g, cs in groups.items() if c in cs) + ("x-general",) for c in categories}
    return RegistrySnapshot(revision=1, experts=experts, category_experts=cmap)


def run_semantic_router_peer(
    train: list[Any], test_texts: list[str], test_labels: list[str], per_route: int, threads: int
) -> dict[str, Any]:
    """Run bench/peers/semantic_router_peer.py in its own venv; {"skipped": why} when it cannot run."""
    py = PEER_VENV / "bin" / "python"
    if not (py.exists() and (PEER_VENV / ".installed").exists()):
        return {"skipped": f"{PEER_VENV} is missing or incomplete; run `bash bench/peers.sh` to create it"}
    from router.embedder import resolve_model

    by_label: dict[str, list[str]] = defaultdict(list)
    for e in train:
        by_label[e.label].append(e.text)
    rng = random.Random(0)
    utterances = []
    for label in sorted(by_label):
        texts = by_label[label]
        chosen = rng.sample(texts, per_route) if 0 < per_route < len(texts) else texts
        utterances += [[t, label] for t in chosen]
    model_path, _ = resolve_model("default")  # the project's MiniLM folder, read by both venvs
    with tempfile.TemporaryDirectory(prefix="coe-peer-") as tmp:
        data = Path(tmp) / "data.json"
        data.write_text(
            json.dumps(
                {"train": utterances, "test": [list(p) for p in zip(test_texts, test_labels, strict=True)]}
            )
        )
        cmd = [
            str(py),
            str(PEER_SCRIPT),
            "--data",
            str(data),
            "--model",
            model_path,
            "--threads",
            str(threads),
        ]
        print(
            f"\nsemantic-router peer: {len(utterances)} utterances over {len(by_label)} routes ...",
            flush=True,
        )
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"skipped": "the semantic-router peer ran past 900 s"}
        took = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return {"skipped": f"the semantic-router peer failed (exit {proc.returncode}): {tail}"}
    out = json.loads(lines[-1])
    out["wall_s"] = took
    return out


def print_peer_table(peer: dict[str, Any], lat: dict[str, list[float]], acc: float, n_train: int) -> None:
    pl = peer["latency_ms"]
    floor_p50, floor_p99 = pct(lat["encoder"], 50), pct(lat["encoder"], 99)
    pf50, pf99 = pl["floor_clean"]["p50"], pl["floor_clean"]["p99"]

    def peer_row(name: str, key: str, accuracy: Any) -> list[Any]:
        return [name, pl[key]["p50"], pl[key]["p99"], accuracy, pl[key]["p50"] / pf50, pl[key]["p99"] / pf99]

    rows = [
        ["this process: encoder floor (sentence-transformers)", floor_p50, floor_p99, "-", 1.0, 1.0],
        [
            f"this process: CoE router (trained on {n_train} texts)",
            pct(lat["router"], 50),
            pct(lat["router"], 99),
            acc,
            pct(lat["router"], 50) / floor_p50,
            pct(lat["router"], 99) / floor_p99,
        ],
        peer_row("peer process: encoder floor, before semantic-router runs", "floor_clean", "-"),
        peer_row("peer process: encoder floor, between semantic-router calls", "floor", "-"),
        peer_row("peer process: semantic-router HuggingFaceEncoder only", "sr_encoder", "-"),
        peer_row(
            f"peer process: semantic-router {peer['version']} IndexedRouter, {peer['utterances']} utterances",
            "sr_router",
            peer["accuracy"],
        ),
    ]
    print(
        f"\nSide by side, batch 1 on the same {peer['n_test']} texts "
        "(ms per query; ratios to the encoder floor measured in the same process, for the peer the "
        "floor taken before semantic-router's first call)"
    )
    print(table(["path", "p50", "p99", "top-1 accuracy", "p50 / floor", "p99 / floor"], rows))
    print(
        f"semantic-router: {peer['routes']} routes, {peer['utterances']} utterances sampled from the same "
        f"training split, index top_k={peer['router']['top_k']} {peer['router']['aggregation']} aggregation, "
        f"no threshold ({peer['none_routes']} None routes, counted wrong); torch threads "
        f"{peer['torch_threads']}; build {peer['setup_s']['build_router']:.1f} s. Once semantic-router has "
        "run, it encodes in a worker thread and the floor in its process slows down (second peer row); "
        "the two processes run one after the other, so compare ratios, not absolute ms across processes"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--artifact", default=str(ROOT / "router" / "artifacts" / "default"))
    ap.add_argument("--budget-s", type=float, default=6.0, help="time cap per path per batch size")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the texts for the batch-1 latency")
    ap.add_argument(
        "--peer-utterances",
        type=int,
        default=100,
        help="semantic-router utterances per route, sampled from the training split (0 = all of it)",
    )
    ap.add_argument("--no-peers", action="store_true", help="skip the semantic-router comparison")
    args = ap.parse_args()

    from eval.data.datasets import load_mmlu_pro
    from eval.training.train import split
    from router.core import Router, artifact_embedder

    info = machine()  # before the work, so its load average is the one at the start
    t0 = time.perf_counter()
    train, val = split(load_mmlu_pro(), 0.1, 0)
    rng = random.Random(0)
    sample = rng.sample(val, min(args.n, len(val)))
    texts = [e.text for e in sample]
    labels = [e.label for e in sample]
    load_data_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    # the artifact's own encoder (the bundled MiniLM, with the artifact's fine-tuned layers when it has
    # them: router/tuned_encoder.py), sentence-transformers on torch
    emb = artifact_embedder(args.artifact)
    load_emb_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    router = Router.load(
        args.artifact, embedder=emb
    )  # same encoder instance: the only difference is the router
    load_router_s = time.perf_counter() - t0
    snap = snapshot(router.categories)
    opts = RoutingOptions(policy="category")

    def floor_call(batch: list[str]) -> None:
        emb.embed(batch)

    def router_call(batch: list[str]) -> list:
        probs = router.probabilities(batch)
        return [router.decide(row, snap, {}, opts) for row in probs]

    for _ in range(3):  # warm-up
        floor_call(texts[:1])
        router_call(texts[:1])
    floor_call(texts[:32])
    router_call(texts[:32])

    # batch-1 latency, interleaved so both see the same background load
    lat = {"encoder": [], "router": []}
    stage = {"embed": [], "classify": [], "decide": []}
    for _ in range(args.repeat):
        for t in texts:
            a = time.perf_counter()
            floor_call([t])
            b = time.perf_counter()
            probs = router.probabilities([t])
            c = time.perf_counter()
            router.decide(probs[0], snap, {}, opts)
            d = time.perf_counter()
            lat["encoder"].append(b - a)
            lat["router"].append(d - b)
            stage["embed"].append(router.last_timings_ms["embed"] / 1000)
            stage["classify"].append(router.last_timings_ms["classify"] / 1000)
            stage["decide"].append(d - c)

    def padded_call(batch: list[str]) -> None:
        emb.embed_padded(batch)  # one padded batch: the embedder before length buckets

    # batched throughput; the paths take turns batch by batch, so all of them see the same load
    thr: dict[str, dict[int, float]] = {"encoder": {}, "router": {}, "encoder_padded": {}}
    for bs in (1, 8, 32):
        batches = [texts[i : i + bs] for i in range(0, len(texts), bs)]
        paths = [("encoder", floor_call), ("router", router_call)]
        if bs > 1:
            paths.append(("encoder_padded", padded_call))
        spent = dict.fromkeys((name for name, _ in paths), 0.0)
        done = dict.fromkeys(spent, 0)
        for k, bt in enumerate(batches):
            for name, fn in paths if k % 2 == 0 else paths[::-1]:
                a = time.perf_counter()
                fn(bt)
                spent[name] += time.perf_counter() - a
                done[name] += len(bt)
            if sum(spent.values()) > args.budget_s * len(paths):  # the VM is shared; keep the run short
                break
        for name in spent:
            thr[name][bs] = done[name] / spent[name]

    # accuracy (top-1 category vs label) and the category policy's decisions
    decisions = []
    correct = 0
    fallback = 0
    for i in range(0, len(texts), 32):
        probs = router.probabilities(texts[i : i + 32])
        for row, lab in zip(probs, labels[i : i + 32], strict=True):
            d = router.decide(row, snap, {}, opts)
            decisions.append(d)
            correct += d.categories[0][0] == lab
            fallback += d.fallback
    acc = correct / len(texts)
    majority = max(labels.count(c) for c in set(labels)) / len(labels)

    lat_rows = []
    for name in ("encoder", "router"):
        lat_rows.append(
            [
                name,
                len(lat[name]),
                pct(lat[name], 50),
                pct(lat[name], 99),
                sum(lat[name]) / len(lat[name]) * 1000,
            ]
        )
    ratio_p50 = pct(lat["router"], 50) / pct(lat["encoder"], 50)
    ratio_p99 = pct(lat["router"], 99) / pct(lat["encoder"], 99)
    print(f"\nRouting overhead -- {len(texts)} held-out MMLU-Pro questions, artifact {router.version}")
    print("\nBatch-1 latency (ms per query)")
    print(table(["path", "n", "p50", "p99", "mean"], lat_rows))
    print(f"router/encoder ratio: p50 {ratio_p50:.3f}x, p99 {ratio_p99:.3f}x")
    print(
        "router stages p50 (ms): embed {:.3f}, classify {:.3f}, decide {:.3f}".format(
            pct(stage["embed"], 50), pct(stage["classify"], 50), pct(stage["decide"], 50)
        )
    )
    print("\nThroughput, in process (texts/s; texts per call = batch)")
    print(
        table(
            ["batch", "encoder", "router", "router/encoder", "encoder one padded batch", "buckets/padded"],
            [
                [
                    bs,
                    thr["encoder"][bs],
                    thr["router"][bs],
                    thr["router"][bs] / thr["encoder"][bs],
                    thr["encoder_padded"].get(bs, thr["encoder"][bs]),
                    thr["encoder"][bs] / thr["encoder_padded"].get(bs, thr["encoder"][bs]),
                ]
                for bs in (1, 8, 32)
            ],
        )
    )
    print(
        "encoder = SentenceTransformerEmbedder.embed (length buckets); one padded batch = embed_padded "
        "(all texts of the call padded to the longest, the embedder before buckets); at batch 1 they are "
        "the same call"
    )
    print(
        f"\nRouter top-1 category accuracy: {acc:.3f} (majority class {majority:.3f}); "
        f"generalist fallbacks {fallback}/{len(texts)}"
    )

    peer: dict[str, Any] = {"skipped": "--no-peers"}
    if not args.no_peers:
        peer = run_semantic_router_peer(train, texts, labels, args.peer_utterances, emb.threads)
    if "skipped" in peer:
        print(f"\nsemantic-router comparison skipped: {peer['skipped']}")
    else:
        print_peer_table(peer, lat, acc, len(train))

    info["loadavg_at_end"] = list(os.getloadavg())
    print(
        "\nload average (1, 5, 15 min) at start "
        + ", ".join(f"{x:.2f}" for x in info["loadavg_at_start"])
        + "; at end "
        + ", ".join(f"{x:.2f}" for x in info["loadavg_at_end"])
    )
    out = {
        "benchmark": "routing_overhead",
        "machine": info,
        "artifact": {"path": args.artifact, "version": router.version},
        "embedder": emb.name,
        "texts": {
            "source": "mmlu-pro eval_results, held-out val split (seed 0, 0.1), random sample seed 0",
            "n": len(texts),
        },
        "setup_s": {"load_data": load_data_s, "load_embedder": load_emb_s, "load_router": load_router_s},
        "batch1_latency_ms": {
            name: {
                "p50": pct(lat[name], 50),
                "p99": pct(lat[name], 99),
                "mean": sum(lat[name]) / len(lat[name]) * 1000,
                "n": len(lat[name]),
            }
            for name in lat
        },
        "router_stage_p50_ms": {k: pct(v, 50) for k, v in stage.items()},
        "ratio_router_over_encoder": {"p50": ratio_p50, "p99": ratio_p99},
        "throughput_texts_per_s": {name: {str(k): v for k, v in d.items()} for name, d in thr.items()},
        "throughput_ratio_router_over_encoder": {
            str(bs): thr["router"][bs] / thr["encoder"][bs] for bs in (1, 8, 32)
        },
        "accuracy": {
            "top1": acc,
            "majority_class": majority,
            "fallbacks": fallback,
            "policy": "category",
            "threshold": opts.threshold,
        },
        "semantic_router": peer,
    }
    print(f"\nwrote {write('routing_overhead', out)}")


if __name__ == "__main__":
    main()
