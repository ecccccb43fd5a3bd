"""Per-task answer accuracy of the edge planner and of the reference cloud expert, on every task of every frame.

The cloud side runs the real request path (``InProcessExpert``: the same messages as over HTTP, the image
JPEG-encoded by the payload settings) twice per question: with the image only, and with the image plus the
edge's scene summary (the expert then borrows the edge's depth-based distances, docs/cloud.md). "either" is the
share of questions where the edge or the cloud (image+summary) is right: the most a perfect dispatcher between
the two could reach. The target in DESIGN §7: the cloud alone at least matches the edge.

    python benchmarks/cloud_expert_accuracy.py --data datasets/cloud-robotics-synth --split test
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="datasets/cloud-robotics-synth")
    ap.add_argument("--split", default="test")
    ap.add_argument("--frames", type=int, default=None, help="first N frames of the split (default: all)")
    ap.add_argument("--edge", default="edge-int8", help="edge model (shipped name or ONNX path)")
    ap.add_argument("--calibration", default="edge-calibration")
    ap.add_argument("--cloud", default="cloud", help="cloud reference model (shipped name or ONNX path)")
    ap.add_argument("--quality", type=int, default=85, help="JPEG quality of the image sent")
    ap.add_argument("--min-object-confidence", type=float, default=None,
                    help="the expert's object filter (default: the shipped MIN_OBJECT_CONFIDENCE)")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)

    from tqdm import tqdm

    from cepr.cloud.client import InProcessExpert
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import TASK_NAMES, TaskParams, answers_for_sample, camera_for, get_task
    from cepr.edge.models import model_path
    from cepr.edge.pipeline import EdgePipeline
    from cepr.edge.planner import Planner
    from cepr.records import CloudRequest, PayloadConfig

    params = TaskParams()
    pipe = EdgePipeline(model_path(a.edge), Planner.from_file(model_path(a.calibration)))
    variants = {"image": "image", "image+summary": "summary+image"}
    experts = {k: InProcessExpert({"expert_model": a.cloud, "payload": PayloadConfig(mode=m, quality=a.quality)})
               for k, m in variants.items()}
    for ex in experts.values():
        if a.min_object_confidence is not None:
            ex.expert.min_object_confidence = a.min_object_confidence
    conf = next(iter(experts.values())).expert.min_object_confidence
    ds = CloudRoboticsDataset(find_index(a.data, split=a.split))
    n = min(len(ds), a.frames or len(ds))
    right = {k: {t: [] for t in TASK_NAMES} for k in ("edge", *variants, "either")}
    t0 = time.perf_counter()
    for s in tqdm(itertools.islice(ds, n), total=n, desc=f"{a.split} frames", unit="frame"):
        truth = answers_for_sample(s, params)
        h, w = s.rgb.shape[:2]
        cam = camera_for(s.sidecar, w, h)
        edge = pipe(s.rgb, s.depth, cam)
        for t in TASK_NAMES:
            task = get_task(t)
            right["edge"][t].append(edge.answers[t].answer == truth[t])
            req = CloudRequest(t, task.render_prompt(params), task.answers, summary=edge.summary.to_dict(),
                               image=s.rgb, camera=cam.to_dict(), key=str(s.frame.rgb_path))
            for k, ex in experts.items():
                r = ex.infer(req)
                right[k][t].append(r.status == "ok" and r.answer == truth[t])
            right["either"][t].append(right["edge"][t][-1] or right["image+summary"][t][-1])
    secs = time.perf_counter() - t0

    def acc(xs):
        return float(np.mean(xs)) if xs else float("nan")

    cols = list(right)
    print(f"\n{n} {a.split} frames of {a.data}, every task per frame ({secs:.0f} s); edge {a.edge}, cloud {a.cloud} "
          f"(min object confidence {conf})")
    print(f"{'task':<17}" + "".join(f"{c:>15}" for c in cols))
    out = {"frames": n, "split": a.split, "min_object_confidence": conf, "data": a.data, "edge": a.edge, "cloud": a.cloud, "accuracy": {}}
    for t in [*TASK_NAMES, "all"]:
        vals = {c: acc(list(itertools.chain(*right[c].values())) if t == "all" else right[c][t]) for c in cols}
        out["accuracy"][t] = vals
        print(f"{t:<17}" + "".join(f"{100 * vals[c]:>14.1f}%" for c in cols))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
