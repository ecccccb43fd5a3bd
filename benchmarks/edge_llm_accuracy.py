"""Per-task accuracy of the edge's language-model reasoner beside the planner's and the majority answer.

Each test frame goes through the shipped edge perception (INT8 RFNet, scene summary); then the planner and the
llama.cpp reasoner (``reasoner: llamacpp``, the shipped Gemma 3 270M unless ``--llm`` names another GGUF; with
``--lora``, a LoRA adapter from ``cepr llm finetune`` applied to it) answer
all five tasks from that same summary. The majority baseline answers each task with its most common true answer
on the val split. Prints accuracy per task, the language model's mean confidence, and its time per answer on
``--threads`` threads. Needs the llm extra.

    python benchmarks/edge_llm_accuracy.py --data datasets/cloud-robotics-synth-full --frames 100
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import Counter

import numpy as np

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import TASK_NAMES, answers_for_sample
from cepr.edge.models import auto_model, calibration_for, model_path
from cepr.edge.pipeline import EdgePipeline
from cepr.edge.planner import Planner
from cepr.edge.reasoners import create_reasoner


def majority(data: str, frames: int) -> dict[str, str]:
    try:
        ds = CloudRoboticsDataset(find_index(data, split="val"))
    except Exception:  # noqa: BLE001 - a set without a val split: the majority is taken on the test frames
        return {}
    counts = {t: Counter() for t in TASK_NAMES}
    for s in itertools.islice(ds, frames):
        for t, a in answers_for_sample(s).items():
            counts[t][a] += 1
    return {t: c.most_common(1)[0][0] for t, c in counts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="datasets/cloud-robotics-synth-full")
    ap.add_argument("--split", default="test")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--llm", default="gemma3-270m", help="shipped name or GGUF path")
    ap.add_argument("--lora", default=None, help="GGUF LoRA adapter (cepr llm finetune) or a shipped adapter's name")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()

    samples = list(itertools.islice(CloudRoboticsDataset(find_index(a.data, split=a.split)), a.frames))
    name = auto_model(samples[0].depth is not None)
    pipe = EdgePipeline(model_path(name), planner=Planner.from_file(calibration_for(model_path(name))))
    llm = create_reasoner("llamacpp", llm_model=a.llm, llm_threads=a.threads, llm_lora=a.lora)
    maj = majority(a.data, 300)
    right = {k: Counter() for k in ("planner", "llm", "majority")}
    conf, ms, truths = Counter(), [], []
    t_start = time.perf_counter()
    for i, s in enumerate(samples):
        truth = answers_for_sample(s)
        truths.append(truth)
        r = pipe.run_sample(s)
        la = llm.answer(r.summary)
        for t in TASK_NAMES:
            right["planner"][t] += r.answers[t].answer == truth[t]
            right["llm"][t] += la[t].answer == truth[t]
            right["majority"][t] += maj.get(t) == truth[t]
            conf[t] += la[t].confidence
            ms.append(la[t].features["ms"])
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{len(samples)} frames, {time.perf_counter() - t_start:.0f} s", flush=True)
    n = len(samples)
    if not maj:  # no val split: the majority of these frames' own answers (an optimistic baseline)
        for t in TASK_NAMES:
            top = Counter(x[t] for x in truths).most_common(1)[0][0]
            right["majority"][t] = sum(x[t] == top for x in truths)
    print(f"\n{n} {a.split} frames of {a.data}; edge model {name}; language model {llm.model_name}, "
          f"{a.threads} thread(s); majority from the val split" + ("" if maj else " (none: these frames)"))
    print(f"{'task':<18} {'planner':>8} {'LLM':>8} {'majority':>9} {'LLM mean conf':>14}")
    for t in [*TASK_NAMES, "all"]:
        row = [sum(right[k].values()) / (n * len(TASK_NAMES)) if t == "all" else right[k][t] / n
               for k in ("planner", "llm", "majority")]
        c = sum(conf.values()) / (n * len(TASK_NAMES)) if t == "all" else conf[t] / n
        print(f"{t:<18} {100 * row[0]:>7.1f}% {100 * row[1]:>7.1f}% {100 * row[2]:>8.1f}% {c:>14.3f}")
    print(f"LLM time per answer (frame part cached across a frame's tasks): median {np.median(ms):.0f} ms, "
          f"p90 {np.percentile(ms, 90):.0f} ms; total {time.perf_counter() - t_start:.0f} s")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"frames": n, "data": a.data, "split": a.split, "llm": llm.model_name, "lora": a.lora, "threads": a.threads,
                       "accuracy": {k: {t: v / n for t, v in c.items()} for k, c in right.items()},
                       "llm_mean_confidence": {t: v / n for t, v in conf.items()},
                       "llm_ms": {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90))}}, f, indent=1)


if __name__ == "__main__":
    main()
