"""The joint-inference paradigm reads what a policy declares (needs_labels, needs_edge_result, upper_bound) instead
of naming the Oracle: a policy registered by decorator gets what it declares, under any name ClassFactory knows."""

import warnings
from pathlib import Path

import pytest

from cepr.compat import ORACLE_MARKED, ClassFactory, ClassType
from cepr.compat.class_factory import lookup
from cepr.dispatch import POLICY_REGISTRY, Policy, register_policy
from cepr.errors import CeprError
from cepr.registry import import_module_file
from cepr.runner.paradigm import JointInferenceJob

REPO = Path(__file__).resolve().parents[2]

SEEN = []  # (policy name, what it was constructed with or called on)


class Edge:
    def __init__(self):
        self.calls = 0

    def load(self, model_url=None, **kw):
        pass

    def predict(self, data=None, **kw):
        self.calls += 1
        return {"source": "edge", "key": data["key"], "answer": "e", "confidence": 0.2}


class Cloud:
    def inference(self, data, post_process=None, **kw):
        return {"source": "cloud", "key": data["key"], "answer": "c"}


@pytest.fixture
def plugins(monkeypatch, tmp_path):
    """Three policies registered as a plug-in file would register them, and with ClassFactory as the Ianvs adapter
    does for every registered policy."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    monkeypatch.setenv("model_path", str(model))
    monkeypatch.setenv("BACKEND_TYPE", "ONNX")
    SEEN.clear()

    @register_policy("TestByConfidence", needs_edge_result=True)
    class ByConfidence(Policy):
        name = "TestByConfidence"

        def __init__(self, **kw):
            SEEN.append((self.name, "init", sorted(kw)))

        def __call__(self, x=None):
            SEEN.append((self.name, "call", x.get("source", "sample")))
            return x["confidence"] < 0.5

    @register_policy("TestLabelReader", needs_labels=True, needs_edge_result=True, upper_bound=True)
    class LabelReader(Policy):
        name = "TestLabelReader"

        def __init__(self, edgemodel=None, cloudmodel=None):
            SEEN.append((self.name, "init", (type(edgemodel).__name__, type(cloudmodel).__name__)))
            self.edgemodel = edgemodel

        def __call__(self, x=None):
            if "answer" not in x:  # a raw sample: run the edge itself, as the Oracle does
                x = self.edgemodel.predict(x)
            return x["answer"] != "c"

    @register_policy("TestRawSample")
    class RawSample(Policy):
        name = "TestRawSample"

        def __call__(self, x=None):
            SEEN.append((self.name, "call", x.get("source", "sample")))
            return False

    names = ("TestByConfidence", "TestLabelReader", "TestRawSample")
    hem = ClassFactory.__registry__.setdefault(ClassType.HEM, {})
    for n in names:
        monkeypatch.setitem(hem, n, POLICY_REGISTRY.get(n))
    yield
    for n in names:
        POLICY_REGISTRY.unregister(n)


def job(method, mode="inference-then-mining", edge=None):
    return JointInferenceJob(edge or Edge(), Cloud(), {"method": method, "param": {}}, mode)


def test_a_policy_that_needs_the_edge_result_gets_it(plugins):
    j = job("TestByConfidence")
    assert j.inference({"key": "k"})[0] is True
    assert SEEN == [("TestByConfidence", "init", []), ("TestByConfidence", "call", "edge")]
    assert j.upper_bound is False


def test_a_policy_that_needs_the_labels_gets_both_models_and_marks_an_upper_bound(plugins):
    edge = Edge()
    j = job("TestLabelReader", mode="mining-then-inference", edge=edge)
    assert SEEN == [("TestLabelReader", "init", ("Edge", "Cloud"))]
    assert j.upper_bound is True
    is_hard, final, _, _ = j.inference({"key": "k"})
    assert is_hard and final["source"] == "cloud" and edge.calls == 1  # it ran the edge model itself


def test_the_oracle_under_its_marked_name_gets_the_models_too(plugins):
    import_module_file(REPO / "testalgorithms" / "perception-reasoning" / "cepr_hard_example_mining.py")
    cls = lookup(ClassType.HEM, ORACLE_MARKED)  # the adapter registered every policy and alias
    assert POLICY_REGISTRY.capabilities_of(cls) == {"needs_labels": True, "needs_edge_result": True,
                                                   "upper_bound": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        j = JointInferenceJob(Edge(), Cloud(), {"method": ORACLE_MARKED, "param": {}}, "mining-then-inference")
    assert j.upper_bound is True and isinstance(j.hem.edgemodel, Edge) and isinstance(j.hem.cloudmodel, Cloud)


def test_needing_the_edge_result_in_mining_then_inference_fails_before_any_sample(plugins):
    edge = Edge()
    with pytest.raises(CeprError, match="'TestByConfidence' decides from the edge's result.*"
                                        "inference-then-mining"):
        job("TestByConfidence", mode="mining-then-inference", edge=edge)
    assert edge.calls == 0 and SEEN == []
    j = job("TestRawSample", mode="mining-then-inference")  # declares nothing: sees the raw sample
    assert j.inference({"key": "k"})[0] is False and SEEN[-1] == ("TestRawSample", "call", "sample")


def test_a_filter_known_only_to_class_factory_declares_nothing(plugins, monkeypatch):
    class Plain:
        def __init__(self, **kw):
            assert not kw  # no models handed over

        def __call__(self, x):
            return True

    monkeypatch.setitem(ClassFactory.__registry__[ClassType.HEM], "TestPlain", Plain)
    j = job("TestPlain", mode="mining-then-inference")
    assert j.upper_bound is False and j.inference({"key": "k"})[0] is True
