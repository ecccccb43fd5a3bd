"""cepr.errors: the one "did you mean" helper every unknown name goes through."""

import pytest

from cepr.errors import closest, did_you_mean, unknown


@pytest.mark.parametrize("name, hint", [
    ("Treshold", "Threshold"),  # difflib
    ("oracle", "Oracle"), ("EDGEONLY", "EdgeOnly"), ("CLOUDONLY", "CloudOnly"),  # case slips
    ("cloudonyl", "CloudOnly"),  # difflib ignoring case
    ("zzz", None), (None, None),
])
def test_closest(name, hint):
    assert closest(name, ["EdgeOnly", "CloudOnly", "Oracle", "Threshold"]) == hint


def test_did_you_mean_and_unknown():
    assert did_you_mean("edge-int9", ["edge-int8", "cloud"], "the shipped model") == \
        "; did you mean the shipped model 'edge-int8'?"
    assert did_you_mean("zzz", ["a"]) == ""
    assert unknown("metric", "acuracy", ["latency_p95", "accuracy"], listing="metrics") == \
        "unknown metric 'acuracy'; did you mean 'accuracy'? (metrics: latency_p95, accuracy)"
    assert unknown("hyperparameter", "zzz", ["b", "a"], listing="known", sort=True) == \
        "unknown hyperparameter 'zzz' (known: a, b)"
    assert unknown("hyperparameter", "x", [], listing="known") == "unknown hyperparameter 'x' (known: none)"
    assert unknown("task", "x", ["y"]) == "unknown task 'x'"
