"""Local planner: answers every task from the scene summary alone, with a calibrated confidence.

The answers come from the very task functions that define the ground truth (``cepr.data.tasks``), applied to
the summary's objects; on a summary of the true mask they are the ground truth. The confidence is what a
hard-example filter needs: a logistic model, fitted per task on a held-out split, of three cues:

* ``margin``: how far the deciding distances are from the task's thresholds (a person at 5.9 m is a hair's
  breadth from "no hazard"), in metres, log-scaled;
* ``object_conf``: the lowest segmentation confidence among the objects near the path;
* ``uncertainty``: the mean pixel entropy of the class probabilities in the region ahead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cepr.data.classes import DYNAMIC_IDS, HUMAN_IDS
from cepr.data.tasks import TASK_NAMES, TaskParams, get_task
from cepr.edge.summary import SceneSummary
from cepr.metrics.calibration import fit_logistic

MARGIN_CAP = 10.0
FEATURES = ("log_margin", "object_conf", "uncertainty")
# before calibration: confident when far from thresholds and the segmentation is sure
DEFAULT_COEF = {t: [-1.0, 1.5, 2.0, -4.0] for t in TASK_NAMES}  # bias, then one weight per feature


@dataclass(frozen=True)
class LocalAnswer:
    task: str
    answer: str
    confidence: float
    features: dict
    distribution: dict | None = None  # over the task's answers, where the reasoner has one (a language model)


def _closest_gap(values, thresholds) -> float:
    gaps = [abs(v - t) for v in values if math.isfinite(v) for t in thresholds]
    return min(gaps) if gaps else MARGIN_CAP


def decision_margin(task: str, objects, p: TaskParams) -> float:
    """Metres between the distances that decide ``task`` and its thresholds (capped at MARGIN_CAP)."""
    dyn = [o.band for o in objects if o.class_id in DYNAMIC_IDS]
    stat = [o.band for o in objects if o.class_id not in DYNAMIC_IDS]
    every = [o.band for o in objects]
    if task == "path_hazard":
        m = _closest_gap([b.centre for b in dyn], [p.hazard_distance])
    elif task == "traversable":
        m = _closest_gap([b.centre for b in every], [p.traversable_distance])
    elif task == "people_count":
        m = _closest_gap([o.distance for o in objects if o.class_id in HUMAN_IDS], [p.people_distance])
    elif task == "nearest_obstacle":
        d = sorted(b.centre for b in every if math.isfinite(b.centre))
        m = _closest_gap(d[:1], [p.obstacle_distance])
        if len(d) >= 2 and d[1] <= p.obstacle_distance:
            m = min(m, d[1] - d[0])
    elif task == "action":
        m = min(_closest_gap([b.centre for b in dyn], [p.stop_distance, p.hazard_distance]),
                _closest_gap([b.nearest for b in dyn], [p.near_side_distance]),
                _closest_gap([b.centre for b in stat], [p.avoid_distance]),
                _closest_gap([min(b.left, b.right) for b in every], [p.avoid_distance]))
    else:
        raise KeyError(task)
    return min(m, MARGIN_CAP)


def _features(task: str, s: SceneSummary, p: TaskParams) -> dict:
    near = [o.confidence for o in s.objects if o.band.nearest <= p.obstacle_distance]
    if task == "people_count":
        near = [o.confidence for o in s.objects if o.class_id in HUMAN_IDS and o.distance <= p.people_distance]
    return {"log_margin": math.log1p(decision_margin(task, s.objects, p)),
            "object_conf": min(near) if near else 1.0,
            "uncertainty": s.uncertainty}


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


class Planner:
    """``Planner(params, calibration)``; ``calibration`` maps task -> [bias, w_margin, w_conf, w_unc]."""

    def __init__(self, params: TaskParams | None = None, calibration: dict | None = None):
        self.params = params or TaskParams()
        self.coef = {**DEFAULT_COEF, **(calibration or {})}
        self.calibrated = calibration is not None

    @classmethod
    def from_file(cls, path: str | Path, params: TaskParams | None = None) -> Planner:
        doc = json.loads(Path(path).read_text())
        return cls(params, doc["coefficients"])

    def confidence(self, task: str, features: dict) -> float:
        c = self.coef[task]
        return _sigmoid(c[0] + sum(w * features[f] for w, f in zip(c[1:], FEATURES)))

    def answer(self, summary: SceneSummary, tasks=TASK_NAMES) -> dict[str, LocalAnswer]:
        summary.check_params(self.params)
        objs = list(summary.objects)
        out = {}
        for t in tasks:
            ans = get_task(t).fn(objs, self.params)
            f = _features(t, summary, self.params)
            out[t] = LocalAnswer(t, ans, round(self.confidence(t, f), 4), f)
        return out


def fit_calibration(records: list[tuple[str, dict, bool]], l2: float = 1e-2, iters: int = 200) -> dict:
    """Per-task logistic regression (Newton's method, L2-regularised) of correctness on the features.

    ``records``: (task, features, answer was correct). Tasks with fewer than 20 records, or only right or only
    wrong answers, keep a bias-only model (their empirical accuracy)."""
    coefs = {}
    for t in TASK_NAMES:
        rows = [(f, y) for task, f, y in records if task == t]
        if not rows:
            continue
        X = np.array([[1.0] + [f[k] for k in FEATURES] for f, _ in rows])
        y = np.array([float(v) for _, v in rows])
        acc = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        if len(rows) < 20 or y.min() == y.max():
            coefs[t] = [math.log(acc / (1 - acc))] + [0.0] * len(FEATURES)
            continue

        w = fit_logistic(X, y, l2, iters, tol=1e-8)
        coefs[t] = [round(float(v), 6) for v in w]
    return coefs
