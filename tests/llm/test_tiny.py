"""``cepr models tiny``: deterministic builds, Hugging Face and GGUF files that load, the tokenizer they share."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_build_with_the_same_seed_is_byte_identical_and_another_seed_is_not(tiny_llm, tmp_path):
    # another process, another hash seed, through the command line
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-m", "cepr", "models", "tiny", "--out", str(tmp_path / "again")],
                   check=True, env=env, capture_output=True)
    first, again = tiny_llm["dir"], tmp_path / "again"
    for name in ("tiny-f32.gguf", "tiny-q8_0.gguf", "draft-f32.gguf", "draft-q8_0.gguf", "tokenizer.json",
                 "hf/tokenizer.json", "hf/model.safetensors", "draft/hf/model.safetensors", "manifest.json"):
        assert _sha(first / name) == _sha(again / name), name
    from cepr.training.tiny_set import build_tiny

    other = build_tiny(tmp_path / "seed1", seed=1, quant=("f32",))
    assert other["sha256"]["tiny-f32.gguf"] != tiny_llm["manifest"]["sha256"]["tiny-f32.gguf"]


def test_the_manifest_lists_every_file_with_its_hash(tiny_llm):
    m, d = tiny_llm["manifest"], tiny_llm["dir"]
    assert json.loads((d / "manifest.json").read_text()) == m
    for rel, digest in m["sha256"].items():
        assert _sha(d / rel) == digest, rel
    assert m["models"]["target"]["layers"] == 2 and m["models"]["draft"]["layers"] == 1
    assert m["models"]["target"]["head_dim"] >= 32


def test_the_tokenizer_is_byte_level_bpe_with_the_special_tokens_and_a_chat_template(tiny_llm):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(tiny_llm["dir"] / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(tiny_llm["dir"] / "hf")
    assert [raw.token_to_id(t) for t in ("<s>", "</s>", "<pad>", "<unk>")] == [0, 1, 2, 3]
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id) == (0, 1, 2, 3)
    assert len(hf) == raw.get_vocab_size() == tiny_llm["manifest"]["vocab_size"]
    text = 'Scene summary: {"objects":[["person",2.5]]} -> {"answer": "stop"} ünïcödé ✓ 3+'
    ids = hf(text)["input_ids"]
    assert ids[0] == 0 and ids == raw.encode(text).ids
    assert hf.decode(ids, skip_special_tokens=True) == text  # byte-level: every string round-trips
    from cepr.data.tasks import TASKS

    prompt = TASKS["action"].render_prompt()
    assert len(raw.encode(prompt).ids) < len(prompt) / 3  # it learned the suite's words
    chat = hf.apply_chat_template([{"role": "user", "content": "Answer yes or no."}], tokenize=False,
                                  add_generation_prompt=True)
    assert chat == "<s><|user|>\nAnswer yes or no.</s>\n<|assistant|>\n"


def test_the_hugging_face_folders_load_and_have_the_stated_shapes(tiny_llm):
    import torch
    from transformers import AutoModelForCausalLM

    for sub, layers in (("hf", 2), ("draft/hf", 1)):
        model = AutoModelForCausalLM.from_pretrained(tiny_llm["dir"] / sub).eval()
        c = model.config
        assert (c.model_type, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.head_dim,
                c.max_position_embeddings) == ("llama", 64, layers, 2, 32, 2048)
        with torch.no_grad():
            logits = model(torch.tensor([[0, 10, 20, 30]])).logits
        assert logits.shape == (1, 4, tiny_llm["manifest"]["vocab_size"]) and torch.isfinite(logits).all()


def test_the_gguf_files_carry_llama_and_gpt2_tokenizer_metadata_and_llama_cpp_tensor_names(tiny_llm):
    import gguf

    d, m = tiny_llm["dir"], tiny_llm["manifest"]

    def field(r, key):  # a scalar or string value
        return r.fields[key].contents()

    r = gguf.GGUFReader(d / "tiny-f32.gguf")
    assert field(r, "general.architecture") == "llama"
    assert field(r, "llama.context_length") == 2048
    assert field(r, "llama.embedding_length") == 64
    assert field(r, "llama.block_count") == 2
    assert field(r, "llama.feed_forward_length") == 128
    assert field(r, "llama.attention.head_count") == 2
    assert field(r, "llama.attention.head_count_kv") == 1
    assert field(r, "llama.rope.freq_base") == pytest.approx(10000.0)
    assert field(r, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert field(r, "tokenizer.ggml.model") == "gpt2"
    assert field(r, "tokenizer.ggml.bos_token_id") == 0 and field(r, "tokenizer.ggml.eos_token_id") == 1
    assert field(r, "tokenizer.ggml.padding_token_id") == 2 and field(r, "tokenizer.ggml.add_bos_token") is True
    tokens = r.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == m["vocab_size"]
    assert len(r.fields["tokenizer.ggml.merges"].data) > 500
    names = {t.name for t in r.tensors}
    blk = {f"blk.{i}.{n}.weight" for i in range(2) for n in ("attn_norm", "attn_q", "attn_k", "attn_v",
                                                             "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                                                             "ffn_down")}
    assert names == blk | {"token_embd.weight", "output_norm.weight", "output.weight"}
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in r.tensors)
    q = gguf.GGUFReader(d / "tiny-q8_0.gguf")
    types = {t.name: t.tensor_type for t in q.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_the_rope_permutation_interleaves_each_heads_halves_and_inverts():
    from cepr.llm.gguf_export import permute_rope_rows, unpermute_rope_rows

    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)  # 2 heads of 8 rows, 3 columns
    p = permute_rope_rows(w, 2)
    # head 0: rows 0..3 are the first halves, 4..7 the second: interleaved as 0,4,1,5,2,6,3,7
    assert [int(r[0]) // 3 for r in p[:8]] == [0, 4, 1, 5, 2, 6, 3, 7]
    assert [int(r[0]) // 3 for r in p[8:]] == [8, 12, 9, 13, 10, 14, 11, 15]
    assert np.array_equal(unpermute_rope_rows(p, 2), w)


def test_the_converter_refuses_what_it_does_not_cover(tiny_llm, tmp_path):
    import shutil

    from cepr.errors import CeprError
    from cepr.llm.gguf_export import export_gguf

    with pytest.raises(CeprError, match="quantization"):
        export_gguf(tiny_llm["dir"] / "hf", tmp_path / "x.gguf", "q4_k")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_llm["dir"] / "hf", bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "mistral"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CeprError, match="llama only"):
        export_gguf(bad, tmp_path / "x.gguf")


def test_cepr_models_help_and_light_imports():
    out = subprocess.run([sys.executable, "-m", "cepr", "models", "tiny", "--help"], check=True,
                         capture_output=True, text=True).stdout
    assert "--out" in out and "--seed" in out and "deterministically" in out
    code = ("import sys, cepr.cli, cepr.cli.models, cepr.llm.tiny, cepr.llm.gguf_export, cepr.training.corpus\n"
            "cepr.cli.build_parser()\n"
            "heavy = {'torch', 'transformers', 'tokenizers', 'gguf', 'llama_cpp', 'safetensors'}\n"
            "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
