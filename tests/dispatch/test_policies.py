"""Dispatch policies: their decisions, Sedna's crash cases, Random's share and determinism, the Oracle's two
input paths, and the registry's messages."""

import math
import warnings

import numpy as np
import pytest

from cepr.compat import ORACLE_MARKED
from cepr.dispatch import (
    POLICIES,
    POLICY_REGISTRY,
    CloudOnly,
    CrossEntropy,
    EdgeOnly,
    Oracle,
    OracleRouter,
    Random,
    RandomRouter,
    Threshold,
    create_policy,
    get_policy,
)
from cepr.errors import CeprError


def edge_result(answer="clear", confidence=0.9, distribution=None, key="f0001", task="path_hazard",
                label_path="/data/f0001_label.png"):
    return {"source": "edge", "key": key, "task": task, "answer": answer, "confidence": confidence,
            "distribution": distribution or {"clear": confidence, "hazard": 1 - confidence},
            "label_path": label_path}


def sample(key="f0001", task="path_hazard", label="/data/f0001_label.png"):
    return {"key": key, "rgb": f"/data/{key}.png", "label": label, "task": task, "index": 0}


# ---- trivial baselines ----------------------------------------------------------------------------------------

def test_edge_only_and_cloud_only():
    e, c = EdgeOnly(anything=1), CloudOnly()
    for x in (None, sample(), edge_result(), [0.5, 0.5], 3):
        assert e(x) is False
        assert c(x) is True
        assert e.filter(x) is False and c.filter(x) is True
    for name in ("EdgeOnly", "CloudOnly"):
        assert POLICY_REGISTRY.capabilities(name) == {"needs_labels": False, "needs_edge_result": False,
                                                      "upper_bound": False}


# ---- Random ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.9])
def test_random_share_matches_ratio(ratio):
    r = Random(ratio=ratio, seed=0)
    share = sum(r({"key": f"frame{i:05d}"}) for i in range(2000)) / 2000
    assert abs(share - ratio) <= 0.04


def test_random_extremes():
    keys = [{"key": f"k{i}"} for i in range(300)]
    assert not any(Random(ratio=0)(k) for k in keys)
    assert all(Random(ratio=1)(k) for k in keys)


def test_random_deterministic_per_key_and_order_independent():
    keys = [f"frame{i}" for i in range(500)]
    a = Random(ratio=0.4, seed=7)
    forward = {k: a({"key": k}) for k in keys}
    b = Random(ratio=0.4, seed=7)
    backward = {k: b({"key": k}) for k in reversed(keys)}
    assert forward == backward
    # the same key twice, and a raw sample vs its edge result, give the same decision
    assert all(a({"key": k}) == forward[k] for k in keys)
    assert a(sample(key="frame3")) == a(edge_result(key="frame3")) == forward["frame3"]
    assert 100 < sum(forward.values()) < 300


def test_random_seeds_differ():
    keys = [{"key": f"frame{i}"} for i in range(500)]
    d0 = [Random(ratio=0.5, seed=0)(k) for k in keys]
    d1 = [Random(ratio=0.5, seed=1)(k) for k in keys]
    disagree = sum(x != y for x, y in zip(d0, d1))
    assert 150 < disagree < 350  # independent coins disagree about half the time


def test_random_without_key_uses_seeded_stream():
    r1, r2 = Random(ratio=0.5, seed=3), Random(ratio=0.5, seed=3)
    s1 = [r1([0.2, 0.8]) for _ in range(200)]
    s2 = [r2("no key") for _ in range(200)]
    assert s1 == s2  # same seed, same stream
    assert 60 < sum(s1) < 140
    assert isinstance(Random(ratio=0.5)(None), bool)


def test_random_string_hyperparameters_and_alias():
    r = create_policy("Random", ratio="0.3", seed="5")
    assert r.ratio == pytest.approx(0.3) and r.seed == 5
    rr = create_policy("RandomRouter", ratio="0.3", seed="5")
    assert isinstance(rr, Random) and rr.name == "RandomRouter"
    keys = [{"key": f"x{i}"} for i in range(200)]
    assert [r(k) for k in keys] == [rr(k) for k in keys]


@pytest.mark.parametrize("ratio", [-0.1, 1.5, "abc", None, float("nan"), True])
def test_random_invalid_ratio(ratio):
    with pytest.raises(CeprError, match="ratio"):
        Random(ratio=ratio)


