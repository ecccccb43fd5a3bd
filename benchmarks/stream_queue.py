"""What the Redis Streams queue itself costs (cepr.stream): submit time per request (one Lua script: XADD, id
record, counters, shedding check) and the worker's round trip with the in-process reference expert, on a real local
redis-server.

    python benchmarks/stream_queue.py --requests 500

Prints JSON: submit_ms p50/p95, the expert's own time per answer, the worker's answers/s and the queue's share of
each answer (round trip minus the expert's time), and the counts (which must add up).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "stream"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    a = ap.parse_args()

    from stream_support import camera_meta, make_summary
    from tqdm import tqdm

    from cepr.cloud.client import create_backend
    from cepr.servers.redis_server import RedisServer
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    class Timed:
        def __init__(self, b):
            self.b, self.ms = b, []

        def infer(self, req):
            t0 = time.perf_counter()
            r = self.b.infer(req)
            self.ms.append(1e3 * (time.perf_counter() - t0))
            return r

    backend = Timed(create_backend("inprocess", {"expert_model": "cloud"}))
    summaries = [make_summary(person_col=i % 140, seed=i) for i in range(a.requests)]
    with RedisServer() as srv:
        q = CloudQueue(srv.url, maxlen=a.requests + 1)
        submit_ms = []
        for i, s in enumerate(tqdm(summaries, desc="submit")):
            t0 = time.perf_counter()
            q.submit(f"r{i}", s, "path_hazard", camera_meta())
            submit_ms.append(1e3 * (time.perf_counter() - t0))
        w = CloudWorker(srv.url, backend, "bench", block_ms=10, batch=10)
        t0 = time.perf_counter()
        with tqdm(total=a.requests, desc="answer") as bar:
            while q.counts()["in_flight"]:
                bar.update(w.run_once())
        wall = time.perf_counter() - t0
        c = q.counts()
    per_answer = 1e3 * wall / a.requests
    out = {"requests": a.requests, "redis": srv.binary, "summary_bytes_median": float(np.median([len(s) for s in summaries])),
           "submit_ms_p50": round(float(np.percentile(submit_ms, 50)), 3),
           "submit_ms_p95": round(float(np.percentile(submit_ms, 95)), 3),
           "expert_ms_mean": round(float(np.mean(backend.ms)), 3), "worker_answers_per_s": round(a.requests / wall, 1),
           "worker_ms_per_answer": round(per_answer, 3),
           "queue_ms_per_answer": round(per_answer - float(np.mean(backend.ms)), 3), "counts": c,
           "counts_add_up": c["accepted"] == c["answered"] + c["shed"] + c["dead_lettered"] + c["in_flight"]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
