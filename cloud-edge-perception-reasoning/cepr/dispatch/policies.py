"""Dispatch policies: per sample, decide whether it is "hard" and goes to the cloud (True) or stays on the edge.

They are Sedna/Ianvs hard-example-mining filters under the same names and parameters (``Threshold``,
``CrossEntropy``, ``Random``/``RandomRouter``, ``Oracle``/``OracleRouter``) plus the two trivial baselines, so a
testalgorithm YAML written for Ianvs runs unchanged. Unlike Sedna's, they do not crash on zero probabilities, a
single class or numpy input, and they raise :class:`~cepr.errors.CeprError` on input they cannot read instead
of silently keeping it on the edge.

Each class is registered with :data:`POLICY_REGISTRY` by the ``register_policy`` decorator, with the capabilities
the joint-inference paradigm reads (``needs_labels``, ``needs_edge_result``, ``upper_bound``). Kept import-light
(stdlib + numpy): the Ianvs adapter imports this module just to register the classes.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import numbers
import random
import threading
import warnings
from collections.abc import Mapping

import numpy as np

from cepr.compat import ORACLE_MARKED
from cepr.data import tasks
from cepr.errors import CeprError, unknown
from cepr.hyperparameters import as_int, unit_float
from cepr.registry import Registry

POLICY_REGISTRY: Registry[type] = Registry("policies", "dispatch policy", capabilities={
    # it reads the ground-truth labels. The paradigm then hands it the edge and cloud models as ``edgemodel`` and
    # ``cloudmodel`` (Ianvs does so for OracleRouter), so it can get the edge answer itself from a raw sample
    "needs_labels": False,
    # it decides from the edge's result (answer, confidence, distribution), not from the raw sample: in
    # mining-then-inference only a policy that is handed the edge model can run
    "needs_edge_result": False,
    # its results bound what a router could reach; not a deployable policy (records mark it)
    "upper_bound": False,
})
register_policy = POLICY_REGISTRY.register

# The models the paradigm hands a policy that needs the labels; the other policies tolerate them too.
_MODEL_KWARGS = ("edgemodel", "cloudmodel")


def check_kwargs(policy: str, given: dict, known: tuple[str, ...]) -> None:
    """A misspelt hyperparameter would otherwise be silently ignored and the default used."""
    for k in given:
        if k in known or k in _MODEL_KWARGS:
            continue
        raise CeprError(f"{policy}: " + unknown("hyperparameter", k, known, listing="known"))


def _sample_key(x):
    """The sample id of a raw sample or an edge result (both carry ``key``), else None."""
    if isinstance(x, Mapping):
        key = x.get("key")
        if key is not None:
            return key
    return None


class Policy:
    """Common shape: ``policy(x) -> bool`` (True = hard = send to the cloud) and Sedna's ``filter`` alias."""

    name: str = ""

    def __call__(self, x=None) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def filter(self, x=None) -> bool:
        """Sedna's BaseFilter calls it ``filter``."""
        return self(x)

    def hyperparameters(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


@register_policy("EdgeOnly")
class EdgeOnly(Policy):
    """Never sends anything: the edge-only baseline (cloud share 0)."""

    name = "EdgeOnly"

    def __init__(self, **kwargs):
        pass

    def __call__(self, x=None) -> bool:
        return False


@register_policy("CloudOnly")
class CloudOnly(Policy):
    """Sends everything: the cloud-only baseline (cloud share 1)."""

    name = "CloudOnly"

    def __init__(self, **kwargs):
        pass

    def __call__(self, x=None) -> bool:
        return True


@register_policy("Random")
class Random(Policy):
    """Sends a share ``ratio`` of samples, chosen at random: the reference curve any smarter router must beat.

    The choice is a hash of (seed, sample key), so a sample gets the same decision in every run, in every mining
    mode and whatever the order or concurrency; input without a key falls back to a seeded random stream."""

    name = "Random"

    def __init__(self, ratio=0.5, seed=0, **kwargs):
        check_kwargs(self.name, kwargs, ("ratio", "seed"))
        self.ratio = unit_float(self.name, "ratio", ratio)
        self.seed = as_int(self.name, "seed", seed)
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def hyperparameters(self) -> dict:
        return {"ratio": self.ratio, "seed": self.seed}

    def draw(self, x=None) -> float:
        """The sample's uniform number in [0, 1); hard iff it is below ``ratio``."""
        key = _sample_key(x)
        if key is None:
            with self._lock:
                return self._rng.random()
        digest = hashlib.sha256(f"{self.seed}\x00{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0 ** 64

    def __call__(self, x=None) -> bool:
        return self.draw(x) < self.ratio


@register_policy("Oracle", aliases=(ORACLE_MARKED,), needs_labels=True, needs_edge_result=True,
                 upper_bound=True)
class Oracle(Policy):
    """Sends exactly the samples whose edge answer is wrong. It READS THE LABELS: an upper bound on what a
    router could gain, never a deployable policy.

    Takes an edge result (inference-then-mining). Given a raw sample instead (mining-then-inference), it runs
    the ``edgemodel`` Ianvs passes to OracleRouter to get the edge answer first."""

    name = "Oracle"

    def __init__(self, edgemodel=None, cloudmodel=None, **kwargs):
        check_kwargs(self.name, kwargs, ())
        self.edgemodel = edgemodel
        self.cloudmodel = cloudmodel
        warnings.warn("Oracle dispatch reads the ground-truth labels: its results are an upper bound, not a "
                      "deployable policy", UserWarning, stacklevel=2)

    def _edge_result(self, x) -> Mapping:
        if isinstance(x, Mapping) and "answer" in x:
            return x
        if self.edgemodel is None:
            raise CeprError("Oracle needs the edge's answer, but got a raw sample and no edge model: use "
                            "`hard_example_mining_mode: inference-then-mining` in testenv.yaml")
        predict = self.edgemodel.predict
        try:
            by_keyword = "data" in inspect.signature(predict).parameters
        except (TypeError, ValueError):
            by_keyword = False
        out = predict(data=x) if by_keyword else predict(x)
        # Ianvs's LLM edge models wrap their answer as {"prediction": ...}
        if isinstance(out, Mapping) and "answer" not in out and isinstance(out.get("prediction"), Mapping):
            out = out["prediction"]
        if not (isinstance(out, Mapping) and "answer" in out):
            raise CeprError(f"Oracle: the edge model returned {type(out).__name__}, not an edge result with an "
                            "'answer'")
        return out

    def __call__(self, x=None) -> bool:
        res = self._edge_result(x)
        raw = x if isinstance(x, Mapping) else {}
        key = res.get("key", raw.get("key", "?"))
        label_path = res.get("label_path") or raw.get("label")
        if not label_path:
            raise CeprError(f"Oracle: sample {key!r} has no label path, and the Oracle needs the labels")
        task = res.get("task") or raw.get("task")
        if not task:
            raise CeprError(f"Oracle: sample {key!r} names no task")
        try:
            truth = tasks.ground_truth(label_path)
        except CeprError:
            raise
        except OSError as e:
            raise CeprError(f"Oracle: cannot read the labels of sample {key!r} ({label_path}): {e}") from None
        if task not in truth:
            raise CeprError(f"Oracle: sample {key!r}: no ground truth for task {task!r} "
                            f"(have: {', '.join(sorted(truth))})")
        return str(res["answer"]) != str(truth[task])


def _probabilities(x) -> np.ndarray | None:
    """Class probabilities from an edge result's ``distribution`` or a bare sequence; None for empty input."""
    if isinstance(x, Mapping):
        if "distribution" not in x:
            raise CeprError(f"CrossEntropy needs class probabilities: an edge result with a 'distribution', got a "
                            f"dict with keys {sorted(map(str, x))}")
        x = x["distribution"]
        if isinstance(x, Mapping):
            x = list(x.values())
    if x is None:
        return None
    if isinstance(x, (str, bytes)) or not isinstance(x, (list, tuple, np.ndarray)):
        raise CeprError(f"CrossEntropy needs a list or array of class probabilities, got {type(x).__name__}")
    try:
        p = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise CeprError(f"CrossEntropy: class probabilities must be numbers, got {x!r:.200}") from None
    if p.size == 0:
        return None
    if p.ndim != 1:
        if sum(d > 1 for d in p.shape) > 1:
            raise CeprError(f"CrossEntropy needs one sample's class probabilities (1-D), got shape {p.shape}")
        p = p.reshape(-1)
    if not np.all(np.isfinite(p)):
        raise CeprError(f"CrossEntropy: class probabilities must be finite, got {p.tolist()!r:.200}")
    if np.any(p < 0):
        raise CeprError(f"CrossEntropy: class probabilities must not be negative, got {p.tolist()!r:.200}")
    total = float(p.sum())
    if total <= 0:
        raise CeprError(f"CrossEntropy: class probabilities are all zero, got {p.tolist()!r:.200}")
    return p / total


@register_policy("CrossEntropy", needs_edge_result=True)
class CrossEntropy(Policy):
    """Hard when the edge is unsure: score = 1 - H(p)/log K (1 = one-hot, 0 = uniform), hard iff score <
    ``threshold_cross_entropy``.

    Empty or None input is not hard (Sedna's semantics). Probabilities that do not sum to 1 are renormalised;
    negative, non-finite or all-zero ones raise CeprError."""

    name = "CrossEntropy"

    def __init__(self, threshold_cross_entropy=0.5, **kwargs):
        check_kwargs(self.name, kwargs, ("threshold_cross_entropy",))
        self.threshold_cross_entropy = unit_float(self.name, "threshold_cross_entropy", threshold_cross_entropy)

    def hyperparameters(self) -> dict:
        return {"threshold_cross_entropy": self.threshold_cross_entropy}

    @staticmethod
    def score(x) -> float | None:
        """1 - normalised entropy of the class probabilities; None for empty input. One class counts as certain."""
        p = _probabilities(x)
        if p is None:
            return None
        k = p.size
        if k <= 1:
            return 1.0
        nz = p[p > 0]  # 0 * log 0 = 0
        entropy = float(-(nz * np.log(nz)).sum())
        return min(1.0, max(0.0, 1.0 - entropy / math.log(k)))

    def __call__(self, x=None) -> bool:
        s = self.score(x)
        return s is not None and s < self.threshold_cross_entropy


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CeprError(f"Threshold: {what} must be a number, got {value!r:.200}")
    v = float(value)
    if not math.isfinite(v):
        raise CeprError(f"Threshold: {what} must be finite, got {v}")
    return v


@register_policy("Threshold", needs_edge_result=True)
class Threshold(Policy):
    """Hard when the edge's confidence is below ``threshold``.

    Reads an edge result's ``confidence``, a bare number, or Sedna's detection format (boxes with the score at
    index 4; their mean score is compared). Empty or None input is not hard (Sedna's semantics)."""

    name = "Threshold"

    def __init__(self, threshold=0.5, **kwargs):
        check_kwargs(self.name, kwargs, ("threshold",))
        self.threshold = unit_float(self.name, "threshold", threshold)

    def hyperparameters(self) -> dict:
        return {"threshold": self.threshold}

    @staticmethod
    def score(x) -> float | None:
        """The confidence compared with the threshold; None for empty input."""
        if x is None:
            return None
        if isinstance(x, Mapping):
            if "confidence" not in x:
                raise CeprError("Threshold needs the edge's confidence: an edge result with 'confidence', got a "
                                f"dict with keys {sorted(map(str, x))}")
            return _number(x["confidence"], "confidence")
        if isinstance(x, (list, tuple, np.ndarray)):
            if len(x) == 0:
                return None
            scores = []
            for box in x:
                if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) <= 4:
                    raise CeprError("Threshold: a list must be Sedna's detection format (boxes of 5+ values, the "
                                    f"score at index 4), got element {box!r:.200}")
                scores.append(_number(box[4], "a box score"))
            return sum(scores) / len(scores)
        return _number(x, "the input")

    def __call__(self, x=None) -> bool:
        s = self.score(x)
        return s is not None and s < self.threshold


# The names Ianvs's LLM joint-inference example uses for the same routers.
@register_policy("RandomRouter")
class RandomRouter(Random):
    """Ianvs's LLM example name for :class:`Random`."""

    name = "RandomRouter"


@register_policy("OracleRouter", needs_labels=True, needs_edge_result=True, upper_bound=True)
class OracleRouter(Oracle):
    """Ianvs's LLM example name for :class:`Oracle`."""

    name = "OracleRouter"
