"""The edge state reaches the cloud module explicitly under cepr run, and through EDGE_HANDOFF under Ianvs,
whose Sedna hands the cloud model only the raw sample."""

from pathlib import Path

import pytest

from cepr.errors import CeprError
from cepr.records import EDGE_HANDOFF, EDGE_STATE_KEY, EdgeState, handoff_key


@pytest.fixture
def modules(tiny_data, monkeypatch):
    from cepr.cloud.module import CloudModule
    from cepr.edge.module import EdgeModule
    from cepr.runner.dataset import TaskDatasetProcessor, load_index

    monkeypatch.setenv("BACKEND_TYPE", "ONNX")
    EDGE_HANDOFF.clear()
    samples = TaskDatasetProcessor()(load_index(tiny_data / "160x120" / "test-index.txt")).x[:4]
    return EdgeModule(model="edge-int8"), CloudModule(backend="inprocess", payload="summary", link="none"), samples


def test_cepr_run_hands_the_state_over_explicitly(modules, monkeypatch):
    """With the store switched off, the paradigm's explicit hand-over still gets the summary to the cloud."""
    from cepr.registry import import_module_file
    from cepr.runner.paradigm import JointInferenceJob

    import_module_file(Path(__file__).resolve().parents[2] / "testalgorithms" / "perception-reasoning"
                       / "cepr_hard_example_mining.py")  # registers the policies, as the job does
    edge, cloud, samples = modules
    monkeypatch.setattr(EDGE_HANDOFF, "take", lambda key: None)
    job = JointInferenceJob(edge, cloud, {"method": "CloudOnly", "param": {}}, "inference-then-mining")
    assert job.cloud_takes_state
    for s in samples:
        is_hard, _final, e, c = job.inference(s)
        assert is_hard and c["status"] == "ok" and c["bytes_up"] > 0
        assert isinstance(e[EDGE_STATE_KEY], EdgeState) and e[EDGE_STATE_KEY].answer == e["answer"]


def test_ianvs_style_calls_find_the_state_in_the_handoff(modules):
    """Sedna calls predict(sample), then inference(sample) with nothing else: the store carries the state."""
    edge, cloud, samples = modules
    for s in samples:
        e = edge.predict(s)
        assert EDGE_HANDOFF._items[handoff_key(s)] is e[EDGE_STATE_KEY]
        c = cloud.inference(s.tolist(), post_process=None, mining_mode="inference-then-mining")
        assert c["status"] == "ok" and handoff_key(s) not in EDGE_HANDOFF._items  # taken once
    with pytest.raises(CeprError, match="the edge has not run on this sample"):
        cloud.inference(samples[0])  # already taken: a summary payload without an edge run is an error


def test_a_sample_is_never_given_another_samples_state(modules):
    edge, _cloud, samples = modules
    edge.predict(samples[0])
    assert EDGE_HANDOFF.take(handoff_key(samples[1])) is None
    assert EDGE_HANDOFF.take(handoff_key(samples[0])) is not None
