"""The testenv joint metrics on hand-built predictions, with exact expected values.

Ground truth is faked (``cepr.data.tasks.ground_truth`` swapped for a dict lookup), so these tests score the
metrics, not the task functions; only mIoU and bandwidth saving read files, built here with cv2."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cepr.data.tasks import TASK_NAMES
from cepr.errors import CeprError
from cepr.metrics import joint
from cepr.metrics.joint import METRICS, get_metric

# ---- builders ------------------------------------------------------------------------------------------------


def edge(task, answer, latency=10.0, started=100.0, finished=None, **kw):
    d = {"source": "edge", "key": "k", "task": task, "answer": answer, "confidence": 0.9, "distribution": {},
         "label_path": "L", "latency_ms": latency, "started_at": started,
         "finished_at": started + latency / 1e3 if finished is None else finished, "summary_bytes": 300}
    d.update(kw)
    return d


def cloud(task, answer, status="ok", latency=200.0, started=100.0, finished=None, ttft=None, up=1000, down=100,
          prompt=50, completion=5, fallback=None, **kw):
    d = {"source": "cloud", "key": "k", "task": task, "answer": answer if status == "ok" else fallback,
         "cloud_answer": answer if status == "ok" else None, "status": status, "latency_ms": latency,
         "ttft_ms": ttft, "transfer_ms": 20.0, "bytes_up": up, "bytes_down": down, "prompt_tokens": prompt,
         "completion_tokens": completion, "started_at": started,
         "finished_at": started + latency / 1e3 if finished is None else finished}
    d.update(kw)
    return d


def easy(e):
    return [False, e, e, None]


def hard(e, c):
    return [True, c, e, c]


TRUTH = {
    "L0": {"path_hazard": "yes", "action": "stop", "people_count": "2", "nearest_obstacle": "person",
           "traversable": "no"},
    "L1": {"path_hazard": "no", "action": "go", "people_count": "0", "nearest_obstacle": "none",
           "traversable": "yes"},
    "L2": {"path_hazard": "no", "action": "avoid_left", "people_count": "0", "nearest_obstacle": "pole",
           "traversable": "no"},
}


@pytest.fixture
def gt(monkeypatch):
    """ground_truth swapped for TRUTH (plus whatever a test adds), recording every lookup."""
    table = dict(TRUTH)
    calls = []

    def fake(label_path, params=None):
        calls.append(str(label_path))
        return dict(table[str(label_path)])

    monkeypatch.setattr("cepr.data.tasks.ground_truth", fake, raising=False)
    return table, calls


def run_set():
    """Six samples over L0..L2; expected values of each metric are worked out in the tests below."""
    y_true = ["L0", "L0", "L1", "L2", "L2", "L1"]
    y_pred = [
        # path_hazard on L0 (yes): edge says no, cloud says yes -> final right, edge wrong, cloud right
        hard(edge("path_hazard", "no", latency=10.0, started=100.0),
             cloud("path_hazard", "yes", latency=200.0, started=100.01, ttft=50.0, up=1000, down=100)),
        # action on L0 (stop): edge says slow -> final right? no ("slow" != "stop"), but safe
        easy(edge("action", "slow", latency=20.0, started=100.5)),
        # action on L1 (go): edge right
        easy(edge("action", "go", latency=30.0, started=101.0)),
        # action on L2 (avoid_left): sent straight to the cloud (no edge run), cloud says go -> wrong and unsafe
        [True, cloud("action", "go", latency=400.0, started=101.5, ttft=70.0, up=3000, down=200, prompt=80,
                     completion=10), None, cloud("action", "go", latency=400.0, started=101.5, ttft=70.0, up=3000,
                                                down=200, prompt=80, completion=10)],
        # people_count on L2 (0): cloud fails, falls back to the edge's "0" -> final right, cloud not scored
        hard(edge("people_count", "0", latency=40.0, started=102.0),
             cloud("people_count", None, status="error", latency=1000.0, started=102.05, up=2000, down=0,
                   prompt=0, completion=0, fallback="0", finished=104.0)),
        # traversable on L1 (yes): edge says no -> wrong
        easy(edge("traversable", "no", latency=0.0, started=103.0)),
    ]
    return y_true, y_pred


# ---- accuracy ------------------------------------------------------------------------------------------------

def test_accuracy_overall_per_task_edge_and_cloud(gt):
    y_true, y_pred = run_set()
    assert joint.accuracy(y_true, y_pred) == pytest.approx(3 / 6)  # samples 0, 2, 4 right
    assert joint.accuracy_path_hazard(y_true, y_pred) == 1.0
    assert joint.accuracy_action(y_true, y_pred) == pytest.approx(1 / 3)
    assert joint.accuracy_people_count(y_true, y_pred) == 1.0
    assert joint.accuracy_traversable(y_true, y_pred) == 0.0
    # edge ran on 5 samples (not sample 3): right on samples 2 and 4
    assert joint.edge_accuracy(y_true, y_pred) == pytest.approx(2 / 5)
    # cloud ok on samples 0 (right) and 3 (wrong); the error on sample 4 is not the cloud's answer
    assert joint.cloud_accuracy(y_true, y_pred) == pytest.approx(1 / 2)


def test_no_sample_of_a_task_is_nan_with_warning(gt):
    y_true, y_pred = run_set()
    with pytest.warns(RuntimeWarning, match="nearest_obstacle"):
        assert math.isnan(joint.accuracy_nearest_obstacle(y_true, y_pred))


def test_missing_answer_counts_wrong_even_when_truth_lookup_has_none(gt):
    table, _ = gt
    table["L9"] = {"path_hazard": None}  # e.g. a sidecar holding null: None must not match None
    y_pred = [easy(edge("path_hazard", None)), [True, None, None, None]]
    assert joint.accuracy(["L9", "L9"], y_pred) == 0.0
    assert joint.accuracy_path_hazard(["L9", "L9"], y_pred) == 0.0
    assert joint.edge_accuracy(["L9"], y_pred[:1]) == 0.0


def test_accuracy_when_edge_never_ran(gt):
    c = cloud("traversable", "no")
    assert joint.accuracy(["L0"], [[True, c, None, c]]) == 1.0
    with pytest.warns(RuntimeWarning):
        assert math.isnan(joint.edge_accuracy(["L0"], [[True, c, None, c]]))


def test_ground_truth_looked_up_once_per_label_per_call(gt):
    _, calls = gt
    y_true, y_pred = run_set()
    joint.accuracy(y_true, y_pred)
    assert sorted(calls) == ["L0", "L1", "L2"]
    joint.accuracy(y_true, y_pred)
    assert len(calls) == 6  # per call, not forever: a relabelled frame is read afresh next time


def test_unknown_task_in_ground_truth_is_an_error(gt):
    with pytest.raises(CeprError, match=r"y_pred\[0\].*'colour'"):
        joint.accuracy(["L0"], [easy(edge("colour", "red"))])


def test_numpy_inputs(gt):
    y_true, y_pred = run_set()
    assert joint.accuracy(np.array(y_true), y_pred) == pytest.approx(0.5)
    obj = np.empty(len(y_pred), dtype=object)
    obj[:] = [tuple(r) for r in y_pred]
    assert joint.accuracy(np.array(y_true), obj) == pytest.approx(0.5)


# ---- safety --------------------------------------------------------------------------------------------------

def test_safety_recall(gt):
    y_true, y_pred = run_set()
    # hazardous: sample 0 (path_hazard yes, answered yes: safe), 1 (action stop, answered slow: safe),
    # 3 (action avoid_left, answered go: unsafe). Sample 2 (truth go) and other tasks do not count.
    assert joint.safety_recall(y_true, y_pred) == pytest.approx(2 / 3)


def test_safety_recall_missing_answer_is_unsafe_and_no_hazard_is_nan(gt):
    assert joint.safety_recall(["L0"], [easy(edge("action", None))]) == 0.0
    with pytest.warns(RuntimeWarning, match="hazardous"):
        assert math.isnan(joint.safety_recall(["L1", "L0"], [easy(edge("action", "stop")),
                                                             easy(edge("people_count", "2"))]))


# ---- routing, latency, throughput ----------------------------------------------------------------------------

def test_deadline_shares(gt):
    y_true, y_pred = run_set()
    # end to end: 210, 20, 30, 400, 1040, 0 ms
    assert joint.within_150ms(y_true, y_pred) == pytest.approx(3 / 6)
    assert joint.within_300ms(y_true, y_pred) == pytest.approx(4 / 6)


def test_edge_ratio_counts_where_answers_came_from(gt):
    y_true, y_pred = run_set()
    # kept on the edge: samples 1, 2, 5; sample 4 went to the cloud, which failed, so the edge answer stood
    assert joint.edge_ratio(y_true, y_pred) == pytest.approx(4 / 6)
    assert joint.n(y_true, y_pred) == 6.0
    assert (joint.cloud_ok(y_true, y_pred), joint.cloud_fallback(y_true, y_pred),
            joint.cloud_error(y_true, y_pred)) == (2.0, 0.0, 1.0)


def test_accuracy_comes_with_a_wilson_interval(gt):
    y_true, y_pred = run_set()
    lo, hi = joint.accuracy_ci_low(y_true, y_pred), joint.accuracy_ci_high(y_true, y_pred)
    assert (lo, hi) == pytest.approx(joint.wilson_interval(3, 6))
    assert lo < joint.accuracy(y_true, y_pred) < hi
    assert joint.n_action(y_true, y_pred) == 3.0
    assert joint.accuracy_traversable_ci_low(y_true, y_pred) == 0.0 < joint.accuracy_traversable_ci_high(y_true, y_pred)
    # textbook values: 116/150 -> [0.700, 0.833]; 0/30 -> [0, 0.114]; never outside [0, 1]
    assert joint.wilson_interval(116, 150) == pytest.approx((0.70000, 0.83302), abs=1e-5)
    assert joint.wilson_interval(0, 30) == pytest.approx((0.0, 0.11351), abs=1e-5)
    assert all(np.isnan(joint.wilson_interval(0, 0)))


@pytest.mark.parametrize("field, metric", [("latency_ms", "latency_mean"), ("bytes_up", "uplink_bytes"),
                                           ("prompt_tokens", "cloud_tokens")])
def test_a_missing_field_is_an_error_naming_the_sample_not_zero(gt, field, metric):
    y_true, y_pred = run_set()
    del y_pred[0][3][field]
    with pytest.raises(CeprError, match=f"y_pred\\[0\\]: the cloud result has no '{field}'"):
        getattr(joint, metric)(y_true, y_pred)


def test_latency_stats():
    y_true, y_pred = run_set()
    lat = [210.0, 20.0, 30.0, 400.0, 1040.0, 0.0]  # edge + cloud where each ran
    assert joint.latency_mean(y_true, y_pred) == pytest.approx(1700.0 / 6)
    # sorted: 0 20 30 210 400 1040; linear interpolation at rank q * 5
    assert joint.latency_p50(y_true, y_pred) == pytest.approx(120.0)
    assert joint.latency_p95(y_true, y_pred) == pytest.approx(400.0 + 0.75 * 640.0)
    assert joint.latency_p99(y_true, y_pred) == pytest.approx(400.0 + 0.95 * 640.0)
    assert joint.latency_p50(y_true, y_pred) == pytest.approx(float(np.percentile(lat, 50)))


def test_ttft_mean_and_nan_without_streaming():
    y_true, y_pred = run_set()
    assert joint.ttft_mean(y_true, y_pred) == pytest.approx(60.0)
    with pytest.warns(RuntimeWarning, match="first token"):
        assert math.isnan(joint.ttft_mean(["L0"], [hard(edge("action", "go"), cloud("action", "go"))]))


def test_throughput_is_samples_over_wall_time():
    y_true, y_pred = run_set()
    # first start 100.0 (sample 0's edge), last finish 104.0 (sample 4's cloud)
    assert joint.throughput(y_true, y_pred) == pytest.approx(6 / 4.0)
    # two samples run side by side, 1 s each: 2 samples/s although each took 1 s
    par = [easy(edge("action", "go", latency=1000.0, started=5.0)),
           easy(edge("action", "go", latency=1000.0, started=5.0))]
    assert joint.throughput(["a", "b"], par) == pytest.approx(2.0)


def test_throughput_without_timestamps_is_nan():
    e = edge("action", "go")
    del e["started_at"], e["finished_at"]
    with pytest.warns(RuntimeWarning):
        assert math.isnan(joint.throughput(["a"], [easy(e)]))


# ---- link and cloud cost -------------------------------------------------------------------------------------

def test_bytes_and_tokens_per_sample_count_unsent_as_zero():
    y_true, y_pred = run_set()
    assert joint.uplink_bytes(y_true, y_pred) == pytest.approx(6000 / 6)
    assert joint.downlink_bytes(y_true, y_pred) == pytest.approx(300 / 6)
    assert joint.cloud_tokens(y_true, y_pred) == pytest.approx((55 + 90) / 6)


def test_cloud_metrics_without_cloud():
    y_pred = [easy(edge("action", "go")), easy(edge("traversable", "yes"))]
    assert joint.uplink_bytes(["L0", "L1"], y_pred) == 0.0
    assert joint.cloud_tokens(["L0", "L1"], y_pred) == 0.0
    with pytest.warns(RuntimeWarning, match="cloud"):
        assert math.isnan(joint.cloud_accuracy(["L0", "L1"], y_pred))
    with pytest.warns(RuntimeWarning):
        assert math.isnan(joint.ttft_mean(["L0", "L1"], y_pred))


def _write_frame(root: Path, res: str, stem: str, label: np.ndarray, rgb_size: tuple[int, int], seed=0) -> tuple:
    lab = root / res / "gtFine" / "test" / "seq" / f"{stem}_TrainIds.png"
    rgb = root / res / "rgb" / "test" / "seq" / f"{stem}.png"
    lab.parent.mkdir(parents=True, exist_ok=True)
    rgb.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(lab), label)
    noise = np.random.default_rng(seed).integers(0, 256, (rgb_size[1], rgb_size[0], 3), dtype=np.uint8)
    assert cv2.imwrite(str(rgb), noise)  # noise: PNG cannot shrink it, so sizes differ clearly by resolution
    return lab, rgb


def test_bandwidth_saving_vs_png_against_largest_resolution(tmp_path):
    label = np.zeros((4, 4), np.uint8)
    lab_a, rgb_a = _write_frame(tmp_path, "640x480", "a", label, (16, 12), seed=1)
    _, rgb_a_big = _write_frame(tmp_path, "1280x760", "a", label, (32, 19), seed=2)
    lab_b, rgb_b = _write_frame(tmp_path, "640x480", "b", label, (16, 12), seed=3)  # only at 640x480
    # frame c's RGB exists at 1280x760 but its label does not: that copy is not "available"
    lab_c, rgb_c = _write_frame(tmp_path, "640x480", "c", label, (16, 12), seed=4)
    stray = tmp_path / "1280x760" / "rgb" / "test" / "seq" / "c.png"
    assert cv2.imwrite(str(stray), np.zeros((100, 100, 3), np.uint8) + 7)
    sizes = {p: p.stat().st_size for p in (rgb_a, rgb_a_big, rgb_b, rgb_c)}
    assert sizes[rgb_a_big] > sizes[rgb_a]
    full = sizes[rgb_a_big] + sizes[rgb_b] + sizes[rgb_c]
    y_true = np.array([str(lab_a), str(lab_b), str(lab_c)])
    y_pred = [hard(edge("action", "go"), cloud("action", "go", up=500)), easy(edge("action", "go")),
              [True, cloud("action", "go", up=700), None, cloud("action", "go", up=700)]]
    assert joint.full_resolution_path(lab_a) == rgb_a_big
    assert joint.bandwidth_saving_vs_png(y_true, y_pred) == pytest.approx(1.0 - 1200 / full)


def test_bandwidth_saving_vs_png_outside_the_layout(tmp_path):
    lab = tmp_path / "loose_TrainIds.png"
    rgb = tmp_path / "loose.png"
    assert cv2.imwrite(str(lab), np.zeros((4, 4), np.uint8))
    assert cv2.imwrite(str(rgb), np.full((8, 8, 3), 9, np.uint8))
    e = edge("action", "go", rgb_path=str(rgb))
    c = cloud("action", "go", up=10, rgb_path=str(rgb))
    assert joint.bandwidth_saving_vs_png([str(lab)], [hard(e, c)]) == pytest.approx(1.0 - 10 / rgb.stat().st_size)
    with pytest.raises(ValueError, match="rgb_path"):
        joint.bandwidth_saving_vs_png([str(lab)], [easy(edge("action", "go"))])


def test_bandwidth_saving_against_sending_everything_with_the_same_payload():
    """Arithmetic on what the samples recorded as they ran: a sample not sent costs the bytes by payload part
    the cloud module priced for it (``send_bytes``) plus the rest of a request (``bytes_up`` less the parts it
    carried, ``payload_bytes``), averaged over the samples sent in one attempt."""
    sent_parts = [{"image": 5000, "summary": 120}, {"image": 7000, "summary": 180}]
    overhead = [300, 340]
    sent_up = [sum(p.values()) + o for p, o in zip(sent_parts, overhead)]
    y_true = ["L0", "L1", "L2"]

    def e(n):
        return edge("action", "go", send_bytes={"image": 6000, "summary": n})

    def c(i, **kw):
        return cloud("action", "go", up=sent_up[i], payload_bytes=sent_parts[i], **kw)

    y_pred = [hard(e(1), c(0)), hard(e(2), c(1)), easy(e(200))]
    baseline = sum(sent_up) + 6200 + np.mean(overhead)
    assert joint.bandwidth_saving(y_true, y_pred) == pytest.approx(1 - sum(sent_up) / baseline)
    assert joint.bandwidth_saving(y_true[:2], y_pred[:2]) == 0.0  # everything was sent
    assert joint.bandwidth_saving(y_true, [easy(e(1)) for _ in range(3)]) == 1.0  # nothing was
    # a retried request is not a clean measure of a request's other bytes: only first attempts count
    retried = [hard(e(1), c(0)), hard(e(2), c(1, attempts=2)), easy(e(200))]
    assert joint.bandwidth_saving(y_true, retried) == pytest.approx(
        1 - sum(sent_up) / (sum(sent_up) + 6200 + overhead[0]))
    no_parts = [hard(e(1), cloud("action", "go", up=10)), easy(e(3))]
    with pytest.warns(RuntimeWarning, match="payload_bytes"):
        assert math.isnan(joint.bandwidth_saving(y_true[::2], no_parts))
    not_priced = [hard(e(1), c(0)), easy(edge("action", "go"))]
    with pytest.warns(RuntimeWarning, match=r"send_bytes; first y_pred\[1\]"):
        assert math.isnan(joint.bandwidth_saving(y_true[::2], not_priced))


# ---- segmentation --------------------------------------------------------------------------------------------

def test_miou_and_pixel_accuracy_in_percent(tmp_path):
    truth = np.array([[0, 0, 255], [1, 1, 255]], np.uint8)  # ignore pixels are not scored
    lab, _ = _write_frame(tmp_path, "640x480", "m", truth, (3, 2))
    pred = np.array([[0, 1, 5], [1, 1, 0]], np.uint8)
    y_pred = [easy(edge("action", "go", mask=pred)),
              easy(edge("action", "go")),  # no mask: skipped
              [True, cloud("action", "go"), None, cloud("action", "go")]]  # edge never ran: skipped
    y_true = [str(lab)] * 3
    # class 0: tp 1, union 2 -> 1/2; class 1: tp 2, union 3 -> 2/3
    assert joint.miou(y_true, y_pred) == pytest.approx(100.0 * (0.5 + 2 / 3) / 2)
    assert joint.pixel_accuracy(y_true, y_pred) == pytest.approx(75.0)


def test_miou_without_masks_is_nan_and_wrong_shape_is_an_error(tmp_path):
    lab, _ = _write_frame(tmp_path, "640x480", "m", np.zeros((2, 3), np.uint8), (3, 2))
    with pytest.warns(RuntimeWarning, match="mask"):
        assert math.isnan(joint.miou([str(lab)], [easy(edge("action", "go"))]))
    with pytest.raises(CeprError, match=r"y_pred\[0\].*mask"):
        joint.miou([str(lab)], [easy(edge("action", "go", mask=np.zeros((3, 2), np.uint8)))])


# ---- shape of the inputs, for every metric -------------------------------------------------------------------

ALL = sorted(METRICS)


@pytest.mark.parametrize("name", ALL)
def test_empty_inputs_give_nan_with_warning(name, gt):
    for empty in ([], np.array([], dtype=str)):
        with pytest.warns(RuntimeWarning):
            assert math.isnan(METRICS[name](empty, []))


@pytest.mark.parametrize("name", ALL)
def test_length_mismatch_names_both_lengths(name, gt):
    with pytest.raises(CeprError, match=r"2 entries.*1\b"):
        METRICS[name](["L0", "L1"], [easy(edge("action", "go"))])


@pytest.mark.parametrize("bad", [None, "abcd", [False, None, None], {"a": 1, "b": 2, "c": 3, "d": 4}])
@pytest.mark.parametrize("name", ["accuracy", "latency_mean", "edge_ratio", "uplink_bytes"])
def test_malformed_entry_names_its_index(name, bad, gt):
    with pytest.raises(CeprError, match=r"y_pred\[1\]"):
        METRICS[name](["L0", "L1"], [easy(edge("action", "stop")), bad])


def test_one_sample(gt, tmp_path):
    lab, _ = _write_frame(tmp_path, "640x480", "one", np.zeros((2, 2), np.uint8), (2, 2))
    gt[0][str(lab)] = TRUTH["L0"]
    e = edge("path_hazard", "yes", latency=12.0, started=10.0, finished=10.5, mask=np.zeros((2, 2), np.uint8))
    y = [str(lab)], [easy(e)]
    expected = {"accuracy": 1.0, "accuracy_path_hazard": 1.0, "edge_accuracy": 1.0, "safety_recall": 1.0,
                "miou": 100.0, "pixel_accuracy": 100.0, "edge_ratio": 1.0, "latency_mean": 12.0, "latency_p50": 12.0,
                "latency_p95": 12.0, "latency_p99": 12.0, "throughput": 2.0, "uplink_bytes": 0.0,
                "downlink_bytes": 0.0, "bandwidth_saving": 1.0, "cloud_tokens": 0.0}
    for name, want in expected.items():
        got = METRICS[name](*y)
        assert isinstance(got, float) and got == pytest.approx(want), name


def test_results_are_python_floats(gt):
    y_true, y_pred = run_set()
    for name in ALL:
        if name in ("miou", "pixel_accuracy", "bandwidth_saving", "bandwidth_saving_vs_png", "dataset",
                    "synthetic", "inter_token_mean", "tokens_per_s_mean", "spec_acceptance",
                    "privacy_redacted_share") or \
                name.startswith(("accuracy_nearest_obstacle", "reason_")):
            continue  # need files / have no sample here (LLM server fields: tests/llm/test_vllm_server.py;
            # privacy_redacted_share: tests/metrics/test_payload_metrics.py; reason_*: tests/metrics/test_reasons.py)
        v = METRICS[name](y_true, y_pred)
        assert type(v) is float and not math.isnan(v), name


# ---- registry ------------------------------------------------------------------------------------------------

def test_registry_names():
    per_task = {f"{m}_{t}{x}" for t in TASK_NAMES for m, x in (("accuracy", ""), ("accuracy", "_ci_low"),
                                                                ("accuracy", "_ci_high"))} | {f"n_{t}" for t in TASK_NAMES}
    assert per_task <= set(METRICS) and len(per_task) == 20
    assert {"accuracy", "accuracy_ci_low", "accuracy_ci_high", "n", "edge_accuracy", "cloud_accuracy",
            "safety_recall", "miou", "pixel_accuracy", "edge_ratio", "cloud_ok", "cloud_fallback", "cloud_error",
            "latency_mean", "latency_p50", "latency_p95", "latency_p99", "ttft_mean", "throughput", "uplink_bytes",
            "downlink_bytes", "bandwidth_saving", "bandwidth_saving_vs_png", "cloud_tokens", "dataset", "synthetic",
            "within_150ms", "within_300ms", "inter_token_mean", "tokens_per_s_mean", "spec_acceptance",
            "privacy_redacted_share", "reason_hazard_precision", "reason_hazard_recall", "reason_hazard_f1",
            "reason_distance_mae_m", "reason_action_agreement"} | per_task == set(METRICS)
    for name, fn in METRICS.items():  # each is its module's function of that name (joint's, or reasons')
        assert fn.__name__ == name and getattr(sys.modules[fn.__module__], name) is fn and fn.__doc__


def test_get_metric_suggests_a_close_name():
    assert get_metric("safety_recall") is joint.safety_recall
    with pytest.raises(CeprError, match="did you mean 'latency_p95'"):
        get_metric("latency_95")
    with pytest.raises(CeprError, match="unknown metric"):
        get_metric("zzzz")
