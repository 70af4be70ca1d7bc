"""Issue 25 point 2: does fine-tuning the bundled MiniLM on the intent task beat the frozen encoder?

A same-run comparison on CPU, Arena-Hard (the real-prompt fold with the most coding prompts) held out:
the other training sources of the label map (eval.data.mix.load_mix, never an evaluation-only set), a
seeded sample of at most --max-per-source rows each (MMLU-Pro --max-mmlu), feed

  (a) frozen: the MiniLM sentence embedding (mean pooling, L2) + the router's embedding head alone
      (balanced multinomial logistic regression, C = eval.training.train.C_EMBEDDING; not the TF-IDF
      half, not the nested subjects); with --cache also today's embedder as the router runs it
      (max_seq_length 256, eval's embedding cache) under the same head;
  (b) fine-tuned: the same MiniLM, only its top --train-layers transformer layers trainable, trained end
      to end with a linear head (class-balanced cross-entropy, max_seq_length 128, batch 32, AdamW),
      then the same logistic regression on its embeddings.

The layers below the trainable ones never change, so their output is computed once per text and reused
by training and by both encoders' embeddings (the frozen one = the original top layers on it). Batches
are length-sorted (little padding on CPU) and shuffled in order. Reported on the held-out prompts per
intent: accuracy and right-expert share (the seeded registry's category -> first expert map, no
fallback), with wall times and the load average. Run it under `nice -n 10`."""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

HELD_OUT = "arena_hard"
INTENTS = ("coding", "math", "writing", "chat")


def load_rows(data: str, max_per_source: int, max_mmlu: int, seed: int) -> tuple[list[Any], list[Any]]:
    """(training examples, held-out Arena-Hard examples), each source sampled with the seed."""
    from eval.data.datasets import sample
    from eval.data.mix import families, load_mix

    fam = families()
    examples = load_mix(data, seed=seed)  # training sources only: the label map's own selection
    by_src: dict[str, list[Any]] = {}
    for e in examples:
        by_src.setdefault(e.source, []).append(e)
    train = [
        e
        for s, rows in by_src.items()
        if fam.get(s, s) != HELD_OUT
        for e in sample(rows, max_mmlu if s == "mmlu_pro" else max_per_source, seed)
    ]
    test = [e for e in examples if fam.get(e.source, e.source) == HELD_OUT]
    return train, test


