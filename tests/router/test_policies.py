"""Policies on hand-built probability vectors and snapshots."""

import pytest

from router.balancer import LoadBias
from router.errors import NoHealthyExpert, RoutingError
from router.policies import POLICIES, get_policy
from router.types import ExpertInfo, ExpertLoad, RegistrySnapshot, RoutingOptions

CATS = ("math", "law", "biology")


def expert(name, *, cost=0.0, enabled=True, tags=()):
    return ExpertInfo(
        name=name,
        base_url="http://x/v1",
        model=name,
        cost_input_per_m=cost,
        cost_output_per_m=cost,
        enabled=enabled,
        tags=tags,
    )


def snap(**kw):
    experts = kw.pop(
        "experts",
        [expert("m1"), expert("m2"), expert("l1"), expert("b1"), expert("gen", tags=("generalist",))],
    )
    cat_map = kw.pop("category_experts", {"math": ("m1", "m2"), "law": ("l1",), "biology": ("b1",)})
    return RegistrySnapshot(revision=1, experts={e.name: e for e in experts}, category_experts=cat_map, **kw)


def probs(**p):
    return [(c, p.get(c, 0.0)) for c in CATS]


def decide(name, pr, snapshot=None, load=None, balancer=None, **opts):
    return get_policy(name, balancer=balancer).decide(
        pr, snapshot or snap(), load or {}, RoutingOptions(policy=name, **opts)
    )


def test_registry_and_unknown_policy():
    assert set(POLICIES) == {"category", "top_k", "top_p", "cost_aware", "quality"}
    with pytest.raises(RoutingError, match="category, cost_aware, quality, top_k, top_p"):
        get_policy("nope")


def test_category_confident_picks_top_ranked_expert():
    d = decide("category", probs(math=0.9, law=0.05, biology=0.05))
    assert d.expert_names == ("m1",)
    assert not d.fallback
    assert d.categories[0] == ("math", 0.9)
    assert d.alternates[:2] == ("m2", "gen")  # failover: rest of the category, then the generalist
    assert d.policy == "category" and "math" in d.experts[0].reason


def test_category_below_threshold_falls_back_to_generalist():
    d = decide("category", probs(math=0.34, law=0.33, biology=0.33), threshold=0.35)
    assert d.expert_names == ("gen",) and d.fallback
    assert "threshold" in d.experts[0].reason
    d2 = decide("category", probs(math=0.36, law=0.32, biology=0.32), threshold=0.35)
    assert d2.expert_names == ("m1",) and not d2.fallback


def test_category_threshold_compares_the_confidence_in_the_expert():
    """Categories that share their first expert add up: 0.3 law + 0.3 biology is 0.6 on l1, above 0.35;
    the same split over two experts stays below it and falls back."""
    shared = snap(category_experts={"math": ("m1",), "law": ("l1",), "biology": ("l1", "b1")})
    d = decide("category", probs(law=0.31, biology=0.3, math=0.39 - 0.3), snapshot=shared, threshold=0.35)
    assert d.expert_names == ("l1",) and not d.fallback
    d2 = decide("category", probs(law=0.31, biology=0.3, math=0.09), threshold=0.35)
    assert d2.expert_names == ("gen",) and d2.fallback
    assert "0.31" in d2.experts[0].reason


def test_category_without_usable_expert_uses_generalist():
    load = {"l1": ExpertLoad(healthy=False)}
    d = decide("category", probs(law=0.9, math=0.1), load=load)
    assert d.expert_names == ("gen",) and d.fallback
    assert "l1" not in d.alternates


def test_category_skips_unhealthy_and_disabled():
    s = snap(
        experts=[
            expert("m1", enabled=False),
            expert("m2"),
            expert("l1"),
            expert("b1"),
            expert("gen", tags=("generalist",)),
        ]
    )
    d = decide("category", probs(math=0.9, law=0.1), snapshot=s)
    assert d.expert_names == ("m2",)
    d = decide("category", probs(math=0.9, law=0.1), load={"m1": ExpertLoad(healthy=False)})
    assert d.expert_names == ("m2",) and "m1" not in d.alternates


def test_no_healthy_expert():
    load = {n: ExpertLoad(healthy=False) for n in ("m1", "m2", "l1", "b1", "gen")}
    for name in POLICIES:
        with pytest.raises(NoHealthyExpert):
            decide(name, probs(math=0.9, law=0.1), load=load)


def test_top_k_uses_skills_and_derives_missing_ones():
    s = snap(skills={"l1": {"math": 0.9, "law": 0.9}})  # a measured profile beats rank-derived ones
    d = decide("top_k", probs(math=0.6, law=0.4), snapshot=s, k=2)
    assert d.expert_names == ("l1", "m1")
    assert d.experts[0].score == pytest.approx(0.9)
    assert d.experts[1].score == pytest.approx(0.6)  # rank 0 -> skill 1.0
    assert d.alternates[0] == "m2"  # rank 1 -> 0.5 * 0.6 = 0.3
    assert "gen" in d.alternates


