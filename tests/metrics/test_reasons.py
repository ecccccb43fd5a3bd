"""The reason_* testenv metrics on hand-made sentences with known scores, against real frames' risk truth."""

from __future__ import annotations

import math

import pytest

from cepr.data.risk import risk_sentence, risk_truth
from cepr.metrics import reasons


def _edge(task, answer, reason=None):
    return {"source": "edge", "task": task, "answer": answer, "confidence": 0.9, "reason": reason}


def _cloud(task, answer, reason, status="ok"):
    return {"source": "cloud", "task": task, "answer": answer, "status": status, "reason": reason}


@pytest.fixture(scope="module")
def frames(tiny_data):
    """Two test frames with at least one risk object each, and their truth."""
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index

    ds = CloudRoboticsDataset(find_index(str(tiny_data), split="test"))
    out = [(str(f.label_path), risk_truth(f.label_path)) for f in ds.frames]
    out = [x for x in out if x[1]]
    assert len(out) >= 2
    return out[:2]


def test_scores_of_known_sentences(frames):
    (la, ta), (lb, tb) = frames
    a0 = ta[0]
    wrong = next(n for n in ("hydrant", "bus", "train", "belt") if n not in {o.name for o in ta})
    s_right = risk_sentence(ta[:1], "stop")  # names a0 at its distance (rounded to 0.1 m)
    s_mixed = f"A {a0.name} ahead at {a0.distance + 1.0:.1f} m and a {wrong} at 2.0 m; slow down."
    y_true = [la, la, lb, lb]
    y_pred = [[False, e, e, None] for e in (_edge("path_hazard", "yes", s_right), _edge("action", "stop", s_mixed))]
    # the third sample went to the cloud, which answered with a reason naming nothing; the fourth has no reason
    c = _cloud("action", "go", "nothing in the path; free space ahead 9.0 m (action = go)")
    y_pred += [[True, c, _edge("action", "stop", "A bus at 1.0 m; stop."), c], [False, _edge("action", "go"),
                                                                             _edge("action", "go"), None]]
    named = 1 + 2 + 0  # the edge's second reason names a0 and the wrong class; the cloud's (not the edge's) counts
    hits = 2
    there = len(ta) * 2 + len(tb)  # the truth of every sample with a reason
    assert reasons.reason_hazard_precision(y_true, y_pred) == pytest.approx(hits / named)
    assert reasons.reason_hazard_recall(y_true, y_pred) == pytest.approx(hits / there)
    assert reasons.reason_hazard_f1(y_true, y_pred) == pytest.approx(2 * hits / (named + there))
    err0 = abs(round(a0.distance, 1) - a0.distance)
    assert reasons.reason_distance_mae_m(y_true, y_pred) == pytest.approx((err0 + abs(1.0 + round(a0.distance, 1)
                                                                                     - a0.distance)) / 2, abs=0.06)
    # action samples with a reason: "slow down" vs answered stop (no), the cloud's "action = go" vs go (yes)
    assert reasons.reason_action_agreement(y_true, y_pred) == pytest.approx(0.5)
    for m in (reasons.reason_hazard_precision, reasons.reason_hazard_recall, reasons.reason_hazard_f1,
              reasons.reason_distance_mae_m, reasons.reason_action_agreement):
        assert type(m(y_true, y_pred)) is float


def test_no_reasons_is_nan_with_a_warning(frames):
    (la, _), _ = frames
    e = _edge("action", "go")
    with pytest.warns(RuntimeWarning, match="no sample carries a reason"):
        assert math.isnan(reasons.reason_hazard_f1([la], [[False, e, e, None]]))
    e = _edge("path_hazard", "no", "Nothing in or beside the path; go ahead.")
    with pytest.warns(RuntimeWarning, match="no action sample"):
        assert math.isnan(reasons.reason_action_agreement([la], [[False, e, e, None]]))


def test_registered_for_the_testenv():
    from cepr.metrics.joint import METRICS

    for m in ("reason_hazard_precision", "reason_hazard_recall", "reason_hazard_f1", "reason_distance_mae_m",
              "reason_action_agreement"):
        assert m in METRICS
