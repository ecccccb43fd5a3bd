"""The shipped Gemma 3 270M GGUF as a Hugging Face folder (``cepr models gemma-hf``), offline.

transformers reads a GGUF with ``from_pretrained(folder, gguf_file=...)`` and dequantizes it (this needs
``accelerate``). The model it returns still carries the GGUF ``quantization_config`` and a GGUF quantizer, and
``save_pretrained`` refuses it ("not serializable"); its weights are plain float32 tensors by then, so dropping both
makes it an ordinary ``Gemma3ForCausalLM``. The folder gets the tokenizer (from the GGUF's vocabulary) and a
Gemma chat template, which the GGUF lacks (``<start_of_turn>user ... <end_of_turn>``; a system message goes in
front of the first user turn, as Gemma has no system role).

The weights are the Q4_K_M model's, dequantized exactly; engines still differ a little from llama.cpp, whose Q4
kernels quantize activations too (docs/llm.md gives the measured difference).
"""

from __future__ import annotations

import importlib.util
import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cepr.data.tasks import TASK_NAMES
from cepr.errors import CeprError
from cepr.llm import lora
from cepr.llm.hf_cache import cache_keyword, output_cache
from cepr.llm.llamacpp import llm_path
from cepr.llm.prompts import frame_prompt, task_prompt

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if m['role'] == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cepr"


def build_gemma_hf(out: str | Path, model: str = "gemma3-270m", log=None) -> Path:
    """Write ``model`` (a shipped name or a Gemma 3 GGUF path) to ``out`` as a Hugging Face folder."""
    missing = [m for m in ("torch", "transformers", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise CeprError(f"reading a GGUF into transformers needs {', '.join(missing)}: pip install -e '.[llm]'")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer


    gguf_path = llm_path(model)
    out = Path(out)
    log = log or (lambda s: None)
    log(f"reading {gguf_path} (dequantizing)")
    kw = {"gguf_file": gguf_path.name}
    with _one_gguf_reader():
        m = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kw)
        # the model's config, so the tokenizer does not parse the GGUF's metadata (its 262k-token vocabulary) once
        # more for it
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), config=m.config, **kw)
    if m.config.model_type not in ("gemma3_text", "gemma3"):
        raise CeprError(f"{gguf_path}: a {m.config.model_type} model; this command makes Gemma 3 folders")
    # a plain float32 model from here on: the GGUF quantizer only blocks saving
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    m.hf_quantizer = None
    m.is_quantized = False
    out.mkdir(parents=True, exist_ok=True)
    m.save_pretrained(str(out))
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.save_pretrained(str(out))
    (out / "cepr_source.json").write_text(json.dumps({"gguf": gguf_path.name, "model": str(model)}, indent=1) + "\n")
    log(f"wrote {out}")
    return out


