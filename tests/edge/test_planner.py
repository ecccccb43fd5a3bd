import math

import numpy as np
import pytest

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.geometry import BandProfile
from cepr.data.tasks import TASK_NAMES, TaskParams, answers_for_sample, camera_for
from cepr.edge.planner import Planner, decision_margin, fit_calibration
from cepr.edge.summary import SummaryObject, summarize
from cepr.metrics.calibration import expected_calibration_error


def person(d):
    return SummaryObject(11, 500, (0, 0, 10, 40), d, 0.0, 0.9, BandProfile(centre=d))


def test_margin_measures_distance_to_thresholds():
    p = TaskParams()
    assert decision_margin("path_hazard", [person(5.9)], p) == pytest.approx(0.1)
    assert decision_margin("path_hazard", [person(2.0)], p) == pytest.approx(4.0)
    assert decision_margin("path_hazard", [], p) == 10.0
    assert decision_margin("action", [person(2.6)], p) == pytest.approx(0.1)  # 0.1 m past stop_distance


def test_planner_on_true_summaries_is_the_ground_truth(tiny_data):
    planner = Planner()
    for s in CloudRoboticsDataset(find_index(tiny_data, split="train")):
        sm = summarize(s.label, s.depth, camera_for(s.sidecar, *s.label.shape[::-1]))
        ans = planner.answer(sm)
        assert {t: a.answer for t, a in ans.items()} == answers_for_sample(s)
        assert all(0.0 < a.confidence < 1.0 for a in ans.values())


def test_confidence_rises_with_margin_before_calibration():
    planner = Planner()
    from cepr.edge.summary import SceneSummary

    def summary(d):
        return SceneSummary(640, 480, (person(d),), (20.0, d, 20.0), 0.5, 0.1, (0.6, 1.2), "depth")

    assert planner.answer(summary(5.9))["path_hazard"].confidence < planner.answer(summary(2.0))["path_hazard"].confidence


def test_fit_calibration_learns_margin_and_lowers_ece():
    rng = np.random.default_rng(0)
    recs, feats, ys = [], [], []
    for _ in range(600):
        m = rng.uniform(0, 5)
        f = {"log_margin": math.log1p(m), "object_conf": rng.uniform(0.5, 1), "uncertainty": rng.uniform(0, 0.3)}
        y = rng.random() < 1 / (1 + math.exp(-(3 * m - 2)))  # right far from thresholds, a coin toss near them
        recs.append(("path_hazard", f, y))
        feats.append(f)
        ys.append(y)
    coef = fit_calibration(recs)
    assert coef["path_hazard"][1] > 0  # more margin -> more confidence
    raw = Planner()
    cal = Planner(calibration=coef)
    ece_raw = expected_calibration_error([raw.confidence("path_hazard", f) for f in feats], ys)
    ece_cal = expected_calibration_error([cal.confidence("path_hazard", f) for f in feats], ys)
    assert ece_cal < 0.05 and ece_cal < ece_raw


def test_fit_calibration_falls_back_to_accuracy_when_one_sided():
    f = {"log_margin": 1.0, "object_conf": 1.0, "uncertainty": 0.0}
    coef = fit_calibration([("traversable", f, True)] * 30 + [("action", f, True)] * 5 + [("action", f, False)] * 5)
    p = Planner(calibration=coef)
    assert p.confidence("traversable", f) > 0.99
    assert p.confidence("action", f) == pytest.approx(0.5, abs=1e-6)
    assert set(coef) == {"traversable", "action"} and set(TASK_NAMES) >= set(coef)
