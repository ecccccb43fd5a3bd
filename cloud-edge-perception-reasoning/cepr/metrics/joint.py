"""Testenv metrics of the cloud-edge joint-inference benchmark, each ``metric(y_true, y_pred) -> float``.

Ianvs calls every metric with ``y_true`` (the label paths, in dataset order) and ``y_pred`` (one
``[is_hard, final, edge, cloud]`` per sample; ``edge``/``cloud`` are the modules' result dicts or None, and
``final`` is whichever of them produced the answer). Ground truth is looked up from the label path alone, since
that is all Ianvs hands a metric. An undefined value (no samples, no cloud answers, ...) is NaN with a
RuntimeWarning, never a silent 0; malformed input is a :class:`~cepr.errors.CeprError` naming the sample.

Every metric is registered with :data:`METRIC_REGISTRY` by the ``register_metric`` decorator; a new metric is one
function with ``@register_metric("name")`` (or an entry point in the group ``cepr.metrics`` of another package),
and the testenv adapter registers every name with Ianvs. ``METRICS`` is a read-only mapping view of the registry.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cepr.data import layout
from cepr.data.cloud_robotics import Frame, load_label
from cepr.data.tasks import TASK_NAMES
from cepr.errors import CeprError
from cepr.metrics.segmentation import ConfusionMatrix
from cepr.records import part_bytes
from cepr.registry import Registry

__all__ = ["METRICS", "METRIC_REGISTRY", "accuracy", "bandwidth_saving", "cloud_accuracy", "cloud_tokens",
           "downlink_bytes", "edge_accuracy", "edge_ratio", "full_resolution_bytes", "get_metric", "inter_token_mean",
           "latency_mean", "latency_p50", "latency_p95", "latency_p99", "miou", "pixel_accuracy", "register_metric",
           "safety_recall", "spec_acceptance", "throughput", "ttft_mean", "uplink_bytes"]  # and accuracy_<task>, added below

Metric = Callable[[object, object], float]
METRIC_REGISTRY: Registry[Metric] = Registry("metrics", "metric")
register_metric = METRIC_REGISTRY.register
METRICS = METRIC_REGISTRY.view()


# ---- input parsing -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sample:
    index: int
    label: str
    is_hard: bool
    final: dict | None
    edge: dict | None
    cloud: dict | None

    @property
    def task(self) -> str | None:
        """The final result's task; the other results' when there is no final one (nothing else to go on)."""
        for d in (self.final, self.cloud, self.edge):
            if d is not None and d.get("task"):
                return str(d["task"])
        return None

    @property
    def answer(self) -> str | None:
        return None if self.final is None else self.final.get("answer")

    def results(self) -> list[dict]:
        return [d for d in (self.edge, self.cloud) if d is not None]


def _nan(why: str) -> float:
    # stacklevel 3: warn -> _nan -> the metric -> whoever called the metric
    warnings.warn(f"{why}: returning NaN", RuntimeWarning, stacklevel=3)
    return float("nan")


def _as_list(x, name: str) -> list:
    if x is None:
        return []
    if isinstance(x, (str, bytes, dict)):
        raise CeprError(f"{name} must be a sequence with one entry per sample, got a {type(x).__name__}")
    if isinstance(x, np.ndarray) and x.ndim == 0:
        raise CeprError(f"{name} must be a sequence with one entry per sample, got a 0-d array")
    return list(x)


def _result(r, i: int, slot: str) -> dict | None:
    if r is None or isinstance(r, dict):
        return r
    raise CeprError(f"y_pred[{i}]: {slot} must be a result dict or None, got {type(r).__name__}")


def _samples(y_true, y_pred) -> list[_Sample]:
    """Validate the inputs and pair each label path with its prediction."""
    labels = _as_list(y_true, "y_true")
    preds = _as_list(y_pred, "y_pred")
    if len(labels) != len(preds):
        raise CeprError(f"y_true has {len(labels)} entries but y_pred has {len(preds)}: they must pair up "
                        "one to one")
    out = []
    for i, (label, r) in enumerate(zip(labels, preds)):
        if isinstance(r, (str, bytes, dict)) or not isinstance(r, (list, tuple, np.ndarray)) or len(r) != 4:
            raise CeprError(f"y_pred[{i}] must be a 4-element sequence [is_hard, final, edge, cloud], got "
                            f"{type(r).__name__}" + (f" of length {len(r)}" if hasattr(r, "__len__") else ""))
        is_hard, final, edge, cloud = r
        out.append(_Sample(i, str(label), bool(is_hard), _result(final, i, "final"), _result(edge, i, "edge"),
                           _result(cloud, i, "cloud")))
    return out


class _Truth:
    """Ground-truth answers for one metric call, looked up once per label path (paths repeat across tasks)."""

    def __init__(self) -> None:
        self._cache: dict[str, dict] = {}

    def __call__(self, s: _Sample, task: str) -> str:
        if s.label not in self._cache:
            from cepr.data import tasks  # attribute lookup at call time, so tests can swap ground_truth

            self._cache[s.label] = tasks.ground_truth(s.label)
        answers = self._cache[s.label]
        if task not in answers:
            raise CeprError(f"y_pred[{s.index}]: task {task!r} has no ground truth for {s.label} "
                            f"(known: {', '.join(sorted(answers))})")
        return answers[task]


def _num(d: dict | None, key: str, s: _Sample | None = None) -> float:
    """A numeric field of a result dict. A side that did not run on the sample costs 0 (a sample not sent used no
    bytes); a side that ran and did not report the field is an error naming the sample, never a 0."""
    if d is None:
        return 0.0
    v = d.get(key)
    if v is None:
        where = f"y_pred[{s.index}]" if s is not None else "a result"
        raise CeprError(f"{where}: the {d.get('source') or 'module'} result has no {key!r}; a side that handled "
                        "a sample must report it (it is never counted as 0)")
    return float(v)


def answered_by_edge(s: _Sample) -> bool:
    """Where the final answer really came from: the edge unless the cloud ran and answered (status ok); a
    fallback or an unusable cloud reply leaves the edge's answer standing."""
    return s.cloud is None or s.cloud.get("status", "ok") != "ok"