class Split:
    """MiniLM cut below its top `k` layers: `bottom` runs once per text (cached), `top` is trainable."""

    def __init__(self, k: int, max_len: int, batch: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from router.embedder import resolve_model

        st = SentenceTransformer(resolve_model("default")[0], device="cpu")
        bert: Any = st[0].auto_model  # transformers' BertModel
        self.tok, self.bert = st.tokenizer, bert.eval()
        self.k, self.max_len, self.batch = k, max_len, batch
        self.top = torch.nn.ModuleList(copy.deepcopy(list(self.bert.encoder.layer[-k:])))
        self.cache: list[tuple[list[int], Any, Any]] = []  # (row indices, hidden (fp16), mask)

    @staticmethod
    def additive(mask: Any) -> Any:
        import torch

        return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min

    def run_bottom(self, texts: list[str]) -> None:
        import torch

        lens = [len(x) for x in self.tok(texts, truncation=True, max_length=self.max_len)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lens[i])
        with torch.inference_mode():
            for s in range(0, len(order), self.batch):
                idx = order[s : s + self.batch]
                enc = self.tok([texts[i] for i in idx], padding=True, truncation=True,
                               max_length=self.max_len, return_tensors="pt")  # fmt: skip
                h = self.bert.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
                am = self.additive(enc["attention_mask"])
                for layer in self.bert.encoder.layer[: -self.k]:
                    h = layer(h, attention_mask=am)
                h = h[0] if isinstance(h, tuple) else h
                self.cache.append((idx, h.half(), enc["attention_mask"]))

    def pooled(self, layers: Any, h: Any, mask: Any) -> Any:
        h, am = h.float(), self.additive(mask)
        for layer in layers:
            h = layer(h, attention_mask=am)
            h = h[0] if isinstance(h, tuple) else h
        m = mask[:, :, None].float()
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def embed(self, layers: Any, rows: set[int], n: int) -> np.ndarray:
        import torch

        out = np.zeros((n, 384), dtype=np.float32)
        with torch.inference_mode():
            for idx, h, mask in self.cache:
                keep = [j for j, i in enumerate(idx) if i in rows]
                if keep:
                    e = torch.nn.functional.normalize(self.pooled(layers, h[keep], mask[keep]), dim=1)
                    out[[idx[j] for j in keep]] = e.numpy()
        return out

    def finetune(self, y: np.ndarray, rows: set[int], epochs: int, lr: float, seed: int, log: Any) -> None:
        import torch

        n_cls = int(y.max()) + 1
        counts = np.bincount(y[sorted(rows)], minlength=n_cls)
        weight = torch.tensor(len(rows) / (n_cls * np.maximum(counts, 1)), dtype=torch.float32)
        head = torch.nn.Linear(384, n_cls)
        opt = torch.optim.AdamW([{"params": self.top.parameters(), "lr": lr},
                                 {"params": head.parameters(), "lr": 1e-3}])  # fmt: skip
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
        batches = [(b, [j for j, i in enumerate(b[0]) if i in rows]) for b in self.cache]
        batches = [(b, keep) for b, keep in batches if keep]
        rng = random.Random(seed)
        self.top.train()
        for ep in range(epochs):
            rng.shuffle(batches)
            total = 0.0
            for step, ((idx, h, mask), keep) in enumerate(batches, 1):
                target = torch.tensor(y[[idx[j] for j in keep]], dtype=torch.long)
                loss = loss_fn(head(self.pooled(self.top, h[keep], mask[keep])), target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                if step % 50 == 0 or step == len(batches):
                    log(f"epoch {ep + 1} step {step}/{len(batches)} mean loss {total / step:.4f}")
        self.top.eval()


def evaluate(name: str, emb: np.ndarray, labels: list[str], tr: list[int], te: list[int], seed: int) -> dict:
    """The embedding head on `tr`, scored per intent on `te` (accuracy, right expert with no fallback)."""
    from sklearn.linear_model import LogisticRegression

    from eval.classify.sources import HeldOut, by_intent
    from eval.training.seed import plan
    from eval.training.train import C_EMBEDDING, CLASS_WEIGHT

    t0 = time.perf_counter()
    clf = LogisticRegression(C=C_EMBEDDING, max_iter=2000, random_state=seed, class_weight=CLASS_WEIGHT)
    clf.fit(emb[tr], [labels[i] for i in tr])
    cats = [str(c) for c in clf.classes_]
    seeded = plan(sorted(set(labels)), "http://127.0.0.1:9/v1")
    expert_of = {c: experts[0] for c, experts in seeded.mapping}
    generalist = next(e.name for e in seeded.experts if "generalist" in e.tags)

    def pick(category: str) -> str:
        return expert_of.get(category, generalist)

    held = []
    for i, row in zip(te, clf.predict_proba(emb[te]), strict=True):
        ranked = tuple(sorted(zip(cats, row.tolist(), strict=True), key=lambda cp: -cp[1]))
        held.append(HeldOut(HELD_OUT, labels[i], ranked[0][0], ranked[0][1], labels[i] in cats, -1.0, ranked))
    shares = by_intent(held, expert_of, generalist, 0.0, frozenset({HELD_OUT}))
    per: dict[str, Any] = {}
    for intent, v in shares.items():
        sub = [r for r in held if r.label == intent]
        acc = float(np.mean([r.pred == r.label for r in sub]))
        per[intent] = {"n": v["n"], "accuracy": round(acc, 4), "right_expert": v["right_expert"]}
    return {
        "encoder": name,
        "accuracy": round(float(np.mean([r.pred == r.label for r in held])), 4),
        "right_expert": round(float(np.mean([pick(r.pred) == pick(r.label) for r in held])), 4),
        "by_intent": per,
        "head_fit_s": round(time.perf_counter() - t0, 1),
    }


def table(results: list[dict]) -> str:
    lines = ["| encoder | all: acc / right expert | " + " | ".join(f"{i} (n)" for i in INTENTS) + " |",
             "|---|---|" + "---|" * len(INTENTS)]  # fmt: skip
    for r in results:
        cells = []
        for i in INTENTS:
            v = r["by_intent"].get(i)
            cells.append(f"{v['accuracy']:.3f} / {v['right_expert']:.3f} ({v['n']})" if v else "—")
        lines.append(
            f"| {r['encoder']} | {r['accuracy']:.3f} / {r['right_expert']:.3f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the shared data folder (../shared/data)")
    ap.add_argument("--max-per-source", type=int, default=600)
    ap.add_argument("--max-mmlu", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-layers", type=int, default=2, choices=(1, 2, 3))
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--cache", default=None, help="eval's embedding cache folder: adds today's embedder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.max_per_source < 1 or args.max_mmlu < 1 or args.epochs < 1:
        print("finetune_compare: --max-per-source, --max-mmlu and --epochs must be >= 1", file=sys.stderr)
        return 2
    import torch

    from eval.data.datasets import DataError
    from router.text import routing_text

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr)

    try:
        train, test = load_rows(args.data, args.max_per_source, args.max_mmlu, args.seed)
    except DataError as exc:
        print(f"finetune_compare: {exc}", file=sys.stderr)
        return 2
    rows = train + test
    texts = [routing_text(e.text) for e in rows]
    labels = [e.label for e in rows]
    tr, te = list(range(len(train))), list(range(len(train), len(rows)))
    log(f"training rows {len(tr)} {dict(Counter(e.source for e in train))}; held-out {HELD_OUT} {len(te)}")
    walls: dict[str, float] = {}
    results = []
    if args.cache:
        from eval.training.embedding import CachedEmbedder
        from router.embedder import make_embedder

        t = time.perf_counter()
        cached = CachedEmbedder(make_embedder("default", "torch", threads=1), args.cache)
        today = cached.embed(texts)
        cached.flush()
        walls["embed_today_s"] = round(time.perf_counter() - t, 1)
        results.append(evaluate("frozen, today's embedder (256 tokens)", today, labels, tr, te, args.seed))
        log(f"today's embedder: {walls['embed_today_s']} s")
    split = Split(args.train_layers, 128, 32)
    t = time.perf_counter()
    split.run_bottom(texts)
    walls["bottom_layers_s"] = round(time.perf_counter() - t, 1)
    log(f"bottom {6 - args.train_layers} layers on every text: {walls['bottom_layers_s']} s")
    t = time.perf_counter()
    everything = set(range(len(rows)))
    frozen = split.embed(split.bert.encoder.layer[-args.train_layers :], everything, len(rows))
    walls["embed_frozen_top_s"] = round(time.perf_counter() - t, 1)
    results.append(evaluate("frozen MiniLM (128 tokens)", frozen, labels, tr, te, args.seed))
    log(f"frozen: {results[-1]}")
    cats = sorted(set(labels))
    y = np.array([cats.index(c) for c in labels])
    t = time.perf_counter()
    split.finetune(y, set(tr), args.epochs, args.lr, args.seed, log)
    walls["finetune_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    tuned = split.embed(split.top, everything, len(rows))
    walls["embed_tuned_top_s"] = round(time.perf_counter() - t, 1)
    results.append(
        evaluate(f"fine-tuned top {args.train_layers} (128 tokens)", tuned, labels, tr, te, args.seed)
    )
    log(f"fine-tuned: {results[-1]}")
    walls["total_s"] = round(time.perf_counter() - start, 1)
    out = {
        "held_out": HELD_OUT,
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "training_rows": len(tr),
        "training_sources": dict(Counter(e.source for e in train)),
        "held_out_rows": len(te),
        "wall_s": walls,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }
    print(table(results))
    print(json.dumps({"wall_s": walls, "load_average_end": out["load_average_end"]}))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
