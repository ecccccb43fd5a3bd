"""Does vLLM reuse a frame's cache across its questions when the prompt arrives as prompt embeddings?

The grounded VLM asks five questions per frame; each request to vLLM carries the whole prompt again (``<s>``, the 80
vision tokens, the question) as one ``prompt_embeds`` tensor. This starts the shipped VLM's decoder behind vLLM
(``cepr.cloud.grounded_engines.GroundedVllm``, loopback), asks every task on ``--frames`` frames of a feature cache
(``cepr vlm build`` writes them; tokens as the cloud encoder made them), and reads vLLM's own prefix-cache counters
(``vllm:prefix_cache_queries_total`` and ``vllm:prefix_cache_hits_total`` on ``/metrics``) around the requests.

    python benchmarks/grounded_vllm_cache.py --model grounded-cloud \\
        --features runs/grounded-build/features/cloud-val-<sha>-<tag>.npz --frames 4
"""

from __future__ import annotations

import argparse
import json
import re
import time
import urllib.request

import numpy as np

COUNTERS = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "vllm:prompt_tokens_total")


def counters(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for name in COUNTERS:
        values = re.findall(rf"^{re.escape(name)}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.MULTILINE)
        out[name] = sum(float(v) for v in values)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="grounded-cloud", help="a shipped grounded VLM or a folder")
    ap.add_argument("--features", required=True, help="a feature cache of the VLM's encoder (cepr vlm features)")
    ap.add_argument("--frames", type=int, default=4)
    a = ap.parse_args()
    from cepr.cloud.grounded_engines import GroundedVllm
    from cepr.data.tasks import TASK_NAMES
    from cepr.edge.models import grounded_path
    from cepr.llm.grounded import load_prompts
    from cepr.training.grounded_train import FeatureSet

    folder = grounded_path(a.model)
    fs = FeatureSet.load(a.features)
    prompts, _ = load_prompts(folder)
    engine = GroundedVllm(folder)
    try:
        before, t0 = counters(engine.srv.port), time.perf_counter()
        n = 0
        for i in range(min(a.frames, len(fs))):
            engine.set_frame(fs.tokens[i].astype(np.float32))
            for task in TASK_NAMES:
                engine.next_logits(prompts.text_ids(task, None))
                n += 1
        seconds = time.perf_counter() - t0
        after = counters(engine.srv.port)
    finally:
        engine.close()
    delta = {k.removeprefix("vllm:"): after[k] - before[k] for k in COUNTERS}
    print(json.dumps({"model": a.model, "questions": n, **delta, "ms_per_answer": round(1e3 * seconds / n, 1),
                      "request_bytes": engine.bytes_sent}))


if __name__ == "__main__":
    main()
