"""The aurelio `semantic-router` peer, run INSIDE .venv-peers/semantic-router (see bench/peers.sh),
never in the project venv. bench/routing_overhead.py writes the input and calls this via subprocess.

Input (--data): JSON {"train": [[text, label], ...], "test": [[text, label], ...]}.
Routes: one `Route` per label, its utterances = that label's training texts (the caller decides how
many). Encoder: semantic-router's local `HuggingFaceEncoder` (transformers AutoModel + mean pooling)
pointed at the all-MiniLM-L6-v2 folder (--model). Router: `IndexedRouter` with its defaults
(LocalIndex, top_k=5 nearest utterances, mean aggregation per route), no confidence threshold, so it
always names its best route; a None route still counts as wrong.

Measured on the test texts, batch 1:
  * floor_clean:  sentence_transformers.SentenceTransformer(--model).encode([text]) (the CoE floor),
                  alone, before the router's first call (see the comment in main)
then interleaved so these three see the same background load:
  * floor:        the same call again
  * sr_encoder:   HuggingFaceEncoder([text]) (semantic-router's own encoder, nothing else)
  * sr_router:    router(text) (the public sync call: encode + index query + choose)
Prints one JSON object on stdout (the last line); progress goes to stderr.

Usage (from the repo root):
  .venv-peers/semantic-router/bin/python bench/peers/semantic_router_peer.py --data in.json --model DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)


def say(msg: str) -> None:
    print(f"[semantic-router peer] {msg}", file=sys.stderr, flush=True)


def pct(samples_s: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(samples_s) * 1000.0, q)) if samples_s else float("nan")


def summary(samples_s: list[float]) -> dict[str, float]:
    return {
        "p50": pct(samples_s, 50),
        "p99": pct(samples_s, 99),
        "mean": sum(samples_s) / len(samples_s) * 1000 if samples_s else float("nan"),
        "n": len(samples_s),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="JSON {train: [[text, label]], test: [[text, label]]}")
    ap.add_argument("--model", required=True, help="the all-MiniLM-L6-v2 folder")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--aggregation", default="mean", choices=["mean", "max", "sum"])
    ap.add_argument(
        "--build",
        default="sorted",
        choices=["sorted", "library"],
        help="sorted: embed the utterances in length-sorted batches into a LocalIndex, then "
        "IndexedRouter(index=...); library: IndexedRouter(routes=...) embeds them itself (slower)",
    )
    args = ap.parse_args()

    import numpy as np
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    import semantic_router
    from semantic_router import IndexedRouter, Route
    from semantic_router.encoders import HuggingFaceEncoder
    from sentence_transformers import SentenceTransformer

    data = json.loads(open(args.data, encoding="utf-8").read())
    train = [(str(t), str(lab)) for t, lab in data["train"]]
    test = [(str(t), str(lab)) for t, lab in data["test"]]
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in train:
        by_label[label].append(text)

    t0 = time.perf_counter()
    encoder = HuggingFaceEncoder(name=args.model, device="cpu")
    floor_model = SentenceTransformer(args.model, device="cpu")
    load_s = time.perf_counter() - t0

    routes = [Route(name=label, utterances=texts) for label, texts in sorted(by_label.items())]
    say(f"building IndexedRouter: {len(routes)} routes, {len(train)} utterances ({args.build} build)")
    t0 = time.perf_counter()
    if args.build == "library":
        router = IndexedRouter(encoder=encoder, routes=routes, top_k=args.top_k, aggregation=args.aggregation)
    else:
        # Same encoder, same vectors, same index, only the order of the build-time encoder calls
        # differs: the library embeds every utterance in route order, 32 at a time, each batch
        # padded to its longest text; sorting by length first cuts that padding several-fold.
        # IndexedRouter then reads its routes from the pre-filled index (a documented path).
        from semantic_router.index import LocalIndex

        items = [(r.name, u) for r in routes for u in r.utterances]
        order = sorted(range(len(items)), key=lambda i: len(items[i][1]))
        vectors: list[list[float]] = [[] for _ in items]
        for start in range(0, len(order), 32):
            chunk = order[start : start + 32]
            for i, vec in zip(chunk, encoder([items[i][1] for i in chunk]), strict=True):
                vectors[i] = vec
        index = LocalIndex()
        index.add(
            embeddings=vectors,
            routes=[name for name, _ in items],
            utterances=[u for _, u in items],
            metadata_list=[{} for _ in items],
        )
        router = IndexedRouter(encoder=encoder, index=index, top_k=args.top_k, aggregation=args.aggregation)
    if sorted(r.name for r in router.routes) != sorted(by_label):
        raise SystemExit("the router does not hold every route")
    build_s = time.perf_counter() - t0
    say(f"built in {build_s:.1f}s")

    texts = [t for t, _ in test]

    def floor(text: str) -> None:
        floor_model.encode([text], show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=True)

    # The floor on its own first: semantic-router's first call starts its background event loop,
    # and from then on it encodes in a worker thread whose OpenMP team competes with this thread's
    # (measured here: the main-thread floor then runs ~25% slower, and not with
    # OMP_WAIT_POLICY=PASSIVE). So the clean floor is taken before any router call.
    for t in texts[:3]:
        floor(t)
    clean: list[float] = []
    for text in texts:
        a = time.perf_counter()
        floor(text)
        clean.append(time.perf_counter() - a)

    for t in texts[:3]:  # warm-up
        floor(t)
        encoder([t])
        router(t)

    lat: dict[str, list[float]] = {"floor": [], "sr_encoder": [], "sr_router": []}
    picks: list[str | None] = []
    for text in texts:
        a = time.perf_counter()
        floor(text)
        b = time.perf_counter()
        encoder([text])
        c = time.perf_counter()
        choice = router(text)
        d = time.perf_counter()
        lat["floor"].append(b - a)
        lat["sr_encoder"].append(c - b)
        lat["sr_router"].append(d - c)
        picks.append(getattr(choice, "name", None))

    labels = [lab for _, lab in test]
    correct = sum(p == lab for p, lab in zip(picks, labels, strict=True))
    out = {
        "peer": "semantic-router",
        "version": getattr(semantic_router, "__version__", "?"),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "router": {
            "class": "IndexedRouter",
            "index": type(router.index).__name__,
            "top_k": args.top_k,
            "aggregation": args.aggregation,
            "confidence_threshold": None,
        },
        "encoder": {"class": "HuggingFaceEncoder", "path": args.model},
        "build": args.build,
        "routes": len(routes),
        "utterances": len(train),
        "utterances_per_route": {r.name: len(r.utterances) for r in routes},
        "setup_s": {"load_models": load_s, "build_router": build_s},
        "n_test": len(test),
        "latency_ms": {"floor_clean": summary(clean), **{k: summary(v) for k, v in lat.items()}},
        "accuracy": correct / len(test) if test else float("nan"),
        "none_routes": sum(p is None for p in picks),
        "embedding_check": {
            # the two encoders should agree (same weights): cosine of their embeddings of one text
            "cosine_sr_vs_st": float(
                np.dot(
                    np.asarray(encoder([texts[0]])[0]),
                    floor_model.encode([texts[0]], normalize_embeddings=True)[0],
                )
            )
            if texts
            else None
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
