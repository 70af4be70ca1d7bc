"""router/defaults.py is the one home of facts several packages state; these pin the others to it."""

from router.defaults import AGGREGATION_MODES, DEFAULT_POLICY, POLICY_NAMES, QUALITY_HEADS
from router.policies import POLICIES
from router.quality import SCORERS


def test_policy_names_are_the_policies():
    assert tuple(POLICIES) == POLICY_NAMES
    assert DEFAULT_POLICY in POLICY_NAMES


def test_public_model_aliases_name_real_policies():
    from deploy.api.protocol import POLICY_ALIASES

    assert set(POLICY_ALIASES.values()) <= set(POLICIES)
    assert set(POLICY_ALIASES.values()) == set(POLICY_NAMES)  # every policy reachable by a model name


def test_quality_heads_and_aggregation_modes():
    assert SCORERS == QUALITY_HEADS
    from experts.aggregate import MODES

    assert tuple(MODES) == AGGREGATION_MODES