# ---- answer accuracy -----------------------------------------------------------------------------------------

def _correct(answer, truth: str) -> bool:
    return answer is not None and answer == truth


def _hits(y_true, y_pred, task: str | None = None) -> list[bool]:
    """Per sample (of ``task``, or all): whether the final answer equals the ground truth; a missing answer is
    wrong."""
    samples = [s for s in _samples(y_true, y_pred) if task is None or s.task == task]
    truth = _Truth()
    return [s.task is not None and _correct(s.answer, truth(s, s.task)) for s in samples]


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a share k/n: sound at small n and at 0 or 1, where the normal
    approximation is not."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _accuracy_metrics(task: str | None) -> list[Metric]:
    """accuracy[_task], its 95% interval bounds and (per task) its n, registered together."""
    suffix = f"_{task}" if task else ""
    what = f"the {task} questions" if task else "all questions"

    def acc(y_true, y_pred) -> float:
        hits = _hits(y_true, y_pred, task)
        return float(np.mean(hits)) if hits else _nan(f"accuracy{suffix}: no sample to score")

    def low(y_true, y_pred) -> float:
        hits = _hits(y_true, y_pred, task)
        return wilson_interval(sum(hits), len(hits))[0] if hits else _nan(f"accuracy{suffix}_ci_low: no sample")

    def high(y_true, y_pred) -> float:
        hits = _hits(y_true, y_pred, task)
        return wilson_interval(sum(hits), len(hits))[1] if hits else _nan(f"accuracy{suffix}_ci_high: no sample")

    out = []
    for fn, name, doc in ((acc, f"accuracy{suffix}", (f"Exact-match share of the final answers on {what}; a "
                           "missing answer counts wrong.")),
                          (low, f"accuracy{suffix}_ci_low", (f"Lower bound of the 95% Wilson interval of the "
                           f"accuracy on {what}: differences inside the interval are noise.")),
                          (high, f"accuracy{suffix}_ci_high", (f"Upper bound of the 95% Wilson interval of the "
                           f"accuracy on {what}."))):
        fn.__name__ = fn.__qualname__ = name
        fn.__doc__ = doc
        out.append(register_metric(name)(fn))
    if task:
        def n_task(y_true, y_pred) -> float:
            if not _samples(y_true, y_pred):
                return _nan(f"n_{task}: no samples")
            return float(len(_hits(y_true, y_pred, task)))

        n_task.__name__ = n_task.__qualname__ = f"n_{task}"
        n_task.__doc__ = f"Number of {task} questions scored: the n behind accuracy_{task}."
        out.append(register_metric(f"n_{task}")(n_task))
    return out


