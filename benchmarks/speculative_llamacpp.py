"""Speculative decoding with llama.cpp in-process, side by side with plain greedy decoding, on one machine.

For each setting (none; prompt lookup and a draft model, each at several numbers of speculative tokens) the same
prompts are completed greedily; it prints tokens/s, the speed-up over plain decoding measured in the same run, the
acceptance rate (drafted tokens the target kept, counted by ``cepr.llm.speculative.Counting``) and whether the output
equals plain greedy decoding. Settings take turns prompt by prompt (``--repeat`` rounds), so load on a shared
machine falls on all of them alike. Needs the llm extra.

    python benchmarks/speculative_llamacpp.py                                   # Gemma 3 270M, its own draft
    python benchmarks/speculative_llamacpp.py --model /tmp/tiny/tiny-f32.gguf --draft /tmp/tiny/draft-f32.gguf
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from cepr.bench.machine import format_machine, machine_info
from cepr.llm.speculative import generate, make_generator

# completions a robot's cloud model writes: prose about the scene, and structured text that repeats the prompt
PROMPTS = [
    ("Objects in the robot's path: person at 3.2 m, car at 7.5 m, pole at 9.1 m. Objects in the robot's path: "
     "person at 3.2 m, car at 7.5 m,"),
    ('Scene summary: {"objects": [["person", 3.2, -4.1], ["car", 7.5, 10.2], ["pole", 9.1, 1.5]]}. Repeat the '
     'objects as JSON: {"objects": [["person",'),
    "The robot walks through an industrial park. Ahead of it there is",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma3-270m", help="target: shipped name or GGUF path")
    ap.add_argument("--draft", default=None, help="draft GGUF sharing the target's tokenizer (default: the target)")
    ap.add_argument("--k", default="2,4,8", help="speculative tokens per step, comma-separated")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()

    ks = [int(x) for x in a.k.split(",")]
    # "none, all logits": plain decoding that keeps every position's logits, as verification must: its cost alone
    settings = [("none", 0), ("none, all logits", 0)] + [(m, k) for m in ("prompt-lookup", "draft") for k in ks]
    gens = {s: make_generator(a.model, s[0].split(",")[0], a.draft, k=max(s[1], 1), n_ctx=a.n_ctx,
                              threads=a.threads, logits_all=s[0] == "none, all logits") for s in settings}
    rows = {s: {"tokens": 0, "seconds": 0.0, "proposed": 0, "accepted": 0, "same": 0, "runs": 0} for s in settings}
    for _ in range(a.repeat):
        for p in PROMPTS:
            base = None
            for s in settings:
                g = generate(*gens[s], p, a.max_tokens)
                if s == ("none", 0):
                    base = g.tokens
                r = rows[s]
                r["tokens"] += len(g.tokens)
                r["seconds"] += g.seconds
                r["proposed"] += g.proposed
                r["accepted"] += g.accepted
                r["same"] += g.tokens == base
                r["runs"] += 1
    plain_tps = rows[("none", 0)]["tokens"] / rows[("none", 0)]["seconds"]
    print("machine: " + format_machine(machine_info()))
    print(f"target {a.model}, draft {a.draft or 'the target itself'}; {len(PROMPTS)} prompts x {a.repeat}, "
          f"{a.max_tokens} tokens each, greedy, {a.threads} thread(s)\n")
    print(f"{'method':<17} {'k':>3} {'tokens/s':>9} {'speed-up':>9} {'acceptance':>11} {'= plain greedy':>15}")
    out = []
    for (m, k), r in rows.items():
        tps = r["tokens"] / r["seconds"]
        acc = r["accepted"] / r["proposed"] if r["proposed"] else float("nan")
        print(f"{m:<17} {k or '-':>3} {tps:>9.1f} {tps / plain_tps:>8.2f}x {acc:>11.2f} {r['same']:>9}/{r['runs']}")
        out.append({"method": m, "k": k, "tokens_per_s": tps, "speedup": tps / plain_tps,
                    "acceptance": None if np.isnan(acc) else acc, "same_as_plain": r["same"], "runs": r["runs"]})
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"model": a.model, "draft": a.draft, "machine": machine_info(), "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
