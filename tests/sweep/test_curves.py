"""APGR / CPT on hand-computed curves, the Random and Oracle references, the Pareto front, and the invariants of a
sweep over a synthetic cache (no model runs: the cached results are written here)."""

import math
import random

import numpy as np
import pytest

from cepr.dispatch import POLICY_REGISTRY, Policy, register_policy
from cepr.errors import CeprError
from cepr.sweep import curves
from cepr.sweep.cache import CachedSet
from cepr.sweep.evaluate import decide, expand
from cepr.sweep.report import run_sweep, to_json
from cepr.sweep.spec import DEFAULT_SPEC, RangeDoc, parse_spec

# ---- curves by hand ---------------------------------------------------------------------------------------------


def test_apgr_and_cpt_on_a_hand_computed_curve():
    pts = curves.curve([0.2, 0.5], [0.8, 0.9], acc_weak=0.6, acc_strong=1.0)
    assert pts == [(0.0, 0.6), (0.2, 0.8), (0.5, 0.9), (1.0, 1.0)]
    # PGR 0, .5, .75, 1: trapezoids .2*(0+.5)/2 + .3*(.5+.75)/2 + .5*(.75+1)/2
    assert curves.apgr(pts, 0.6, 1.0) == pytest.approx(0.05 + 0.1875 + 0.4375)
    assert curves.cpt(pts, 0.5, 0.6, 1.0) == pytest.approx(0.2)  # reached exactly at a point
    assert curves.cpt(pts, 0.8, 0.6, 1.0) == pytest.approx(0.5 + 0.2 * 0.5)  # within the last segment
    assert curves.cpt(pts, 0.25, 0.6, 1.0) == pytest.approx(0.1)


def test_ties_keep_the_best_accuracy_and_the_first_crossing_counts():
    pts = curves.curve([0.4, 0.4, 0.7], [0.7, 0.9, 0.8], acc_weak=0.5, acc_strong=1.0)
    assert pts == [(0.0, 0.5), (0.4, 0.9), (0.7, 0.8), (1.0, 1.0)]
    # PGR .8 at 0.4, then .6, then 1: CPT(80%) is the first crossing, 0.4
    assert curves.cpt(pts, 0.8, 0.5, 1.0) == pytest.approx(0.4)


@pytest.mark.parametrize("aw,as_", [(0.3, 0.9), (0.5, 0.51), (0.0, 1.0)])
def test_random_gives_apgr_half_and_cpt_x_by_construction(aw, as_):
    r = curves.summary(curves.random_curve(aw, as_), aw, as_)
    assert r["apgr"] == pytest.approx(0.5)
    assert r["cpt50"] == pytest.approx(0.5) and r["cpt80"] == pytest.approx(0.8)


@pytest.mark.parametrize("aw,as_", [(0.7, 0.7), (0.9, 0.6)])
def test_no_gap_to_recover_makes_apgr_and_cpt_undefined(aw, as_):
    # RouteLLM presupposes a stronger strong model: a cloud no better than the edge leaves no gap to recover
    pts = curves.curve([0.5], [0.8], aw, as_)
    with pytest.warns(RuntimeWarning, match="no performance gap"):
        assert math.isnan(curves.apgr(pts, aw, as_))
    assert curves.cpt(pts, 0.5, aw, as_) is None
    assert curves.summary(curves.random_curve(aw, as_), aw, as_)["cpt50"] is None


def test_oracle_curve_by_hand():
    # 10 samples: 3 only the cloud gets right (+), 1 only the edge (-), 6 change nothing (0)
    edge = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 1], bool)
    cloud = np.array([1, 1, 1, 0, 1, 1, 1, 0, 0, 1], bool)
    pts = curves.oracle_curve(edge, cloud)
    # pytest 9.2's approx compares flat sequences only: compare the points as rows of an array
    assert np.asarray(pts).shape == (4, 2)
    assert np.asarray(pts).ravel().tolist() == pytest.approx([0.0, 0.5, 0.3, 0.8, 0.9, 0.8, 1.0, 0.7])
    # PGR = (acc - .5) / .2: 0, 1.5, 1.5, 1 -> area .3*.75 + .6*1.5 + .1*1.25
    assert curves.apgr(pts, 0.5, 0.7) == pytest.approx(0.225 + 0.9 + 0.125)
    assert curves.cpt(pts, 0.5, 0.5, 0.7) == pytest.approx(0.1)


