"""Sentence embeddings on ONNX Runtime: the torch adapter's model, exported once, run without torch.

The export is the transformer with mean pooling and L2 normalisation inside the graph (TorchScript
exporter, opset 17, dynamic batch and sequence axes), so one `session.run` returns the final vectors.
Tokenisation is the model's own fast tokenizer (tokenizer.json), truncated to the model's
max_seq_length as sentence-transformers does; texts are batched by token length like the torch adapter.

    <cache_dir>/onnx/<model>-<key>/model.onnx        fp32 export
                                   model-int8.onnx   dynamic int8 (per-channel MatMul weights)
                                   .lock             held while exporting

`<key>` changes with the source model's files and with EXPORT_VERSION, so a changed model exports anew.
The first process to need a file exports it under an exclusive file lock, into a temporary name, then
renames it into place: replicas that start together export once and never read a half-written file.
Running an export needs onnxruntime and tokenizers only; torch is imported only to export."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.embedding_common import (
    DEFAULT_MODEL,
    EmbedderBase,
    default_threads,
    length_buckets,
    resolve_model,
)
from router.errors import ArtifactError
from router.tuned_encoder import TunedLayers

#: bump when the exported graph changes, so existing caches export again
EXPORT_VERSION = 1
OPSET = 17
FP32_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"
#: how long a replica waits for another one's export before giving up
LOCK_TIMEOUT_S = 900.0


def export_dir(source: Path, name: str, cache_dir: Path, tuned: TunedLayers | None = None) -> Path:
    """The cache folder for one source model: its name, and a key over its files and the export code
    (and, for an artifact's tuned encoder, over its layers' sha256: tuned and frozen exports never mix)."""
    key = f"v{EXPORT_VERSION}|opset{OPSET}|{name}" + (f"|tuned:{tuned.sha256}" if tuned is not None else "")
    h = hashlib.sha256(key.encode())
    for f in sorted(source.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"|{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-60:] or "model"
    return cache_dir / "onnx" / f"{slug}-{h.hexdigest()[:12]}"


def max_seq_length(source: Path) -> int:
    """sentence-transformers' truncation length: sentence_bert_config.json, else the tokenizer's limit."""
    for fname, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
    ):
        f = source / fname
        if f.is_file():
            value = json.loads(f.read_text(encoding="utf-8")).get(key)
            if isinstance(value, int) and 0 < value <= 100_000:
                return value
    return 512


def _check_mean_pooling(source: Path) -> None:
    """The graph bakes in mean pooling + normalisation; refuse models that pool another way."""
    cfg = source / "1_Pooling" / "config.json"
    if cfg.is_file():
        pooling = json.loads(cfg.read_text(encoding="utf-8"))
        if not pooling.get("pooling_mode_mean_tokens", False) or any(
            pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens")
        ):
            raise ArtifactError(f"the onnx backend exports mean pooling only; {source} pools otherwise")


def _export_fp32(source: Path, dest: Path, tuned: TunedLayers | None = None) -> None:
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ArtifactError(f"exporting the embedder to ONNX needs torch and transformers: {exc}") from exc

    class MeanPooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    # eager attention traces to plain MatMul/Softmax, which ORT fuses; sdpa paths differ across versions
    model = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()
    if tuned is not None:
        tuned.apply(model)
    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0  # a padded row, so the traced graph keeps the masking path
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter warns that it is legacy, and the tracer about constant shapes
        # that the dynamic axes below make dynamic; the export is checked against torch in tests
        warnings.simplefilter("ignore")
        torch.onnx.export(
            MeanPooled(model),
            (ids, mask),
            str(dest),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "embedding": {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _quantize_int8(fp32: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # per-channel weights: per-tensor int8 MatMuls cost ~0.04 cosine to torch on MMLU-Pro questions
    # (mean 0.96), per-channel ones ~0.006 (mean 0.994); embeddings (Gather) stay fp32
    quantize_dynamic(
        str(fp32), str(dest), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
    )


def _atomic(dest: Path, write: Callable[[Path], None]) -> None:
    """Run write(tmp) then rename tmp onto dest; a crash leaves no file at dest."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def ensure_exported(source: Path, target: Path, *, quantized: bool, tuned: TunedLayers | None = None) -> Path:
    """The ONNX file for `source` under `target`, exporting (and quantising) it first if absent."""
    want = target / (INT8_FILE if quantized else FP32_FILE)
    if want.is_file():
        return want
    from filelock import FileLock, Timeout

    try:
        target.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target / ".lock"), timeout=LOCK_TIMEOUT_S):
            if want.is_file():  # another process exported while this one waited for the lock
                return want
            fp32 = target / FP32_FILE
            if not fp32.is_file():
                _atomic(fp32, lambda tmp: _export_fp32(source, tmp, tuned))
            if quantized:
                _atomic(want, lambda tmp: _quantize_int8(fp32, tmp))
    except Timeout:
        raise ArtifactError(
            f"waited {LOCK_TIMEOUT_S:.0f} s for another process's ONNX export in {target}"
        ) from None
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - IO, tracer and quantiser failures all mean no export
        raise ArtifactError(
            f"cannot export the embedder to ONNX in {target}: {type(exc).__name__}: {exc}"
        ) from exc
    return want


