"""Key limits and usage, the decision log, feedback and the profile update, through the repository and
the `coe` CLI (CliRunner), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.ops import cli as root
from registry import Registry
from registry import decisions as dlog
from registry import repository as repo
from registry.records import DecisionRecord, UsageDelta
from registry.usage import period_start


@pytest.fixture(scope="module")
def app() -> Any:
    root._register()
    return root.app


@pytest.fixture
def invoke(app: Any, db_url: str) -> Any:
    runner = CliRunner()

    def run(*args: str) -> Any:
        env = {"COE_DATABASE_URL": db_url, "COE_CONFIG": None, "COLUMNS": "200"}
        return runner.invoke(app, list(args), env=env)

    return run


@pytest.fixture
def reg(db_url: str) -> Any:
    r = Registry(db_url)
    yield r
    r.close()


def decision(i: str, category: str | None, experts: tuple[str, ...], cost: float = 0.001) -> DecisionRecord:
    return DecisionRecord(
        id=i,
        created_at=datetime.now(UTC),
        key_id=None,
        policy="category",
        categories=((category, 0.9),) if category else (),
        experts=experts,
        answered_by=experts[0],
        cost_usd=cost,
        latency_ms=5.0,
        prompt=f"prompt {i}",
    )


def test_keys_create_update_and_list_with_usage(invoke: Any, reg: Registry) -> None:
    r = invoke(
        "keys",
        "create",
        "--scope",
        "query",
        "--rpm",
        "60",
        "--budget-usd",
        "5",
        "--budget-period",
        "day",
        "--json",
    )
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)
    assert (created["rpm"], created["tpm"], created["budget_usd"], created["budget_period"]) == (
        60,
        None,
        5.0,
        "day",
    )
    key_id = created["id"]
    r = invoke("keys", "update", key_id, "--tpm", "1000", "--rpm", "0", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "id": key_id,
        "rpm": None,
        "tpm": 1000,
        "budget_usd": 5.0,
        "budget_period": "day",
    }
    today = period_start("day")
    reg.add_usage(
        [
            UsageDelta(key_id, today, 2, 30, 10, 0.25),
            UsageDelta(key_id, today, 1, 5, 5, 0.5),
            UsageDelta(key_id, "2020-01-01", 9, 9, 9, 9.0),
        ]
    )  # an old period: not "current"
    [row] = json.loads(invoke("keys", "list", "--json").stdout)
    assert row["usage"] == {
        "period_start": today,
        "requests": 3,
        "prompt_tokens": 35,
        "completion_tokens": 15,
        "cost_usd": pytest.approx(0.75),
    }
    assert created["key"] not in invoke("keys", "list").stdout
    assert "$0.7500 / $5" in invoke("keys", "list").stdout
    r = invoke("keys", "update", key_id, "--budget-period", "week")
    assert r.exit_code != 0 and "budget period" in str(r.exception)


def test_decisions_list_and_export(invoke: Any, reg: Registry, tmp_path: Any) -> None:
    reg.write_decisions([decision("c1", "math", ("math",)), decision("c2", "code", ("coder",))])
    reg.add_feedback(decision_id="c1", score=0.25, comment="meh")
    rows = json.loads(invoke("decisions", "list", "--json", "--limit", "5").stdout)
    assert {r["id"] for r in rows} == {"c1", "c2"}
    assert next(r for r in rows if r["id"] == "c1")["feedback"] == {"score": 0.25, "comment": "meh"}
    assert len(json.loads(invoke("decisions", "list", "--json", "--limit", "1").stdout)) == 1
    out = tmp_path / "out.jsonl"
    r = invoke("decisions", "export", str(out))
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [
        {
            "id": "c1",
            "prompt": "prompt c1",
            "category": "math",
            "outcomes": {"math": {"quality": 0.25, "cost_usd": 0.001}},
        }
    ]


def test_feedback_validation(reg: Registry) -> None:
    from router.errors import BadRequest, NotFound

    reg.write_decisions([decision("c1", "math", ("math",))])
    with pytest.raises(NotFound):
        reg.add_feedback(decision_id="nope", score=0.5)
    for bad in (1.01, -1, float("nan"), True, "0.5"):
        with pytest.raises(BadRequest):
            reg.add_feedback(decision_id="c1", score=bad)


def test_posterior_math() -> None:
    # prior 0.8 with 10 pseudo-observations, then scores 0, 0.5: (0.8*10 + 0.5) / 12
    assert dlog.posterior(0.8, 10, [0.0, 0.5]) == (pytest.approx(8.5 / 12), 12.0)
    assert dlog.posterior(0.5, 2, [1.0, 1.0]) == (pytest.approx(0.75), 4.0)  # Beta(1,1) + two successes
    assert dlog.posterior(0.3, 0, [1.0]) == (1.0, 1.0)  # no prior weight: the data alone
    assert dlog.posterior(0.3, 5, []) == (0.3, 5.0)


def test_profile_from_feedback_updates_skill_scores_once(invoke: Any, reg: Registry) -> None:
    with reg.session() as s:
        for name in ("math", "coder"):
            repo.add_expert(s, name=name, base_url="http://127.0.0.1:1/v1", model="m")
        repo.add_category(s, name="math")
        repo.add_category(s, name="code")
        repo.set_skill_scores(s, expert="math", category="math", score=0.8, n=10)
    reg.write_decisions(
        [
            decision("a", "math", ("math",)),
            decision("b", "math", ("math",)),
            decision("c", "code", ("coder",)),
            decision("d", None, ("math",)),  # no category: not used
            decision("e", "math", ("ghost",)),  # unknown expert: skipped
        ]
    )
    for i, score in (("a", 0.0), ("b", 0.5), ("c", 1.0), ("d", 1.0), ("e", 1.0)):
        reg.add_feedback(decision_id=i, score=score)
    r = invoke("experts", "profile", "--from-feedback", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["dry_run"] is True
    r = invoke("experts", "profile", "--from-feedback", "--json")
    assert r.exit_code == 0, r.output
    ups = {(u["expert"], u["category"]): u for u in json.loads(r.stdout)["updates"]}
    assert set(ups) == {("math", "math"), ("coder", "code")}
    assert (
        ups["math", "math"]["score"] == pytest.approx((0.8 * 10 + 0.5) / 12)
        and ups["math", "math"]["n"] == 12
    )
    assert ups["coder", "code"]["score"] == pytest.approx((0.5 * 2 + 1) / 3)  # unscored: Beta(1, 1) prior
    with reg.session(write=False) as s:
        scores = {(x.expert, x.category): (x.score, x.n, x.source) for x in repo.list_skill_scores(s)}
    assert scores["math", "math"] == (pytest.approx(8.5 / 12), 12, "feedback")
    # applied once: a second run finds nothing new
    again = json.loads(invoke("experts", "profile", "--from-feedback", "--json").stdout)
    assert again["updates"] == []
    assert invoke("experts", "profile").exit_code != 0  # neither --from-eval nor --from-feedback
