"""ONNX Runtime inference of the exported segmentation models (numpy + onnxruntime, never torch)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cepr.edge.export import FEATURES, read_meta
from cepr.edge.models import rgbd_without_depth_message
from cepr.edge.preprocess import prepare_depth, prepare_rgb, softmax, upsample_argmax
from cepr.edge.providers import check_session, resolve_providers
from cepr.errors import CeprError


@dataclass
class Segmentation:
    label: np.ndarray  # (H, W) uint8 class ids at the frame's resolution
    probs: np.ndarray  # (C, h, w) float32 class probabilities at the network's output resolution
    timings_ms: dict[str, float] = field(default_factory=dict)
    logits: np.ndarray | None = None  # (C, h, w) raw output, kept with ``features``
    features: np.ndarray | None = None  # (F, h', w') the encoder's 1/32 map, when asked for


class SegmentationModel:
    """A cepr ONNX model (FP32 or INT8); reads its input size and depth use from the file's metadata."""

    def __init__(self, path: str | Path, threads: int = 1, providers="cpu"):
        """``providers``: the execution provider(s), by name (``cpu``, ``cuda``, ``tensorrt``...) or a list tried
        in order (``[cuda, cpu]`` opts into falling back); see :mod:`cepr.edge.providers`. ``self.provider`` is
        the one that runs, ``self.providers`` the session's whole list."""

        self.path = Path(path)
        if not self.path.is_file():
            raise CeprError(f"model file {self.path} not found")
        self.meta = read_meta(self.path)
        cfg = self.meta["model_config"]
        self.input_size = tuple(cfg["input_size"])
        self.use_depth = bool(cfg["use_depth"])
        self.num_classes = int(cfg["num_classes"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        plan = resolve_providers(providers)
        self.session = ort.InferenceSession(str(self.path), opts, **plan.session_kwargs())
        self.providers = list(self.session.get_providers())
        self.provider = check_session(plan, self.providers, f"model {self.path.name}")

    @property
    def precision(self) -> str:
        return self.meta.get("precision", "fp32")

    def prepare(self, rgb: np.ndarray, depth: np.ndarray | None) -> dict[str, np.ndarray]:
        """The network's input feed for one frame (resized, normalised)."""
        feed = {"rgb": prepare_rgb(rgb, self.input_size)[None]}
        if self.use_depth:
            if depth is None:
                raise CeprError(rgbd_without_depth_message(self.path.name))
            feed["depth"] = prepare_depth(depth, self.input_size)[None]
        return feed

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """(C, h, w) raw network output at 1/4 of the input size, for a prepared feed."""
        return self.session.run(["logits"], feed)[0][0]

    @property
    def has_features(self) -> bool:
        """Whether the file declares the encoder's ``features`` output (every model cepr exports does)."""
        return FEATURES in {o.name for o in self.session.get_outputs()}

    def run_with_features(self, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One pass: the (C, h, w) logits and the (F, h', w') encoder map at 1/32 of the input size."""
        if not self.has_features:
            raise CeprError(f"{self.path.name} has no '{FEATURES}' output: export it again with `cepr edge export` "
                            "(or add the output: cepr.edge.export.add_features_output)")
        logits, features = self.session.run(["logits", FEATURES], feed)
        return logits[0], features[0]

    def logits(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
        return self.run(self.prepare(rgb, depth))

    def __call__(self, rgb: np.ndarray, depth: np.ndarray | None = None, features: bool = False) -> Segmentation:
        """The frame's mask and probabilities; ``features``: also the encoder map (and the logits), same pass."""
        t0 = time.perf_counter()
        feed = self.prepare(rgb, depth)
        t1 = time.perf_counter()
        feats = None
        if features:
            logits, feats = self.run_with_features(feed)
        else:
            logits = self.run(feed)
        t2 = time.perf_counter()
        h, w = rgb.shape[:2]
        label = upsample_argmax(logits, w, h)
        probs = softmax(logits.astype(np.float32), axis=0)
        t3 = time.perf_counter()
        return Segmentation(label, probs, {"preprocess": 1e3 * (t1 - t0), "inference": 1e3 * (t2 - t1),
                                           "postprocess": 1e3 * (t3 - t2)},
                            logits=logits if features else None, features=feats)
