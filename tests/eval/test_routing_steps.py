"""The routing evaluation's parts without data files: every service policy has a knob, a sweep, options
and a default; the typed result serialises to the documented JSON shape."""

from __future__ import annotations

import json

import numpy as np

from eval.outcomes import OutcomeMatrix
from eval.routing.replay import (
    ALL_POLICIES,
    HEAD_POLICIES,
    KNOBS,
    Anchors,
    category_table,
    chosen_counts,
    default_knob,
    options_for,
    sweep_values,
)
from eval.routing.result import DatasetInfo, PolicyResult, to_plain
from router.defaults import POLICY_NAMES
from router.policies import POLICIES
from router.types import RoutingOptions


def test_every_service_policy_is_replayed_with_a_knob() -> None:
    assert ALL_POLICIES == POLICY_NAMES == tuple(POLICIES)
    assert set(KNOBS) == set(POLICY_NAMES) and set(HEAD_POLICIES) <= set(POLICY_NAMES)
    base = RoutingOptions()
    for name in POLICY_NAMES:
        values = sweep_values(name, 4, cost_ref=0.01)
        assert len(values) >= 2
        assert options_for(name, values[1], base, 4).policy == name
        assert isinstance(default_knob(name, base, 0.01), float)


def _matrix() -> OutcomeMatrix:
    return OutcomeMatrix(
        query_ids=np.array(["a", "b", "c"], dtype=object),
        texts=("x", "y", "z"),
        models=("cheap", "strong"),
        quality=np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]),
        cost=np.array([[1.0, 10.0], [1.0, 10.0], [1.0, 10.0]]),
        categories=np.array(["m", "m", "l"], dtype=object),
    )


def test_anchors_and_tables() -> None:
    test = _matrix()
    anchors = Anchors.of(test)
    ref = anchors.reference()
    assert (ref.weak, ref.strong) == ("cheap", "strong")
    assert ref.weak_point == (1.0, 1 / 3) and ref.strong_point == (10.0, 2 / 3)
    picks = {"top_k": np.array([[True, True], [True, False], [False, True]])}
    table = category_table(test, picks, ["top_k"], "max")
    assert table["m"].n == 2 and table["m"].routers["top_k"].quality == 1.0
    assert table["m"].routers["top_k"].cost == 6.0
    assert chosen_counts(test.models, picks) == {"top_k": {"cheap": 2, "strong": 2}}


def test_to_plain_keeps_field_order_nulls_and_omits_unset_optionals() -> None:
    ds = DatasetInfo(source="s", n_train=1, n_test=2, models=("a",), categories=["c"], cost_note="")
    assert list(to_plain(ds)) == ["source", "n_train", "n_test", "models", "categories", "cost_note"]
    assert to_plain(ds)["models"] == ["a"]
    pol = PolicyResult(
        knob="k",
        apgr=None,
        aiq=0.5,
        cpt50=None,
        cpt80=None,
        cost_to_pgr50=None,
        cost_to_pgr80=None,
        quality_at_20pct_strong_cost=0.1,
        curve=[[1.0, 0.5]],
        knobs=[1.0],
        strong_share=[0.0],
        pareto=[[1.0, 0.5]],
        strong_share_to_95=None,
        cost_to_95=None,
        policy="top_k",
    )
    d = to_plain(pol)
    assert "default" not in d and d["apgr"] is None and d["quality_head"] is None
    assert list(d)[-2:] == ["policy", "quality_head"]
    json.dumps(d)
