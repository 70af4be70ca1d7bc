"""Fine-tuning the bundled MiniLM's top transformer layers on the router's labels (issue 25 point 2).

`coe router train --finetune-layers K` and `coe eval sources --finetune-layers K` (K = 0: the frozen
encoder, as before). The recipe measured in docs/router.md ("Fine-tuned encoder"):

  * only the top K of MiniLM's 6 layers train, with a linear head over the mean-pooled embedding,
    class-balanced cross-entropy, max_seq_length 128, batches of 32 length-sorted texts visited in a
    seeded random order, AdamW (layers 5e-5, head 1e-3), one epoch, torch on `threads` threads;
  * the layers below never change, so their output is computed once per text and kept in memory
    (`LayerTuner.run_bottom`): training, and embedding with the tuned layers afterwards, run the top K
    layers only; every fold of `coe eval sources` reuses the same bottom outputs;
  * the tuned layers are rounded to float16 (what the artifact stores, router/tuned_encoder.py) before
    the training texts are embedded with them, so the heads are fitted on exactly the vectors the
    service's embedder computes.

The heads are then fitted as without fine-tuning (eval/training/train.py: the hybrid TF-IDF + embedding
recipe, nested subjects) on the tuned embeddings."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from eval.training.balance import source_weights
from router.embedding_common import DEFAULT_MODEL_NAME, EmbedderBase
from router.tuned_encoder import LAYER_PREFIX

MAX_SEQ_LENGTH = 128
BATCH = 32
LR = 5e-5
HEAD_LR = 1e-3
EPOCHS = 1
N_LAYERS = 6  # all-MiniLM-L6-v2

Log = Callable[[str], None]


def check_layers(k: int) -> int:
    from router.errors import BadRequest

    if not 0 <= k < N_LAYERS:
        raise BadRequest(f"--finetune-layers must be between 0 and {N_LAYERS - 1}, got {k}")
    return k


class LayerTuner:
    """MiniLM cut below its top `k` layers: the bottom runs once per text, the top is tuned per call
    of `tune` (each from the base weights) and embeds every text from the cached bottom outputs."""

    def __init__(self, texts: Sequence[str], k: int, *, threads: int = 1, seed: int = 0) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from router.embedding_common import resolve_model

        if not 1 <= k < N_LAYERS:
            raise ValueError(f"k must be 1..{N_LAYERS - 1}")
        self.threads = threads
        torch.set_num_threads(threads)
        self.seed = seed
        st = SentenceTransformer(resolve_model("default")[0], device="cpu")
        self.tok = st.tokenizer
        module: Any = st[0]
        self.bert: Any = module.auto_model.eval()  # transformers' BertModel
        self.k = k
        self.first = len(self.bert.encoder.layer) - k
        self.n = len(texts)
        #: (row indices, hidden states after the bottom layers (float32), attention mask) per batch
        self.cache: list[tuple[list[int], Any, Any]] = []
        self._run_bottom(list(texts))

    @staticmethod
    def _additive(mask: Any) -> Any:
        import torch

        return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min

    def _run_bottom(self, texts: list[str]) -> None:
        import torch

        ids = self.tok(texts, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        with torch.no_grad():  # not inference_mode: training reads these tensors
            for s in range(0, len(order), BATCH):
                idx = order[s : s + BATCH]
                enc = self.tok(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=MAX_SEQ_LENGTH,
                    return_tensors="pt",
                )
                h = self.bert.embeddings(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
                h = self._through(self.bert.encoder.layer[: self.first], h, enc["attention_mask"])
                self.cache.append((idx, h.clone(), enc["attention_mask"]))

    def _through(self, layers: Any, h: Any, mask: Any) -> Any:
        """Hidden states `h` through BertLayers `layers` under the attention `mask`."""
        am = self._additive(mask)
        for layer in layers:
            h = layer(h, attention_mask=am)
            h = h[0] if isinstance(h, tuple) else h
        return h

    def _pooled(self, layers: Any, h: Any, mask: Any) -> Any:
        h = self._through(layers, h, mask)
        m = mask[:, :, None].float()
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def base_layers(self) -> Any:
        import torch

        return torch.nn.ModuleList(copy.deepcopy(list(self.bert.encoder.layer[self.first :]))).eval()

    def embed(self, layers: Any) -> np.ndarray:
        """(n, 384) L2-normalised embeddings of every text, the top layers being `layers`."""
        import torch

        torch.set_num_threads(self.threads)  # an embedder loaded since may have changed it
        out = np.zeros((self.n, self.bert.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for idx, h, mask in self.cache:
                out[idx] = torch.nn.functional.normalize(self._pooled(layers, h, mask), dim=1).numpy()
        return out

    def tune(
        self,
        labels: Sequence[str],
        rows: Sequence[int],
        log: Log | None = None,
        sample_weight: Sequence[float] | np.ndarray | None = None,
    ) -> Any:
        """Top layers tuned from the base weights on the texts `rows` (labels: one per text, all texts;
        `sample_weight`: one per text, all texts, or None), rounded to float16 like the artifact stores
        them."""
        import torch

        torch.manual_seed(self.seed)
        torch.set_num_threads(self.threads)  # an embedder loaded since may have changed it
        cats = sorted({labels[i] for i in rows})
        y = np.array([cats.index(labels[i]) if labels[i] in cats else -1 for i in range(self.n)])
        keep_rows = set(rows)
        counts = np.bincount(y[sorted(keep_rows)], minlength=len(cats))
        weight = torch.tensor(len(keep_rows) / (len(cats) * np.maximum(counts, 1)), dtype=torch.float32)
        top = self.base_layers()
        head = torch.nn.Linear(self.bert.config.hidden_size, len(cats))
        opt = torch.optim.AdamW(
            [{"params": top.parameters(), "lr": LR}, {"params": head.parameters(), "lr": HEAD_LR}]
        )
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight, reduction="none")
        sw = torch.ones(self.n) if sample_weight is None else torch.tensor(sample_weight, dtype=torch.float32)
        batches = [(b, [j for j, i in enumerate(b[0]) if i in keep_rows]) for b in self.cache]
        batches = [(b, keep) for b, keep in batches if keep]
        rng = random.Random(self.seed)
        top.train()
        for ep in range(EPOCHS):
            rng.shuffle(batches)
            total = 0.0
            for step, ((idx, h, mask), keep) in enumerate(batches, 1):
                rows_b = [idx[j] for j in keep]
                target = torch.tensor(y[rows_b], dtype=torch.long)
                w = sw[rows_b] * weight[target]  # the class weight as CrossEntropyLoss's mean applies it
                per_row = loss_fn(head(self._pooled(top, h[keep], mask[keep])), target)
                loss = (per_row * sw[rows_b]).sum() / w.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                if log is not None and (step % 100 == 0 or step == len(batches)):
                    log(f"fine-tune epoch {ep + 1} step {step}/{len(batches)} mean loss {total / step:.4f}")
        top.eval()
        load_state(top, self.first, {k: v.astype(np.float16) for k, v in state_of(top, self.first).items()})
        return top


def state_of(top: Any, first: int) -> dict[str, np.ndarray]:
    """The tuned layers' parameters under BertModel's names (encoder.layer.<i>.…), float32."""
    out = {}
    for j, layer in enumerate(top):
        for name, v in layer.state_dict().items():
            out[f"{LAYER_PREFIX}{first + j}.{name}"] = v.detach().float().numpy().copy()
    return out


def load_state(top: Any, first: int, state: dict[str, np.ndarray]) -> None:
    import torch

    with torch.no_grad():
        for j, layer in enumerate(top):
            own = layer.state_dict()
            for name, v in own.items():
                v.copy_(torch.from_numpy(np.asarray(state[f"{LAYER_PREFIX}{first + j}.{name}"], np.float32)))


class FixedEmbedder(EmbedderBase):
    """The embeddings one tuning computed, served by text (train_router embeds its texts through an
    Embedder); `backend` torch: the same computation as the torch embedder with the tuned layers."""

    backend = "torch"

    def __init__(self, texts: Sequence[str], emb: np.ndarray, name: str = DEFAULT_MODEL_NAME) -> None:
        self._rows = {t: i for i, t in enumerate(texts)}
        self._emb = emb
        self._name = name
        self._ready(emb.shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            return self._emb[[self._rows[t] for t in texts]] if len(texts) else self._none()
        except KeyError as exc:
            raise ValueError("FixedEmbedder: a text that was not tuned on") from exc


def fold_embedder(
    texts: Sequence[str],
    labels: Sequence[str],
    k: int,
    *,
    seed: int,
    log: Log | None,
    sources: Sequence[str] | None = None,
    source_power: float = 0.0,
    source_group: Mapping[str, str] | None = None,
) -> Any:
    """For `coe eval sources --finetune-layers k`: a function (training rows) -> embeddings of every
    text with the top k layers tuned on those rows only, the bottom layers run once for all folds."""
    import time

    t0 = time.perf_counter()
    tuner = LayerTuner(texts, k, seed=seed)
    if log is not None:
        log(f"bottom {tuner.first} layers on {len(texts)} texts: {time.perf_counter() - t0:.1f} s")

    def per_fold(rows: Sequence[int]) -> np.ndarray:
        t = time.perf_counter()
        sw = None
        if source_power and sources is not None:
            sw = np.zeros(len(texts))
            sw[list(rows)] = source_weights(
                [labels[i] for i in rows], [sources[i] for i in rows], source_power, source_group
            )
        top = tuner.tune(labels, rows, log, sample_weight=sw)
        emb = tuner.embed(top)
        if log is not None:
            log(
                f"fine-tuned the top {k} layers on {len(rows)} texts and embedded: "
                f"{time.perf_counter() - t:.1f} s"
            )
        return emb

    return per_fold