class OnnxEmbedder(EmbedderBase):
    """A sentence-transformers model folder exported to ONNX and run by onnxruntime on CPU."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_dir: str | Path,
        quantized: bool = False,
        threads: int = 0,
        batch_size: int = 64,
        tuned: TunedLayers | None = None,
    ) -> None:
        """`tuned`: an artifact's fine-tuned layers in place of the model's (router/tuned_encoder.py)."""
        path, self._name = resolve_model(model)
        source = Path(path)
        if not (source / "tokenizer.json").is_file():
            raise ArtifactError(
                f"the onnx backend needs a local model folder with a fast tokenizer (tokenizer.json); "
                f"{model!r} is not one"
            )
        _check_mean_pooling(source)
        self.backend = "onnx-int8" if quantized else "onnx"
        self.threads = threads if threads > 0 else default_threads()
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length(source) if tuned is None else tuned.max_seq_length
        self.path = ensure_exported(
            source, export_dir(source, self._name, Path(cache_dir), tuned), quantized=quantized, tuned=tuned
        )
        if tuned is not None:
            self._name = tuned.name
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - a broken install
            raise ArtifactError(f"cannot load the onnx embedder: {exc}") from exc
        tok = Tokenizer.from_file(str(source / "tokenizer.json"))
        tok.no_padding()  # tokenizer.json may carry a fixed padding; batches are padded here, per bucket
        tok.enable_truncation(self.max_seq_length)
        self._tok = tok
        opts = ort.SessionOptions()
        # like torch.set_num_threads in the torch adapter: the router shares its node with other replicas
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session: Any = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file is an unusable embedder
            raise ArtifactError(f"cannot load the ONNX embedder {self.path}: {exc}") from exc
        dim = self._session.get_outputs()[0].shape[1]
        self._ready(dim if isinstance(dim, int) else self._run([self._tok.encode("x")]).shape[1])

    def _run(self, encodings: Sequence[Any]) -> np.ndarray:
        longest = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), longest), dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        out = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(out, dtype=np.float32)

    def _encode(self, texts: Sequence[str]) -> list[Any]:
        return list(self._tok.encode_batch([str(t) for t in texts]))

    def embed_padded(self, texts: Sequence[str]) -> np.ndarray:
        """All texts in one session run, each padded to the longest (the torch adapter's embed_padded)."""
        if len(texts) == 0:
            return self._none()
        with self._lock:
            return self._run(self._encode(texts))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) == 0:
            return self._none()
        with self._lock:
            encodings = self._encode(texts)
            if len(texts) == 1:
                return self._run(encodings)
            out = np.empty((len(texts), self._dim), dtype=np.float32)
            for bucket in length_buckets([len(e.ids) for e in encodings], self.batch_size):
                out[bucket] = self._run([encodings[i] for i in bucket])
        return out
