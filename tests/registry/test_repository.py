"""Repository functions and the Registry facade, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from registry import Registry
from registry import repository as repo
from router.errors import BadRequest, Conflict, NotFound, RegistryUnavailable
from router.types import ExpertInfo


@pytest.fixture
def reg(db_url: str):
    with Registry(db_url) as r:
        yield r


def _seed(reg: Registry) -> None:
    with reg.session() as s:
        repo.add_expert(
            s,
            name="gen",
            base_url="http://127.0.0.1:8101/v1/",
            model="smol",
            tags=["generalist"],
            cost_input_per_m=0.1,
            cost_output_per_m=0.2,
        )
        repo.add_expert(
            s,
            name="math-1",
            base_url="https://math.example:8443/v1",
            model="qwen-math",
            api_key_env="MATH_KEY",
            max_context=8192,
            max_concurrency=4,
            timeout_s=30.5,
            notes="n",
        )
        repo.add_category(s, name="math", description="numbers")
        repo.add_category(s, name="computer science")
        repo.map_expert(s, category="math", expert="math-1", rank=1)
        repo.map_expert(s, category="math", expert="gen", rank=2)
        repo.set_skill_scores(
            s, expert="math-1", scores={"math": 0.9, "computer science": 0.4}, n=50, source="t"
        )


def _state(reg: Registry):
    with reg.session(write=False) as s:
        return reg.revision(), repo.export_registry(s), [k.id for k in repo.list_api_keys(s)]


def test_empty_registry_starts_at_revision_zero(reg: Registry) -> None:
    snap = reg.snapshot()
    assert reg.revision() == 0 and snap.revision == 0
    assert dict(snap.experts) == {} and dict(snap.category_experts) == {}
    assert reg.has_api_keys() is False


def test_snapshot_holds_experts_ranked_categories_and_skills(reg: Registry) -> None:
    _seed(reg)
    snap = reg.snapshot()
    assert snap.revision == reg.revision() == 7
    assert snap.experts["gen"] == ExpertInfo(
        name="gen",
        base_url="http://127.0.0.1:8101/v1",
        model="smol",
        cost_input_per_m=0.1,
        cost_output_per_m=0.2,
        tags=("generalist",),
    )
    assert snap.experts["math-1"].api_key_env == "MATH_KEY" and snap.experts["math-1"].timeout_s == 30.5
    assert snap.category_experts == {"math": ("math-1", "gen"), "computer science": ()}
    assert snap.skills == {"math-1": {"math": 0.9, "computer science": 0.4}}
    assert snap.generalist == "gen"
    # re-mapping changes the rank; disabling hides the expert from routing but keeps it listed
    with reg.session() as s:
        repo.map_expert(s, category="math", expert="gen", rank=0 + 1)
        repo.map_expert(s, category="math", expert="math-1", rank=5)
        repo.set_expert_enabled(s, name="math-1", enabled=False)
    snap = reg.snapshot()
    assert snap.category_experts["math"] == ("gen",)
    assert snap.experts["math-1"].enabled is False and "math-1" not in snap.skills
    assert snap.revision == 10


def test_update_changes_only_given_fields(reg: Registry) -> None:
    _seed(reg)
    with reg.session() as s:
        before = repo.get_expert(s, name="math-1")
        after = repo.update_expert(
            s, name="math-1", cost_output_per_m=3.5, tags=["math", "math"], api_key_env=None
        )
    assert after.cost_output_per_m == 3.5 and after.tags == ("math",) and after.api_key_env is None
    assert (after.base_url, after.model, after.max_context, after.notes) == (
        before.base_url,
        before.model,
        before.max_context,
        before.notes,
    )
    assert after.updated_at >= before.updated_at


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"name": "bad name!"}, BadRequest, "invalid expert name"),
        ({"name": ""}, BadRequest, "invalid expert name"),
        ({"base_url": "ftp://x/v1"}, BadRequest, "invalid URL"),
        ({"base_url": "http:///v1"}, BadRequest, "invalid URL"),
        ({"base_url": "not a url"}, BadRequest, "invalid URL"),
        ({"cost_input_per_m": -0.01}, BadRequest, "≥ 0"),
        ({"cost_output_per_m": float("nan")}, BadRequest, "≥ 0"),
        ({"max_context": 0}, BadRequest, "positive integer"),
        ({"max_concurrency": -3}, BadRequest, "positive integer"),
        ({"timeout_s": 0}, BadRequest, "positive number"),
        ({"api_key_env": "sk-live-123"}, BadRequest, "NAME of an environment variable"),
        ({"model": " "}, BadRequest, "invalid model"),
        ({"name": "gen"}, Conflict, "already exists"),
    ],
)
def test_bad_expert_input_changes_nothing(reg: Registry, kwargs, error, fragment) -> None:
    _seed(reg)
    before = _state(reg)
    args = {"name": "new", "base_url": "http://h:1/v1", "model": "m", **kwargs}
    with pytest.raises(error, match=fragment), reg.session() as s:
        repo.add_expert(s, **args)
    assert _state(reg) == before


def test_unknown_names_are_not_found_and_change_nothing(reg: Registry) -> None:
    _seed(reg)
    before = _state(reg)
    calls = [
        lambda s: repo.update_expert(s, name="nope", model="x"),
        lambda s: repo.remove_expert(s, name="nope"),
        lambda s: repo.remove_category(s, name="nope"),
        lambda s: repo.map_expert(s, category="nope", expert="gen", rank=1),
        lambda s: repo.map_expert(s, category="math", expert="nope", rank=1),
        lambda s: repo.unmap_expert(s, category="computer science", expert="gen"),
        lambda s: repo.set_skill_scores(s, expert="gen", category="nope", score=0.5),
        lambda s: repo.revoke_api_key(s, key_id="0123456789ab"),
    ]
    for call in calls:
        with pytest.raises(NotFound), reg.session() as s:
            call(s)
    with pytest.raises(Conflict), reg.session() as s:
        repo.add_category(s, name="math")
    with pytest.raises(BadRequest), reg.session() as s:
        repo.set_skill_scores(s, expert="gen", category="math", score=1.5)
    with pytest.raises(BadRequest), reg.session() as s:
        repo.map_expert(s, category="math", expert="gen", rank=0)
    assert _state(reg) == before


def test_a_failing_change_rolls_back_the_whole_transaction(reg: Registry) -> None:
    _seed(reg)
    before = _state(reg)
    with pytest.raises(NotFound), reg.session() as s:
        repo.add_expert(s, name="half", base_url="http://h/v1", model="m")
        repo.map_expert(s, category="math", expert="missing", rank=1)
    assert _state(reg) == before


def test_remove_expert_takes_its_mappings_and_scores(reg: Registry) -> None:
    _seed(reg)
    with reg.session() as s:
        repo.remove_expert(s, name="math-1")
        assert [c.experts for c in repo.list_categories(s) if c.name == "math"] == [(("gen", 2),)]
        assert repo.list_skill_scores(s) == []
    with reg.session() as s:
        repo.remove_category(s, name="math")
        assert [c.name for c in repo.list_categories(s)] == ["computer science"]


def test_skill_scores_can_create_categories_when_asked(reg: Registry) -> None:
    _seed(reg)
    with reg.session() as s:
        rev = repo.set_skill_scores(
            s, expert="gen", scores={"law": 0.25, "math": 0.5}, n=3, source="run-1", create_categories=True
        )
    assert rev == reg.revision()
    assert reg.snapshot().skills["gen"] == {"law": 0.25, "math": 0.5}


def test_settings_round_trip_and_bump_the_revision(reg: Registry) -> None:
    assert reg.get_setting("router.artifact") is None
    assert reg.get_setting("router.artifact", "default") == "default"
    rev = reg.set_setting("router.artifact", {"path": "/srv/routers/v2", "version": "v2"})
    assert rev == reg.revision() == 1
    assert reg.get_setting("router.artifact") == {"path": "/srv/routers/v2", "version": "v2"}
    assert reg.set_setting("router.artifact", "plain") == 2
    assert reg.get_setting("router.artifact") == "plain"
    with pytest.raises(BadRequest):
        reg.set_setting("bad key", 1)
    with pytest.raises(BadRequest):
        reg.set_setting("k", {1, 2})
    assert reg.revision() == 2


def test_api_keys_are_hashed_scoped_and_revocable(reg: Registry) -> None:
    with reg.session() as s:
        rec, plaintext = repo.create_api_key(s, scopes=["admin", "query", "admin"], name="ops")
        other, other_plain = repo.create_api_key(s, scopes=["query"])
    assert rec.scopes == ("query", "admin") and rec.active and rec.allows("admin")
    assert plaintext.startswith(f"coe_{rec.id}_")
    with reg.session(write=False) as s:  # the secret is never stored
        from sqlalchemy import text

        stored = " ".join(str(v) for row in s.execute(text("SELECT * FROM api_key")) for v in row)
    assert plaintext.split("_", 2)[2] not in stored and "pbkdf2_sha256$" in stored
    assert reg.has_api_keys()
    assert reg.verify_key(plaintext).id == rec.id
    assert reg.verify_key(plaintext).id == rec.id  # cached path
    assert reg.verify_key(other_plain).scopes == ("query",)
    assert reg.verify_key(plaintext[:-2] + ("AA" if not plaintext.endswith("AA") else "BB")) is None
    assert reg.verify_key(f"coe_{rec.id}_" + "x" * 43) is None
    assert reg.verify_key("garbage") is None and reg.verify_key("") is None
    with reg.session() as s:
        repo.revoke_api_key(s, key_id=rec.id)
    assert reg.verify_key(plaintext) is None  # revocation beats the cache
    assert reg.verify_key(other_plain) is not None
    with reg.session() as s:
        repo.revoke_api_key(s, key_id=other.id)
        keys = repo.list_api_keys(s)
    assert [k.active for k in keys] == [False, False]
    assert reg.has_api_keys()  # revoking every key must not open the service
    for scopes in ([], ["root"]):
        with pytest.raises(BadRequest), reg.session() as s:
            repo.create_api_key(s, scopes=scopes)


def test_export_import_round_trip_is_exact(reg: Registry, sqlite_db_url: str, tmp_path) -> None:
    _seed(reg)
    reg.set_setting("router.artifact", {"path": "/x", "n": [1, 2.5, None]})
    with reg.session(write=False) as s:
        exported = repo.export_registry(s)
    with Registry(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        with copy.session() as s:
            summary = repo.import_registry(s, data=exported)
        assert summary.added["experts"] == 2 and summary.added["mappings"] == 2 and copy.revision() == 1
        with copy.session(write=False) as s:
            assert repo.export_registry(s) == exported
        with copy.session() as s:  # importing the same file again changes nothing but the revision
            again = repo.import_registry(s, data=exported)
        assert again.describe() == "no changes"


def test_import_replace_removes_what_the_file_does_not_list(reg: Registry) -> None:
    _seed(reg)
    doc = {
        "experts": [{"name": "solo", "base_url": "http://s/v1", "model": "m"}],
        "categories": [{"name": "math", "experts": [{"expert": "solo", "rank": 1}]}],
    }
    with reg.session() as s:
        merged = repo.import_registry(s, data=doc)
    assert merged.added["experts"] == 1 and merged.removed["mappings"] == 2
    assert set(reg.snapshot().experts) == {"gen", "math-1", "solo"}
    with reg.session() as s:
        replaced = repo.import_registry(s, data=doc, replace=True)
    snap = reg.snapshot()
    assert replaced.removed["experts"] == 2 and replaced.removed["categories"] == 1
    assert set(snap.experts) == {"solo"} and snap.category_experts == {"math": ("solo",)}


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([1, 2], "must hold a mapping"),
        ({"experts": {"a": 1}}, "experts must be a list"),
        ({"experts": [{"name": "a", "model": "m"}]}, "missing 'base_url'"),
        (
            {"experts": [{"name": "a", "base_url": "http://a", "model": "m", "colour": "red"}]},
            "unknown field",
        ),
        ({"experts": [{"name": "a", "base_url": "http://a", "model": "m", "cost_input_per_m": -1}]}, "≥ 0"),
        (
            {"categories": [{"name": "c", "experts": [{"expert": "ghost", "rank": 1}]}]},
            "unknown expert 'ghost'",
        ),
        ({"skills": [{"expert": "gen", "category": "math", "score": 2}]}, r"\[0, 1\]"),
        ({"version": 99}, "unsupported version"),
        ({"bogus": 1}, "unknown top-level key"),
    ],
)
def test_bad_import_is_all_or_nothing(reg: Registry, doc, fragment) -> None:
    _seed(reg)
    before = _state(reg)
    full = (
        doc
        if not isinstance(doc, dict)
        else {"experts": [{"name": "fresh", "base_url": "http://f/v1", "model": "m"}], **doc}
    )
    with pytest.raises(BadRequest, match=fragment), reg.session() as s:
        repo.import_registry(s, data=full, replace=True)
    assert _state(reg) == before


def test_unreachable_database_is_registry_unavailable() -> None:
    reg = Registry("postgresql+psycopg://x@127.0.0.1:1/db")
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        reg.revision()
    with pytest.raises(BadRequest, match="unsupported database"):
        Registry("mysql://x@h/db").revision()
    with pytest.raises(BadRequest, match="invalid database URL"):
        Registry("::not a url::").revision()
