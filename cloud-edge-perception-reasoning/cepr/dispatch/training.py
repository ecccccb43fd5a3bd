"""Data for the Learned router: edge results with their truth, from a run's ``samples.jsonl`` or by running the
edge on a dataset split; and a frame-grouped cross-validation of the router against a constant predictor.

Heavy imports (the edge module, onnxruntime, OpenCV) happen inside the functions that run the edge.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cepr.data.cloud_robotics import read_index
from cepr.data.tasks import TASK_NAMES, ground_truth
from cepr.dispatch.learned import auc, log_loss, predict_wrong, train_learned
from cepr.edge.module import EdgeModule
from cepr.errors import CeprError
from cepr.records import EdgeResult, SampleRef


def read_records(paths: Iterable) -> list[dict]:
    """Lines with an edge result and a truth from ``samples.jsonl`` files (or JSONL files that
    ``collect_edge_results`` wrote), or from every ``samples.jsonl`` under a folder (a workspace)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("samples.jsonl"))
            if not found:
                raise CeprError(f"{p}: no samples.jsonl under this folder (a cepr run workspace has one per case)")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise CeprError(f"{p}: no such file or folder")
    out = []
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise CeprError(f"{f}:{n}: not JSON: {e}") from None
            if isinstance(rec, dict) and isinstance(rec.get("edge"), dict) and rec.get("truth") is not None:
                out.append({"edge": rec["edge"], "truth": rec["truth"]})
    return out


def dedupe(records: list[dict]) -> list[dict]:
    """One record per (sample key, task): a workspace holds the same edge result once per test case."""
    seen, out = set(), []
    for r in records:
        k = (r["edge"].get("key"), r["edge"].get("task"))
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def collect_edge_results(index, tasks="all", frames: int | None = None, edge: dict | None = None,
                         progress: bool = True) -> list[dict]:
    """Run cepr's edge module (``edge``: its hyperparameters, default the shipped model) on the first ``frames``
    frames of an Ianvs index, asking every task in ``tasks`` of each frame; ``[{"edge": result, "truth": ...}]``
    with the result as samples.jsonl would hold it."""

    task_list = list(TASK_NAMES) if tasks in ("all", None) else ([tasks] if isinstance(tasks, str) else list(tasks))
    fr = read_index(index)
    if frames is not None:
        fr = fr[:frames]
    if not fr:
        raise CeprError(f"{index}: no frames")
    module = EdgeModule(**(edge or {}))
    module.load()
    out = []
    with tqdm(total=len(fr) * len(task_list), desc="edge", unit="sample", disable=not progress) as bar:
        for i, f in enumerate(fr):
            truth = ground_truth(f.label_path)
            for t in task_list:
                res = module.predict(SampleRef(key=f.stem, rgb=str(f.rgb_path), label=str(f.label_path), task=t,
                                               index=i))
                out.append({"edge": EdgeResult.check(res, "the edge model").as_json(), "truth": truth[t]})
                bar.update()
    module.cleanup()
    return out


def cross_validate(records: list[dict], folds: int = 5, l2: float = 1.0, seed: int = 0) -> dict:
    """Out-of-fold P(edge wrong) of the Learned router, folds grouped by frame key (a frame's tasks stay
    together), against the constant predictor that says each training fold's wrong-rate: log-loss, Brier and AUC
    of each, and the router's AUC next to 1 - confidence's."""
    keys = sorted({str(r["edge"].get("key")) for r in records})
    if len(keys) < folds:
        raise CeprError(f"cross_validate: {len(keys)} frames, fewer than {folds} folds")
    rng = np.random.default_rng(seed)
    fold_of = {k: i % folds for i, k in enumerate(rng.permutation(keys))}
    y = np.array([str(r["edge"]["answer"]) != str(r["truth"]) for r in records], dtype=float)
    tasks = sorted({str(r["edge"].get("task")) for r in records})
    p_model, p_const = np.empty(len(records)), np.empty(len(records))
    for k in range(folds):
        test = np.array([fold_of[str(r["edge"].get("key"))] == k for r in records])
        train = [r for r, t in zip(records, test) if not t]
        model = train_learned(train, l2=l2, tasks=tasks)
        rate = float(np.mean(y[~test]))
        for i in np.flatnonzero(test):
            p_model[i] = predict_wrong(model, records[i]["edge"])
            p_const[i] = rate
    conf = np.array([float(r["edge"]["confidence"]) for r in records])

    def r4(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)

    return {"n": len(records), "frames": len(keys), "folds": folds, "wrong_rate": r4(y.mean()),
            "learned": {"log_loss": r4(log_loss(p_model, y)), "brier": r4(np.mean((p_model - y) ** 2)),
                        "auc": r4(auc(p_model, y))},
            "constant": {"log_loss": r4(log_loss(p_const, y)), "brier": r4(np.mean((p_const - y) ** 2)),
                         "auc": r4(auc(p_const, y))},
            "one_minus_confidence_auc": r4(auc(1 - conf, y))}


def write_jsonl(records: list[dict], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    return path
