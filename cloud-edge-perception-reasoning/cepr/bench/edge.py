"""``cepr bench edge``: per-stage latency at 640x480, INT8 vs FP32 vs PyTorch, summary bytes vs PNG/JPEG.

One core means one core for everything: ONNX Runtime's intra-op threads and OpenCV's threads are both set to
``threads`` while the benchmark runs (OpenCV would otherwise spread resizing and labelling over every core)."""

from __future__ import annotations

import contextlib
import itertools
import json

import cv2
import numpy as np

from cepr.bench.machine import format_machine, machine_info
from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.edge.evaluate import evaluate
from cepr.edge.pipeline import EdgePipeline
from cepr.edge.planner import Planner

# the per-frame budgets of a small robot's companion computer, one core
TARGETS_MS = {"summary": 5.0, "total": 15.0}
TARGET_INT8_SPEEDUP = 2.5  # FP32 / INT8 network latency, where the CPU has VNNI


def _stats(xs) -> dict:
    a = np.asarray(xs, np.float64)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean())}


@contextlib.contextmanager
def opencv_threads(n: int):
    prev = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(prev)


def bench_edge(data: str, int8: str, fp32: str | None, checkpoint: str | None, calibration: str | None,
               split: str = "test", frames: int = 50, threads: int = 1, progress: bool = True,
               providers="cpu", distances: str = "depth") -> dict:
    """``distances``: "depth" (the frames' depth maps) or "ground-plane" (as on data without depth, the real
    Cloud-Robotics set: the summary's other code path)."""
    if distances not in ("depth", "ground-plane"):
        raise ValueError(f"distances must be depth or ground-plane, not {distances!r}")
    with opencv_threads(threads):
        return _bench_edge(data, int8, fp32, checkpoint, calibration, split, frames, threads, progress, providers,
                           distances)


def _bench_edge(data, int8, fp32, checkpoint, calibration, split, frames, threads, progress, providers,
                distances) -> dict:
    ds = CloudRoboticsDataset(find_index(data, split=split))
    samples = list(itertools.islice(ds, min(frames, len(ds))))
    models = {"onnx-int8": ("onnx", int8)}
    if fp32:
        models["onnx-fp32"] = ("onnx", fp32)
    if checkpoint:
        models["pytorch"] = ("torch", checkpoint)
    reports = {r.name: r for r in evaluate(samples, models, threads=threads, progress=progress, providers=providers)}
    planner = Planner.from_file(calibration) if calibration else None
    pipe = EdgePipeline(int8, planner=planner, threads=threads, providers=providers,
                        depth_for_distance=distances == "depth")
    pipe.run_sample(samples[0])  # warm-up
    # summary: the binary form (msgpack + RLE mask, what the edge service streams); summary_text: the compact
    # JSON text form, what a request to a cloud model carries
    stages, sizes = {}, {"summary": [], "summary_text": [], "png": [], "jpeg90": [], "jpeg75": []}
    for s in samples:
        r = pipe.run_sample(s)
        for k, v in r.timings_ms.items():
            stages.setdefault(k, []).append(v)
        stages.setdefault("total", []).append(r.total_ms)
        bgr = cv2.cvtColor(s.rgb, cv2.COLOR_RGB2BGR)
        sizes["summary"].append(len(r.summary_bytes))
        sizes["summary_text"].append(len(json.dumps(r.summary.to_dict(), separators=(",", ":"), allow_nan=False)))
        sizes["png"].append(len(cv2.imencode(".png", bgr)[1]))
        sizes["jpeg90"].append(len(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1]))
        sizes["jpeg75"].append(len(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 75])[1]))
    h, w = samples[0].label.shape
    out = {
        "frames": len(samples), "frame_size": [w, h], "threads": threads, "provider": pipe.model.provider,
        "split": split, "data": str(data), "distances": distances,
        "machine": machine_info(), "targets_ms": TARGETS_MS, "target_int8_speedup": TARGET_INT8_SPEEDUP,
        "models": {n: {"miou": r.miou, "pixel_accuracy": r.pixel_accuracy, "net_ms": r.latency("infer"),
                       "frame_ms": r.latency("total")} for n, r in reports.items()},
        "stages_ms": {k: _stats(v) for k, v in stages.items()},
        "bytes": {k: _stats(v) for k, v in sizes.items()},
    }
    i8 = reports["onnx-int8"].latency("infer")["median"]
    ratios = {}
    if "onnx-fp32" in reports:
        ratios["fp32_over_int8"] = reports["onnx-fp32"].latency("infer")["median"] / i8
        ratios["miou_drop_points"] = 100 * (reports["onnx-fp32"].miou - reports["onnx-int8"].miou)
    if "pytorch" in reports:
        ratios["pytorch_over_int8"] = reports["pytorch"].latency("infer")["median"] / i8
    ratios["summary_over_png"] = float(np.median(np.array(sizes["summary"]) / np.array(sizes["png"])))
    ratios["summary_over_jpeg90"] = float(np.median(np.array(sizes["summary"]) / np.array(sizes["jpeg90"])))
    out["ratios"] = ratios
    return out


def format_bench_edge(r: dict) -> str:
    w, h = r["frame_size"]
    title = (f"edge benchmark: {r['frames']} {r['split']} frames at {w}x{h}, {r['threads']} thread(s) "
             f"(onnxruntime and OpenCV), {r.get('provider', 'CPUExecutionProvider')}, "
             f"distances from {r.get('distances', 'depth')}")
    L = [title, "machine: " + format_machine(r["machine"]),
         "", f"{'model':<10} {'mIoU':>7} {'net ms median':>14} {'p90':>7} {'frame ms':>9}"]
    for n, m in r["models"].items():
        L.append(f"{n:<10} {100 * m['miou']:>6.2f}% {m['net_ms']['median']:>14.2f} {m['net_ms']['p90']:>7.2f} "
                 f"{m['frame_ms']['median']:>9.2f}")
    L += ["", "INT8 pipeline stages (ms):", f"  {'stage':<26} {'median':>8} {'p90':>8}  target"]
    for k, v in r["stages_ms"].items():
        t = r.get("targets_ms", {}).get(k)
        verdict = "" if t is None else f"  <= {t:g} ms: {'met' if v['median'] <= t else 'MISSED'} (median)"
        L.append(f"  {k:<26} {v['median']:>8.2f} {v['p90']:>8.2f}{verdict}")
    L += ["", "bytes per frame (median): " + ", ".join(f"{k} {v['median']:,.0f}" for k, v in r["bytes"].items())]
    L += ["ratios: " + ", ".join(f"{k} {v:.4g}" for k, v in r["ratios"].items())]
    q = r["ratios"].get("fp32_over_int8")
    if q is not None:
        m = r["machine"]
        want = r.get("target_int8_speedup", TARGET_INT8_SPEEDUP)
        verdict = (f"target >= {want:g}x on a VNNI CPU: {'met' if q >= want else 'MISSED'}" if m.get("vnni") else
                   f"no VNNI on this CPU: the >= {want:g}x target applies to VNNI CPUs (docs/edge.md)")
        L.append(f"INT8 speed-up (FP32 / INT8 network, median): {q:.2f}x with CPU flags "
                 f"[{' '.join(m.get('flags', []))}]; {verdict}")
    return "\n".join(L)