accuracy, accuracy_ci_low, accuracy_ci_high = _accuracy_metrics(None)
for _t in TASK_NAMES:
    for _m in _accuracy_metrics(_t):
        globals()[_m.__name__] = _m
        __all__.append(_m.__name__)
del _t, _m
__all__ += [
    "accuracy_ci_high",
    "accuracy_ci_low",
    "answered_by_edge",
    "cloud_error",
    "cloud_fallback",
    "cloud_ok",
    "n",
    "wilson_interval",
]


@register_metric("edge_accuracy")
def edge_accuracy(y_true, y_pred) -> float:
    """Accuracy of the edge's own answers where the edge ran: what the edge alone would have scored."""
    samples = [s for s in _samples(y_true, y_pred) if s.edge is not None]
    if not samples:
        return _nan("edge_accuracy: the edge answered no sample")
    truth = _Truth()
    return float(np.mean([_correct(s.edge.get("answer"), truth(s, s.edge.get("task") or s.task))
                          for s in samples]))


@register_metric("cloud_accuracy")
def cloud_accuracy(y_true, y_pred) -> float:
    """Accuracy of the cloud's own answers (status ok), so fallbacks to the edge do not flatter the cloud."""
    samples = [s for s in _samples(y_true, y_pred) if s.cloud is not None and s.cloud.get("status") == "ok"]
    if not samples:
        return _nan("cloud_accuracy: the cloud answered no sample (status ok)")
    truth = _Truth()
    return float(np.mean([_correct(s.cloud.get("cloud_answer"), truth(s, s.cloud.get("task") or s.task))
                          for s in samples]))


def _is_hazard(task: str, answer) -> bool:
    """True when the answer calls for caution: path_hazard 'yes', or any action but 'go'."""
    if answer is None:
        return False
    return answer == "yes" if task == "path_hazard" else answer != "go"


@register_metric("safety_recall")
def safety_recall(y_true, y_pred) -> float:
    """Of the truly hazardous samples (path_hazard yes, action not go), the share answered safely.

    Accuracy weighs a missed person like a false alarm; a robot must not miss it. Other tasks do not count."""
    truth = _Truth()
    hits = [_is_hazard(s.task, s.answer) for s in _samples(y_true, y_pred)
            if s.task in ("path_hazard", "action") and _is_hazard(s.task, truth(s, s.task))]
    return float(np.mean(hits)) if hits else _nan("safety_recall: no truly hazardous sample")


# ---- segmentation --------------------------------------------------------------------------------------------

def _confusion(y_true, y_pred):
    cm = ConfusionMatrix()
    for s in _samples(y_true, y_pred):
        mask = None if s.edge is None else s.edge.get("mask")
        if mask is None:
            continue
        label = load_label(s.label)
        mask = np.asarray(mask)
        if mask.shape != label.shape:
            raise CeprError(f"y_pred[{s.index}]: edge mask is {mask.shape[::-1]} (w, h) but the label {s.label} "
                            f"is {label.shape[::-1]}: masks must come at the label's resolution")
        cm.update(label, mask)
    return cm


