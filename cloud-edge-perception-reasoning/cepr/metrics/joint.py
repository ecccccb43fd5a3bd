"""Testenv metrics of the joint-inference benchmark, each ``metric(y_true, y_pred) -> float`` as Ianvs calls them.

``y_true``: label paths in dataset order; ``y_pred[i] = [is_hard, final, edge, cloud]``. Ground truth comes from
the label path (the sidecar next to it, or the mask). Empty inputs give NaN with a warning.
"""

from __future__ import annotations

import difflib
import os
import warnings

import numpy as np

from cepr.errors import CeprError


def _nan(why: str) -> float:
    warnings.warn(f"{why}: returning NaN", RuntimeWarning, stacklevel=3)
    return float("nan")


def _check(y_true, y_pred) -> list:
    y_pred = list(y_pred) if y_pred is not None else []
    n = 0 if y_true is None else len(y_true)
    if n != len(y_pred):
        raise CeprError(f"y_true has {n} entries but y_pred has {len(y_pred)}")
    for i, r in enumerate(y_pred):
        if not isinstance(r, (list, tuple)) or len(r) != 4:
            raise CeprError(f"y_pred[{i}] must be [is_hard, final, edge, cloud], got {type(r).__name__}")
    return y_pred


def _truth(label) -> dict:
    from cepr.data.tasks import ground_truth

    return ground_truth(str(label))


def _task(r) -> str | None:
    for d in (r[1], r[2], r[3]):
        if isinstance(d, dict) and d.get("task"):
            return d["task"]
    return None


def _answer(d) -> str | None:
    return d.get("answer") if isinstance(d, dict) else None


def _share(hits: list[bool], what: str) -> float:
    return float(np.mean(hits)) if hits else _nan(f"{what} of no samples is undefined")


def accuracy(y_true, y_pred) -> float:
    """Exact-match share of the final answers (a missing answer counts wrong)."""
    rows = _check(y_true, y_pred)
    return _share([_answer(r[1]) == _truth(t).get(_task(r)) for t, r in zip(y_true, rows)], "accuracy")


def _task_accuracy(task: str):
    def fn(y_true, y_pred) -> float:
        rows = _check(y_true, y_pred)
        return _share([_answer(r[1]) == _truth(t).get(task) for t, r in zip(y_true, rows) if _task(r) == task],
                      f"accuracy on {task}")
    fn.__name__ = f"accuracy_{task}"
    fn.__doc__ = f"Accuracy of the final answers on the {task} questions only."
    return fn


def edge_accuracy(y_true, y_pred) -> float:
    """Accuracy of the edge answers, over the samples the edge answered."""
    rows = _check(y_true, y_pred)
    return _share([_answer(r[2]) == _truth(t).get(_task(r)) for t, r in zip(y_true, rows) if r[2] is not None],
                  "edge accuracy")


def cloud_accuracy(y_true, y_pred) -> float:
    """Accuracy of the cloud's own answers, over the samples it answered (status ok)."""
    rows = _check(y_true, y_pred)
    return _share([r[3].get("cloud_answer") == _truth(t).get(_task(r)) for t, r in zip(y_true, rows)
                   if isinstance(r[3], dict) and r[3].get("status") == "ok"], "cloud accuracy")


def _hazardous(task: str, answer: str | None) -> bool:
    return answer == "yes" if task == "path_hazard" else (answer is not None and answer != "go")


def safety_recall(y_true, y_pred) -> float:
    """Share of truly hazardous samples (path_hazard = yes, or action other than go) answered safely."""
    rows = _check(y_true, y_pred)
    hits = []
    for t, r in zip(y_true, rows):
        task = _task(r)
        if task in ("path_hazard", "action") and _hazardous(task, _truth(t).get(task)):
            hits.append(_hazardous(task, _answer(r[1])))
    return _share(hits, "safety recall")


def _confusion(y_true, y_pred):
    from cepr.data.cloud_robotics import load_label
    from cepr.metrics.segmentation import ConfusionMatrix

    rows = _check(y_true, y_pred)
    cm = ConfusionMatrix()
    for t, r in zip(y_true, rows):
        mask = r[2].get("mask") if isinstance(r[2], dict) else None
        if mask is not None:
            cm.update(load_label(str(t)), np.asarray(mask))
    return cm


def miou(y_true, y_pred) -> float:
    """Mean IoU (%) of the edge masks, over the samples the edge segmented."""
    cm = _confusion(y_true, y_pred)
    return 100.0 * cm.miou() if cm.pixels else _nan("mIoU without edge masks is undefined")


def pixel_accuracy(y_true, y_pred) -> float:
    """Pixel accuracy (%) of the edge masks."""
    cm = _confusion(y_true, y_pred)
    return 100.0 * cm.pixel_accuracy() if cm.pixels else _nan("pixel accuracy without edge masks is undefined")


def edge_ratio(y_true, y_pred) -> float:
    """Share of samples the dispatcher kept on the edge."""
    rows = _check(y_true, y_pred)
    return _share([not bool(r[0]) for r in rows], "edge ratio")


