"""Quality of our own vision-language model (``cepr vlm train``) on the test split, beside the planner and the
majority answer: per-task accuracy, latency per answer on ``--threads`` threads, size on disk, free-generation JSON
validity and the conversion check.

For each training output folder given with ``--run`` (``hf/``, ``vlm-<quant>.gguf``, ``mmproj-f32.gguf``):

* **FP32 (transformers)**: choice scoring in ``hf/`` (the most likely JSON answer prefix among the allowed answers,
  ``cepr.training.vlm_train.choice_scores``), the frame resized by the model's own image processor;
* **each GGUF (llama.cpp)**: the edge reasoner exactly as a job runs it (``reasoner: llamacpp`` with the vlm
  prompt, ``cepr.edge.llm_reasoner``), on ``--threads`` threads: its answers, its time per frame (image encoded once,
  five answers) and per answer;
* **free generation** on the first ``--gen-frames`` frames: greedy decoding until ``</s>``; the reply must parse
  as JSON with an allowed ``answer`` and a ``reason``; counted, and whether it agrees with the scored answer;
* **token for token**: transformers' greedy ``generate`` against llama.cpp's greedy decoding on the same frame
  and prompt: the share of replies whose token ids are identical (F32 should be all; quantized files are
  counted too).

The planner (shipped INT8 RFNet + calibrated planner) answers the same frames; the majority answer is the most
common true answer on the val split (on the test frames themselves where there is none: an optimistic baseline).
``--gemma`` adds the shipped Gemma 3 270M answering from the scene summary (slow: about 1.3 s per answer).

    python benchmarks/vlm_accuracy.py --run runs/vlm-small runs/vlm-base --frames 100 --json vlm.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import TASK_NAMES, answers_for_sample, get_task
from cepr.metrics.joint import wilson_interval


def majority(data: str, split_frames: list) -> dict[str, str]:
    try:
        ds = CloudRoboticsDataset(find_index(data, split="val"))
        truths = [answers_for_sample(s) for s in itertools.islice(ds, 300)]
    except Exception:  # noqa: BLE001 - no val split: the test frames' own majority (optimistic)
        truths = split_frames
    return {t: Counter(x[t] for x in truths).most_common(1)[0][0] for t in TASK_NAMES}


def mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 2)


class Tally:
    def __init__(self):
        self.right, self.n = Counter(), Counter()

    def add(self, task: str, ok: bool) -> None:
        self.right[task] += bool(ok)
        self.n[task] += 1

    def row(self) -> dict:
        k, n = sum(self.right.values()), sum(self.n.values())
        lo, hi = wilson_interval(k, n)
        return {"per_task": {t: round(self.right[t] / self.n[t], 3) for t in TASK_NAMES if self.n[t]},
                "accuracy": round(k / max(n, 1), 4), "ci95": [round(lo, 3), round(hi, 3)], "answers": n}


def parse_reply(text: str, task: str) -> tuple[bool, str | None]:
    """(valid, answer): a JSON object with an allowed ``answer`` and a string ``reason``."""
    try:
        obj = json.loads(text)
    except ValueError:
        return False, None
    if not isinstance(obj, dict):
        return False, None
    a = obj.get("answer")
    ok = a in get_task(task).answers and isinstance(obj.get("reason"), str)
    return ok, a if ok else None


def eval_run(run: Path, samples, summaries, truths, threads: int, gen_frames: int, log) -> dict:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cepr.edge.llm_reasoner import LlmReasoner
    from cepr.training.vlm_train import choice_scores, prompt_text

    torch.set_num_threads(threads)
    out = {"run": str(run), "sizes_mb": {"hf": mb(run / "hf"), "mmproj-f32.gguf": mb(run / "mmproj-f32.gguf")}}
    train_log = run / "train_log.json"
    if train_log.is_file():
        t = json.loads(train_log.read_text())
        out["training"] = {k: t.get(k) for k in ("steps", "minutes_total", "parameters", "validation", "stopped")}
    model = AutoModelForImageTextToText.from_pretrained(str(run / "hf"), dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(str(run / "hf"))
    tally, t0 = Tally(), time.perf_counter()
    for i, (s, truth) in enumerate(zip(samples, truths)):
        img = Image.fromarray(s.rgb)
        for t in TASK_NAMES:
            sc = choice_scores(model, proc, img, t)
            tally.add(t, get_task(t).answers[int(np.argmax(sc))] == truth[t])
        if (i + 1) % 25 == 0:
            log(f"  {run.name} FP32: {i + 1}/{len(samples)} frames, {time.perf_counter() - t0:.0f} s")
    out["fp32"] = {**tally.row(), "ms_per_frame": round(1e3 * (time.perf_counter() - t0) / len(samples), 1)}

    hf_tokens = {}  # (frame, task) -> transformers' greedy reply ids

    def hf_greedy(i: int, t: str):
        if (i, t) not in hf_tokens:
            enc = proc(text=[prompt_text(proc, t)], images=[Image.fromarray(samples[i].rgb)], return_tensors="pt")
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=96, do_sample=False)[0, enc["input_ids"].shape[1]:]
            ids = ids.tolist()
            eos = proc.tokenizer.eos_token_id
            hf_tokens[(i, t)] = ids[:ids.index(eos)] if eos in ids else ids
        return hf_tokens[(i, t)]

    out["gguf"] = {}
    for gguf in sorted(run.glob("vlm-*.gguf")):
        r = LlmReasoner(str(gguf), threads=threads, mmproj=str(run / "mmproj-f32.gguf"), prompt="vlm")
        tally, frame_ms = Tally(), []
        for s, summary, truth in zip(samples, summaries, truths):
            t1 = time.perf_counter()
            ans = r.answer(summary, image=s.rgb)
            frame_ms.append(1e3 * (time.perf_counter() - t1))
            for t in TASK_NAMES:
                tally.add(t, ans[t].answer == truth[t])
        gen = {"replies": 0, "valid_json": 0, "agrees_with_scored": 0, "correct": 0, "identical_to_transformers": 0}
        r.scorer._frame = None
        for i in range(min(gen_frames, len(samples))):
            from cepr.edge.llm_reasoner import _resized
            from cepr.llm.mtmd import encode_png

            png = encode_png(_resized(samples[i].rgb, r.image_size))
            scored = r.answer(summaries[i], image=samples[i].rgb)
            for t in TASK_NAMES:
                toks = r.scorer.generate(*r.prompt(summaries[i], t)[:2], image=png, max_tokens=96)
                ok, a = parse_reply(r.scorer.detokenize(toks), t)
                gen["replies"] += 1
                gen["valid_json"] += ok
                gen["agrees_with_scored"] += a == scored[t].answer
                gen["correct"] += a == truths[i][t]
                gen["identical_to_transformers"] += toks == hf_greedy(i, t)
        r.scorer.llm.close()
        if r.scorer.vision is not None:
            r.scorer.vision.close()
        ms = np.array(frame_ms)
        out["gguf"][gguf.name] = {**tally.row(), "size_mb": mb(gguf), "threads": threads,
                                  "ms_per_frame_p50": round(float(np.median(ms)), 1),
                                  "ms_per_answer_mean": round(float(ms.mean()) / len(TASK_NAMES), 1),
                                  "generation": gen}
        log(f"  {gguf.name}: accuracy {out['gguf'][gguf.name]['accuracy']}, "
            f"{out['gguf'][gguf.name]['ms_per_answer_mean']} ms/answer, generation {gen}")
    return out


def table(result: dict) -> str:
    head = "| model | " + " | ".join(TASK_NAMES) + " | all [95% CI] | ms/answer | size (MB) |"
    lines = [head, "|" + "---|" * (len(TASK_NAMES) + 4)]

    def row(name, r, ms="–", size="–"):
        cells = [f"{r['per_task'][t]:.3f}" for t in TASK_NAMES]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {r['accuracy']:.3f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | {ms} | {size} |")

    for run in result["runs"]:
        name = Path(run["run"]).name
        row(f"{name} FP32 (transformers)", run["fp32"], size=run["sizes_mb"]["hf"])
        for g, r in run["gguf"].items():
            row(f"{name} {g} (llama.cpp)", r, r["ms_per_answer_mean"],
                round(r["size_mb"] + run["sizes_mb"]["mmproj-f32.gguf"], 2))
    for k in ("planner", "gemma", "majority"):
        if k in result:
            row(k, result[k], result[k].get("ms_per_answer_mean", "–"))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--run", nargs="+", required=True, help="cepr vlm train output folder(s)")
    ap.add_argument("--data", default="datasets/cloud-robotics-synth")
    ap.add_argument("--split", default="test")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--gen-frames", type=int, default=20, help="frames for free generation and the token check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gemma", action="store_true", help="also the shipped Gemma 3 270M on the summary (slow)")
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()

    from cepr.edge.models import auto_model, calibration_for, model_path
    from cepr.edge.pipeline import EdgePipeline
    from cepr.edge.planner import Planner

    samples = list(itertools.islice(CloudRoboticsDataset(find_index(a.data, split=a.split)), a.frames))
    truths = [answers_for_sample(s) for s in samples]
    name = auto_model(samples[0].depth is not None)
    pipe = EdgePipeline(model_path(name), planner=Planner.from_file(calibration_for(model_path(name))))
    planner, summaries = Tally(), []
    for s, truth in zip(samples, truths):
        r = pipe.run_sample(s)
        summaries.append(r.summary)
        for t in TASK_NAMES:
            planner.add(t, r.answers[t].answer == truth[t])
    maj = majority(a.data, truths)
    mtally = Tally()
    for truth in truths:
        for t in TASK_NAMES:
            mtally.add(t, maj[t] == truth[t])
    result = {"data": a.data, "split": a.split, "frames": len(samples), "threads": a.threads,
              "planner": {**planner.row(), "edge_model": name}, "majority": mtally.row()}
    if a.gemma:
        from cepr.edge.llm_reasoner import LlmReasoner

        g, ms = Tally(), []
        llm = LlmReasoner("gemma3-270m", threads=a.threads)
        for s, summary, truth in zip(samples, summaries, truths):
            t1 = time.perf_counter()
            ans = llm.answer(summary)
            ms.append(1e3 * (time.perf_counter() - t1) / len(TASK_NAMES))
            for t in TASK_NAMES:
                g.add(t, ans[t].answer == truth[t])
        result["gemma"] = {**g.row(), "ms_per_answer_mean": round(float(np.mean(ms)), 1)}
    result["runs"] = [eval_run(Path(r), samples, summaries, truths, a.threads, a.gen_frames,
                               lambda m: print(m, flush=True)) for r in a.run]
    import platform

    import llama_cpp
    import transformers

    result["machine"] = {"cpu": platform.processor() or platform.machine(), "llama_cpp": llama_cpp.__version__,
                         "transformers": transformers.__version__}
    print(f"\n{len(samples)} {a.split} frames of {a.data}; {a.threads} thread(s)\n")
    print(table(result))
    for run in result["runs"]:
        for g, r in run["gguf"].items():
            print(f"{Path(run['run']).name} {g}: free generation {r['generation']}")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
