"""Fusion rules (cepr.dispatch.fusion): the final answer when both sides answered."""

import itertools

import pytest

from cepr.data.tasks import TASKS
from cepr.dispatch.fusion import CAUTION, FUSION_REGISTRY, Side, fuse, get_fusion_rule
from cepr.errors import CeprError


def test_the_three_rules_are_registered_and_typos_get_did_you_mean():
    assert {"cloud_wins", "confidence", "safety_first"} <= set(FUSION_REGISTRY.names())
    with pytest.raises(CeprError, match="did you mean 'safety_first'"):
        get_fusion_rule("safety_frist")


def test_agreeing_sides_and_one_side_only():
    assert fuse("safety_first", "action", TASKS["action"].answers, Side("go", 0.9), Side("go", 0.1)) == ("go", "agree")
    assert fuse("confidence", "action", TASKS["action"].answers, None, Side("stop", 0.1)) == ("stop", "cloud")


@pytest.mark.parametrize("task", list(TASKS))
def test_cloud_wins_always_takes_the_cloud_answer(task):
    answers = TASKS[task].answers
    for e, c in itertools.permutations(answers, 2):
        assert fuse("cloud_wins", task, answers, Side(e, 0.99), Side(c, 0.01)) == (c, "cloud")


def test_confidence_takes_the_more_confident_side_and_ties_go_to_the_cloud():
    answers = TASKS["path_hazard"].answers
    assert fuse("confidence", "path_hazard", answers, Side("yes", 0.9), Side("no", 0.6)) == ("yes", "edge")
    assert fuse("confidence", "path_hazard", answers, Side("yes", 0.6), Side("no", 0.9)) == ("no", "cloud")
    assert fuse("confidence", "path_hazard", answers, Side("yes", 0.7), Side("no", 0.7)) == ("no", "cloud")
    assert fuse("confidence", "path_hazard", answers, Side("yes", 0.99), Side("no", None)) == ("no", "cloud")


def test_confidence_uses_the_edge_distribution_when_it_has_one():
    answers = TASKS["action"].answers
    # the edge's own distribution gives its answer 0.5 and the cloud's answer 0.45; the cloud says go at 0.4
    edge = Side("stop", 0.5, {"stop": 0.5, "go": 0.45, "slow": 0.05, "avoid_left": 0.0, "avoid_right": 0.0})
    cloud = Side("go", 0.4)
    # mean probability: stop (0.5 + 0.15) / 2 = 0.325, go (0.45 + 0.4) / 2 = 0.425
    assert fuse("confidence", "action", answers, edge, cloud) == ("go", "cloud")
    # without the distribution (answer-plus-even-rest), the more confident edge would win
    assert fuse("confidence", "action", answers, Side("stop", 0.5), cloud) == ("stop", "edge")


@pytest.mark.parametrize("task", list(TASKS))
def test_safety_first_keeps_the_more_cautious_answer_per_task(task):
    answers = TASKS[task].answers
    order = CAUTION.get(task)
    for e, c in itertools.permutations(answers, 2):
        final, side = fuse("safety_first", task, answers, Side(e, 0.1), Side(c, 0.9))
        if order is None or order[e] <= order[c]:
            assert (final, side) == (c, "cloud")
        else:
            assert (final, side) == (e, "edge")


def test_safety_first_never_lets_a_cloud_go_override_an_edge_stop():
    act = TASKS["action"].answers
    for c in act:
        assert fuse("safety_first", "action", act, Side("stop", 0.01), Side(c, 1.0))[0] == "stop"
    assert fuse("safety_first", "path_hazard", ("yes", "no"), Side("yes", 0.01), Side("no", 1.0))[0] == "yes"
    assert fuse("safety_first", "traversable", ("yes", "no"), Side("no", 0.01), Side("yes", 1.0))[0] == "no"
    assert set(CAUTION["action"]) == set(act)  # every action answer has a caution level


def test_a_rule_returning_nonsense_is_an_error():
    @FUSION_REGISTRY.register("test_bad_rule")
    def bad(task, answers, edge, cloud):
        return "both"

    try:
        with pytest.raises(CeprError, match="must return 'edge' or 'cloud'"):
            fuse("test_bad_rule", "action", TASKS["action"].answers, Side("go"), Side("stop"))
    finally:
        FUSION_REGISTRY.unregister("test_bad_rule")
