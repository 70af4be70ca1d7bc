"""`coe eval sources --within K`: the real-prompt sources' rows dealt into K folds (a source's provenance
groups kept whole), each fold held out in turn, and the rows reported under their own sources again."""

from __future__ import annotations

from collections import Counter

import pytest

from eval.classify.sources import leave_one_source_out, within_folds
from eval.data.datasets import Example
from router.errors import BadRequest
from tests.eval._cli import coe

WORDS = {"x": "alpha beta", "y": "gamma delta"}


def _examples() -> list[Example]:
    clustered = [  # 12 clusters of two prompts each, like Arena-Hard's topic clusters
        Example(
            f"{WORDS['xy'[c % 2]]} a{c}-{j}", "xy"[c % 2], f"a:{c}-{j}", group=f"a-cluster{c}", source="a"
        )
        for c in range(12)
        for j in range(2)
    ]
    flat = [
        Example(f"{WORDS['xy'[i % 2]]} b{i}", "xy"[i % 2], f"b:{i}", group="b-", source="b")
        for i in range(20)
    ]
    other = [
        Example(f"{WORDS['xy'[i % 2]]} c{i}", "xy"[i % 2], f"c:{i}", group="c-", source="c")
        for i in range(20)
    ]
    return clustered + flat + other


def test_rows_are_dealt_by_cluster_or_by_row_and_weigh_as_their_source():
    exs = _examples()
    split = within_folds(
        exs, 3, frozenset({"a", "b"}), {"c": "c"}, {"c": "written", "a": "real", "b": "real"}
    )
    assert split == within_folds(
        exs, 3, frozenset({"a", "b"}), {"c": "c"}, {"c": "written", "a": "real", "b": "real"}
    )
    renamed = split.examples
    assert [e.source for e in renamed[-20:]] == ["c"] * 20  # not split: trained on in every fold
    assert {e.source.split("@")[0] for e in renamed[:44]} == {"a", "b"}
    # a cluster's two prompts share a fold; a source with one group is dealt row by row
    for c in range(12):
        assert renamed[2 * c].source == renamed[2 * c + 1].source
    assert len({e.source for e in renamed[24:44]}) == 3
    assert split.hold_out == frozenset({"within fold 0", "within fold 1", "within fold 2"})
    for e in renamed[:44]:
        assert split.family[e.source] == f"within fold {e.source.split('@')[1]}"
        assert split.source_group[e.source] == "real" and split.origin[e.source] == e.source.split("@")[0]
    assert split.family["c"] == "c" and split.source_group["c"] == "written"
    with pytest.raises(BadRequest, match="at least 2 folds"):
        within_folds(exs, 1, frozenset({"a"}), {})


def test_each_fold_is_held_out_and_reported_under_its_source():
    exs = _examples()
    split = within_folds(exs, 3, frozenset({"a", "b"}), {"c": "c"})
    rows = leave_one_source_out(
        split.examples, lambda t: None, kind="tfidf", family=split.family, hold_out=split.hold_out
    )
    # the three folds test every split row once; the source trained on in every fold is never tested
    assert Counter(r.source for r in split.restore(rows)) == {"a": 24, "b": 20}
    assert all(r.seen for r in rows) and sum(r.pred == r.label for r in rows) >= 40


@pytest.mark.parametrize(
    ("args", "err"),
    [
        (["--within", "1"], "error: --within must be at least 2 folds, got 1"),
        (["--within", "3", "--hold-out", "real"], "error: --within and --hold-out: give one of them"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, args, err):
    proc = coe("eval", "sources", "--data", str(tmp_path), *args)
    assert (proc.returncode, proc.stderr.strip()) == (2, err)