@register_metric("miou")
def miou(y_true, y_pred) -> float:
    """Mean IoU of the edge masks in percent (as the docs quote it), over the samples the edge segmented."""
    cm = _confusion(y_true, y_pred)
    if cm.pixels == 0:
        return _nan("miou: no edge mask with labelled pixels")
    return 100.0 * cm.miou()


@register_metric("pixel_accuracy")
def pixel_accuracy(y_true, y_pred) -> float:
    """Pixel accuracy of the edge masks in percent, over the samples the edge segmented."""
    cm = _confusion(y_true, y_pred)
    if cm.pixels == 0:
        return _nan("pixel_accuracy: no edge mask with labelled pixels")
    return 100.0 * cm.pixel_accuracy()


# ---- routing, latency, throughput ----------------------------------------------------------------------------

@register_metric("edge_ratio")
def edge_ratio(y_true, y_pred) -> float:
    """Share of final answers that came from the edge: samples kept on the edge, plus hard samples whose cloud
    call fell back or failed (the edge answer stood). Equals the dispatcher's keep share when the cloud is healthy."""
    samples = _samples(y_true, y_pred)
    if not samples:
        return _nan("edge_ratio over no samples is undefined")
    return float(np.mean([answered_by_edge(s) for s in samples]))


def _cloud_count(status: str) -> Metric:
    def metric(y_true, y_pred) -> float:
        samples = _samples(y_true, y_pred)
        if not samples:
            return _nan(f"cloud_{status} over no samples is undefined")
        return float(sum(1 for s in samples if s.cloud is not None and s.cloud.get("status", "ok") == status))

    name = f"cloud_{status}"
    metric.__name__ = metric.__qualname__ = name
    metric.__doc__ = (f"Number of samples whose cloud call ended {status!r} (ok: a parsed answer; fallback: no "
                      "answer in time, the edge answer stands; error: an unusable reply): faults show on the row.")
    return register_metric(name)(metric)


cloud_ok = _cloud_count("ok")
cloud_fallback = _cloud_count("fallback")
cloud_error = _cloud_count("error")


@register_metric("n")
def n(y_true, y_pred) -> float:
    """Number of samples scored: the n behind every share on the row."""
    samples = _samples(y_true, y_pred)
    return float(len(samples)) if samples else _nan("n: no samples (an empty run is not a result)")


def _latencies(samples: list[_Sample]) -> np.ndarray:
    """Per-sample end to end (ms): edge compute, then the cloud round trip with modelled transfer, if each ran."""
    return np.array([_num(s.edge, "latency_ms", s) + _num(s.cloud, "latency_ms", s) for s in samples], np.float64)


def _latency_metric(name: str, stat: Callable[[np.ndarray], float], what: str) -> Metric:
    def metric(y_true, y_pred) -> float:
        lat = _latencies(_samples(y_true, y_pred))
        if lat.size == 0:
            return _nan(f"{name} over no samples is undefined")
        return float(stat(lat))

    metric.__name__ = metric.__qualname__ = name
    metric.__doc__ = (f"{what} end-to-end latency per sample (ms): edge compute + cloud round trip + modelled "
                      "link transfer, the delay the robot waits for its answer.")
    return register_metric(name)(metric)


latency_mean = _latency_metric("latency_mean", np.mean, "Mean")
latency_p50 = _latency_metric("latency_p50", lambda a: np.percentile(a, 50), "Median")
latency_p95 = _latency_metric("latency_p95", lambda a: np.percentile(a, 95), "95th-percentile")
latency_p99 = _latency_metric("latency_p99", lambda a: np.percentile(a, 99), "99th-percentile")