def test_top_p_grows_with_uncertainty():
    s = snap(category_experts={"math": ("m1",), "law": ("l1",), "biology": ("b1",)})
    confident = decide("top_p", probs(math=0.95, law=0.03, biology=0.02), snapshot=s, p=0.7, max_experts=3)
    uncertain = decide("top_p", probs(math=0.4, law=0.35, biology=0.25), snapshot=s, p=0.7, max_experts=3)
    assert confident.expert_names == ("m1",)
    assert uncertain.expert_names == ("m1", "l1")
    capped = decide("top_p", probs(math=0.34, law=0.33, biology=0.33), snapshot=s, p=0.99, max_experts=2)
    assert len(capped.expert_names) == 2


def test_cost_aware_tolerance_and_budget():
    s = snap(
        experts=[expert("big", cost=10.0), expert("small", cost=0.1), expert("mid", cost=1.0)],
        category_experts={"math": ("big", "small", "mid")},
        skills={"big": {"math": 0.80}, "small": {"math": 0.77}, "mid": {"math": 0.79}},
    )
    pr = [("math", 1.0)]
    d = decide("cost_aware", pr, snapshot=s, tolerance=0.05)
    assert d.expert_names == ("small",)
    assert d.experts[0].score == pytest.approx(0.77)
    d = decide("cost_aware", pr, snapshot=s, tolerance=0.015)
    assert d.expert_names == ("mid",)
    d = decide("cost_aware", pr, snapshot=s, tolerance=0.0)
    assert d.expert_names == ("big",)
    # budget: the best within budget (nominal 500+500 tokens: big $0.01, mid $0.001, small $0.0001)
    d = decide("cost_aware", pr, snapshot=s, budget_usd=0.002)
    assert d.expert_names == ("mid",)
    with pytest.raises(RoutingError, match="budget"):
        decide("cost_aware", pr, snapshot=s, budget_usd=0.00001)


def test_invalid_options():
    with pytest.raises(RoutingError, match="p must be"):
        decide("top_p", probs(math=1.0), p=0.0)


def test_load_bias_moves_traffic_between_equal_experts():
    s = snap(
        experts=[expert("a"), expert("b"), expert("c", enabled=False), expert("d")],
        category_experts={"math": ("a", "b", "c", "d")},
        skills={"a": {"math": 0.8}, "b": {"math": 0.8}, "c": {"math": 0.95}, "d": {"math": 0.99}},
    )
    load = {"d": ExpertLoad(healthy=False)}
    bal = LoadBias(gamma=0.01, max_bias=0.03)
    counts = {"a": 0, "b": 0}
    in_flight = {"a": 0, "b": 0}
    for _ in range(40):
        live = {**load, "a": ExpertLoad(in_flight=in_flight["a"]), "b": ExpertLoad(in_flight=in_flight["b"])}
        bal.update(live)
        d = decide("category", [("math", 1.0)], snapshot=s, load=live, balancer=bal)
        name = d.expert_names[0]
        assert name in ("a", "b")  # never the disabled c or the unhealthy d, whatever their skill
        counts[name] += 1
        in_flight[name] += 1
        assert d.experts[0].score == pytest.approx(0.8)  # reported quality stays unbiased
    assert counts["a"] >= 10 and counts["b"] >= 10


def test_load_bias_is_clipped_and_does_not_override_quality():
    s = snap(
        experts=[expert("good"), expert("poor")],
        category_experts={"math": ("good", "poor")},
        skills={"good": {"math": 0.9}, "poor": {"math": 0.5}},
    )
    bal = LoadBias(gamma=0.01, max_bias=0.03)
    for _ in range(100):
        bal.update({"good": ExpertLoad(in_flight=50), "poor": ExpertLoad(in_flight=0)})
    assert bal.bias("good") == pytest.approx(-0.03) and bal.bias("poor") == pytest.approx(0.03)
    d = decide("top_k", [("math", 1.0)], snapshot=s, balancer=bal, k=1)
    assert d.expert_names == ("good",)
    assert d.experts[0].bias == pytest.approx(-0.03)
    off = decide("top_k", [("math", 1.0)], snapshot=s, balancer=bal, k=1, load_bias=False)
    assert off.experts[0].bias == 0.0


def test_category_without_expert_or_generalist_uses_next_category():
    s = snap(experts=[expert("m1"), expert("l1", enabled=False), expert("b1")])
    d = decide("category", probs(law=0.6, biology=0.3, math=0.1), snapshot=s)
    assert d.expert_names == ("b1",) and d.fallback
    assert d.alternates == ("m1",)


