"""Fit the planner's confidence on one split and report answer accuracy and calibration on another."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import TASK_NAMES, TaskParams, answers_for_sample
from cepr.edge.pipeline import EdgePipeline
from cepr.edge.planner import Planner, fit_calibration
from cepr.metrics.calibration import expected_calibration_error, reliability_table


def collect(pipe: EdgePipeline, data: str, split: str, max_frames: int | None, progress: bool):
    # ground truth always comes from the true mask with depth when the set has it
    """(task, features, correct, raw confidence) for every task of every frame, plus the ground truths."""
    ds = CloudRoboticsDataset(find_index(data, split=split))
    n = min(len(ds), max_frames or len(ds))

    recs = []
    for s in tqdm(itertools.islice(ds, n), total=n, desc=f"edge {split}", unit="frame", disable=not progress):
        truth = answers_for_sample(s, pipe.params)
        res = pipe.run_sample(s)
        for t, a in res.answers.items():
            recs.append((t, a.features, a.answer == truth[t], a.confidence))
    return recs, n


def score(planner: Planner, recs) -> dict:
    out = {"tasks": {}}
    allc, ally = [], []
    for t in TASK_NAMES:
        rows = [(f, y) for task, f, y, _ in recs if task == t]
        if not rows:
            continue
        conf = [planner.confidence(t, f) for f, _ in rows]
        y = [bool(v) for _, v in rows]
        out["tasks"][t] = {"accuracy": float(np.mean(y)), "ece": expected_calibration_error(conf, y),
                           "mean_confidence": float(np.mean(conf)), "n": len(rows)}
        allc += conf
        ally += y
    out["accuracy"] = float(np.mean(ally))
    out["ece"] = expected_calibration_error(allc, ally)
    out["reliability"] = reliability_table(allc, ally)
    return out


def calibrate(model: str, data: str, out: str | Path, fit_split: str = "val", eval_split: str = "test",
              max_frames: int | None = None, threads: int = 1, params: TaskParams | None = None,
              progress: bool = True, depth_for_distance: bool = True) -> dict:
    pipe = EdgePipeline(model, params=params, threads=threads, depth_for_distance=depth_for_distance)
    fit_recs, n_fit = collect(pipe, data, fit_split, max_frames, progress)
    coefs = fit_calibration([(t, f, y) for t, f, y, _ in fit_recs])
    eval_recs, n_eval = collect(pipe, data, eval_split, max_frames, progress)
    before = score(Planner(pipe.params), eval_recs)
    after = score(Planner(pipe.params, coefs), eval_recs)
    doc = {"model": str(model), "data": str(data), "depth_for_distance": depth_for_distance,
           "fit_split": fit_split, "fit_frames": n_fit,
           "eval_split": eval_split, "eval_frames": n_eval, "task_params": pipe.params.to_dict(),
           "features": ["bias", "log_margin", "object_conf", "uncertainty"], "coefficients": coefs,
           "uncalibrated": before, "calibrated": after}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(doc, indent=1))
    return doc


def format_calibration(doc: dict) -> str:
    b, a = doc["uncalibrated"], doc["calibrated"]
    lines = [(f"local planner on {doc['eval_frames']} {doc['eval_split']} frames "
              f"(confidence fitted on {doc['fit_frames']} {doc['fit_split']} frames)"),
             f"{'task':<17} {'accuracy':>8} {'ECE raw':>8} {'ECE cal':>8}"]
    for t in b["tasks"]:
        lines.append(f"{t:<17} {100 * a['tasks'][t]['accuracy']:>7.1f}% {b['tasks'][t]['ece']:>8.3f} "
                     f"{a['tasks'][t]['ece']:>8.3f}")
    lines.append(f"{'all':<17} {100 * a['accuracy']:>7.1f}% {b['ece']:>8.3f} {a['ece']:>8.3f}")
    lines.append("\nreliability (calibrated, all tasks): confidence bin -> count, mean confidence, accuracy")
    for r in a["reliability"]:
        lines.append(f"  [{r['lo']:.1f}, {r['hi']:.1f})  {r['count']:>5}  {r['confidence']:.3f}  {r['accuracy']:.3f}")
    return "\n".join(lines)
