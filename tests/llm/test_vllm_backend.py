"""The `vllm` cloud backend: vLLM's offline engine (vllm.LLM) in one worker subprocess with vLLM's python.

The settings checks run without vLLM. The rest share one backend per module (the tiny model, the target as its
own speculative draft, k = 2) and a cloud-only job that starts its own.
"""

from __future__ import annotations

import threading

import pytest

from cepr.errors import CeprError
from cepr.records import CloudRequest

SUMMARY = {"image": [640, 480], "distances": "depth", "risk": 0.4, "uncertainty": 0.1, "corridor_m": [0.6, 1.2],
           "free_m": [None, 3.2, None], "object_fields": ["class", "distance_m"], "objects": [["person", 3.2]],
           "objects_omitted": 0}
MAX_TOKENS = 256  # the schema lets the reason run to 160 characters: room for the whole JSON


def _requests() -> list[CloudRequest]:
    """One request per task, with the task's real prompt and answers."""
    from cepr.data.tasks import TASKS, TaskParams, get_task

    out = []
    for i, name in enumerate(TASKS):
        t = get_task(name)
        out.append(CloudRequest(task=t.name, prompt=t.render_prompt(TaskParams()), answers=t.answers,
                                summary=SUMMARY, key=f"s{i}"))
    return out


@pytest.fixture
def hf_folder(tmp_path):
    """A folder that passes the backend's up-front check (config.json), for the checks that fail before vLLM."""
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def test_bad_settings_are_refused_before_vllm_starts(hf_folder, tmp_path):
    from cepr.cloud.client import create_backend
    from cepr.records import PayloadConfig

    with pytest.raises(CeprError, match="text-only.*payload: summary"):
        create_backend("vllm", {"model": str(hf_folder), "payload": PayloadConfig(mode="summary+image")})
    with pytest.raises(ValueError, match="base_url"):  # extra="forbid": an unknown key names itself
        create_backend("vllm", {"model": str(hf_folder), "base_url": "http://x/v1"})
    with pytest.raises(CeprError, match="not a local Hugging Face folder"):
        create_backend("vllm", {"model": str(tmp_path / "nowhere")})
    with pytest.raises(CeprError, match="vllm_python .*does not exist"):
        create_backend("vllm", {"model": str(hf_folder), "vllm_python": str(tmp_path / "no-python")})
    with pytest.raises(ValueError, match="prompt_lookup_mx"):  # the speculative mapping is checked too
        create_backend("vllm", {"model": str(hf_folder), "speculative": {"method": "ngram", "prompt_lookup_mx": 4}})
    with pytest.raises(CeprError, match="not a LoRA adapter folder"):
        create_backend("vllm", {"model": str(hf_folder), "lora": str(tmp_path)})


def test_the_runner_checks_the_settings_up_front(hf_folder):
    from cepr.cloud.module import CloudModule

    with pytest.raises(CeprError, match="max_tokns"):
        CloudModule.check_hyperparameters(backend="vllm", model=str(hf_folder), payload="summary", max_tokns=3)
    CloudModule.check_hyperparameters(backend="vllm", model=str(hf_folder), payload="summary", max_tokens=3)


@pytest.fixture(scope="module")
def vllm_python():
    from cepr.llm.vllm_env import INSTALL_HINT, find_vllm_python

    python = find_vllm_python(required=False)
    if python is None:
        pytest.skip(f"vLLM is not installed: {INSTALL_HINT}")
    return python


@pytest.fixture(scope="module")
def backend(tiny_llm, vllm_python):
    from cepr.cloud.client import create_backend

    hf = str(tiny_llm["dir"] / "hf")
    b = create_backend("vllm", {"model": hf, "max_model_len": 1024, "max_tokens": MAX_TOKENS,
                                "speculative": {"method": "draft_model", "model": hf, "num_speculative_tokens": 2}})
    yield b
    b.close()
    assert b.engine.proc.poll() is not None  # the worker is gone


@pytest.mark.slow
@pytest.mark.vllm
def test_json_schema_answers_are_allowed_answers(backend):
    reqs = _requests()
    before = backend.spec_counters()
    results = backend.answer_batch(reqs)  # one LLM.chat call for all of them
    after = backend.spec_counters()
    assert backend.batch_sizes[len(reqs)] >= 1
    # vLLM drops drafts that break the grammar before verification and does not count them. The self-draft
    # proposes the target's unconstrained choice: most of it breaks the JSON grammar for this random model (far
    # fewer draft tokens than the k = 2 per step it would propose), and what fits is what the target picks
    drafted = after["draft_tokens"] - before["draft_tokens"]
    generated = sum(r.usage.completion_tokens for r in results)
    print(f"json_schema: {drafted} draft tokens counted, {generated} tokens generated")
    assert drafted < generated and after["accepted_tokens"] - before["accepted_tokens"] == drafted
    assert all(" " not in r.raw_text.split('"reason"')[0] for r in results)  # compact_json: no blanks between tokens
    for req, r in zip(reqs, results, strict=True):
        assert r.status == "ok", r.reason
        assert r.answer in req.answers
        assert r.usage.counted == "server" and r.usage.prompt_tokens > 100 and 0 < r.usage.completion_tokens
        assert r.usage.completion_tokens <= MAX_TOKENS
        assert r.timings.ttft_ms is not None and 0 < r.timings.ttft_ms <= r.timings.total_ms
        assert r.model == "hf" and r.bytes_up > 0


