"""EdgePipeline: segmentation model -> scene summary -> local planner, with per-stage timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cepr.data.camera import Camera
from cepr.data.tasks import TASK_NAMES, TaskParams, camera_for
from cepr.edge.planner import LocalAnswer, Planner
from cepr.edge.runtime import SegmentationModel
from cepr.edge.summary import SceneSummary, summarize


@dataclass
class FramePerception:
    """What the pipeline saw in one frame (the class map, the summary, the local answers, stage timings); the
    edge module turns it into the sample's :class:`cepr.records.EdgeResult`."""

    label: np.ndarray  # predicted class map at the frame's resolution
    summary: SceneSummary
    summary_bytes: bytes
    answers: dict[str, LocalAnswer]
    timings_ms: dict[str, float] = field(default_factory=dict)
    logits: np.ndarray | None = None  # the network's raw output and the encoder map, when asked for
    features: np.ndarray | None = None
    vision: np.ndarray | None = None  # a grounded VLM reasoner's projected tokens (what the features payload sends)

    @property
    def total_ms(self) -> float:
        return sum(self.timings_ms.values())


class EdgePipeline:
    """Everything the robot runs on board for one frame. Needs onnxruntime and numpy, never torch."""

    def __init__(self, model: str | Path | SegmentationModel, planner: Planner | None = None,
                 params: TaskParams | None = None, threads: int = 1, mask_size=(80, 60),
                 tasks: tuple[str, ...] = TASK_NAMES, depth_for_distance: bool = True, providers="cpu"):
        self.model = (model if isinstance(model, SegmentationModel)
                      else SegmentationModel(model, threads=threads, providers=providers))
        self.params = params or (planner.params if planner else TaskParams())
        self.planner = planner or Planner(self.params)
        self.mask_size = mask_size
        self.tasks = tasks
        self.depth_for_distance = depth_for_distance  # False: ground-plane distances, as from an image alone

    def __call__(self, rgb: np.ndarray, depth: np.ndarray | None, camera: Camera,
                 tasks: tuple[str, ...] | None = None, features: bool = False) -> FramePerception:
        """One frame; ``tasks`` (default: the pipeline's) are the ones the reasoner answers; ``features``: keep
        the pass's logits and encoder map (a grounded VLM's input)."""
        vision = getattr(self.planner, "wants_vision", False)  # a reasoner that reads the pass (grounded VLM)
        seg = self.model(rgb, depth if self.model.use_depth else None, features=features or vision)
        t0 = time.perf_counter()
        h, w = rgb.shape[:2]
        cam = camera if (camera.width, camera.height) == (w, h) else camera.scaled(w, h)
        summary = summarize(seg.label, depth if self.depth_for_distance else None, cam, probs=seg.probs,
                            params=self.params, mask_size=self.mask_size)
        blob = summary.to_bytes()
        t1 = time.perf_counter()
        if vision:
            answers = self.planner.answer(summary, self.tasks if tasks is None else tasks,
                                          vision=(seg.features, seg.logits, depth if self.model.use_depth else None))
        elif getattr(self.planner, "wants_image", False):  # a reasoner that reads the frame (a vision projector)
            answers = self.planner.answer(summary, self.tasks if tasks is None else tasks, image=rgb)
        else:
            answers = self.planner.answer(summary, self.tasks if tasks is None else tasks)
        t2 = time.perf_counter()
        timings = {f"perception.{k}": v for k, v in seg.timings_ms.items()}
        timings.update({"summary": 1e3 * (t1 - t0), "planner": 1e3 * (t2 - t1)})
        kept = (seg.logits, seg.features) if features else (None, None)
        return FramePerception(seg.label, summary, blob, answers, timings, *kept,
                               vision=getattr(self.planner, "embeddings", None) if vision else None)

    def run_sample(self, sample, features: bool = False) -> FramePerception:
        """A loaded ``cepr.data.cloud_robotics.Sample``; its sidecar camera when present, else the assumed one."""
        h, w = sample.label.shape if sample.label is not None else sample.rgb.shape[:2]
        return self(sample.rgb, sample.depth, camera_for(sample.sidecar, w, h), features=features)

    def run_batch(self, samples, progress: bool = False) -> list[FramePerception]:
        samples = list(samples)
        return [self.run_sample(s) for s in tqdm(samples, desc="edge", unit="frame", disable=not progress)]