def _deadline_metric(ms: int) -> Metric:
    def metric(y_true, y_pred) -> float:
        lat = _latencies(_samples(y_true, y_pred))
        if lat.size == 0:
            return _nan(f"within_{ms}ms over no samples is undefined")
        return float(np.mean(lat <= ms))

    name = f"within_{ms}ms"
    metric.__name__ = metric.__qualname__ = name
    metric.__doc__ = (f"Share of samples answered end to end within {ms} ms (edge + cloud + link), what a control "
                      "loop with that deadline can use.")
    return register_metric(name)(metric)


within_150ms = _deadline_metric(150)
within_300ms = _deadline_metric(300)


@register_metric("ttft_mean")
def ttft_mean(y_true, y_pred) -> float:
    """Mean time to first token (ms) of the cloud answers that report one (streamed), how soon a reply starts."""
    v = [float(s.cloud["ttft_ms"]) for s in _samples(y_true, y_pred)
         if s.cloud is not None and s.cloud.get("ttft_ms") is not None]
    return float(np.mean(v)) if v else _nan("ttft_mean: no cloud result reports a time to first token")


@register_metric("inter_token_mean")
def inter_token_mean(y_true, y_pred) -> float:
    """Mean inter-token latency (ms per token after the first) of the streamed cloud answers that report one. Per
    token, not per streamed chunk: under speculative decoding a chunk carries several tokens."""
    v = [float(s.cloud["inter_token_ms"]) for s in _samples(y_true, y_pred)
         if s.cloud is not None and s.cloud.get("inter_token_ms") is not None]
    return float(np.mean(v)) if v else _nan("inter_token_mean: no cloud result reports an inter-token latency")


@register_metric("tokens_per_s_mean")
def tokens_per_s_mean(y_true, y_pred) -> float:
    """Mean cloud decoding rate per request: completion tokens over the request's whole time (first byte sent to
    last received, prompt evaluation included), of the cloud answers that report tokens."""
    v = [float(s.cloud["tokens_per_s"]) for s in _samples(y_true, y_pred)
         if s.cloud is not None and s.cloud.get("tokens_per_s") is not None]
    return float(np.mean(v)) if v else _nan("tokens_per_s_mean: no cloud result reports tokens per second")


@register_metric("spec_acceptance")
def spec_acceptance(y_true, y_pred) -> float:
    """Speculative decoding's acceptance rate over the run, from the serving engine's own counters (vLLM's
    /metrics, read before and after every request: ``spec_before``/``spec_after``): accepted draft tokens / draft
    tokens between the first reading and the last, so overlapping requests are counted once. NaN when the server
    does not report them or nothing was drafted."""
    before = [s.cloud["spec_before"] for s in _samples(y_true, y_pred)
              if s.cloud is not None and isinstance(s.cloud.get("spec_before"), dict)]
    after = [s.cloud["spec_after"] for s in _samples(y_true, y_pred)
             if s.cloud is not None and isinstance(s.cloud.get("spec_after"), dict)]
    if not before or not after:
        return _nan("spec_acceptance: no cloud result carries speculative-decoding counters (server: vllm)")
    drafted = max(int(a["draft_tokens"]) for a in after) - min(int(b["draft_tokens"]) for b in before)
    accepted = max(int(a["accepted_tokens"]) for a in after) - min(int(b["accepted_tokens"]) for b in before)
    if drafted <= 0:
        return _nan("spec_acceptance: no draft tokens were proposed (no speculative decoding)")
    return accepted / drafted


@register_metric("throughput")
def throughput(y_true, y_pred) -> float:
    """Samples per second over the run's wall time (first start to last finish), at whatever concurrency it
    used; with parallel requests this is not 1 / latency."""
    samples = _samples(y_true, y_pred)
    if not samples:
        return _nan("throughput over no samples is undefined")
    results = [d for s in samples for d in s.results()]
    starts = [float(d["started_at"]) for d in results if d.get("started_at") is not None]
    ends = [float(d["finished_at"]) for d in results if d.get("finished_at") is not None]
    if not starts or not ends:
        return _nan("throughput: no result records started_at/finished_at")
    wall = max(ends) - min(starts)
    if not wall > 0:
        return _nan(f"throughput: the run's wall time is {wall:g} s")
    return len(samples) / wall


