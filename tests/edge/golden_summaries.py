"""Golden answers and scene summaries on the default job's test split, to keep the fast summary exact.

``python tests/edge/golden_summaries.py [DATA_DIR]`` renders the default job's 150 test frames (or reads them
from DATA_DIR) and writes ``tests/edge/golden/summaries-bench-test.json.gz``: per frame, for each way the suite
builds a summary, the summary's bytes and the planner's answers, and the ground-truth answers with and without
depth. ``test_golden_summaries.py`` rebuilds the same records and compares them field by field.

The network-fed records depend on ONNX Runtime's kernels, which differ between CPUs (VNNI or not), so each
holds a hash of the logits it was built from: the comparison for a frame is exact wherever this machine's
network reproduces those logits, and the truth-fed records are compared on every machine.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden" / "summaries-bench-test.json.gz"
# the default job's data set (benchmarkingjob.yaml's testenv): the test frames of a 1000-frame seed-0 set
DATASET = {"frames": 1000, "seed": 0, "splits": ("test",), "resolutions": ("640x480",)}


def render(out: Path) -> Path:
    from cepr.data.synth import generate_dataset

    generate_dataset(out, DATASET["frames"], seed=DATASET["seed"], splits=DATASET["splits"],
                     resolutions=DATASET["resolutions"], workers=2, progress=False)
    return out


def _answers(answers: dict) -> dict:
    return {t: [a.answer, a.confidence] for t, a in sorted(answers.items())}


def _record(summary, answers, logits=None) -> dict:
    # the coarse mask is kept as a hash (most of the bytes); everything else as the summary's own wire form
    rec = {"summary": base64.b64encode(replace(summary, mask_rle=b"").to_bytes()).decode(),
           "mask_sha": hashlib.sha256(summary.mask_rle).hexdigest()[:16], "answers": _answers(answers)}
    if logits is not None:
        rec["logits_sha"] = hashlib.sha256(logits.tobytes()).hexdigest()[:16]
    return rec


def _kept_logits(model) -> dict:
    """Keep the raw network output of ``model``'s last pass (``["last"]``), so a frame's logits are hashed from the
    pass its summary came from instead of a second pass (the model runs once per frame and way)."""
    kept, run = {}, model.run

    def keep(feed):
        kept["last"] = out = run(feed)
        return out

    model.run = keep
    return kept


def build(data: Path, limit: int | None = None) -> dict:
    """{frame id: {variant: record}} for the test frames under ``data``."""
    from cepr.cloud.expert import MIN_OBJECT_CONFIDENCE
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import camera_for, compute_answers
    from cepr.edge.models import calibration_for, model_path
    from cepr.edge.pipeline import EdgePipeline
    from cepr.edge.planner import Planner
    from cepr.edge.runtime import SegmentationModel
    from cepr.edge.summary import summarize

    planner = Planner.from_file(calibration_for(model_path("edge-int8")))
    rgb_planner = Planner.from_file(calibration_for(model_path("edge-rgb-int8")))
    edge = EdgePipeline(model_path("edge-int8"), planner=planner)
    edge_rgb = EdgePipeline(model_path("edge-rgb-int8"), planner=rgb_planner, depth_for_distance=False)
    cloud = SegmentationModel(model_path("cloud"))
    edge_logits, edge_rgb_logits, cloud_logits = _kept_logits(edge.model), _kept_logits(edge_rgb.model), _kept_logits(cloud)
    plain = Planner()
    frames = {}
    ds = CloudRoboticsDataset(find_index(data, split="test"))
    for i, s in enumerate(ds):
        if limit is not None and i >= limit:
            break
        h, w = s.label.shape
        cam = camera_for(s.sidecar, w, h)
        rec = {}
        for name, pipe, depth, kept in (("edge_int8", edge, s.depth, edge_logits),
                                        ("edge_rgb_int8", edge_rgb, None, edge_rgb_logits)):
            r = pipe(s.rgb, depth, cam)
            rec[name] = _record(r.summary, r.answers, kept["last"])
        seg = cloud(s.rgb)
        cs = summarize(seg.label, None, cam, probs=seg.probs, params=plain.params, mask_size=None,
                       min_confidence=MIN_OBJECT_CONFIDENCE)
        rec["cloud_expert"] = _record(cs, plain.answer(cs), cloud_logits["last"])
        for name, depth in (("truth_depth", s.depth), ("truth_ground", None)):
            ts = summarize(s.label, depth, cam, params=plain.params)
            rec[name] = _record(ts, plain.answer(ts))
            rec[name]["truth"] = dict(sorted(compute_answers(s.label, depth, cam).items()))
        frames[f"{s.frame.rgb_path.parent.name}/{s.frame.stem}"] = rec
    return frames


def load() -> dict:
    with gzip.open(GOLDEN, "rt") as f:
        return json.load(f)


def main(argv: list[str]) -> None:
    import tempfile

    if argv:
        data = Path(argv[0])
    else:
        data = render(Path(tempfile.mkdtemp(prefix="cepr-golden-")) / "synth")
    frames = build(data)
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    doc = {"dataset": {**DATASET, "splits": list(DATASET["splits"]), "resolutions": list(DATASET["resolutions"])},
           "frames": frames}
    with gzip.open(GOLDEN, "wt") as f:
        json.dump(doc, f, separators=(",", ":"), sort_keys=True)
    print(f"wrote {GOLDEN} ({len(frames)} frames, {GOLDEN.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