def test_random_invalid_seed_and_unknown_hyperparameter():
    with pytest.raises(CeprError, match="seed"):
        Random(seed="1.5")
    with pytest.raises(CeprError, match="did you mean 'ratio'"):
        Random(raito=0.2)


# ---- CrossEntropy ----------------------------------------------------------------------------------------------

def test_cross_entropy_uniform_and_one_hot():
    ce = CrossEntropy(threshold_cross_entropy=0.5)
    assert CrossEntropy.score([0.25] * 4) == pytest.approx(0.0, abs=1e-12)
    assert ce([0.25] * 4) is True
    assert CrossEntropy(threshold_cross_entropy=0.01)([0.5, 0.5]) is True
    assert CrossEntropy.score([0.0, 1.0, 0.0]) == pytest.approx(1.0)
    assert ce([0.0, 1.0, 0.0]) is False
    assert CrossEntropy(threshold_cross_entropy=1.0)([0.0, 1.0, 0.0]) is False  # score 1 is never < 1


def test_cross_entropy_value():
    p = [0.7, 0.2, 0.1]
    expected = 1 + sum(q * math.log(q) for q in p) / math.log(3)
    assert CrossEntropy.score(p) == pytest.approx(expected)
    assert CrossEntropy(threshold_cross_entropy=expected + 0.01)(p) is True
    assert CrossEntropy(threshold_cross_entropy=expected - 0.01)(p) is False


def test_cross_entropy_zero_probabilities_do_not_crash():
    # Sedna's filter rejects (returns False for) any zero probability; here 0 * log 0 = 0
    p = [0.5, 0.5, 0.0, 0.0]
    assert CrossEntropy.score(p) == pytest.approx(1 - math.log(2) / math.log(4))
    assert CrossEntropy(threshold_cross_entropy=0.6)(p) is True
    assert CrossEntropy(threshold_cross_entropy=0.4)(p) is False


def test_cross_entropy_single_class_is_certain():
    assert CrossEntropy.score([1.0]) == 1.0
    assert CrossEntropy(threshold_cross_entropy=1.0)([1.0]) is False
    assert CrossEntropy.score({"distribution": {"only": 1.0}}) == 1.0


def test_cross_entropy_numpy_input():
    ce = CrossEntropy(threshold_cross_entropy=0.5)
    assert ce(np.array([0.25, 0.25, 0.25, 0.25])) is True
    assert ce(np.array([0.98, 0.01, 0.01], dtype=np.float32)) is False
    assert ce(np.array([[0.25, 0.25, 0.25, 0.25]])) is True  # a batch of one
    assert ce({"distribution": np.array([0.5, 0.5])}) is True
    assert ce(np.array([])) is False


def test_cross_entropy_edge_result_dict_and_list():
    ce = CrossEntropy(threshold_cross_entropy=0.5)
    assert ce(edge_result(distribution={"clear": 0.5, "hazard": 0.5})) is True
    assert ce(edge_result(distribution={"clear": 0.99, "hazard": 0.01})) is False
    assert ce({"distribution": [0.34, 0.33, 0.33]}) is True