# ---- link and cloud cost -------------------------------------------------------------------------------------

def _per_sample(samples: list[_Sample], *keys: str) -> float:
    """Mean over all samples of the cloud result's fields summed; a sample never sent counts 0."""
    return float(np.mean([sum(_num(s.cloud, k, s) for k in keys) for s in samples]))


@register_metric("uplink_bytes")
def uplink_bytes(y_true, y_pred) -> float:
    """Mean bytes sent to the cloud per sample (samples kept on the edge count 0): the link cost of routing."""
    samples = _samples(y_true, y_pred)
    return _per_sample(samples, "bytes_up") if samples else _nan("uplink_bytes over no samples is undefined")


@register_metric("downlink_bytes")
def downlink_bytes(y_true, y_pred) -> float:
    """Mean bytes received from the cloud per sample (samples kept on the edge count 0)."""
    samples = _samples(y_true, y_pred)
    return _per_sample(samples, "bytes_down") if samples else _nan("downlink_bytes over no samples is undefined")


@register_metric("cloud_tokens")
def cloud_tokens(y_true, y_pred) -> float:
    """Mean prompt + completion tokens per sample (samples not sent count 0): what the cloud model bills."""
    samples = _samples(y_true, y_pred)
    if not samples:
        return _nan("cloud_tokens over no samples is undefined")
    return _per_sample(samples, "prompt_tokens", "completion_tokens")


_SIZES: dict[str, int] = {}  # file size by path: the same frames are scored again in every test case


def _file_size(path: Path) -> int:
    key = str(path)
    if key not in _SIZES:
        _SIZES[key] = os.path.getsize(path)
    return _SIZES[key]


def full_resolution_path(label_path, rgb_path=None) -> Path:
    """The frame's RGB file at the largest resolution the dataset holds it in.

    The RGB path comes from the label path via the layout; ``rgb_path`` (a result's own) is the fallback for a
    frame outside the layout. A clear ValueError when neither gives an existing file."""
    label = Path(label_path)
    try:
        rgb = layout.sibling_path(label, "rgb")
    except ValueError:
        if rgb_path is None:
            raise ValueError(f"bandwidth_saving: cannot find the RGB image of {label}: the path follows no "
                             "<W>x<H>/{rgb,gtFine}/... layout and the results carry no rgb_path") from None
        rgb = Path(rgb_path)
    frame = Frame(rgb, label)
    resolutions = frame.available_resolutions()  # largest first; [] outside a <W>x<H> tree
    if resolutions:
        return frame.at_resolution(resolutions[0]).rgb_path
    if not rgb.is_file() and rgb_path is not None and Path(rgb_path).is_file():
        rgb = Path(rgb_path)
    if not rgb.is_file():
        raise ValueError(f"bandwidth_saving: the RGB image of {label} is missing (looked for {rgb}"
                         + (f" and {rgb_path}" if rgb_path is not None and Path(rgb_path) != rgb else "") + ")")
    return rgb


def full_resolution_bytes(label_path, rgb_path=None) -> int:
    """Bytes of the frame's full-resolution RGB file: what a cloud-only robot would upload for it."""
    return _file_size(full_resolution_path(label_path, rgb_path))


@register_metric("bandwidth_saving_vs_png")
def bandwidth_saving_vs_png(y_true, y_pred) -> float:
    """1 - uplink bytes / bytes of sending every frame's full-resolution lossless RGB file (PNG): the saving
    against shipping raw frames (negative when the payloads outweigh them). A second baseline, kept apart."""
    samples = _samples(y_true, y_pred)
    if not samples:
        return _nan("bandwidth_saving_vs_png over no samples is undefined")
    full = 0
    for s in samples:
        rgb = next((d["rgb_path"] for d in s.results() if d.get("rgb_path")), None)
        full += full_resolution_bytes(s.label, rgb)
    if full <= 0:
        return _nan("bandwidth_saving_vs_png: the full-resolution RGB files are empty")
    return 1.0 - sum(_num(s.cloud, "bytes_up", s) for s in samples) / full


