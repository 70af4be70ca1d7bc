"""`embedder_backend` (COE_EMBEDDER_BACKEND): validated against router.embedder.BACKENDS, and passed with
data_dir (the ONNX export cache) to Router.load by load_router."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from deploy.pipeline.router_service import load_router
from deploy.settings import DEFAULT_ROUTER_ARTIFACT, Settings
from router.errors import UnknownBackend


def test_embedder_backend_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COE_CONFIG", raising=False)
    monkeypatch.setenv("COE_EMBEDDER_BACKEND", "onnx-int8")
    assert Settings().embedder_backend == "onnx-int8"
    monkeypatch.setenv("COE_EMBEDDER_BACKEND", "tensorrt")
    with pytest.raises(ValidationError, match="must be one of torch, onnx, onnx-int8"):
        Settings()


def test_load_router_passes_the_backend(tmp_path: Path) -> None:
    settings = SimpleNamespace(
        embedder_model="default", torch_threads=1, embedder_backend="tensorrt", data_dir=tmp_path
    )
    with pytest.raises(UnknownBackend, match="'tensorrt'"):
        load_router(DEFAULT_ROUTER_ARTIFACT, settings)
