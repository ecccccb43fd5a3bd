"""Typed records: results validated where the paradigm hands them on, samples.jsonl lines built from models,
and the edge-to-cloud handoff store."""

import json
import threading

import numpy as np
import pytest

from cepr.errors import CeprError
from cepr.records import EDGE_STATE_KEY, CloudRecord, EdgeHandoff, EdgeResult, EdgeState, SampleRecord

STATE = EdgeState(summary={"objects": []}, answer="go", camera={"fx": 1.0})


def test_minimal_results_of_other_modules_validate():
    r = EdgeResult.check({"source": "edge", "answer": "e", "confidence": 1.0, "index": 3}, "edge")
    assert r.answer == "e" and r.model_extra == {"index": 3}  # extras are kept
    assert CloudRecord.check({"answer": "c"}, "cloud").source == "cloud"
    assert EdgeResult.check(None, "edge") is None


@pytest.mark.parametrize("bad, field", [
    ({"answer": "e", "confidence": "sure"}, "confidence"),
    ({"answer": "e", "distances": "lidar"}, "distances"),
    ({"answer": "e", "summary_bytes": "many"}, "summary_bytes"),
])
def test_bad_edge_results_name_the_field(bad, field):
    with pytest.raises(CeprError, match=f"the edge model returned a bad result: {field}"):
        EdgeResult.check(bad, "the edge model")
    with pytest.raises(CeprError, match="must return a result dict, got list"):
        EdgeResult.check(["e"], "the edge model")


def test_cloud_status_is_checked():
    with pytest.raises(CeprError, match="status"):
        CloudRecord.check({"answer": "c", "status": "maybe"}, "the cloud model")


def test_sample_line_keeps_in_memory_entries_out_and_scores_against_truth():
    mask = np.zeros((4, 4), np.uint8)
    edge = EdgeResult(key="k", task="action", answer="go", confidence=np.float32(0.75), latency_ms=3.0,
                      distances="depth").as_result(mask=mask, **{EDGE_STATE_KEY: STATE})
    assert edge["mask"] is mask and edge[EDGE_STATE_KEY] is STATE  # kept in memory for metrics and the cloud
    cloud = CloudRecord(key="k", task="action", answer="stop", status="ok", bytes_up=10).as_result()
    rec = SampleRecord.build(7, {"key": "k"}, [True, cloud, edge, cloud], {"action": "stop"})
    line = json.loads(json.dumps(rec.to_line()))
    assert line["index"] == 7 and line["source"] == "cloud" and line["correct"] is True and line["truth"] == "stop"
    assert "mask" not in line["edge"] and EDGE_STATE_KEY not in line["edge"]
    assert line["edge"]["confidence"] == 0.75 and line["cloud"]["bytes_up"] == 10
    easy = SampleRecord.build(0, {"key": "k"}, [False, edge, edge, None], None)
    assert easy.cloud is None and "truth" not in easy.to_line() and "correct" not in easy.to_line()
    # only what the module reported: no fields of the model that it left unset
    assert set(SampleRecord.build(0, {}, [False, {"answer": "e"}, {"answer": "e"}, None], None).edge) == {"answer"}


def test_handoff_is_keyed_bounded_and_taken_once():
    h = EdgeHandoff(capacity=3)
    for i in range(5):
        h.put(f"s{i}", STATE)
    assert len(h) == 3 and h.take("s0") is None  # the oldest were dropped
    assert h.take("s4") is STATE and h.take("s4") is None

    def fill(j):
        for i in range(200):
            h.put(f"t{j}-{i}", STATE)

    threads = [threading.Thread(target=fill, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(h) == 3


def test_a_side_that_ran_without_its_figures_is_flagged_on_the_sample():
    """Missing is not zero: the samples.jsonl line says what the cloud did not report."""
    edge = EdgeResult(answer="go", latency_ms=3.0).as_result()
    cloud = CloudRecord(answer="stop", status="ok", latency_ms=90.0, bytes_up=10).as_result()
    line = SampleRecord.build(0, {"key": "k"}, [True, cloud, edge, cloud], None).to_line()
    assert line["problems"] == ["cloud result has no 'bytes_down'", "cloud result has no 'prompt_tokens'",
                                "cloud result has no 'completion_tokens'"]
    full = CloudRecord(answer="stop", status="ok", latency_ms=90.0, bytes_up=10, bytes_down=5, prompt_tokens=3,
                       completion_tokens=1).as_result()
    assert "problems" not in SampleRecord.build(0, {"key": "k"}, [True, full, edge, full], None).to_line()