def test_oracle_dominates_random_and_any_subset():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        e, c = rng.random(n) < rng.random(), rng.random(n) < rng.random()
        pts = curves.oracle_curve(e, c)
        for s in np.linspace(0, 1, 41):
            assert curves.interpolate(pts, s) >= np.interp(s, [0, 1], [e.mean(), c.mean()]) - 1e-12
        for _ in range(50):  # any routing of k samples: no better than the Oracle at share k/n
            d = rng.permutation(n) < int(rng.integers(0, n + 1))
            acc = np.where(d, c, e).mean()
            assert acc <= curves.interpolate(pts, d.mean()) + 1e-12


def test_pareto_front_by_hand():
    acc = [0.8, 0.9, 0.9, 0.7, 0.9]
    p95 = [100, 200, 150, 50, 150]
    up = [10, 10, 20, 0, 20]
    # 1 is dominated by 2? no: 2 has fewer... 1: (0.9, 200, 10); 2: (0.9, 150, 20): neither dominates
    # 4 equals 2: neither dominates the other; 0: (0.8, 100, 10) not dominated; 3 (0.7, 50, 0) not dominated
    assert curves.pareto_front(acc, p95, up).tolist() == [True, True, True, True, True]
    assert curves.pareto_front([0.8, 0.9], [100, 90], [5, 5]).tolist() == [False, True]


# ---- a synthetic cache and a sweep over it ----------------------------------------------------------------------

TASKS = {"path_hazard": ["yes", "no"], "action": ["stop", "slow", "go", "avoid_left", "avoid_right"]}


