"""LoRA fine-tuning (cepr llm finetune) on the tiny model: it learns, and its two adapters give transformers' numbers.

One module-scoped run trains the tiny Llama for a few steps on the tiny set's true summaries. Then: the loss went
down; the GGUF adapter in llama.cpp (F32 model, F32 KV cache) gives the logits of transformers with the LoRA
merged, and not the base model's (the q/k rows of B carry the converter's RoPE permutation); the reasoner applies
it (llm_lora); a stopped run resumed from its checkpoint ends where an uninterrupted run ends; bad inputs are
refused by name; the PEFT folder in vLLM gives transformers-merged's greedy tokens and log-probabilities.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from cepr.errors import CeprError

STEPS = 8


def _cfg(tiny_llm, tiny_data, out, **kw):
    from cepr.training.finetune import FinetuneConfig

    base = {"base": str(tiny_llm["dir"] / "hf"), "data": str(tiny_data), "out": str(out), "summaries": "truth",
            "frames": 2, "steps": STEPS, "lr": 1e-2, "warmup": 0, "r": 8, "alpha": 16, "seed": 0, "threads": 2,
            "progress": False, "checkpoint_every": 2}
    base.update(kw)
    return FinetuneConfig(**base)


@pytest.fixture(scope="module")
def trained(tiny_llm, tiny_data, tmp_path_factory):
    from cepr.training.finetune import finetune

    out = tmp_path_factory.mktemp("lora") / "run"
    return {"out": out, "log": finetune(_cfg(tiny_llm, tiny_data, out), log=lambda s: None)}


def _merged(tiny_llm, peft):
    from cepr.llm import lora
    from cepr.training.finetune import load_base

    model, tok, _ = load_base(str(tiny_llm["dir"] / "hf"))
    if peft is not None:
        model = lora.load_merged(model, peft).eval()
    return model.eval(), tok


def test_the_peft_folder_is_the_lora_update_and_merges_into_the_weights(tiny_llm, trained):
    """PEFT built and saved the adapter: its folder holds plain LoRA (B zero-initialised, so only training moved
    it), and merging it gives every target weight W + (alpha / r) B A, exactly our definition."""
    import torch

    from cepr.llm import lora
    from cepr.training.finetune import load_base

    spec, sd = lora.read_peft(trained["out"] / "peft")
    assert (spec.r, spec.alpha) == (8, 16.0)  # what _cfg asked for
    base, _, _ = load_base(str(tiny_llm["dir"] / "hf"))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merged = lora.load_merged(base, trained["out"] / "peft")
    after = merged.state_dict()
    n = 0
    for key in sd:
        if ".lora_A." not in key:
            continue
        a, b = torch.from_numpy(sd[key]), torch.from_numpy(sd[key.replace(".lora_A.", ".lora_B.")])
        assert b.abs().max() > 0  # trained: B left zero
        w = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        torch.testing.assert_close(after[w], before[w] + spec.scale * (b @ a), rtol=1e-5, atol=1e-6)
        n += 1
    assert n == len(sd) // 2 > 0
    assert not any("lora" in k for k in after)  # unwrapped: a plain model again


def _first_example(trained) -> dict:
    return json.loads((trained["out"] / "examples.jsonl").read_text().splitlines()[0])


def test_the_cached_frame_gives_the_full_forward_pass(tiny_llm, trained):
    import torch

    from cepr.training.finetune import answer_logits, encode

    model, tok = _merged(tiny_llm, None)
    frame, tasks, targets = encode(tok, _first_example(trained))
    with torch.no_grad():
        got = answer_logits(model, frame, tasks, targets)
        want = torch.cat([model(torch.tensor([frame + t + c])).logits[0, len(frame) + len(t) - 1:-1]
                          for t, c in zip(tasks, targets)])
    assert got.shape == want.shape == (sum(len(c) for c in targets), model.config.vocab_size)
    assert float((got - want).abs().max()) < 1e-4 * float(want.abs().max())


def test_loss_goes_down(tiny_llm, trained):
    import torch

    from cepr.training.finetune import example_loss

    log = trained["log"]
    assert log["steps"] == STEPS and log["stopped"] == "steps" and len(log["loss"]) == STEPS
    half = STEPS // 2
    assert np.mean(log["loss"][half:]) < 0.5 * np.mean(log["loss"][:half])
    example = _first_example(trained)
    with torch.no_grad():
        before = example_loss(_merged(tiny_llm, None)[0], _merged(tiny_llm, None)[1], example)[0].item()
        model, tok = _merged(tiny_llm, trained["out"] / "peft")
        after = example_loss(model, tok, example)[0].item()
    assert after < 0.5 * before


def _cpp_logits(path, ids, lora=None):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=2048, logits_all=True, verbose=False, n_threads=1, seed=0,
                type_k=0, type_v=0, lora_path=str(lora) if lora else None)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def test_gguf_adapter_in_llamacpp_gives_the_merged_models_logits(tiny_llm, trained):
    import torch

    from cepr.llm.lora import adapter_info
    from cepr.training.finetune import encode

    info = adapter_info(trained["out"] / "adapter.gguf")
    assert info["architecture"] == "llama" and info["alpha"] == 16
    model, tok = _merged(tiny_llm, trained["out"] / "peft")
    base, _ = _merged(tiny_llm, None)
    frame, tasks, targets = encode(tok, _first_example(trained))
    ids = frame + tasks[0] + targets[0]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
        base_logits = base(torch.tensor([ids])).logits[0].numpy()
    gguf = tiny_llm["dir"] / "tiny-f32.gguf"
    got = _cpp_logits(gguf, ids, trained["out"] / "adapter.gguf")
    scale = float(np.abs(want).max())
    assert float(np.abs(got - want).max()) < 1e-4 * scale
    # and it is not the base model: the adapter moved the logits far beyond that tolerance
    assert float(np.abs(want - base_logits).max()) > 0.05 * scale
    assert float(np.abs(_cpp_logits(gguf, ids) - base_logits).max()) < 1e-4 * scale


def test_the_reasoner_applies_llm_lora(tiny_llm, trained, tiny_data):
    from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
    from cepr.data.tasks import camera_for
    from cepr.edge.reasoners import create_reasoner
    from cepr.edge.summary import summarize

    s = CloudRoboticsDataset(find_index(tiny_data, split="test"))[0]
    h, w = s.label.shape
    summary = summarize(s.label, s.depth, camera_for(s.sidecar, w, h))
    gguf = str(tiny_llm["dir"] / "tiny-f32.gguf")
    plain = create_reasoner("llamacpp", llm_model=gguf, llm_threads=2).answer(summary)
    tuned = create_reasoner("llamacpp", llm_model=gguf, llm_threads=2,
                            llm_lora=str(trained["out"] / "adapter.gguf"))
    assert tuned.model_name == "tiny-f32.gguf+adapter.gguf"
    out = tuned.answer(summary)
    assert any(out[t].features["logprobs"] != plain[t].features["logprobs"] for t in out)


def test_resume_continues_from_the_checkpoint(tiny_llm, tiny_data, trained, tmp_path):
    """4 steps, then --resume to STEPS, ends with the LoRA weights of one run of STEPS steps."""
    from safetensors.numpy import load_file

    from cepr.training.finetune import finetune

    out = tmp_path / "resumed"
    first = finetune(_cfg(tiny_llm, tiny_data, out, steps=4), log=lambda s: None)
    assert first["steps"] == 4
    with pytest.raises(CeprError, match="already holds a checkpoint"):
        finetune(_cfg(tiny_llm, tiny_data, out), log=lambda s: None)
    with pytest.raises(CeprError, match="settings differ.*lr"):
        finetune(_cfg(tiny_llm, tiny_data, out, lr=1e-3), resume=True, log=lambda s: None)
    second = finetune(_cfg(tiny_llm, tiny_data, out), resume=True, log=lambda s: None)
    assert second["steps"] == STEPS and second["loss"] == trained["log"]["loss"]
    got = load_file(str(out / "peft" / "adapter_model.safetensors"))
    want = load_file(str(trained["out"] / "peft" / "adapter_model.safetensors"))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6)


def test_bad_inputs_are_refused_by_name(tiny_llm, tiny_data, trained, tmp_path):
    from cepr.cli import main
    from cepr.llm import lora
    from cepr.llm.llamacpp import LlamaCppScorer
    from cepr.training.finetune import finetune

    with pytest.raises(CeprError, match="neither a Hugging Face folder"):
        finetune(_cfg(tiny_llm, tiny_data, tmp_path / "a", base=str(tmp_path / "nowhere")))
    with pytest.raises(CeprError, match="training data"):
        finetune(_cfg(tiny_llm, tiny_data, tmp_path / "b", data=str(tmp_path / "no-data")))
    with pytest.raises(CeprError, match="no checkpoint"):
        finetune(_cfg(tiny_llm, tiny_data, tmp_path / "c"), resume=True)
    with pytest.raises(CeprError, match="last_layers 5: the model has 2"):
        finetune(_cfg(tiny_llm, tiny_data, tmp_path / "d", last_layers=5))
    with pytest.raises(CeprError, match="target.*nope"):
        lora.LoraSpec(targets=("q_proj", "nope"))
    assert main(["llm", "finetune", "--out", str(tmp_path / "e"), "--split", "test"]) == 2
    assert main(["llm", "finetune", "--out", str(tmp_path / "e"), "--rank", "0"]) == 2
    # the adapter side: a model GGUF is not an adapter; an adapter for another architecture is refused up front
    gguf = tiny_llm["dir"] / "tiny-f32.gguf"
    with pytest.raises(CeprError, match="not a LoRA adapter"):
        lora.adapter_path(gguf)
    with pytest.raises(CeprError, match="not found"):
        lora.adapter_path(tmp_path / "missing.gguf")
    spec, sd = lora.read_peft(trained["out"] / "peft")
    cfg = json.loads((tiny_llm["dir"] / "hf" / "config.json").read_text())
    other = lora.save_gguf(sd, spec, {**cfg, "model_type": "gemma3_text"}, tmp_path / "gemma-arch.gguf")
    with pytest.raises(CeprError, match="for a gemma3 model, tiny-f32.gguf is a llama model"):
        LlamaCppScorer(gguf, lora=other)
    # the job's edge settings, checked before any case runs
    from cepr.edge.module import _llm_options

    with pytest.raises(CeprError, match="edgemodel: llm_lora: LoRA adapter .*not found"):
        _llm_options("llamacpp", {"llm_lora": str(tmp_path / "nope.gguf")})
    with pytest.raises(CeprError, match="edgemodel: llm_lora: .*for a gemma3 model"):
        _llm_options("llamacpp", {"llm_model": str(gguf), "llm_lora": str(other)})
    with pytest.raises(CeprError, match="only apply to reasoner: llamacpp"):
        _llm_options("planner", {"llm_lora": str(trained["out"] / "adapter.gguf")})
    ok = _llm_options("llamacpp", {"llm_model": str(gguf), "llm_lora": str(trained["out"] / "adapter.gguf")})
    assert ok["llm_lora"] == str(trained["out"] / "adapter.gguf")


def test_the_shipped_gemma_adapter_resolves_by_name():
    from cepr.llm.lora import SHIPPED_LORAS, adapter_info, adapter_path

    for name in SHIPPED_LORAS:
        info = adapter_info(adapter_path(name))
        assert info["architecture"] == "gemma3" and info["tensors"] > 0


VLLM_SCRIPT = r"""
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.lora.request import LoRARequest
a = json.loads(sys.argv[1])
llm = LLM(model=a["model"], enable_lora=True, max_lora_rank=a["rank"], dtype="float32", enforce_eager=True,
          max_model_len=512, seed=0)