@pytest.mark.slow
@pytest.mark.vllm
def test_greedy_text_with_self_speculation_equals_transformers(backend, tiny_llm):
    """The target as its own draft keeps every draft (acceptance exactly 1), and the greedy text, drafts and all,
    is what transformers generates for the same chat, token for token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reqs = _requests()[:2]
    before = backend.spec_counters()
    results = backend.answer_batch(reqs, answer_format="none")
    after = backend.spec_counters()
    drafted = after["draft_tokens"] - before["draft_tokens"]
    assert drafted > 0 and after["accepted_tokens"] - before["accepted_tokens"] == drafted

    hf = tiny_llm["dir"] / "hf"
    tok = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(hf, local_files_only=True, torch_dtype=torch.float32).eval()
    for req, r in zip(reqs, results, strict=True):
        ids = tok.apply_chat_template(backend.messages(req), add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        assert r.usage.prompt_tokens == len(ids)  # the same chat template, no second <s>
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        gen = out[0, len(ids):].tolist()
        assert r.usage.completion_tokens == len(gen)
        assert r.raw_text == tok.decode(gen, skip_special_tokens=True)
        assert r.status in ("ok", "error")  # random weights: free text rarely parses, and is reported so


@pytest.mark.slow
@pytest.mark.vllm
def test_concurrent_requests_are_batched_and_answer_as_alone(backend):
    reqs = _requests()[:3]
    alone = [backend.answer_batch([r])[0] for r in reqs]
    sizes_before = dict(backend.batch_sizes)
    got: list = [None] * len(reqs)
    go = threading.Barrier(len(reqs))

    def ask(i):
        go.wait()
        got[i] = backend.infer(reqs[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    new = {k: v - sizes_before.get(k, 0) for k, v in backend.batch_sizes.items() if v > sizes_before.get(k, 0)}
    assert sum(k * v for k, v in new.items()) == len(reqs) and max(new) > 1  # some arrived together
    assert [r.raw_text for r in got] == [r.raw_text for r in alone]


@pytest.mark.slow
@pytest.mark.vllm
def test_cloud_only_job_on_the_vllm_backend(tiny_llm, tiny_data, vllm_python, tmp_path):
    from cepr.data.tasks import get_task
    from helpers import run_one_algorithm

    hf = str(tiny_llm["dir"] / "hf")
    lines = run_one_algorithm(tmp_path, tiny_data, "cloud-only", replace_cloud=True,
                              cloud={"backend": "vllm", "model": hf, "max_model_len": 2048, "max_tokens": MAX_TOKENS,
                                     "payload": "summary", "link": "4g",
                                     "speculative": {"method": "ngram", "num_speculative_tokens": 2}})
    assert len(lines) == 3
    for rec in lines:
        c = rec["cloud"]
        assert c["status"] == "ok" and c["cloud_answer"] in get_task(rec["task"]).answers
        assert c["model"] == "hf" and c["tokens_counted"] == "server"
        assert c["ttft_ms"] > 0 and c["inter_token_ms"] > 0
        # the engine's speculative counters around each request (the spec_acceptance metric reads them); the
        # random model's drafts rarely fit the JSON grammar, so few or none are proposed
        assert c["spec_after"]["draft_tokens"] >= c["spec_before"]["draft_tokens"]


@pytest.mark.slow
@pytest.mark.vllm
def test_in_process_when_this_python_imports_vllm(backend, tiny_llm, vllm_python, tmp_path):
    """A GPU cluster's single environment: cepr running in a python that imports vllm keeps the engine in its own
    process (no worker), and answers as the worker does. Here that python is vLLM's venv with cepr's source on its
    path, plus tenacity (pure Python, which cepr's openai backend imports and that venv lacks) linked from this one."""
    import json
    import os
    import subprocess
    from pathlib import Path

    import tenacity

    import cepr

    (tmp_path / "tenacity").symlink_to(Path(tenacity.__file__).parent)

    req = _requests()[0]
    script = (
        "import json, sys\n"
        "from cepr.records import CloudRequest\n"
        "from cepr.cloud.client import create_backend\n"
        f"b = create_backend('vllm', {{'model': {str(tiny_llm['dir'] / 'hf')!r}, 'max_model_len': 2048, "
        f"'max_tokens': {MAX_TOKENS}, 'answer_format': 'none'}})\n"
        f"req = CloudRequest(task={req.task!r}, prompt={req.prompt!r}, answers={tuple(req.answers)!r}, "
        f"summary=json.loads({json.dumps(SUMMARY)!r}), key='s0')\n"
        "r = b.answer_batch([req])[0]\n"
        "b.close()\n"
        "print('RESULT ' + json.dumps({'where': b.where, 'text': r.raw_text, 'prompt_tokens': r.usage.prompt_tokens}))\n")
    src = Path(cepr.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{tmp_path}"}
    p = subprocess.run([vllm_python, "-c", script], env=env, capture_output=True, text=True, timeout=600, check=False)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    assert p.returncode == 0 and lines, p.stderr[-3000:]
    got = json.loads(lines[-1][len("RESULT "):])
    want = backend.answer_batch([req], answer_format="none")[0]
    assert got["where"] == "in-process"
    assert (got["text"], got["prompt_tokens"]) == (want.raw_text, want.usage.prompt_tokens)
