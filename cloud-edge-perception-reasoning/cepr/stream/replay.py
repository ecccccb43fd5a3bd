"""Send a data set's frames through the queue: the edge pipeline of a job YAML makes each frame's scene summary,
``CloudQueue.submit`` queues it, and the results that come back are scored against the frame's ground truth.

API::

    replay_frames(queue, yaml_path, data, frames=20, fps=0.0, image=False, wait_s=30.0, algorithm=None,
                  tasks=None, progress=True) -> dict

A smoke test of the whole path (edge pipeline, binary summary, stream, worker, cloud backend, results) and what
``cepr stream submit`` prints; the stream benchmark proper (sequences, faults, figures) is ``cepr bench stream``.
Works on the real Cloud-Robotics layout (no depth: the RGB-only model and ground-plane distances).
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from tqdm import tqdm

from cepr.data.cloud_robotics import find_index, load_sample, read_index
from cepr.data.tasks import TASK_NAMES, answers_for_sample, camera_for
from cepr.edge.models import auto_model
from cepr.edge.module import EdgeModule
from cepr.errors import CeprError
from cepr.stream.backend import module_hyperparameters


def _edge_pipeline(module, has_depth: bool):
    name = module.model if module.model_file is not None else auto_model(has_depth and module.use_depth)
    return module._pipeline(name)


def replay_frames(queue, yaml_path, data, frames: int = 20, fps: float = 0.0, image: bool = False,
                  wait_s: float = 30.0, algorithm: str | None = None, tasks=None, progress: bool = True) -> dict:

    tasks = list(tasks or TASK_NAMES)
    edge = EdgeModule(**module_hyperparameters(yaml_path, "edgemodel", algorithm))
    index = find_index(data)
    all_frames = read_index(index)
    if not all_frames:
        raise CeprError(f"{index}: no frames")
    chosen = all_frames[:frames]
    sent: dict[str, dict] = {}
    period = 1.0 / fps if fps > 0 else 0.0
    t_next = time.monotonic()
    it = chosen
    if progress:
        it = tqdm(chosen, desc="submit", unit="frame")
    for i, frame in enumerate(it):
        s = load_sample(frame)
        task = tasks[i % len(tasks)]
        h, w = s.label.shape
        camera = camera_for(s.sidecar, w, h)
        pipe = _edge_pipeline(edge, s.depth is not None)
        depth = s.depth if (s.depth is not None and edge.use_depth) else None
        r = pipe(s.rgb, depth, camera, tasks=(task,))
        local = r.answers[task]
        rid = f"{frame.stem}:{task}"
        jpg = None
        if image:
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(s.rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
            jpg = buf.tobytes() if ok else None
        meta = {"camera": camera.to_dict(), "edge_answer": local.answer, "edge_confidence": local.confidence,
                "frame": frame.stem}
        queue.submit(rid, r.summary_bytes, task, meta, image=jpg)
        sent[rid] = {"task": task, "edge": local.answer, "truth": answers_for_sample(s)[task],
                     "summary_bytes": len(r.summary_bytes), "image_bytes": len(jpg or b"")}
        if period:
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
    got = queue.wait_for(sent, wait_s)
    lat = np.array([g.latency_ms for g in got.values() if g.status == "ok"])
    ok = {k: g for k, g in got.items() if g.status == "ok"}
    out = {"frames": len(sent), "results": len(got), "statuses": {}, "counts": queue.counts(),
           "edge_accuracy": float(np.mean([v["edge"] == v["truth"] for v in sent.values()])),
           "cloud_accuracy": float(np.mean([ok[k].answer == sent[k]["truth"] for k in ok])) if ok else None,
           "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
           "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
           "summary_bytes_median": float(np.median([v["summary_bytes"] for v in sent.values()])),
           "image_bytes_median": float(np.median([v["image_bytes"] for v in sent.values()])),
           "data": str(index)}
    for g in got.values():
        out["statuses"][g.status] = out["statuses"].get(g.status, 0) + 1
    edge.cleanup()
    return out
