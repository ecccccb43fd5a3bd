"""Evaluate dispatch-policy settings on a cached set, without calling a model.

Each setting is a policy built from the registry with its parameters, exactly as the paradigm builds the
hard-example-mining filter, and **called on each cached edge result** in dataset order, as the paradigm calls it in
``inference-then-mining`` (``bool(policy(edge_result))``; True sends the sample to the cloud). So any registered
policy works unchanged, stateful online ones included (each setting has its own instance, which sees the samples
one at a time, in order). Generic settings are evaluated sample by sample: each sample's edge result is built once
and a shallow copy handed to every setting (its mask, where cached, decoded once per sample).

Policies whose decision is a closed form of one cached column are also **vectorised** (:data:`VECTORISED`):
Threshold (confidence < threshold), CrossEntropy (its score < threshold; the score computed once per sample by the
policy's own ``score``), Random/RandomRouter (the policy's own per-sample ``draw`` computed once per seed, < ratio),
EdgeOnly, CloudOnly and Oracle/OracleRouter (edge answer != truth). Only the exact classes are vectorised (a
subclass may decide otherwise); tests check that both paths decide identically. ``register_vectorised`` adds one.

Per setting, from the decisions ``d`` (True = sent):

* ``cloud_share`` = mean(d); ``accuracy`` = mean(final == truth), final = the cloud result's answer where sent (the
  edge's where the cloud fell back), else the edge's; with the Wilson 95% interval;
* latency per sample = edge latency + (cloud latency where sent), as the ``latency_*`` metrics count it (edge
  compute + cloud round trip with the modelled link); ``latency_p95`` (numpy's linear percentile), p50, mean;
* ``uplink_bytes`` = mean over all samples of the bytes sent (0 where not sent), as the ``uplink_bytes`` metric;
* ``safety_recall``: of the truly hazardous path_hazard/action samples, the share answered with a cautious answer.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cepr.compat.class_factory import ClassType, lookup
from cepr.dispatch import (
    POLICY_REGISTRY,
    CloudOnly,
    CrossEntropy,
    EdgeOnly,
    Oracle,
    OracleRouter,
    Random,
    RandomRouter,
    Threshold,
)
from cepr.errors import CeprError
from cepr.metrics.joint import wilson_interval
from cepr.registry import import_module_file
from cepr.sweep.cache import CachedSet
from cepr.sweep.spec import SweepSpec, setting_id

log = logging.getLogger(__name__)


@dataclass
class Setting:
    id: str
    curve: str
    policy: str  # the name it is registered under
    params: dict
    cls: type
    capabilities: dict
    url: str | None = None  # the module file that registers it (a spec entry's url), else None

    @property
    def upper_bound(self) -> bool:
        return bool(self.capabilities.get("upper_bound") or self.capabilities.get("needs_labels"))

    def build(self):
        """The filter, as the paradigm builds it (its own parameter checks run here)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*reads the ground-truth labels.*")
            try:
                return self.cls(**self.params)
            except CeprError as e:
                raise CeprError(f"sweep setting {self.id}: {e}") from None
            except TypeError as e:
                raise CeprError(f"sweep setting {self.id}: {self.policy} does not take {sorted(self.params)}: {e}"
                                ) from None


def _policy_class(name: str, url: str | None) -> tuple[type, dict]:
    """The class named ``name`` (cepr's policy registry; else a hard-example-mining class its url registered with
    the ClassFactory) and its capabilities."""
    if url is not None:
        p = Path(url).expanduser()
        if not p.is_file():
            raise CeprError(f"sweep spec: policy {name!r}: url {url!r} names no file (relative paths resolve "
                            f"against the current directory {Path.cwd()})")
        import_module_file(p.resolve())
    if name in POLICY_REGISTRY:
        return POLICY_REGISTRY.get(name), POLICY_REGISTRY.capabilities(name)
    if url is not None:
        cls = lookup(ClassType.HEM, name)
        return cls, POLICY_REGISTRY.capabilities_of(cls)
    POLICY_REGISTRY.get(name)  # the "did you mean" error
    raise AssertionError("unreachable")


