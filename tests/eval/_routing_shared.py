"""Paths into ../shared/data for the routing-eval tests (skipped when the folder is absent)."""

from __future__ import annotations

import pytest

from eval.outcomes import SHARED_DATA

ROUTERBENCH = SHARED_DATA / "routerbench"
MMLU = SHARED_DATA / "mmlu_pro" / "eval_results"
ROUTERDC = SHARED_DATA / "split2_model7"
ALPACA = SHARED_DATA / "alpaca_eval" / "results"

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
