"""Batch embedding for evaluation jobs: in-process, or with Ray Data on a local Ray or a cluster.

`embed_texts(texts, spec)` returns (n, d) float32 L2-normalised rows in input order either way; with
`use_ray=True` the texts go through `ray.data.from_items(...).map_batches(EmbedActor, ...)` on an actor
pool (each actor loads the model once), so the same code scales out on a cluster. Ray is imported only
on that path.

Embeddings are cached on disk (`cache_dir`, by default `.coe/cache/embeddings/` under the repository
root): one `.npz` per embedder spec, rows keyed by the SHA-256 of each text, so every text is embedded
once per embedder however the data is split or limited. `cache_dir=None` turns the cache off."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import BadRequest


class EmbedActor:
    """Ray Data callable class: loads the embedder once per actor, embeds each batch of rows."""

    def __init__(self, model: str = "default", threads: int = 1) -> None:
        from router.embedder import SentenceTransformerEmbedder

        self.embedder = SentenceTransformerEmbedder(model, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        emb = self.embedder.embed([str(t) for t in batch["text"]])
        return {"i": np.asarray(batch["i"]), "embedding": emb}


def embed_local(
    texts: Sequence[str],
    spec: str = "default",
    *,
    batch_size: int = 256,
    progress: bool = True,
    embedder: Any = None,
) -> np.ndarray:
    from tqdm.auto import tqdm

    if embedder is None:
        from router.embedder import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(spec)
    parts = []
    with tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress, leave=False) as bar:
        for s in range(0, len(texts), batch_size):
            chunk = list(texts[s : s + batch_size])
            parts.append(embedder.embed(chunk))
            bar.update(len(chunk))
    if not parts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.vstack(parts).astype(np.float32, copy=False)


def ensure_ray(num_cpus: int = 2) -> None:
    """Connect to the Ray cluster in RAY_ADDRESS if any, else start a small local one (no dashboard)."""
    import ray

    if not ray.is_initialized():
        # "local" unless RAY_ADDRESS names a cluster: a bare init would attach to whatever cluster
        # `ray start` last recorded on this machine (/tmp/ray/ray_current_cluster), even a dead one
        ray.init(
            address=None if _has_address() else "local",
            num_cpus=None if _has_address() else num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )


def _has_address() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))


def embed_ray(
    texts: Sequence[str],
    spec: str = "default",
    *,
    batch_size: int = 128,
    concurrency: int = 1,
    threads_per_actor: int = 1,
    num_cpus: int = 2,
) -> np.ndarray:
    """Embed with Ray Data: an actor pool of `concurrency` EmbedActors, batches of `batch_size` rows."""
    import ray.data

    ensure_ray(num_cpus)
    ds = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
    out = ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={"model": spec, "threads": threads_per_actor},
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=threads_per_actor,
    )
    rows = out.take_all()
    if len(rows) != len(texts):
        raise BadRequest(f"Ray Data returned {len(rows)} embeddings for {len(texts)} texts")
    rows.sort(key=lambda r: int(r["i"]))
    return (
        np.stack([np.asarray(r["embedding"], dtype=np.float32) for r in rows])
        if rows
        else np.zeros((0, 0), dtype=np.float32)
    )


DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[2] / ".coe" / "cache" / "embeddings"


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _cache_file(cache_dir: Path, spec: str) -> Path:
    return cache_dir / f"emb-{hashlib.sha256(spec.encode()).hexdigest()[:16]}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return dict(zip(z["keys"].tolist(), z["emb"], strict=True))
    except (OSError, ValueError, KeyError):  # a torn or foreign file: rebuild it
        return {}


def _write_cache(path: Path, rows: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    keys = np.array(list(rows), dtype="U32")
    np.savez(tmp, keys=keys, emb=np.stack(list(rows.values())).astype(np.float32))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


def embed_texts(
    texts: Sequence[str],
    embedder_spec: str = "default",
    *,
    use_ray: bool = False,
    progress: bool = True,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    **kw: Any,
) -> np.ndarray:
    """(n, d) float32 embeddings of `texts` in order; `use_ray` runs the batch job on Ray Data; texts
    already in the disk cache are not embedded again."""

    def compute(batch: Sequence[str]) -> np.ndarray:
        if use_ray:
            return embed_ray(batch, embedder_spec, **kw)
        return embed_local(batch, embedder_spec, progress=progress, **kw)

    if cache_dir is None or not texts:
        return compute(texts)
    path = _cache_file(Path(cache_dir), embedder_spec)
    rows = _read_cache(path)
    keys = [_text_key(t) for t in texts]
    missing = list(dict.fromkeys(k for k in keys if k not in rows))
    if missing:
        by_key = {k: t for k, t in zip(keys, texts, strict=True)}
        fresh = np.asarray(compute([by_key[k] for k in missing]), dtype=np.float32)
        rows.update(zip(missing, fresh, strict=True))
        _write_cache(path, rows)
    return np.stack([rows[k] for k in keys]).astype(np.float32, copy=False)


class CachedEmbedder:
    """An Embedder that keeps every text's embedding on disk (`<cache>/<model>/shard-*.npz`, keyed by
    sha1 of the text), so repeated training and eval runs embed each text once. Append-only shards:
    two jobs sharing a cache never rewrite each other's files."""

    def __init__(self, inner: Any, cache_dir: str | Any, flush_every: int = 1024) -> None:
        from pathlib import Path

        self.inner = inner
        self.dir = Path(cache_dir) / inner.name.replace("/", "__")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self._mem: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] = {}
        for shard in sorted(self.dir.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as z:
                    self._mem.update(zip(z["keys"].tolist(), z["emb"], strict=True))
            except (OSError, ValueError, KeyError):  # a shard a killed job left half-written
                continue

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def backend(self) -> str:
        """The wrapped embedder's backend: the vectors are its, so an artifact trained from the cache
        records the backend that computed them."""
        from router.embedder import backend_of

        return backend_of(self.inner)

    @staticmethod
    def key(text: str) -> str:
        import hashlib

        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in self._mem}.items())
        if todo:
            emb = self.inner.embed([t for _, t in todo])
            for (k, _), row in zip(todo, emb, strict=True):
                self._mem[k] = self._pending[k] = np.asarray(row, dtype=np.float32)
            if len(self._pending) >= self.flush_every:
                self.flush()
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._mem[k] for k in keys]).astype(np.float32, copy=False)

    def flush(self) -> None:
        import os
        import uuid

        if not self._pending:
            return
        keys = np.array(list(self._pending))
        emb = np.stack(list(self._pending.values()))
        tmp = self.dir / f".tmp-{uuid.uuid4().hex}.npz"
        np.savez(tmp, keys=keys, emb=emb)
        os.replace(tmp, self.dir / f"shard-{uuid.uuid4().hex}.npz")
        self._pending = {}