sp = SamplingParams(temperature=0.0, max_tokens=a["n"], logprobs=1)
out = {}
for name, req in (("lora", LoRARequest("cepr", 1, a["peft"])), ("base", None)):
    r = llm.generate([TokensPrompt(prompt_token_ids=a["ids"])], sp, lora_request=req)[0].outputs[0]
    out[name] = {"tokens": list(r.token_ids), "logprobs": [lp[t].logprob for t, lp in zip(r.token_ids, r.logprobs)]}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_peft_folder_in_vllm_gives_the_merged_models_greedy_tokens(tiny_llm, trained, tmp_path):
    import os

    import torch

    from cepr.llm.lora import read_peft
    from cepr.llm.vllm_env import find_vllm_python

    python = find_vllm_python(required=False)
    if python is None:
        pytest.skip("vLLM is not installed (scripts/install_vllm_cpu.sh .venv-vllm)")
    model, tok = _merged(tiny_llm, trained["out"] / "peft")
    base, _ = _merged(tiny_llm, None)
    example = _first_example(trained)
    ids = [tok.bos_token_id, *tok.encode(example["frame"] + example["tasks"][0][0], add_special_tokens=False)][:200]
    n = 8

    def greedy(m):
        seq, lps = list(ids), []
        with torch.no_grad():
            for _ in range(n):
                logp = torch.log_softmax(m(torch.tensor([seq])).logits[0, -1].double(), -1)
                t = int(logp.argmax())
                seq.append(t)
                lps.append(float(logp[t]))
        return seq[len(ids):], lps

    want, want_base = greedy(model), greedy(base)
    assert want[0] != want_base[0] or not np.allclose(want[1], want_base[1], atol=1e-3)
    spec, _ = read_peft(trained["out"] / "peft")
    arg = json.dumps({"model": str(tiny_llm["dir"] / "hf"), "peft": str(trained["out"] / "peft"), "ids": ids,
                      "n": n, "rank": spec.r})
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([python, "-c", VLLM_SCRIPT, arg], capture_output=True, text=True, timeout=600, env=env,
                       cwd=tmp_path, stdin=subprocess.DEVNULL, check=False)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, f"vLLM failed ({r.returncode}):\n{r.stderr[-3000:]}"
    got = json.loads(lines[-1][len("RESULT "):])
    assert got["lora"]["tokens"] == want[0]
    np.testing.assert_allclose(got["lora"]["logprobs"], want[1], atol=2e-3)
    assert got["base"]["tokens"] == want_base[0]
    np.testing.assert_allclose(got["base"]["logprobs"], want_base[1], atol=2e-3)