@contextmanager
def _one_gguf_reader():
    """Parse each GGUF once while transformers loads it: it opens a ``gguf.GGUFReader`` for the config and another
    for the weights, and each parses the metadata (Gemma's 262k-token vocabulary) in Python, about 15 s on a 2-core
    machine. The reader is read-only (a memory map), so one instance can serve both."""
    import gguf

    real = gguf.GGUFReader
    readers: dict = {}

    def shared(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = real(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = real
        readers.clear()


def cached_gemma_hf(model: str = "gemma3-270m") -> Path:
    """The folder for a shipped Gemma, built once into the user's cache (~/.cache/cepr/<name>-hf)."""
    folder = cache_root() / f"{model}-hf"
    if not (folder / "cepr_source.json").is_file():
        build_gemma_hf(folder, model)
    return folder


def check_against_llamacpp(folder: str | Path, gguf_model: str = "gemma3-270m", prompt: str | None = None,
                           greedy_tokens: int = 16, threads: int = 2, peft: str | Path | None = None,
                           gguf_lora: str | Path | None = None, last: int | None = None) -> dict:
    """Next-token logits of the Hugging Face folder (transformers, float32) against llama.cpp's on the GGUF, on one
    prompt (default: an edge reasoner prompt about a made-up scene, longer than Gemma's 512-token sliding window),
    and greedy continuations. ``peft`` merges a LoRA folder into the transformers model and ``gguf_lora`` gives
    llama.cpp the same adapter. Returns {max_abs_diff, logit_scale, greedy_equal, greedy_tokens, prompt_tokens,
    tokens_equal, top1_equal}. ``last``: compare the logits of the last ``last`` positions only (the output layer
    over Gemma's 262k-token vocabulary at every position is most of the check's time); None: every position."""
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer


    if prompt is None:
        prompt = _sample_prompt()
    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    if peft is not None:
        model = lora.load_merged(model, peft).eval()
    # every position's logits only when every position is compared: over Gemma's vocabulary they cost most of the
    # check; for the ``last`` positions llama.cpp reads them one decode at a time (its output for the last token)
    llm = Llama(model_path=str(llm_path(gguf_model)), n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                logits_all=last is None, verbose=False, type_k=0, type_v=0,
                lora_path=str(gguf_lora) if gguf_lora is not None else None)
    try:
        ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        hf_ids = [tok.bos_token_id, *tok.encode(prompt, add_special_tokens=False)]
        keep = len(ids) if last is None else max(1, min(int(last), len(ids)))
        llm.reset()
        if last is None:
            llm.eval(ids)
            cpp = np.array(llm.scores[:len(ids)], dtype=np.float32)
        else:
            import llama_cpp

            if len(ids) > keep:
                llm.eval(ids[:len(ids) - keep])
            rows = []
            for t in ids[len(ids) - keep:]:
                llm.eval([t])
                rows.append(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                                  shape=(llm.n_vocab(),)).copy())
            cpp = np.array(rows, dtype=np.float32)
        hf_greedy = []
        with torch.no_grad():  # one pass: the compared logits, then greedy on its KV cache (last position only)
            out = model(torch.tensor([ids]), use_cache=True, logits_to_keep=keep)
            hf = out.logits[0].float().numpy().copy()
            for _ in range(greedy_tokens):
                nxt = int(out.logits[0, -1].argmax())
                hf_greedy.append(nxt)
                out = model(torch.tensor([[nxt]]), **{cache_keyword(model): output_cache(out)}, use_cache=True,
                            logits_to_keep=1)
        cpp_greedy = []
        for t in llm.generate(ids, top_k=1, temp=0.0, reset=True):
            cpp_greedy.append(int(t))
            if len(cpp_greedy) == greedy_tokens:
                break
    finally:
        llm.close()
    same = 0
    for a, b in zip(hf_greedy, cpp_greedy):
        if a != b:
            break
        same += 1
    return {"prompt_tokens": len(ids), "positions_compared": keep, "tokens_equal": hf_ids == ids,
            "max_abs_diff": float(np.abs(hf - cpp).max()), "mean_abs_diff": float(np.abs(hf - cpp).mean()),
            "logit_scale": float(np.abs(hf).max()),
            "top1_equal": float((hf.argmax(-1) == cpp.argmax(-1)).mean()),
            "greedy_equal_prefix": same, "greedy_tokens": greedy_tokens,
            "hf_greedy": tok.decode(hf_greedy), "llamacpp_greedy": tok.decode(cpp_greedy)}


def _sample_prompt() -> str:
    """An edge reasoner prompt (cepr.llm.prompts) about a made-up scene of 24 objects."""
    rows = [["person" if i % 3 == 0 else "car", round(1.5 + 0.7 * i, 2), round(-20 + 1.7 * i, 1),
             None if i % 2 else round(1.5 + 0.7 * i, 2), None, None, 0.9, [10 * i, 200, 30, 60]] for i in range(24)]
    summary = {"image": [640, 480], "object_fields": ["class", "distance_m", "bearing_deg", "path_m", "left_m",
                                                      "right_m", "confidence", "bbox_xywh"],
               "objects": rows, "free_m": [4.5, 2.0, 6.0]}
    return frame_prompt(summary) + task_prompt(TASK_NAMES[0])
