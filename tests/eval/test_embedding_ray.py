"""Ray Data embedding equals the in-process path on a small real slice."""

from __future__ import annotations

import numpy as np
import pytest

from eval.outcomes import load_outcomes
from eval.training.embedding import embed_texts
from tests.eval._routing_shared import ROUTERDC, needs_shared

pytestmark = [pytest.mark.slow, pytest.mark.shared_data, needs_shared]


def test_ray_data_path_matches_local():
    ray = pytest.importorskip("ray")
    texts = list(load_outcomes([ROUTERDC / "humaneval_train.json"], "routerdc", limit=24).texts)
    local = embed_texts(texts, "default", progress=False)
    started = not ray.is_initialized()
    try:
        remote = embed_texts(texts, "default", use_ray=True, batch_size=8, concurrency=1)
    finally:
        if started:
            ray.shutdown()
    assert remote.shape == local.shape == (24, 384)
    assert np.allclose(remote, local, atol=1e-5)