def synthetic_cache(n=300, seed=0) -> CachedSet:
    """Edge confidence correlated with correctness, as a calibrated edge would be; a cloud right 85% of the time."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        task = "path_hazard" if i % 2 == 0 else "action"
        answers = TASKS[task]
        truth = rng.choice(answers)
        conf = rng.random()
        edge_ans = truth if rng.random() < 0.3 + 0.7 * conf else rng.choice([a for a in answers if a != truth])
        rest = (1 - conf) / (len(answers) - 1)
        dist = {a: (conf if a == edge_ans else rest) for a in answers}
        cloud_ok = rng.random() < 0.95
        cloud_ans = (truth if rng.random() < 0.85 else rng.choice(answers)) if cloud_ok else edge_ans
        key = f"k{i:04d}"
        lines.append({"index": i, "key": key, "task": task, "truth": truth,
                      "edge": {"key": key, "task": task, "answer": edge_ans, "confidence": round(conf, 4),
                               "distribution": dist, "latency_ms": 20 + 10 * rng.random()},
                      "edge_state": None,
                      "cloud": {"key": key, "task": task, "answer": cloud_ans,
                                "status": "ok" if cloud_ok else "fallback", "latency_ms": 150 + 80 * rng.random(),
                                "bytes_up": 30000 + rng.randrange(5000), "bytes_down": 500},
                      "mask": None})
    return CachedSet(None, {"key": "synthetic"}, lines)


class WindowBudget(Policy):
    """Online: the least confident samples, at most ``per_window`` of every ``window`` consecutive ones (it sees
    one sample at a time, in order)."""

    name = "SweepTestWindowBudget"

    def __init__(self, window=10, per_window=3, threshold=0.5, **kw):
        self.window, self.per_window, self.threshold = int(window), int(per_window), float(threshold)
        self.seen, self.sent = 0, []

    def __call__(self, x=None) -> bool:
        i = self.seen
        self.seen += 1
        self.sent = [j for j in self.sent if j > i - self.window]
        hard = x["confidence"] < self.threshold and len(self.sent) < self.per_window
        if hard:
            self.sent.append(i)
        return hard


SPEC = {"policies": [*DEFAULT_SPEC["policies"],
                     {"name": "SweepTestWindowBudget", "grid": {"per_window": [1, 2, 5], "threshold": [0.3, 0.7]}},
                     {"name": "RandomRouter", "label": "RandomRouter", "params": {"seed": 4},
                      "grid": {"ratio": [0.25, 0.75]}}]}


@pytest.fixture(scope="module")
def swept():
    data = synthetic_cache()
    return data, run_sweep(data, parse_spec(SPEC))


def test_sweep_invariants(swept):
    data, res = swept
    oracle = res.references["oracle"]["points"]
    assert res.references["random"]["apgr"] == pytest.approx(0.5)
    assert len(res.rows) == 50 + 6 + 2 and all(r["error"] is None for r in res.rows)
    for r in res.rows:
        assert 0.0 <= r["cloud_share"] <= 1.0 and r["sent"] == round(r["cloud_share"] * data.n)
        assert r["accuracy"] <= curves.interpolate(oracle, r["cloud_share"]) + 1e-9, r["id"]  # points: 10 decimals
        assert r["accuracy_ci_low"] <= r["accuracy"] <= r["accuracy_ci_high"]
    for name, c in res.curves.items():
        assert c["apgr"] <= res.references["oracle"]["apgr"] + 1e-9, name
    rows = {r["id"]: r for r in res.rows}
    assert rows["EdgeOnly()"]["cloud_share"] == 0 and rows["CloudOnly()"]["cloud_share"] == 1
    assert rows["EdgeOnly()"]["accuracy"] == pytest.approx(data.edge_correct.mean())
    assert rows["EdgeOnly()"]["uplink_bytes"] == 0
    assert rows["CloudOnly()"]["uplink_bytes"] == pytest.approx(data.bytes_up.mean())
    assert rows["Oracle()"]["upper_bound"] and not rows["Oracle()"]["pareto"]
    # a threshold policy on a calibrated edge beats Random
    assert res.curves["Threshold"]["apgr"] > 0.5
    # the online policy: never more than per_window in any window of consecutive samples
    for per in (1, 2, 5):
        r = rows[f"SweepTestWindowBudget(per_window={per},threshold=0.7)"]
        assert r["path"] == "per-sample" and r["sent"] <= per * -(-data.n // 10)
    assert json_roundtrip(to_json(res))["settings"][0]["id"] == res.rows[0]["id"]


def json_roundtrip(doc):
    import json

    return json.loads(json.dumps(doc, allow_nan=False, default=float))


def test_vectorised_and_per_sample_paths_decide_identically(swept):
    data, _ = swept
    settings = expand(parse_spec(SPEC))
    fast = decide(settings, data, vectorise=True)
    slow = decide(settings, data, vectorise=False)
    assert any(o.path == "vectorised" for o in fast) and all(o.path == "per-sample" for o in slow)
    for a, b in zip(fast, slow):
        if a.setting.policy == "Oracle":  # reads label files, which this cache has none of (test_cli checks it)
            assert "no label path" in b.error
            continue
        assert np.array_equal(a.decisions, b.decisions), a.setting.id


def test_a_policy_that_raises_fails_its_setting_only():
    data = synthetic_cache(20)
    spec = parse_spec({"policies": [{"name": "Threshold", "grid": {"threshold": [0.5]}},
                                    {"name": "SweepTestWindowBudget"}]})
    data.lines[7]["edge"].pop("confidence")
    data._edge = None
    res = run_sweep(data, spec, vectorise=False)
    errors = {r["id"]: r["error"] for r in res.rows}
    assert "sample 7" in errors["SweepTestWindowBudget()"]
    assert "confidence" in errors["Threshold(threshold=0.5)"]


def test_spec_errors_name_the_problem():
    with pytest.raises(CeprError, match="did you mean 'grid'"):
        parse_spec({"policies": [{"name": "Threshold", "gird": {}}]})
    with pytest.raises(CeprError, match="both draw the curve"):
        parse_spec({"policies": [{"name": "Random"}, {"name": "Random"}]})
    with pytest.raises(CeprError, match="did you mean 'Threshold'"):
        expand(parse_spec({"policies": [{"name": "Treshold"}]}))
    with pytest.raises(CeprError, match="threshold must be in"):
        expand(parse_spec({"policies": [{"name": "Threshold", "grid": {"threshold": [1.5]}}]}))
    assert RangeDoc(start=0.1, stop=0.3, step=0.1).values() == [0.1, 0.2, 0.3]
    assert len(expand(parse_spec(DEFAULT_SPEC))) == 50


def test_the_documented_example_spec_sweeps_every_shipped_policy():
    from pathlib import Path

    from cepr.sweep.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "docs" / "examples" / "sweep.yaml")
    settings = expand(spec)
    assert {s.policy for s in settings} == {"Threshold", "CrossEntropy", "Random", "RiskAware", "Complexity", "Learned",
                                            "Budget", "NetworkAware", "EdgeOnly", "CloudOnly", "Oracle"}
    assert len(settings) == 54  # the count docs/sweep.md reports


@pytest.fixture(scope="module", autouse=True)
def _window_budget_registered():
    """Registered while this module's tests run only: collection imports every test module first, and a policy
    registered at import would show in other modules' registry listings."""
    register_policy("SweepTestWindowBudget", needs_edge_result=True)(WindowBudget)
    yield
    POLICY_REGISTRY.unregister("SweepTestWindowBudget")