def expand(spec: SweepSpec) -> list[Setting]:
    """Every setting of the spec, each policy built once to check its parameters (nothing is called)."""
    out, seen = [], set()
    for entry in spec.policies:
        cls, caps = _policy_class(entry.name, entry.url)
        for params in entry.settings():
            s = Setting(setting_id(entry.curve, params), entry.curve, entry.name, params, cls, caps, entry.url)
            if s.id in seen:
                raise CeprError(f"sweep spec: setting {s.id} appears twice")
            seen.add(s.id)
            s.build()
            out.append(s)
    return out


# ---- vectorised policies ----------------------------------------------------------------------------------------

Vectorised = Callable[[object, CachedSet], np.ndarray]
VECTORISED: dict[type, Vectorised] = {}


def register_vectorised(*classes: type):
    """Decorator: ``fn(policy, data) -> bool array`` decides like ``policy(edge_result)`` on every sample of
    ``data`` at once. Registered for exactly these classes (not their subclasses)."""
    def deco(fn: Vectorised) -> Vectorised:
        for c in classes:
            VECTORISED[c] = fn
        return fn
    return deco


def _column(data: CachedSet, name: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    cols = data.__dict__.setdefault("_columns", {})
    if name not in cols:
        cols[name] = build()
    return cols[name]


def _install_builtins() -> None:

    if Threshold in VECTORISED:
        return

    def optional(values) -> np.ndarray:
        return np.array([np.nan if v is None else float(v) for v in values], np.float64)

    @register_vectorised(Threshold)
    def _threshold(pol, data):
        conf = _column(data, "threshold.score", lambda: optional(Threshold.score(e) for e in data.edge_results()))
        return conf < pol.threshold  # NaN (no score) is never below: not hard, as the policy says

    @register_vectorised(CrossEntropy)
    def _cross_entropy(pol, data):
        score = _column(data, "crossentropy.score",
                        lambda: optional(CrossEntropy.score(e) for e in data.edge_results()))
        return score < pol.threshold_cross_entropy

    @register_vectorised(Random, RandomRouter)
    def _random(pol, data):
        draws = _column(data, f"random.draw.{pol.seed}",
                        lambda: np.array([pol.draw(e) for e in data.edge_results()], np.float64))
        return draws < pol.ratio

    @register_vectorised(EdgeOnly)
    def _edge_only(pol, data):
        return np.zeros(data.n, bool)

    @register_vectorised(CloudOnly)
    def _cloud_only(pol, data):
        return np.ones(data.n, bool)

    @register_vectorised(Oracle, OracleRouter)
    def _oracle(pol, data):
        return data.edge_answer != data.truth


def vectorised_for(policy, data: CachedSet) -> Vectorised | None:
    """The vectorised form of ``policy`` on ``data``, or None (then it is called per sample)."""
    _install_builtins()
    fn = VECTORISED.get(type(policy))
    if fn is not None and isinstance(policy, Random) and not _all_keyed(data):
        return None  # without a sample key Random draws from a stream: only the per-sample order reproduces it
    return fn


def _all_keyed(data: CachedSet) -> bool:
    return bool(_column(data, "keyed", lambda: np.array(all(e.get("key") is not None
                                                            for e in data.edge_results()))))


# ---- deciding and scoring ---------------------------------------------------------------------------------------

@dataclass
class Outcome:
    setting: Setting
    decisions: np.ndarray | None
    path: str  # "vectorised" or "per-sample"
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Timing:
    vectorised_settings: int = 0
    vectorised_s: float = 0.0
    per_sample_settings: int = 0
    per_sample_s: float = 0.0
    per_sample_calls: int = 0
    metrics_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        calls = self.per_sample_calls
        return {"vectorised_settings": self.vectorised_settings, "vectorised_s": round(self.vectorised_s, 4),
                "per_sample_settings": self.per_sample_settings, "per_sample_s": round(self.per_sample_s, 4),
                "per_sample_calls": calls,
                "per_sample_us_per_call": round(1e6 * self.per_sample_s / calls, 3) if calls else None,
                "metrics_s": round(self.metrics_s, 4)}


def decide(settings: list[Setting], data: CachedSet, vectorise: bool = True, progress: bool = False,
           timing: Timing | None = None) -> list[Outcome]:
    """The decisions of every setting on every cached sample."""
    timing = timing or Timing()
    policies, outcomes = [], []
    for s in settings:
        pol = s.build()
        policies.append(pol)
        outcomes.append(Outcome(s, None, "per-sample"))
    generic = []
    t0 = time.perf_counter()
    for k, (s, pol) in enumerate(zip(settings, policies)):
        fn = vectorised_for(pol, data) if vectorise else None
        if fn is None:
            generic.append(k)
            continue
        t = time.perf_counter()
        try:
            outcomes[k].decisions = np.asarray(fn(pol, data), bool)
        except CeprError as e:  # the per-sample path would fail the same way: say which setting
            outcomes[k].error = str(e)
        outcomes[k].path, outcomes[k].seconds = "vectorised", time.perf_counter() - t
        timing.vectorised_settings += 1
    timing.vectorised_s += time.perf_counter() - t0
    if generic:
        t0 = time.perf_counter()
        _decide_per_sample([outcomes[k] for k in generic], [policies[k] for k in generic], data, progress)
        dt = time.perf_counter() - t0
        timing.per_sample_s += dt
        timing.per_sample_settings += len(generic)
        timing.per_sample_calls += len(generic) * data.n
        for k in generic:
            outcomes[k].seconds = dt / len(generic)
    for o, pol in zip(outcomes, policies):
        if hasattr(pol, "cleanup"):
            pol.cleanup()
    return outcomes


def _decide_per_sample(outcomes: list[Outcome], policies: list, data: CachedSet, progress: bool) -> None:
    """Sample-major: each sample's edge result built once, every live setting called on its own shallow copy,
    in dataset order. A setting whose policy raises stops there, with the error and the sample named."""
    edges = data.edge_results()
    out = np.zeros((len(policies), data.n), bool)
    live = list(range(len(policies)))
    for i in tqdm(range(data.n), desc=f"sweep: {len(policies)} per-sample setting(s)", unit="sample",
                  disable=not progress, leave=False):
        e = edges[i]
        for k in list(live):
            try:
                out[k, i] = bool(policies[k](e.copy()))
            except Exception as ex:  # noqa: BLE001 - a policy may raise anything; that setting fails, not the sweep
                outcomes[k].error = f"sample {i} ({data.keys[i]}): {type(ex).__name__}: {ex}"
                live.remove(k)
        e.release()
    for k, o in enumerate(outcomes):
        if o.error is None:
            o.decisions = out[k]


def _is_hazard(tasks: np.ndarray, answers: np.ndarray) -> np.ndarray:
    return np.where(tasks == "path_hazard", answers == "yes", answers != "go")


def score(decisions: np.ndarray, data: CachedSet) -> dict[str, np.ndarray]:
    """Metrics of a stack of decisions (settings x samples), each an array over the settings."""
    D = np.atleast_2d(np.asarray(decisions, bool))
    if D.shape[1] != data.n:
        raise CeprError(f"decisions cover {D.shape[1]} samples, the cache {data.n}")
    correct = np.where(D, data.cloud_correct, data.edge_correct)
    k = correct.sum(axis=1)
    lat = data.edge_latency + D * data.cloud_latency
    final = np.where(D, data.cloud_answer, data.edge_answer)
    hazardous = data.hazard_task & _is_hazard(data.tasks, data.truth)
    nh = int(hazardous.sum())
    ci = [wilson_interval(int(x), data.n) for x in k]
    return {
        "cloud_share": D.mean(axis=1), "sent": D.sum(axis=1), "accuracy": k / data.n,
        "accuracy_ci_low": np.array([c[0] for c in ci]), "accuracy_ci_high": np.array([c[1] for c in ci]),
        "latency_p50": np.percentile(lat, 50, axis=1), "latency_p95": np.percentile(lat, 95, axis=1),
        "latency_mean": lat.mean(axis=1), "uplink_bytes": (D * data.bytes_up).mean(axis=1),
        "safety_recall": (_is_hazard(data.tasks, final) & hazardous).sum(axis=1) / nh if nh
        else np.full(D.shape[0], np.nan),
    }
