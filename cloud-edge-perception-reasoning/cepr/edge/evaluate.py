"""Accuracy and latency of one model in its PyTorch, ONNX FP32 and ONNX INT8 forms, on the same frames."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cepr.data.classes import CLASSES
from cepr.edge.export import load_checkpoint
from cepr.edge.models import rgbd_without_depth_message
from cepr.edge.preprocess import upsample_argmax
from cepr.edge.runtime import SegmentationModel
from cepr.errors import CeprError
from cepr.metrics.segmentation import ConfusionMatrix


@dataclass
class ModelReport:
    name: str
    miou: float
    pixel_accuracy: float
    iou: list[float]
    infer_ms: list[float] = field(repr=False)  # the network alone, per frame
    total_ms: list[float] = field(repr=False)  # preprocessing + network + upsampled class map

    def latency(self, which: str = "infer") -> dict[str, float]:
        xs = np.asarray(self.infer_ms if which == "infer" else self.total_ms)
        return {"median": float(np.median(xs)), "p90": float(np.percentile(xs, 90)), "mean": float(xs.mean())}

    def to_dict(self) -> dict:
        return {"name": self.name, "miou": self.miou, "pixel_accuracy": self.pixel_accuracy,
                "iou": {c.name: (None if np.isnan(v) else round(float(v), 5)) for c, v in zip(CLASSES, self.iou)},
                "infer_ms": self.latency("infer"), "total_ms": self.latency("total")}


class _TorchRunner:
    def __init__(self, checkpoint: str, threads: int):
        import torch


        torch.set_num_threads(threads)
        self.model, _ = load_checkpoint(checkpoint)
        self.name = Path(checkpoint).name
        self.needs_depth = bool(self.model.cfg.use_depth)

    def logits(self, rgb, depth):
        from cepr.edge.rfnet import predict_logits  # torch

        return predict_logits(self.model, rgb, depth, tuple(self.model.cfg.input_size))


class _OnnxRunner:
    def __init__(self, path: str, threads: int, providers="cpu"):
        self.m = SegmentationModel(path, threads=threads, providers=providers)
        self.name = self.m.path.name
        self.needs_depth = self.m.use_depth

    def logits(self, rgb, depth):
        return self.m.logits(rgb, depth)


def evaluate(samples, models: dict[str, tuple[str, str]], threads: int = 1, warmup: int = 2,
             progress: bool = True, providers="cpu") -> list[ModelReport]:
    """``models``: name -> ("torch", checkpoint) or ("onnx", path). Every model sees the same frames; the ONNX
    ones run on ``providers`` (cepr.edge.providers)."""
    runners = {n: (_TorchRunner(p, threads) if kind == "torch" else _OnnxRunner(p, threads, providers))
               for n, (kind, p) in models.items()}
    cms = {n: ConfusionMatrix() for n in runners}
    infer = {n: [] for n in runners}
    total = {n: [] for n in runners}
    samples = list(samples)
    no_depth = next((s for s in samples if s.depth is None), None)
    for r in runners.values():  # before any work: an RGB-D model cannot run on a set without depth
        if r.needs_depth and no_depth is not None:
            raise CeprError(f"{rgbd_without_depth_message(r.name)} (first frame without depth: "
                            f"{no_depth.frame.rgb_path})")
    if samples:
        for r in runners.values():  # warm-up: first runs allocate and pick kernels
            for _ in range(warmup):
                r.logits(samples[0].rgb, samples[0].depth)
    for s in tqdm(samples, desc="eval", unit="frame", disable=not progress):
        h, w = s.label.shape
        for n, r in runners.items():
            t0 = time.perf_counter()
            if isinstance(r, _OnnxRunner):
                feed = r.m.prepare(s.rgb, s.depth)
                t1 = time.perf_counter()
                logits = r.m.run(feed)
                t2 = time.perf_counter()
            else:
                t1 = t0
                logits = r.logits(s.rgb, s.depth)
                t2 = time.perf_counter()
            pred = upsample_argmax(logits, w, h)
            t3 = time.perf_counter()
            infer[n].append(1e3 * (t2 - t1))
            total[n].append(1e3 * (t3 - t0))
            cms[n].update(s.label, pred)
    return [ModelReport(n, cms[n].miou(), cms[n].pixel_accuracy(), cms[n].iou().tolist(), infer[n], total[n])
            for n in runners]


def format_reports(reports: list[ModelReport], baseline: str | None = None) -> str:
    lines = [f"{'model':<10} {'mIoU':>7} {'pix acc':>8} {'net ms (median/p90)':>20} {'frame ms':>9}"
             + ("  speed-up" if baseline else "")]
    base = next((r for r in reports if r.name == baseline), None)
    for r in reports:
        li, lt = r.latency("infer"), r.latency("total")
        row = (f"{r.name:<10} {100 * r.miou:>6.2f}% {100 * r.pixel_accuracy:>7.2f}% "
               f"{li['median']:>10.2f} / {li['p90']:<7.2f} {lt['median']:>9.2f}")
        if base is not None:
            row += f"  {base.latency('infer')['median'] / li['median']:>6.2f}x"
        lines.append(row)
    lines.append("\nper-class IoU (%):")
    lines.append(f"{'class':<14}" + "".join(f"{r.name:>10}" for r in reports))
    for i, c in enumerate(CLASSES):
        vals = "".join(f"{'-' if np.isnan(r.iou[i]) else f'{100 * r.iou[i]:.1f}':>10}" for r in reports)
        lines.append(f"{c.name:<14}{vals}")
    return "\n".join(lines)
