"""The pure half of an import (registry/repository/import_plan.py): a file and a state in, a plan out,
no database. What a removed expert or category takes with it is not planned (nor counted) again."""

from __future__ import annotations

from typing import Any

import pytest

from registry.repository.import_plan import RegistryState, plan_import, validate_document
from registry.repository.transfer import parse_document
from registry.spec import defaults
from router.errors import BadRequest


def _fields(**kw: Any) -> dict[str, Any]:
    return {**defaults(), "base_url": "http://a/v1", "model": "m", **kw}


STATE = RegistryState(
    experts={"a": _fields(), "b": _fields(model="n")},
    categories={"math": "numbers", "law": ""},
    mappings={"math": {"a": 1, "b": 2}, "law": {"b": 1}},
    skills={("a", "math"): (0.9, 10, "t"), ("b", "law"): (0.5, 0, ""), ("b", "math"): (0.2, 0, "")},
    settings={"k": 1, "old": "x"},
)


def _plan(data: dict[str, Any], *, replace: bool) -> Any:
    return plan_import(validate_document(parse_document(data)), STATE, replace=replace)


FILE = {
    "experts": [
        {"name": "a", "base_url": "http://a/v1", "model": "m"},
        {"name": "c", "base_url": "http://c", "model": "m"},
    ],
    "categories": [{"name": "math", "description": "numbers", "experts": [{"expert": "a", "rank": 2}]}],
    "skills": [{"expert": "a", "category": "math", "score": 0.9, "n": 10, "source": "t"}],
    "settings": {"k": 2},
}


def test_merge_changes_only_what_the_file_lists() -> None:
    plan = _plan(FILE, replace=False)
    assert list(plan.experts.add) == ["c"] and not plan.experts.update and not plan.experts.remove
    assert not plan.categories.add and not plan.categories.update and not plan.categories.remove
    # a listed category's experts are exactly the file's, replace or not
    assert plan.mappings.update == {("math", "a"): 2} and plan.mappings.remove == (("math", "b"),)
    assert not plan.skills.add and not plan.skills.update and not plan.skills.remove
    assert plan.settings.update == {"k": 2} and not plan.settings.remove
    summary = plan.summary(7)
    assert summary.added["experts"] == 1 and summary.removed["mappings"] == 1 and summary.revision == 7


def test_replace_does_not_count_what_went_with_a_removed_expert_or_category() -> None:
    plan = _plan(FILE, replace=True)
    assert plan.experts.remove == ("b",) and plan.categories.remove == ("law",)
    assert not plan.mappings.remove  # math -> b went with b
    assert not plan.skills.remove  # (b, law) and (b, math) went with b and law
    assert plan.settings.remove == ("old",)


def test_a_changed_field_updates_the_expert() -> None:
    data = {"experts": [{"name": "b", "base_url": "http://a/v1", "model": "n", "tags": ["t"]}]}
    assert _plan(data, replace=False).experts.update == {"b": _fields(model="n", tags=["t"])}


@pytest.mark.parametrize(
    ("data", "replace", "message"),
    [
        (
            {"categories": [{"name": "law", "experts": [{"expert": "ghost", "rank": 1}]}]},
            False,
            "category 'law' maps unknown expert 'ghost'",
        ),
        # with replace, an expert the file leaves out is gone: mapping it is mapping an unknown expert
        (
            {"categories": [{"name": "law", "experts": [{"expert": "b", "rank": 1}]}]},
            True,
            "category 'law' maps unknown expert 'b'",
        ),
        (
            {"skills": [{"expert": "a", "category": "law", "score": 1}]},
            True,
            "skill score for unknown expert 'a'",
        ),
        ({"skills": [{"expert": "a", "category": "art", "score": 1}]}, False, "unknown category 'art'"),
    ],
)
def test_references_to_entries_that_will_not_exist_are_bad_requests(
    data: dict[str, Any], replace: bool, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        _plan(data, replace=replace)