def test_cross_entropy_renormalises():
    assert CrossEntropy.score([2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)
    assert CrossEntropy.score([7, 2, 1]) == pytest.approx(CrossEntropy.score([0.7, 0.2, 0.1]))


def test_cross_entropy_empty_is_not_hard():
    ce = CrossEntropy(threshold_cross_entropy=1.0)
    assert ce(None) is False and ce([]) is False and ce({"distribution": {}}) is False


@pytest.mark.parametrize("bad, match", [
    ([0.5, -0.1, 0.6], "negative"),
    ([0.5, float("nan")], "finite"),
    ([0.5, float("inf")], "finite"),
    ([0.0, 0.0], "all zero"),
    (["a", "b"], "numbers"),
    ({"answer": "clear"}, "distribution"),
    ("0.5", "list or array"),
    (0.7, "list or array"),
    (np.ones((2, 3)) / 3, "1-D"),
])
def test_cross_entropy_bad_input_raises(bad, match):
    with pytest.raises(CeprError, match=match):
        CrossEntropy()(bad)


def test_cross_entropy_hyperparameters():
    assert CrossEntropy(threshold_cross_entropy="0.3").threshold_cross_entropy == pytest.approx(0.3)
    assert CrossEntropy().threshold_cross_entropy == 0.5
    with pytest.raises(CeprError, match="threshold_cross_entropy"):
        CrossEntropy(threshold_cross_entropy="high")
    with pytest.raises(CeprError, match="threshold_cross_entropy"):
        CrossEntropy(threshold_cross_entropy=50)
    with pytest.raises(CeprError, match="did you mean 'threshold_cross_entropy'"):
        CrossEntropy(threshold_crossentropy=0.5)
    with pytest.raises(CeprError, match=r"unknown hyperparameter 'threshold' \(known: threshold_cross_entropy\)"):
        CrossEntropy(threshold=0.5)


# ---- Threshold -------------------------------------------------------------------------------------------------

def test_threshold_dict_and_number():
    t = Threshold(threshold=0.6)
    assert t(edge_result(confidence=0.55)) is True
    assert t(edge_result(confidence=0.6)) is False
    assert t(edge_result(confidence=0.9)) is False
    assert t(0.3) is True and t(0.7) is False
    assert t(np.float32(0.3)) is True
    assert t.filter(0.3) is True


def test_threshold_detection_boxes():
    t = Threshold(threshold=0.5)
    boxes = [[0, 0, 10, 10, 0.9, 1], [5, 5, 20, 20, 0.2, 2]]  # mean score 0.55
    assert Threshold.score(boxes) == pytest.approx(0.55)
    assert t(boxes) is False
    assert Threshold(threshold=0.6)(boxes) is True
    assert Threshold(threshold=0.6)(np.array(boxes, dtype=float)) is True


def test_threshold_empty_is_not_hard():
    t = Threshold(threshold=1.0)
    assert t(None) is False and t([]) is False and t(np.zeros((0, 6))) is False


@pytest.mark.parametrize("bad, match", [
    ({"answer": "clear"}, "confidence"),
    ({"confidence": "high"}, "number"),
    ({"confidence": float("nan")}, "finite"),
    ("0.3", "number"),
    ([0.3, 0.7], "detection format"),
    ([[0, 0, 1, 1]], "detection format"),
])
def test_threshold_bad_input_raises(bad, match):
    with pytest.raises(CeprError, match=match):
        Threshold()(bad)


def test_threshold_hyperparameters():
    assert Threshold(threshold="0.3").threshold == pytest.approx(0.3)
    assert Threshold(threshold="0.3")(0.29) is True
    with pytest.raises(CeprError, match="threshold"):
        Threshold(threshold=-1)
    with pytest.raises(CeprError, match="did you mean 'threshold'"):
        Threshold(treshold=0.3)


# ---- Oracle ----------------------------------------------------------------------------------------------------

TRUTH = {"/data/f0001_label.png": {"path_hazard": "clear", "action": "go"},
         "/data/f0002_label.png": {"path_hazard": "hazard", "action": "stop"}}


@pytest.fixture
def fake_truth(monkeypatch):
    calls = []

    def ground_truth(label_path, params=None):
        calls.append(str(label_path))
        return dict(TRUTH[str(label_path)])

    monkeypatch.setattr("cepr.data.tasks.ground_truth", ground_truth, raising=False)
    return calls


def make_oracle(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Oracle(**kw)


def test_oracle_warns_it_is_an_upper_bound():
    with pytest.warns(UserWarning, match="upper bound"):
        Oracle()
    with pytest.warns(UserWarning, match="upper bound"):
        create_policy("OracleRouter")
    assert POLICY_REGISTRY.capabilities("Oracle")["upper_bound"] is True
    assert all(not POLICY_REGISTRY.capabilities(name)["upper_bound"] for name in POLICIES
               if not name.startswith("Oracle"))


def test_oracle_on_edge_results(fake_truth):
    o = make_oracle()
    assert o(edge_result(answer="clear")) is False  # edge right: stays on the edge
    assert o(edge_result(answer="hazard")) is True  # edge wrong: goes to the cloud
    assert o(edge_result(answer="go", task="action")) is False
    assert o(edge_result(answer="go", task="action", key="f0002", label_path="/data/f0002_label.png")) is True
    assert fake_truth[0] == "/data/f0001_label.png"


class FakeEdgeModel:
    """Test double for the edge model: only the calling convention is under test."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def predict(self, data=None, **kwargs):
        self.calls.append(data)
        return {"source": "edge", "key": data["key"], "task": data["task"], "answer": self.answer,
                "confidence": 0.8, "distribution": {self.answer: 1.0}, "label_path": data["label"]}


class PositionalEdgeModel:
    def __init__(self, answer):
        self.answer = answer

    def predict(self, x):
        return {"prediction": {"key": x["key"], "task": x["task"], "answer": self.answer,
                               "label_path": x["label"]}}


def test_oracle_runs_the_edge_model_on_raw_samples(fake_truth):
    right, wrong = FakeEdgeModel("clear"), FakeEdgeModel("hazard")
    s = sample()
    assert make_oracle(edgemodel=right, cloudmodel=object())(s) is False
    assert make_oracle(edgemodel=wrong)(s) is True
    assert right.calls == [s] and wrong.calls == [s]
    # an edge result is used as is, without running the model again
    assert make_oracle(edgemodel=wrong)(edge_result(answer="clear")) is False
    assert len(wrong.calls) == 1
    # positional predict and Ianvs's {"prediction": ...} wrapper
    assert make_oracle(edgemodel=PositionalEdgeModel("clear"))(s) is False
    assert make_oracle(edgemodel=PositionalEdgeModel("hazard"))(s) is True
    with pytest.warns(UserWarning):
        router = create_policy("OracleRouter", edgemodel=wrong)
    assert isinstance(router, Oracle) and router.name == "OracleRouter" and router(s) is True


def test_oracle_raw_sample_without_edge_model_explains(fake_truth):
    with pytest.raises(CeprError, match="inference-then-mining"):
        make_oracle()(sample())


def test_oracle_missing_label_names_the_sample(fake_truth):
    with pytest.raises(CeprError, match="'f0009'"):
        make_oracle()(edge_result(key="f0009", label_path=None))
    with pytest.raises(CeprError, match="'f0009'"):
        make_oracle(edgemodel=FakeEdgeModel("clear"))(sample(key="f0009", label=None))


def test_oracle_unknown_task_and_bad_edge_output(fake_truth):
    with pytest.raises(CeprError, match="people_count"):
        make_oracle()(edge_result(task="people_count"))

    class Broken:
        def predict(self, data=None):
            return [1, 2]

    with pytest.raises(CeprError, match="edge model returned list"):
        make_oracle(edgemodel=Broken())(sample())


# ---- registry --------------------------------------------------------------------------------------------------

def test_registry_names_and_aliases():
    assert set(POLICIES) == {"EdgeOnly", "CloudOnly", "Random", "RandomRouter", "Oracle", "OracleRouter",
                             "CrossEntropy", "Threshold", "RiskAware", "Complexity", "Learned", "Budget",
                             "NetworkAware"}
    for name, cls in POLICIES.items():
        assert cls.name == name
        assert callable(cls.filter)
    assert get_policy(ORACLE_MARKED) is Oracle and ORACLE_MARKED in POLICY_REGISTRY.names(aliases=True)
    assert get_policy("RandomRouter") is RandomRouter and issubclass(RandomRouter, Random)
    assert get_policy("OracleRouter") is OracleRouter and issubclass(OracleRouter, Oracle)
    assert get_policy("CrossEntropy") is CrossEntropy and get_policy("Threshold") is Threshold


@pytest.mark.parametrize("typo, hint", [("Treshold", "Threshold"), ("CrossEntropie", "CrossEntropy"),
                                        ("oracle", "Oracle"), ("EDGEONLY", "EdgeOnly")])
def test_registry_did_you_mean(typo, hint):
    with pytest.raises(CeprError, match=f"did you mean '{hint}'") as e:
        get_policy(typo)
    assert "CloudOnly" in str(e.value) and "RandomRouter" in str(e.value)


def test_registry_unknown_without_hint():
    with pytest.raises(CeprError, match="unknown dispatch policy 'zzz'") as e:
        create_policy("zzz")
    assert "did you mean" not in str(e.value)


def test_create_policy_passes_hyperparameters():
    t = create_policy("Threshold", threshold="0.7")
    assert isinstance(t, Threshold) and t(0.65) is True and t(0.75) is False
    assert repr(t) == "Threshold(threshold=0.7)"