def test_vectorised_scores_equal_the_definition() -> None:
    """scores() uses a cached skill matrix; it must equal Σ_c P(c)·skill(e, c) computed directly."""
    import numpy as np

    from router.policies import get_policy
    from router.types import ExpertInfo, ExpertLoad, RegistrySnapshot

    rng = np.random.default_rng(1)
    cats = [f"c{i}" for i in range(7)]
    experts = {
        f"e{i}": ExpertInfo(name=f"e{i}", base_url="http://127.0.0.1:9/v1", model="m", enabled=i != 3)
        for i in range(12)
    }
    cmap = {c: tuple(rng.choice(sorted(experts), size=3, replace=False)) for c in cats}
    skills = {"e1": {"c0": 0.9, "c5": 0.2}, "e7": {"c2": 0.4}}  # the rest fall back to map ranks
    snap = RegistrySnapshot(revision=3, experts=experts, category_experts=cmap, skills=skills)
    load = {"e5": ExpertLoad(healthy=False)}
    policy = get_policy("top_k")
    probs = sorted(zip(cats, rng.dirichlet(np.ones(7)).tolist(), strict=True), key=lambda t: -t[1])
    got = policy.scores(probs, snap, load)
    want = {}
    for name in experts:
        if policy.usable(name, snap, load):
            s = sum(p * policy.skill(name, c, snap) for c, p in probs)
            if s > 0:
                want[name] = s
    assert got.keys() == want.keys()
    assert "e3" not in got and "e5" not in got
    for name, s in want.items():
        assert abs(got[name] - s) < 1e-9


# ----- requirements: capabilities and context length, in every policy --------------------------------

from dataclasses import replace  # noqa: E402

from router.errors import BadRequest  # noqa: E402


def capable_snap():
    """m1 is the best math expert but serves plain text only; m2 (ranked second) has tools and json."""
    experts = [
        expert("m1"),
        replace(expert("m2"), capabilities=("json", "tools")),
        expert("l1"),
        replace(expert("b1"), capabilities=("vision",), max_context=1000),
        expert("gen", tags=("generalist",)),
    ]
    return snap(experts=experts)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_chooses_only_experts_with_the_needed_capabilities(policy):
    d = decide(policy, probs(math=0.9, law=0.1), capable_snap(), needs=frozenset({"tools"}), k=3)
    assert d.expert_names == ("m2",)
    assert set(d.alternates) <= {"m2"}
    plain = decide(policy, probs(math=0.9, law=0.1), capable_snap())
    assert "m1" in plain.expert_names  # without the requirement m1 is chosen


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_skips_experts_whose_context_is_too_small(policy):
    d = decide(policy, probs(biology=0.95, law=0.05), capable_snap(), context_tokens=2000)
    assert "b1" not in d.expert_names and "b1" not in d.alternates
    assert "b1" in decide(policy, probs(biology=0.95, law=0.05), capable_snap()).expert_names


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_capability_no_enabled_expert_has_is_a_bad_request_naming_it(policy):
    with pytest.raises(BadRequest, match="'audio'") as ei:
        decide(policy, probs(math=1.0), capable_snap(), needs=frozenset({"audio"}))
    assert ei.value.code == "unsupported_capability" and ei.value.status == 400
    with pytest.raises(BadRequest, match="largest context") as ei:
        decide(policy, probs(math=1.0), capable_snap(), context_tokens=10_000)
    assert ei.value.code == "context_length_exceeded"


def test_capable_experts_that_are_all_unhealthy_are_503_not_400():
    with pytest.raises(NoHealthyExpert):
        decide(
            "category",
            probs(math=1.0),
            capable_snap(),
            load={"m2": ExpertLoad(healthy=False)},
            needs=frozenset({"tools"}),
        )


def test_category_uses_the_next_category_when_its_experts_lack_a_capability():
    s = capable_snap()
    d = decide("category", probs(biology=0.6, math=0.3, law=0.1), s, needs=frozenset({"tools"}))
    assert d.expert_names == ("m2",) and d.fallback
    assert "no expert for category 'biology' serves tools: next category 'math'" in d.experts[0].reason


def test_single_expert_requests_are_not_aggregated():
    d = decide("top_k", probs(math=0.5, law=0.5), capable_snap(), k=3, aggregate="vote", single=True)
    assert len(d.expert_names) == 1 and d.aggregate is None and len(d.alternates) >= 2
    many = decide("top_k", probs(math=0.5, law=0.5), capable_snap(), k=3, aggregate="vote")
    assert len(many.expert_names) == 3 and many.aggregate == "vote"
