"""Learned: a logistic-regression router that predicts, from the edge result alone, that the edge answer is wrong.

``train_learned(records) -> model`` fits it (numpy only: L2-regularised logistic regression by Newton's method on
standardised features) and returns a JSON-ready dict; ``cepr dispatch train-learned`` runs it on edge results
(``samples.jsonl`` files, workspaces, or a dataset index the edge is run on) and writes the JSON. The policy
loads such a file by path or by the name of a shipped one (``learned-synth``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from cepr.dispatch.policies import Policy, check_kwargs, register_policy
from cepr.edge.features import confidence, edge_result, feature, features_of
from cepr.errors import CeprError, did_you_mean
from cepr.hyperparameters import positive_float, unit_float
from cepr.metrics.calibration import fit_logistic

FORMAT = "cepr-learned-router"
VERSION = 1
# the numeric inputs, in order; the task one-hot follows them (tasks listed in the model)
INPUTS = ("confidence", "margin", "entropy", "risk", "uncertainty", "n_objects", "mask_classes", "edge_density",
          "fragments", "hazard_near_path", "hazard_proximity", "people_near", "person_proximity", "free_m")
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
SHIPPED_PREFIX = "router-"  # learned-synth -> assets/models/router-learned-synth.json


def _proximity(x, name: str, scale: float, policy: str, f) -> float:
    """exp(-d / scale) of a distance feature that may be null (nothing there: 0)."""
    d = feature(x, name, policy, allow_none=True, features=f)
    return 0.0 if d is None else math.exp(-max(d, 0.0) / scale)


def input_vector(x, tasks: Iterable[str], policy: str = "Learned") -> np.ndarray:
    """The model's inputs for one edge result: :data:`INPUTS` then the one-hot of its ``task`` over ``tasks``.

    ``hazard_proximity`` = exp(-features.hazard_m / 3 m) and ``person_proximity`` = exp(-features.person_m / 5 m)
    (0 when null); every other input is the edge result's field of that name (``confidence``) or
    ``features.<name>`` (booleans as 0/1)."""
    vals = []
    f = features_of(x, policy)
    for name in INPUTS:
        if name == "confidence":
            vals.append(confidence(x, policy))
        elif name == "hazard_proximity":
            vals.append(_proximity(x, "hazard_m", 3.0, policy, f))
        elif name == "person_proximity":
            vals.append(_proximity(x, "person_m", 5.0, policy, f))
        else:
            vals.append(feature(x, name, policy, features=f))
    tasks = list(tasks)
    task = edge_result(x, policy).get("task")
    if task not in tasks:
        raise CeprError(f"{policy}: the edge result's task {task!r} is not one the model was trained on "
                        f"({', '.join(tasks)})")
    vals.extend(1.0 if t == task else 0.0 for t in tasks)
    return np.asarray(vals, dtype=np.float64)


def _truth_pair(rec, i: int) -> tuple[Mapping, bool]:
    """(edge result, edge answer was wrong) from a samples.jsonl line or an edge result with a ``truth``."""
    if not isinstance(rec, Mapping):
        raise CeprError(f"train_learned: record {i} is a {type(rec).__name__}, not a dict")
    edge = rec.get("edge", rec)
    if not isinstance(edge, Mapping):
        raise CeprError(f"train_learned: record {i} has no edge result (its 'edge' is {edge!r:.60}): the edge did "
                        "not run on it")
    if "edge_wrong" in rec:
        return edge, bool(rec["edge_wrong"])
    truth = rec.get("truth", edge.get("truth"))
    if truth is None:
        raise CeprError(f"train_learned: record {i} (key {edge.get('key')!r}) has no 'truth': training needs the "
                        "ground-truth answer")
    if "answer" not in edge:
        raise CeprError(f"train_learned: record {i} (key {edge.get('key')!r}) has no edge 'answer'")
    return edge, str(edge["answer"]) != str(truth)


def _fit(X: np.ndarray, y: np.ndarray, l2: float, iters: int = 100) -> np.ndarray:
    """Weights [bias, w...] of an L2-regularised (bias excluded) logistic regression, Newton's method."""
    return fit_logistic(np.hstack([np.ones((len(X), 1)), X]), y, l2, iters, tol=1e-9)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    y = np.asarray(y, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def auc(score: np.ndarray, y: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None when only one class is present."""
    score, y = np.asarray(score, np.float64), np.asarray(y, bool)
    pos, neg = score[y], score[~y]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def train_learned(records: Iterable, l2: float = 1.0, tasks: Iterable[str] | None = None,
                  source: str | None = None) -> dict:
    """Fit the router on edge results whose truth is known; returns the model as a JSON-ready dict.

    ``records``: ``samples.jsonl`` lines (``{"edge": {...}, "truth": ...}``), or edge result dicts with a
    ``truth`` (or an ``edge_wrong`` bool) of their own. Each edge result needs ``confidence``, ``task`` and the
    ``features`` the edge module adds. Lines whose edge did not run (``edge: null``) are skipped. The target is
    "the edge answer is wrong"; inputs are :func:`input_vector`, standardised with the training mean and std
    (saved in the model). ``tasks`` (default: the tasks seen, sorted) fixes the one-hot order. ``l2``: the ridge
    penalty on the standardised weights."""
    pairs = []
    for i, rec in enumerate(records):
        if isinstance(rec, Mapping) and "edge" in rec and rec["edge"] is None:
            continue
        pairs.append(_truth_pair(rec, i))
    if len(pairs) < 2:
        raise CeprError(f"train_learned: {len(pairs)} usable records (edge results with a truth); need at least 2")
    task_list = sorted({str(e.get("task")) for e, _ in pairs}) if tasks is None else list(tasks)
    X = np.stack([input_vector(e, task_list, "train_learned") for e, _ in pairs])
    y = np.array([float(w) for _, w in pairs])
    mean, std = X.mean(0), X.std(0)
    std[std < 1e-9] = 1.0
    w = _fit((X - mean) / std, y, positive_float("train_learned", "l2", l2, allow_zero=True))
    p = 1.0 / (1.0 + np.exp(-np.clip(w[0] + ((X - mean) / std) @ w[1:], -30, 30)))
    return {"format": FORMAT, "version": VERSION, "inputs": list(INPUTS), "tasks": task_list,
            "mean": [round(float(v), 8) for v in mean], "std": [round(float(v), 8) for v in std],
            "bias": round(float(w[0]), 8), "weights": [round(float(v), 8) for v in w[1:]], "l2": float(l2),
            "trained_on": {"n": len(pairs), "wrong": int(y.sum()), "wrong_rate": round(float(y.mean()), 4),
                           "source": source},
            "train_fit": {"log_loss": round(log_loss(p, y), 4),
                          "constant_log_loss": round(log_loss(np.full_like(y, y.mean()), y), 4),
                          "auc": None if (a := auc(p, y)) is None else round(a, 4)}}


def shipped_models() -> dict[str, Path]:
    """Shipped router models by name."""
    return {p.stem[len(SHIPPED_PREFIX):]: p for p in sorted(SHIPPED_DIR.glob(f"{SHIPPED_PREFIX}*.json"))}


def model_file(model) -> Path:
    """The JSON file ``model`` names: a path (``*.json`` or containing a slash) or a shipped name."""
    s = str(model)
    if s.endswith(".json") or "/" in s or "\\" in s:
        p = Path(s).expanduser()
        if not p.is_file():
            raise CeprError(f"Learned: model file {s!r} not found (relative paths resolve against the current "
                            f"directory {Path.cwd()}); train one with `cepr dispatch train-learned`")
        return p
    shipped = shipped_models()
    if s not in shipped:
        raise CeprError(f"Learned: no shipped model {s!r} (shipped: {', '.join(shipped) or 'none'})"
                        f"{did_you_mean(s, shipped)}; or give a path to a JSON from `cepr dispatch train-learned`")
    return shipped[s]


def load_model(model) -> dict:
    """A router model from a dict (checked) or from the file ``model`` names."""
    if isinstance(model, Mapping):
        doc, where = dict(model), "the model dict"
    else:
        path = model_file(model)
        where = str(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CeprError(f"Learned: cannot read the model {where}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CeprError(f"Learned: {where} is not a {FORMAT} model (its 'format' is "
                        f"{doc.get('format') if isinstance(doc, dict) else type(doc).__name__!r})")
    if doc.get("version") != VERSION:
        raise CeprError(f"Learned: {where} is format version {doc.get('version')!r}; this cepr reads {VERSION}")
    if list(doc.get("inputs", ())) != list(INPUTS):
        raise CeprError(f"Learned: {where} was trained on inputs {doc.get('inputs')!r}; this cepr computes "
                        f"{list(INPUTS)}: retrain it with `cepr dispatch train-learned`")
    n = len(INPUTS) + len(doc.get("tasks", ()))
    for k in ("mean", "std", "weights"):
        if not isinstance(doc.get(k), list) or len(doc[k]) != n:
            raise CeprError(f"Learned: {where}: '{k}' must be a list of {n} numbers")
    if not isinstance(doc.get("bias"), (int, float)):
        raise CeprError(f"Learned: {where}: 'bias' must be a number")
    return doc


def predict_wrong(model: Mapping, x, policy: str = "Learned") -> float:
    """P(the edge answer is wrong) for one edge result under ``model`` (a loaded model dict)."""
    return _p_wrong(input_vector(x, model["tasks"], policy), *_arrays(model))


def _arrays(model: Mapping) -> tuple[float, np.ndarray, np.ndarray]:
    """(bias, mean, weights / std): the model's numbers as a linear function of the raw inputs."""
    return (float(model["bias"]), np.asarray(model["mean"], np.float64),
            np.asarray(model["weights"], np.float64) / np.asarray(model["std"], np.float64))


def _p_wrong(v: np.ndarray, bias: float, mean: np.ndarray, w: np.ndarray) -> float:
    z = bias + float(np.dot(v - mean, w))
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


@register_policy("Learned", needs_edge_result=True)
class Learned(Policy):
    """Hard (cloud) iff the model's P(edge answer wrong) > ``threshold``.

    Reads from the edge result: ``confidence``, ``task`` and ``features.`` margin, entropy, risk, uncertainty,
    n_objects, mask_classes, edge_density, fragments, hazard_near_path, hazard_m, people_near, person_m, free_m
    (see :func:`input_vector`). The model is a logistic regression on those inputs, standardised, plus the task
    one-hot, trained by ``cepr dispatch train-learned`` (or :func:`train_learned`) on edge results of a split with
    labels; it never reads labels itself.

    Parameters: ``model`` (``learned-synth``, the shipped model trained on the synthetic train split; or a path
    to a JSON), ``threshold`` (0.5). ``cepr run`` copies the model it used into the test case's folder
    (``router-model.json``, named in ``record.json``)."""

    name = "Learned"
    order_independent = True  # decides from the sample alone: `cepr run --cluster` may split its cases

    def __init__(self, model="learned-synth", threshold=0.5, **kwargs):
        check_kwargs(self.name, kwargs, ("model", "threshold"))
        self.threshold = unit_float(self.name, "threshold", threshold)
        self.model_name = model if isinstance(model, str) else "(dict)"
        self.model = load_model(model)
        self._arrays = _arrays(self.model)

    def hyperparameters(self) -> dict:
        return {"model": self.model_name, "threshold": self.threshold}

    def p_wrong(self, x) -> float:
        return _p_wrong(input_vector(x, self.model["tasks"], self.name), *self._arrays)

    def __call__(self, x=None) -> bool:
        return self.p_wrong(x) > self.threshold

    def save_artifacts(self, folder) -> dict:
        """Write the model used into ``folder`` (a test case's output); returns what the record should say."""
        out = Path(folder) / "router-model.json"
        out.write_text(json.dumps(self.model, indent=1) + "\n")
        return {"router_model": out.name, "router_model_source": self.model_name}
