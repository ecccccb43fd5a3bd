"""Hugging Face Llama folder -> GGUF (F32 or Q8_0), written with the ``gguf`` package's ``GGUFWriter``.

A LLaVA folder converts too: its decoder (``text_config``, ``model.language_model.*`` and ``lm_head``); its
vision tower and projector go to a separate llama.cpp clip GGUF (``cepr.llm.vlm.export_mmproj``).

Covers what ``cepr models tiny`` builds: a ``LlamaForCausalLM`` in safetensors (no biases, default RoPE) with a
byte-level BPE ``tokenizer.json``. Reads the weights with ``safetensors.numpy``, so torch is not needed.

Rotary layout. Hugging Face's Llama rotates each head's pair (i, i + head_dim/2) ("rotate_half"); llama.cpp's
llama architecture rotates adjacent pairs (2i, 2i + 1). The query and key projections are therefore permuted per
head so that output row 2i is Hugging Face's row i and row 2i + 1 is its row i + head_dim/2: reshape the rows to
(heads, 2, head_dim/2), swap the two inner axes, flatten. Attention scores are unchanged (the same permutation
applies to q and k), values and the output projection are untouched. ``tests/llm`` checks this numerically
against transformers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from cepr.errors import CeprError

QUANTS = ("f32", "q8_0", "q4_0")


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a q/k projection (n_heads * head_dim, in) from rotate-half to interleaved pair order."""
    rows, cols = w.shape
    hd = rows // n_heads
    if hd * n_heads != rows or hd % 2:
        raise CeprError(f"cannot split {rows} projection rows into {n_heads} heads of even size")
    return w.reshape(n_heads, 2, hd // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of ``permute_rope_rows``."""
    rows, cols = w.shape
    hd = rows // n_heads
    return w.reshape(n_heads, hd // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")
_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}


def gguf_tensor_name(hf_name: str) -> str:
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    m = _LAYER.fullmatch(hf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"blk.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"
    raise CeprError(f"no GGUF name for tensor {hf_name!r} (this converter covers plain Llama models)")


def _load_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise CeprError(f"{hf_dir}: no *.safetensors weights")
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def _read_tokenizer(hf_dir: Path) -> dict:
    """tokens (by id), token types, merges ("a b"), special ids, add_bos and the chat template."""
    from gguf import TokenType

    tj = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tj["model"]
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(tj.get("pre_tokenizer")):
        raise CeprError(f"{hf_dir}/tokenizer.json: only byte-level BPE tokenizers are converted")
    vocab = dict(model["vocab"])
    special = set()
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
        if t.get("special"):
            special.add(t["content"])
    n = max(vocab.values()) + 1
    tokens: list[str | None] = [None] * n
    for t, i in vocab.items():
        tokens[i] = t
    if any(t is None for t in tokens):
        raise CeprError(f"{hf_dir}/tokenizer.json: token ids are not contiguous")
    types = [int(TokenType.CONTROL if t in special else TokenType.NORMAL) for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    cfg_path = hf_dir / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}

    def tid(key):
        v = tcfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        return vocab.get(v) if v is not None else None

    bos = tid("bos_token")
    pp = json.dumps(tj.get("post_processor") or {})
    add_bos = bool(tcfg.get("add_bos_token", False)) or (
        bos is not None and json.dumps({"SpecialToken": {"id": tokens[bos], "type_id": 0}}) in pp)
    template = tcfg.get("chat_template")
    if template is None and (hf_dir / "chat_template.jinja").exists():
        template = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
    return {"tokens": tokens, "types": types, "merges": merges, "bos": bos, "eos": tid("eos_token"),
            "pad": tid("pad_token"), "unk": tid("unk_token"), "add_bos": add_bos, "chat_template": template}


def _tensor_quant(quant: str, gname: str, t: np.ndarray):
    """The GGML type a tensor is written in (None: F32)."""
    import gguf

    if quant == "f32" or t.ndim != 2:
        return None
    if quant == "q4_0" and gname.startswith("blk."):
        return gguf.GGMLQuantizationType.Q4_0
    return gguf.GGMLQuantizationType.Q8_0


def export_gguf(hf_dir: str | Path, out: str | Path, quant: str = "f32", name: str | None = None) -> Path:
    """Write the Llama model in ``hf_dir`` as GGUF at ``out``. ``quant``: f32; q8_0 (2-D weights in Q8_0, norms in
    F32); or q4_0 (the layers' 2-D weights in Q4_0, 4.5 bits per weight; the token embeddings and the output head
    in Q8_0, as llama.cpp's own Q4 recipes keep those two at higher precision; norms in F32). Deterministic: the
    same folder gives the same bytes."""
    import gguf

    hf_dir, out = Path(hf_dir), Path(out)
    if quant not in QUANTS:
        raise CeprError(f"unknown GGUF quantization {quant!r}; choose from {', '.join(QUANTS)}")
    cfg = json.loads((hf_dir / "config.json").read_text())
    llava = cfg.get("model_type") == "llava"
    if llava:  # a LLaVA folder: its decoder (the vision part is export_mmproj's, in cepr.llm.vlm)
        cfg = dict(cfg["text_config"])
    if cfg.get("model_type") != "llama":
        raise CeprError(f"{hf_dir}: model_type {cfg.get('model_type')!r}, this converter writes llama only")
    rope = cfg.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or cfg.get("rope_scaling"):
        raise CeprError(f"{hf_dir}: RoPE scaling {rope.get('rope_type')!r} is not converted")
    n_head = int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    hidden = int(cfg["hidden_size"])
    head_dim = int(cfg.get("head_dim") or hidden // n_head)
    if head_dim * n_head != hidden:
        # llama.cpp derives the head size from these keys; key_length/value_length would be needed otherwise
        raise CeprError(f"{hf_dir}: head_dim {head_dim} x {n_head} heads != hidden {hidden}; not converted")
    theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    tok = _read_tokenizer(hf_dir)
    weights = _load_weights(hf_dir)
    if llava:
        weights = _llava_text_weights(weights)
    vocab = int(cfg["vocab_size"])
    if len(tok["tokens"]) != vocab:
        raise CeprError(f"{hf_dir}: tokenizer has {len(tok['tokens'])} tokens, the model {vocab}")

    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(name or hf_dir.name)
    w.add_context_length(int(cfg["max_position_embeddings"]))
    w.add_embedding_length(hidden)
    w.add_block_count(int(cfg["num_hidden_layers"]))
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_rope_dimension_count(head_dim)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_vocab_size(vocab)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                     "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant])
    if quant != "f32":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")  # the ByteLevel pre-tokenizer's regex is GPT-2's
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("pad", w.add_pad_token_id),
                     ("unk", w.add_unk_token_id)):
        if tok[key] is not None:
            add(tok[key])
    w.add_add_bos_token(tok["add_bos"])
    w.add_add_eos_token(False)
    if tok["chat_template"]:
        w.add_chat_template(tok["chat_template"])

    for hf_name in sorted(weights, key=_tensor_order):
        t = np.ascontiguousarray(weights[hf_name], dtype=np.float32)
        gname = gguf_tensor_name(hf_name)
        if gname.endswith("attn_q.weight"):
            t = permute_rope_rows(t, n_head)
        elif gname.endswith("attn_k.weight"):
            t = permute_rope_rows(t, n_kv)
        qtype = _tensor_quant(quant, gname, t)
        if qtype is not None:
            w.add_tensor(gname, gguf.quants.quantize(t, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gname, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _tensor_order(hf_name: str):
    """token_embd, the blocks in order, output_norm, output (the order llama.cpp's own files use)."""
    m = _LAYER.fullmatch(hf_name)
    if m:
        return (1, int(m.group(1)), list(_LAYER_NAMES).index(m.group(2)) if m.group(2) in _LAYER_NAMES else 99,
                hf_name)
    return ({"model.embed_tokens.weight": 0, "model.norm.weight": 2, "lm_head.weight": 3}.get(hf_name, 4), 0, 0,
            hf_name)


_LLAVA_TEXT = (("model.language_model.", "model."), ("language_model.model.", "model."),
               ("language_model.lm_head.", "lm_head."), ("lm_head.", "lm_head."))


def _llava_text_weights(weights: dict) -> dict:
    """A LLaVA checkpoint's decoder weights under plain Llama names (both transformers layouts)."""
    out = {}
    for name, t in weights.items():
        for src, dst in _LLAVA_TEXT:
            if name.startswith(src):
                out[dst + name[len(src):]] = t
                break
    return out
