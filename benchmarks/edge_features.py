"""Cost of the edge result's ``features`` (cepr.edge.features): time per frame and bytes per samples.jsonl line.

Runs cepr's edge module (the shipped models, ``model: auto``) on the first frames of a split, one task per frame
round-robin as the default job asks them, and reports the time ``edge_features`` took (the edge result's
``timings_ms.features``: summary + mask -> features) and the JSON bytes the features add to each edge result. A
second pass times ``edge_features`` alone, repeated on each frame's summary and mask, to separate it from the
machine's load. Works on the real Cloud-Robotics layout (no depth: ground-plane distances) as on the synthetic
set.

    python benchmarks/edge_features.py --data datasets/cloud-robotics-synth --frames 100
    python benchmarks/edge_features.py --data datasets/Cloud-Robotics --frames 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="datasets/cloud-robotics-synth")
    ap.add_argument("--resolution", default="640x480")
    ap.add_argument("--split", default="test")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=20, help="repetitions of edge_features alone per frame")
    a = ap.parse_args(argv)

    from cepr.data.cloud_robotics import load_rgb, read_index
    from cepr.data.tasks import TASK_NAMES
    from cepr.edge.features import edge_features
    from cepr.edge.models import auto_model
    from cepr.edge.module import EdgeModule
    from cepr.records import EdgeResult, SampleRef

    frames = read_index(Path(a.data) / a.resolution / f"{a.split}-index.txt")[: a.frames]
    m = EdgeModule()
    m.load()
    inline, alone, extra_bytes, line_bytes, dist = [], [], [], [], set()
    for i, f in enumerate(frames):
        s = SampleRef(key=f.stem, rgb=str(f.rgb_path), label=str(f.label_path), task=TASK_NAMES[i % 5], index=i)
        r = m.predict(s)
        dist.add(r["distances"])
        inline.append(r["timings_ms"]["features"])
        js = EdgeResult.check(r, "edge").as_json()
        line_bytes.append(len(json.dumps(js)))
        extra_bytes.append(len(json.dumps(js)) - len(json.dumps({k: v for k, v in js.items() if k != "features"})))
        # edge_features alone, on this frame's summary and mask (the pipeline run again outside the module)
        depth = _depth(f)
        pipe = m.pipelines[auto_model(depth is not None)]
        rgb = load_rgb(s["rgb"])
        er = pipe(rgb, depth, _camera(f, rgb), tasks=(s["task"],))
        t0 = time.perf_counter()
        for _ in range(a.repeat):
            edge_features(er.summary, er.label, r["distribution"])
        alone.append(1e3 * (time.perf_counter() - t0) / a.repeat)

    def q(v, p):
        return float(np.percentile(v, p))

    print(f"{len(frames)} frames of {a.data} ({a.resolution}, {a.split}); distances: {', '.join(sorted(dist))}")
    print(f"features in the edge module (timings_ms.features): median {q(inline, 50):.3f} ms, p95 "
          f"{q(inline, 95):.3f} ms")
    print(f"edge_features alone ({a.repeat} repeats per frame): median {q(alone, 50):.3f} ms, p95 "
          f"{q(alone, 95):.3f} ms")
    print(f"JSON bytes the features add to an edge result: median {q(extra_bytes, 50):.0f}, max "
          f"{max(extra_bytes)}; whole edge result: median {q(line_bytes, 50):.0f}")
    return 0


def _depth(frame):
    from cepr.data.cloud_robotics import Frame, load_depth

    dp = Frame(frame.rgb_path, frame.label_path).depth_path
    return load_depth(dp) if dp is not None else None


def _camera(frame, rgb):
    from cepr.data.cloud_robotics import Frame, load_sidecar
    from cepr.data.tasks import camera_for

    sp = Frame(frame.rgb_path, frame.label_path).sidecar_path
    return camera_for(load_sidecar(sp) if sp is not None else None, rgb.shape[1], rgb.shape[0])


if __name__ == "__main__":
    raise SystemExit(main())
