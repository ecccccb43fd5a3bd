"""Example frames for the report: a few test samples with the edge's predicted mask, the edge answer, the cloud
answer and the truth.

Records keep no masks (the edge's mask lives in memory for the mIoU metric), so the mask is recomputed here: the
edge result names the ONNX model that ran (``model``); the same shipped file runs again on the frame (onnxruntime,
a few ms per frame), on its depth where the model reads depth. Where the model file is gone, the example says so
and shows the frame and its label only.

The samples come from the case that sent the most samples to the cloud (cloud-only in the shipped jobs), so both
answers exist, chosen to show the four outcomes in turn: edge wrong and cloud right, edge right and cloud wrong,
both right, both wrong, each time from a task not shown yet where possible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cepr.data.classes import colorize
from cepr.data.cloud_robotics import Frame, load_depth, load_label, load_rgb
from cepr.edge.models import ASSETS, SHIPPED, auto_model, model_path
from cepr.edge.runtime import SegmentationModel
from cepr.report import plots
from cepr.report.workspace import Case

log = logging.getLogger(__name__)

OUTCOMES = ("edge wrong, cloud right", "edge right, cloud wrong", "both right", "both wrong")


@dataclass
class Example:
    case: Case  # the case the answers come from
    sample: dict
    outcome: str
    png: bytes | None = None  # frame | edge mask | label panels
    notes: list[str] = field(default_factory=list)  # e.g. why the mask is missing
    routed: list[tuple[str, bool, object, object]] = field(default_factory=list)  # (case, sent, final, correct)
    mask_model: str | None = None  # the ONNX file that recomputed the edge mask


def _cloud_answer(s: dict):
    c = s.get("cloud")
    if c is None or c.get("status", "ok") != "ok":
        return None
    return c.get("cloud_answer", c.get("answer"))


def outcome(s: dict) -> str | None:
    truth = s.get("truth")
    if truth is None:
        return None
    e = (s.get("edge") or {}).get("answer")
    c = _cloud_answer(s)
    if c is None:
        return "edge right" if e == truth else "edge wrong"
    return OUTCOMES[{(False, True): 0, (True, False): 1, (True, True): 2, (False, False): 3}[(e == truth, c == truth)]]


def source_case(cases: list[Case]) -> Case | None:
    """The case whose samples carry the most cloud answers (ties: the first, i.e. the best ranked)."""
    if not cases:
        return None
    return max(cases, key=lambda c: (sum(_cloud_answer(s) is not None for s in c.samples), -cases.index(c)))


def pick(cases: list[Case], n: int) -> list[Example]:
    """Up to ``n`` examples (see the module doc), in a fixed order."""
    src = source_case(cases)
    if src is None or n <= 0:
        return []
    pool = [s for s in src.samples if (s.get("edge") or {}).get("rgb_path") and outcome(s) is not None]
    order = list(OUTCOMES) + ["edge wrong", "edge right"]
    chosen: list[dict] = []
    tasks: set = set()
    while len(chosen) < n:
        added = False
        for want in order:
            if len(chosen) >= n:
                break
            cands = [s for s in pool if outcome(s) == want and s not in chosen]
            if not cands:
                continue
            s = next((s for s in cands if s.get("task") not in tasks), cands[0])
            chosen.append(s)
            tasks.add(s.get("task"))
            added = True
        if not added:
            break
    out = []
    for s in chosen:
        ex = Example(src, s, outcome(s) or "")
        key = (s.get("index"), s.get("key"), s.get("task"))
        for c in cases:
            if c is src:
                continue
            other = next((x for x in c.samples if (x.get("index"), x.get("key"), x.get("task")) == key), None)
            if other is not None:
                ex.routed.append((c.label, other.get("cloud") is not None, other.get("answer"), other.get("correct")))
        out.append(ex)
    return out


def _model_file(name: str | None, has_depth: bool) -> tuple[Path | None, str]:
    """The ONNX file an edge result names (a shipped file name, or a path), else the one ``model: auto`` runs."""
    if name:
        if (ASSETS / name).is_file():
            return ASSETS / name, name
        if Path(name).is_file():
            return Path(name), Path(name).name
        shipped = next((k for k, v in SHIPPED.items() if v == name), None)
        if shipped is None:
            return None, f"the edge model {name!r} that ran is not on this machine"
    try:
        p = model_path(auto_model(has_depth))
    except Exception as e:  # noqa: BLE001 - a missing model leaves the example without a mask, said in the page
        return None, str(e)
    return p, p.name


def render(examples: list[Example], threads: int = 1) -> None:
    """Fill each example's ``png``: the frame, the recomputed edge mask over it, the ground-truth label."""
    sessions: dict[Path, object] = {}
    for ex in examples:
        edge = ex.sample.get("edge") or {}
        try:
            rgb = load_rgb(edge["rgb_path"])
        except Exception as e:  # noqa: BLE001 - the frame may be gone (another machine): say so, go on
            ex.notes.append(f"frame not readable: {e}")
            continue
        label_rgb = None
        label_path = edge.get("label_path")
        if label_path:
            try:
                label_rgb = colorize(load_label(label_path, validate=False))
            except Exception as e:  # noqa: BLE001
                ex.notes.append(f"label not readable: {e}")
        frame = Frame(edge["rgb_path"], label_path or edge["rgb_path"])
        dp = frame.depth_path
        path, what = _model_file(edge.get("model"), dp is not None)
        mask_rgb, title = None, "edge mask"
        if path is None:
            ex.notes.append(f"edge mask not recomputed: {what}")
        else:
            try:
                seg = sessions.get(path)
                if seg is None:
                    seg = sessions[path] = SegmentationModel(path, threads=threads)
                depth = load_depth(dp) if seg.use_depth and dp is not None else None
                if seg.use_depth and depth is None:
                    raise RuntimeError(f"{path.name} reads depth and this frame has none")
                mask = seg(rgb, depth).label
                mask_rgb = (0.45 * rgb + 0.55 * colorize(mask)).astype(np.uint8)
                title = f"edge mask ({path.name}, recomputed)"
                ex.mask_model = path.name
            except Exception as e:  # noqa: BLE001
                ex.notes.append(f"edge mask not recomputed: {type(e).__name__}: {e}")
        ex.png = plots.example_panels(rgb, mask_rgb, label_rgb, title)