@register_metric("bandwidth_saving")
def bandwidth_saving(y_true, y_pred) -> float:
    """1 - uplink bytes / the bytes of sending every sample to the cloud with the same payload settings.

    Samples sent count what they sent. A sample not sent counts what its own request would have carried: the
    bytes by payload part that the cloud module priced for it when it ran (the edge result's ``send_bytes``: its
    image and summary, as the payload policy would have chosen), plus the mean of everything else in a request
    (prompt, camera, framing: ``bytes_up`` less the cloud result's ``payload_bytes``) over the samples sent in
    one attempt. 0 for CloudOnly, 1 when nothing is sent; NaN (with the reason) when a result lacks those
    records."""
    samples = _samples(y_true, y_pred)
    if not samples:
        return _nan("bandwidth_saving over no samples is undefined")
    sent = [s for s in samples if s.cloud is not None]
    up = sum(_num(s.cloud, "bytes_up", s) for s in sent)
    if up == 0:
        return 1.0  # nothing crossed the link
    unsent = [s for s in samples if s.cloud is None]
    if not unsent:
        return 0.0
    clean = [s for s in sent if s.cloud.get("attempts", 1) == 1 and _num(s.cloud, "bytes_up", s) > 0] or sent
    parts = [part_bytes(s.cloud.get("payload_bytes")) for s in clean]
    if any(p is None for p in parts):
        return _nan("bandwidth_saving: the cloud results do not record their bytes by payload part (payload_bytes)")
    overhead = float(np.mean([_num(s.cloud, "bytes_up", s) - p for s, p in zip(clean, parts)]))
    would = [part_bytes((s.edge or {}).get("send_bytes")) for s in unsent]
    missing = [s.index for s, w in zip(unsent, would) if w is None]
    if missing:
        return _nan(f"bandwidth_saving: {len(missing)} sample(s) not sent do not record what sending would carry "
                    f"(send_bytes; first y_pred[{missing[0]}]): their edge model ran without a cloud module to "
                    "price them")
    return 1.0 - up / (up + sum(w + overhead for w in would))


@register_metric("privacy_redacted_share")
def privacy_redacted_share(y_true, y_pred) -> float:
    """Of the samples sent to the cloud, the share that PrivacyAware sent as the scene summary only because people
    were near the camera (their cloud results' ``privacy_redacted``): frames that did not leave the edge as images
    for privacy. 0 when no payload policy withheld an image; NaN (with a warning) when nothing was sent. A cloud
    result without the field is an error naming the sample, never a 0."""
    sent = [s for s in _samples(y_true, y_pred) if s.cloud is not None]
    if not sent:
        return _nan("privacy_redacted_share: no sample was sent to the cloud")
    flags = []
    for s in sent:
        v = s.cloud.get("privacy_redacted")
        if v is None:
            raise CeprError(f"y_pred[{s.index}]: the cloud result has no 'privacy_redacted' (cepr's cloud module "
                            "reports it on every sample it sends)")
        flags.append(bool(v))
    return float(np.mean(flags))


# ---- lookup ---------------------------------------------------------------------------------------------------

def get_metric(name: str) -> Metric:
    """The metric called ``name``; a misspelt name in testenv.yaml gets a "did you mean" instead of a KeyError."""
    return METRIC_REGISTRY.get(name)


# the data set a row was scored on (name, synthetic or not), as rank columns under both runners
from cepr.metrics import dataset_info as _dataset_info

dataset = register_metric("dataset")(_dataset_info.dataset)
synthetic = register_metric("synthetic")(_dataset_info.synthetic)
__all__ += ["bandwidth_saving_vs_png", "dataset", "privacy_redacted_share", "synthetic", "within_150ms",
            "within_300ms"]