def _latencies(y_true, y_pred) -> list[float]:
    rows = _check(y_true, y_pred)
    out = []
    for r in rows:
        ms = sum(float(d.get("latency_ms", 0.0)) for d in (r[2], r[3]) if isinstance(d, dict))
        out.append(ms)
    return out


def _latency_stat(name: str, fn):
    def metric(y_true, y_pred) -> float:
        lat = _latencies(y_true, y_pred)
        return float(fn(np.array(lat))) if lat else _nan(f"{name} of no samples is undefined")
    metric.__name__ = name
    metric.__doc__ = f"End-to-end latency ({name.split('_')[1]}, ms): edge compute + cloud round trip + modelled link."
    return metric


latency_mean = _latency_stat("latency_mean", np.mean)
latency_p50 = _latency_stat("latency_p50", lambda a: np.percentile(a, 50))
latency_p95 = _latency_stat("latency_p95", lambda a: np.percentile(a, 95))
latency_p99 = _latency_stat("latency_p99", lambda a: np.percentile(a, 99))


def ttft_mean(y_true, y_pred) -> float:
    """Mean time to first token (ms) of streamed cloud answers."""
    rows = _check(y_true, y_pred)
    v = [float(r[3]["ttft_ms"]) for r in rows if isinstance(r[3], dict) and r[3].get("ttft_ms") is not None]
    return float(np.mean(v)) if v else _nan("no cloud answer reported a time to first token")


def throughput(y_true, y_pred) -> float:
    """Samples per second over the wall time of the run (first start to last finish), at its concurrency."""
    rows = _check(y_true, y_pred)
    starts = [d["started_at"] for r in rows for d in (r[2], r[3]) if isinstance(d, dict) and "started_at" in d]
    ends = [d["finished_at"] for r in rows for d in (r[2], r[3]) if isinstance(d, dict) and "finished_at" in d]
    if not rows or not starts:
        return _nan("throughput of no timed samples is undefined")
    wall = max(ends) - min(starts)
    return len(rows) / wall if wall > 0 else _nan("zero wall time")


def _cloud_sum(rows, *keys) -> list[float]:
    return [sum(float(r[3].get(k) or 0) for k in keys) if isinstance(r[3], dict) else 0.0 for r in rows]


def uplink_bytes(y_true, y_pred) -> float:
    """Mean request-body bytes sent to the cloud per sample (samples kept on the edge count 0)."""
    rows = _check(y_true, y_pred)
    return float(np.mean(_cloud_sum(rows, "bytes_up"))) if rows else _nan("uplink of no samples is undefined")


def downlink_bytes(y_true, y_pred) -> float:
    """Mean response-body bytes received from the cloud per sample."""
    rows = _check(y_true, y_pred)
    return float(np.mean(_cloud_sum(rows, "bytes_down"))) if rows else _nan("downlink of no samples is undefined")


_SIZE_CACHE: dict[str, int] = {}


def full_resolution_bytes(label_path: str) -> int:
    """Bytes of the frame's RGB file at the largest resolution the dataset has (what cloud-only would upload)."""
    from cepr.data.cloud_robotics import Frame
    from cepr.data.layout import sibling_path

    if label_path not in _SIZE_CACHE:
        rgb = sibling_path(label_path, "rgb")
        frame = Frame(rgb, label_path)
        best = rgb
        try:
            res = frame.available_resolutions()
        except (OSError, ValueError):
            res = []
        if res:  # largest first
            try:
                best = frame.at_resolution(res[0]).rgb_path
            except CeprError:
                best = rgb
        _SIZE_CACHE[label_path] = os.path.getsize(best)
    return _SIZE_CACHE[label_path]


def bandwidth_saving(y_true, y_pred) -> float:
    """1 - uplink bytes / bytes of sending every frame's full-resolution image to the cloud."""
    rows = _check(y_true, y_pred)
    if not rows:
        return _nan("bandwidth saving of no samples is undefined")
    full = sum(full_resolution_bytes(str(t)) for t in y_true)
    return 1.0 - sum(_cloud_sum(rows, "bytes_up")) / full


def cloud_tokens(y_true, y_pred) -> float:
    """Mean prompt + completion tokens per sample (samples kept on the edge count 0)."""
    rows = _check(y_true, y_pred)
    return (float(np.mean(_cloud_sum(rows, "prompt_tokens", "completion_tokens"))) if rows
            else _nan("tokens of no samples are undefined"))


def _build() -> dict:
    from cepr.data.tasks import TASK_NAMES

    m = {"accuracy": accuracy}
    m.update({f"accuracy_{t}": _task_accuracy(t) for t in TASK_NAMES})
    for fn in (edge_accuracy, cloud_accuracy, safety_recall, miou, pixel_accuracy, edge_ratio, latency_mean,
               latency_p50, latency_p95, latency_p99, ttft_mean, throughput, uplink_bytes, downlink_bytes,
               bandwidth_saving, cloud_tokens):
        m[fn.__name__] = fn
    return m


METRICS = _build()


def get_metric(name: str):
    if name not in METRICS:
        hint = difflib.get_close_matches(name, METRICS, n=1)
        raise CeprError(f"unknown metric {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                        + f" (metrics: {', '.join(METRICS)})")
    return METRICS[name]


