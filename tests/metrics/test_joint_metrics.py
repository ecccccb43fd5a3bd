"""Joint-inference testenv metrics on hand-built y_pred lists with known answers."""

import math
import warnings

import cv2
import numpy as np
import pytest

from cepr.errors import CeprError
from cepr.metrics import joint

TRUTH = {
    "a": {"path_hazard": "yes", "action": "stop"},
    "b": {"path_hazard": "no", "action": "go"},
    "c": {"path_hazard": "yes", "action": "slow"},
    "d": {"path_hazard": "no", "action": "avoid_left"},
}


@pytest.fixture(autouse=True)
def fake_truth(monkeypatch):
    monkeypatch.setattr("cepr.data.tasks.ground_truth", lambda p, params=None: TRUTH[str(p)], raising=False)


def edge(task, answer, ms=10.0, t0=100.0, t1=100.01, mask=None):
    d = {"source": "edge", "task": task, "answer": answer, "confidence": 0.5, "latency_ms": ms,
         "started_at": t0, "finished_at": t1}
    if mask is not None:
        d["mask"] = mask
    return d


def cloud(task, answer, edge_answer=None, status="ok", ms=100.0, up=1000, down=100, tokens=(50, 10), ttft=20.0,
          t0=100.01, t1=100.2):
    return {"source": "cloud", "task": task, "answer": answer if status == "ok" else edge_answer,
            "cloud_answer": answer if status == "ok" else None, "status": status, "latency_ms": ms,
            "ttft_ms": ttft, "bytes_up": up, "bytes_down": down, "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1], "started_at": t0, "finished_at": t1}


def sample_set():
    y_true = np.array(["a", "b", "c", "d"])
    e0, e1 = edge("path_hazard", "yes", t0=100.0), edge("action", "stop", ms=20.0, t1=101.0)
    e2, e3 = edge("path_hazard", "no", ms=30.0), edge("action", "go", ms=40.0)
    c2 = cloud("path_hazard", "yes", ms=200.0, t1=102.0)
    c3 = cloud("action", None, edge_answer="go", status="fallback", ms=300.0, up=2000, ttft=None)
    y_pred = [[False, e0, e0, None], [False, e1, e1, None], [True, c2, e2, c2], [True, c3, e3, c3]]
    return y_true, y_pred


def test_accuracy_family():
    y_true, y_pred = sample_set()
    # final answers: yes(ok) stop(wrong: go) yes(ok: cloud fixed it) go(wrong: avoid_left, cloud fell back)
    assert joint.accuracy(y_true, y_pred) == 0.5
    assert joint.METRICS["accuracy_path_hazard"](y_true, y_pred) == 1.0
    assert joint.METRICS["accuracy_action"](y_true, y_pred) == 0.0
    assert joint.edge_accuracy(y_true, y_pred) == 0.25  # only "yes" on a is right
    assert joint.cloud_accuracy(y_true, y_pred) == 1.0  # one ok cloud answer, right
    # hazardous: a (yes), c (yes), d (avoid_left); answered safely: a, c; d answered "go"
    assert joint.safety_recall(y_true, y_pred) == pytest.approx(2 / 3)
    # two samples kept on the edge, and d's cloud call fell back, so its edge answer stood: 3 of 4
    assert joint.edge_ratio(y_true, y_pred) == 0.75


def test_latency_throughput_bytes_tokens():
    y_true, y_pred = sample_set()
    lat = [10.0, 20.0, 30.0 + 200.0, 40.0 + 300.0]
    assert joint.latency_mean(y_true, y_pred) == pytest.approx(np.mean(lat))
    assert joint.latency_p50(y_true, y_pred) == pytest.approx(np.percentile(lat, 50))
    assert joint.latency_p95(y_true, y_pred) == pytest.approx(np.percentile(lat, 95))
    assert joint.latency_p99(y_true, y_pred) == pytest.approx(np.percentile(lat, 99))
    assert joint.throughput(y_true, y_pred) == pytest.approx(4 / 2.0)  # first start 100.0, last end 102.0
    assert joint.uplink_bytes(y_true, y_pred) == (1000 + 2000) / 4
    assert joint.downlink_bytes(y_true, y_pred) == 200 / 4
    assert joint.cloud_tokens(y_true, y_pred) == 120 / 4
    assert joint.ttft_mean(y_true, y_pred) == 20.0


def test_one_sample_and_empty_inputs():
    e = edge("path_hazard", "yes")
    assert joint.accuracy(["a"], [[False, e, e, None]]) == 1.0
    for name, fn in joint.METRICS.items():
        if name in ("miou", "pixel_accuracy", "bandwidth_saving_vs_png"):
            continue
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            v = fn([], [])
        assert math.isnan(v) and w, name
    with pytest.warns(RuntimeWarning):
        assert math.isnan(joint.ttft_mean(["a"], [[False, e, e, None]]))  # no cloud answer
    with pytest.warns(RuntimeWarning):
        assert math.isnan(joint.METRICS["accuracy_action"](["a"], [[False, e, e, None]]))  # no such task


def test_bad_inputs_are_clear_errors():
    e = edge("path_hazard", "yes")
    with pytest.raises(CeprError, match="1 entries but y_pred has 2"):
        joint.accuracy(["a"], [[False, e, e, None]] * 2)
    with pytest.raises(CeprError, match=r"y_pred\[0\]"):
        joint.accuracy(["a"], [e])
    with pytest.raises(CeprError, match="did you mean 'accuracy'"):
        joint.get_metric("acuracy")


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def test_miou_and_bandwidth_saving_from_files(tmp_path, monkeypatch):
    lab = np.zeros((4, 6), np.uint8)
    lab[:, 3:] = 1  # road | sidewalk
    label = tmp_path / "640x480" / "gtFine" / "test" / "seq" / "f_TrainIds.png"
    _write(label, lab)
    rgb = tmp_path / "640x480" / "rgb" / "test" / "seq" / "f.png"
    _write(rgb, np.zeros((4, 6, 3), np.uint8))
    big_label = tmp_path / "1280x760" / "gtFine" / "test" / "seq" / "f_TrainIds.png"
    _write(big_label, np.zeros((8, 12), np.uint8))
    big_rgb = tmp_path / "1280x760" / "rgb" / "test" / "seq" / "f.png"
    _write(big_rgb, np.random.default_rng(0).integers(0, 255, (8, 12, 3), np.uint8))
    monkeypatch.setattr("cepr.data.tasks.ground_truth", lambda p, params=None: {"path_hazard": "yes"},
                        raising=False)
    pred = lab.copy()
    pred[:, 2] = 1  # one column of road called sidewalk: road IoU 8/12, sidewalk IoU 12/16
    e = edge("path_hazard", "yes", mask=pred)
    c = cloud("path_hazard", "yes", up=100)
    y_true = [str(label)]
    assert joint.miou(y_true, [[True, c, e, c]]) == pytest.approx(100 * (8 / 12 + 12 / 16) / 2)
    assert joint.pixel_accuracy(y_true, [[True, c, e, c]]) == pytest.approx(100 * 20 / 24)
    full = big_rgb.stat().st_size  # the largest resolution's RGB file, not the 640x480 one
    assert full != rgb.stat().st_size
    assert joint.bandwidth_saving_vs_png(y_true, [[True, c, e, c]]) == pytest.approx(1 - 100 / full)
    with pytest.warns(RuntimeWarning):
        assert math.isnan(joint.miou(y_true, [[True, c, None, c]]))  # no edge mask
