"""``cepr vlm eval``: a grounded VLM's accuracy on a split, beside the reasoner its encoder feeds today.

For each model (a ``cepr vlm train-grounded`` folder), on the same frames and tasks: accuracy with its Wilson 95%
interval, the accuracy of the planner (edge encoders) or the reference expert (the cloud encoder) on the same
segmentation pass, the majority answer's (per task, the most common true answer of ``majority_split``), the
expected calibration error of the calibrated confidence, the exact McNemar test against the planner / expert
(two-sided, on the discordant pairs), the time per answer and the per-task accuracies.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np

from cepr.data.tasks import TASK_NAMES, get_task
from cepr.errors import CeprError, DatasetError
from cepr.llm.grounded import option_probabilities
from cepr.metrics.calibration import expected_calibration_error
from cepr.metrics.joint import wilson_interval
from cepr.training.grounded_train import FeatureSet, extract_features, load, load_prompts, option_logits


def mcnemar_p(a_right: list[bool], b_right: list[bool]) -> float:
    """Two-sided exact McNemar p-value of paired outcomes (a binomial test on the discordant pairs)."""
    b = sum(x and not y for x, y in zip(a_right, b_right))
    c = sum(y and not x for x, y in zip(a_right, b_right))
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def majority_answers(data: str, split: str) -> dict[str, str]:
    """Per task, the most common true answer on ``split`` (ties: the task's first listed answer)."""
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import ground_truth

    ds = CloudRoboticsDataset(find_index(data, split=split))
    counts = {t: Counter() for t in TASK_NAMES}
    for frame in ds.frames:
        for t, a in ground_truth(frame.label_path).items():  # the metrics' truth (the sidecar's cache when it has it)
            counts[t][a] += 1
    out = {}
    for t in TASK_NAMES:
        opts = get_task(t).answers
        out[t] = max(opts, key=lambda a: (counts[t][a], -opts.index(a)))
    return out


ENGINES = ("transformers", "llamacpp-f32", "llamacpp-q8_0", "llamacpp-q4_0", "vllm")


def engine_logits(folder: str, fs: FeatureSet, engine: str = "transformers", threads: int = 1):
    """({task: (frames, options) letter scores}, ms per answer, spec) of one engine on every frame of ``fs``; the
    time covers the decoder (and the projector), the frame's vision tokens counted once per frame. ``transformers``
    on a run folder batches frames (packed); on a shipped VLM, and for llama.cpp and vLLM (prompt embeddings through
    its OpenAI server, log-probabilities), one frame at a time as a server meets them."""
    from pathlib import Path

    from cepr.cloud.grounded_engines import open_engine

    prompts, spec = load_prompts(folder)
    if fs.meta["encoder"] != spec.encoder:
        raise CeprError(f"{folder} reads {spec.encoder}; these features come from {fs.meta['encoder']}")
    if engine not in ENGINES:
        raise CeprError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine == "transformers" and (Path(folder) / "decoder" / "config.json").is_file():
        import torch

        model, prompts, spec = load(folder)
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        logits = option_logits(model, fs, prompts, spec.with_summary, batch=1)
        return logits, 1e3 * (time.perf_counter() - t0) / (len(fs) * len(TASK_NAMES)), spec
    kind, _, quant = engine.partition("-")
    g = open_engine(folder, kind, quant or "q8_0", threads)
    out = {t: [] for t in TASK_NAMES}
    try:
        t0 = time.perf_counter()
        for i in range(len(fs)):
            g.set_frame(fs.tokens[i].astype(np.float32))
            for task in TASK_NAMES:
                row = g.next_logits(prompts.text_ids(task, fs.summaries[i] if spec.with_summary else None))
                out[task].append(row[prompts.option_ids(task)])
        ms = 1e3 * (time.perf_counter() - t0) / (len(fs) * len(TASK_NAMES))
    finally:
        g.close()
    return {t: np.array(v) for t, v in out.items()}, ms, spec


def engine_reasons(folder: str, fs: FeatureSet, quant: str = "q8_0", threads: int = 1) -> tuple[list[str], float]:
    """(one greedy risk summary per frame of ``fs``, ms per summary) from the llama.cpp decoder."""
    from cepr.llm.grounded import GroundedLlamaCpp

    prompts, _ = load_prompts(folder)
    g = GroundedLlamaCpp(folder, quant=quant, threads=threads)
    texts = []
    try:
        t0 = time.perf_counter()
        for i in range(len(fs)):
            g.set_frame(fs.tokens[i].astype(np.float32))
            texts.append(prompts.decode(g.generate(prompts.risk_ids, prompts.eos)))
        ms = 1e3 * (time.perf_counter() - t0) / max(len(fs), 1)
    finally:
        g.close()
    return texts, ms


def reason_figures(texts: list[str], fs: FeatureSet, actions: list[str]) -> dict:
    """The reason_* scores of risk summaries written for the frames of ``fs`` (their own action answers beside)."""
    from cepr.data.risk import RiskObject
    from cepr.metrics.reasons import score_reasons

    if fs.risk is None:
        raise CeprError("these features carry no risk objects: extract them again with `cepr vlm features`")
    truths = [[RiskObject(n, d, w) for n, d, w in r] for r in fs.risk]
    sc = score_reasons(texts, truths, actions)
    return {f"reason_hazard_{k}": round(sc[k], 4) for k in ("precision", "recall", "f1")} | {
        "reason_distance_mae_m": round(sc["distance_mae_m"], 3), "reason_action_agreement": round(
            sc["action_agreement"], 4), "reasons_written": sc["n"]}


def evaluate(folder: str, fs: FeatureSet, majority: dict[str, str], engine: str = "transformers",
             threads: int = 1, reference: dict | None = None) -> tuple[dict, dict]:
    """(the figures, the letter logits) of one model and engine on a FeatureSet of its encoder; ``reference``:
    another engine's letter logits (transformers') to report the agreement and the largest option log-probability
    gap."""
    logits, ms, spec = engine_logits(folder, fs, engine, threads)
    right, base_right, maj_right, conf = [], [], [], []
    per_task = {}
    agree, gap = [], 0.0
    for task in TASK_NAMES:
        opts = get_task(task).answers
        r_task = []
        for j, (row, truth, base) in enumerate(zip(logits[task], fs.truth, fs.baseline)):
            p = option_probabilities(row, spec.temperature)
            k = int(p.argmax())
            r_task.append(opts[k] == truth[task])
            conf.append(float(p[k]))
            base_right.append(base[task] == truth[task])
            maj_right.append(majority[task] == truth[task])
            if reference is not None:
                q = option_probabilities(reference[task][j], spec.temperature)
                agree.append(int(q.argmax()) == k)
                gap = max(gap, float(np.abs(np.log(p) - np.log(q)).max()))
        right += r_task
        per_task[task] = round(sum(r_task) / len(r_task), 4)
    n, k = len(right), sum(right)
    lo, hi = wilson_interval(k, n)
    row = {"model": str(folder), "side": spec.side, "encoder": spec.encoder, "with_summary": spec.with_summary,
           "engine": engine, "threads": threads, "n": n, "accuracy": round(k / n, 4),
           "accuracy_ci_low": round(lo, 4), "accuracy_ci_high": round(hi, 4),
           "planner_accuracy": round(sum(base_right) / n, 4), "majority_accuracy": round(sum(maj_right) / n, 4),
           "ece": round(expected_calibration_error(np.array(conf), np.array(right, float)), 4),
           "p_vs_planner": float(f"{mcnemar_p(right, base_right):.3g}"), "ms_per_answer": round(ms, 2),
           "temperature": spec.temperature, **{f"accuracy_{t}": a for t, a in per_task.items()}}
    if reference is not None:
        row["agreement_with_transformers"] = round(sum(agree) / len(agree), 4)
        row["max_logprob_gap"] = round(gap, 4)
    if spec.risk_summary and engine.startswith("llamacpp-"):
        texts, ms_reason = engine_reasons(folder, fs, engine.split("-", 1)[1], threads)
        acts = [get_task("action").answers[int(r.argmax())] for r in logits["action"]]
        row |= reason_figures(texts, fs, acts) | {"ms_per_reason": round(ms_reason, 2), "reason_example": texts[0]}
    return row, logits


def eval_models(folders: list[str] | None, data: str, split: str = "test", frames: int | None = None,
                majority_split: str = "val", progress: bool = True, engines=None, threads: int = 1) -> list[dict]:
    """One row per model and engine. ``folders``: shipped names or ``train-grounded`` folders (None or empty:
    every shipped grounded VLM); ``engines`` None: transformers where the folder has the decoder's ``decoder/``
    (a training run), else llama.cpp Q8_0 (a shipped folder). Every other engine's row carries its agreement
    with transformers when transformers is asked for or the folder has ``decoder/``."""
    from pathlib import Path

    from cepr.edge.models import SHIPPED_GROUNDED, grounded_path
    from cepr.llm.grounded import read_spec

    names = list(folders) if folders else list(SHIPPED_GROUNDED)
    cache: dict[str, FeatureSet] = {}
    try:
        majority = majority_answers(data, majority_split)
    except DatasetError:  # no val index (the real layout): the evaluated split's own majority
        majority = majority_answers(data, split)
    rows = []
    for name in names:
        f = str(grounded_path(name))
        has_hf = (Path(f) / "decoder" / "config.json").is_file()
        wanted = tuple(engines) if engines else (("transformers",) if has_hf else ("llamacpp-q8_0",))
        spec = read_spec(f)
        if spec.encoder not in cache:
            cache[spec.encoder] = extract_features(data, split, spec.encoder, frames, tuple(spec.grid), progress)
        fs = cache[spec.encoder]
        reference = None
        if (has_hf or "transformers" in wanted) and any(e != "transformers" for e in wanted):
            row, reference = evaluate(f, fs, majority, "transformers", threads)
            if "transformers" in wanted:
                rows.append(dict(row, model=name))
        for e in wanted:
            if e != "transformers" or reference is None:
                row = evaluate(f, fs, majority, e, threads, reference if e != "transformers" else None)[0]
                rows.append(dict(row, model=name))
    return rows
