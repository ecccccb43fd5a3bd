"""vLLM with tensor parallelism on this CPU machine: the tiny model split over two worker processes, one per core.

What a multi-GPU server does with ``--tensor-parallel-size``, done here by vLLM's CPU build with two ranks that talk
over shared memory / gloo (docs/backends.md, "vLLM past one GPU"). vLLM's automatic thread binding refuses two
ranks on one NUMA node ("Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers"), so each rank is
given its core with ``VLLM_CPU_OMP_THREADS_BIND=0|1``. The split must not change greedy outputs (the reference:
the same checkpoint's greedy decoding by transformers in this process, which equals one vLLM rank's, 4 prompts x
64 tokens checked by hand), and the suite's ``openai`` backend must get answers, time to first token and token
counts from it as from one rank.
Pipeline parallelism (``--pipeline-parallel-size 2``) also runs here, but only compiled (with ``--enforce-eager``
its second stage fails on the first request), which takes 25-60 s to start: measured by hand, not tested.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

PROMPTS = ["The robot walks", "Is the path clear?", "a b c a b c a b c a b c a b"]
GREEDY = {"max_tokens": 32, "temperature": 0, "ignore_eos": True}


def _reference(model: str) -> list[str]:
    """Greedy continuations by transformers (float32, in this process), EOS ignored as vLLM's ignore_eos does."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(model)
    lm = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    n = GREEDY["max_tokens"]
    out = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(p, return_tensors="pt").input_ids
            gen = lm.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            out.append(tok.decode(gen[0, ids.shape[1]:]))
    return out


def _greedy(srv) -> list[str]:
    out = []
    for p in PROMPTS:
        body = json.dumps({"model": srv.model, "prompt": p, **GREEDY}).encode()
        req = urllib.request.Request(f"{srv.url}/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            out.append(json.loads(r.read())["choices"][0]["text"])
    return out


SHM = Path("/dev/shm")


def _shm_segments() -> set[str]:
    """vLLM's shared-memory segments between ranks (``vllm_dist_<id>-tp:...-cpushm_<rank>``)."""
    return {p.name for p in SHM.glob("vllm_dist_*")} if SHM.is_dir() else set()


def _titles(pids) -> list[str]:
    """Process titles (vLLM names its workers, e.g. VLLM::Worker_TP1) of ``pids``."""
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return out


@pytest.mark.slow
@pytest.mark.vllm
def test_tensor_parallel_two_ranks_give_the_same_greedy_answers(tiny_llm, monkeypatch):
    from cepr.llm.vllm_env import INSTALL_HINT, find_vllm_python

    if find_vllm_python(required=False) is None:
        pytest.skip(f"vLLM is not installed: {INSTALL_HINT}")
    model = str(tiny_llm["dir"] / "hf")
    reference = _reference(model)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")  # rank 0 on core 0, rank 1 on core 1
    before = _shm_segments()
    try:
        _check_tensor_parallel(model, reference)
    finally:
        # vLLM 0.32's CPU ranks leave their 4 MiB segments in /dev/shm when stopped: remove the ones made here
        for name in _shm_segments() - before:
            (SHM / name).unlink(missing_ok=True)


def _check_tensor_parallel(model: str, reference: list[str]) -> None:
    from cepr.cloud.client import create_backend
    from cepr.records import CloudRequest
    from cepr.servers.vllm_server import VllmServer

    with VllmServer(model, max_model_len=512, extra_args=["--tensor-parallel-size=2"]) as two:
        titles = " ".join(_titles(two.pids()))
        assert "Worker_TP0" in titles and "Worker_TP1" in titles, titles
        assert _greedy(two) == reference
        b = create_backend("openai", {"base_url": two.url, "model": two.model_id(), "max_tokens": 48,
                                      "timeout_s": 60, "answer_format": "json_schema"})
        r = b.infer(CloudRequest(task="action", prompt="Which action?", answers=("go", "stop", "slow"), key="k"))
        assert r.status == "ok" and r.answer in ("go", "stop", "slow"), r.reason  # the grammar holds it to the enum
        assert r.usage.counted == "server" and r.usage.completion_tokens > 0 and r.timings.ttft_ms > 0
