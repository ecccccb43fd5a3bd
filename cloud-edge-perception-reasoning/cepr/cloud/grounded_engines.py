"""A grounded VLM's decoder on each engine cepr runs, behind one interface.

Every engine reads the same prompt: ``<s>``, the frame's projected vision tokens, then a task's prompt ids; it
gives the next-token scores (for the options' letters) and greedy continuations (the risk summary).

* ``llamacpp``: the decoder GGUF in llama.cpp in-process, vision tokens as an embedding batch
  (``cepr.llm.grounded.GroundedLlamaCpp``);
* ``transformers``: the decoder as a Hugging Face Llama in-process, vision tokens through ``inputs_embeds`` and
  the frame's KV cache kept for its tasks;
* ``vllm``: vLLM's OpenAI server, started on loopback with ``--enable-prompt-embeds``: cepr embeds the text with
  the decoder's own embedding table and sends the whole prompt as ``prompt_embeds`` (float32, torch's tensor
  format, base64) on the Completions API, asking for every token's log-probability
  (``--max-logprobs`` = the vocabulary; 1,024 tokens for the shipped decoders).

A shipped VLM carries its decoder as GGUF only; transformers and vLLM read it as a Hugging Face folder made once
from ``decoder-q8_0.gguf`` (dequantized exactly; the rotary rows put back in Hugging Face order) into
``~/.cache/cepr/grounded-hf/<sha256>``. A ``cepr vlm train-grounded`` folder has its float32 ``decoder/``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from cepr.errors import CeprError
from cepr.llm.grounded import MAX_RISK_TOKENS, PROJECTOR, Projector, read_spec

ENGINES = ("llamacpp", "transformers", "vllm")
QUANTS = ("q8_0", "q4_0", "f32")  # the decoder GGUFs llama.cpp reads


def one_of(value: str, choices, what: str = "") -> str:
    """``value`` when it is one of ``choices``; else the ValueError a settings validator raises."""
    if value not in choices:
        raise ValueError(f"{what + ' ' if what else ''}must be one of {', '.join(choices)}, not {value!r}")
    return value
HF_FROM = "decoder-q8_0.gguf"  # the GGUF a shipped VLM's Hugging Face folder is made from


def _needs(what: str, *modules: str) -> None:
    """A clear error, naming the extra, when ``modules`` are missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CeprError(f"{what} needs {', '.join(missing)}: pip install -e '.[llm]'")


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cepr" / "grounded-hf"


def decoder_hf_folder(folder: str | Path) -> Path:
    """The decoder of grounded VLM ``folder`` as a Hugging Face Llama folder (made once into the cache for a
    shipped VLM, which carries GGUF only)."""
    folder = Path(folder)
    if (folder / "decoder" / "config.json").is_file():
        return folder / "decoder"
    gguf_path = folder / HF_FROM
    if not gguf_path.is_file():
        raise CeprError(f"{folder}: neither a decoder/ folder nor {HF_FROM} to make one from")
    _needs(f"reading {gguf_path.name} as a Hugging Face folder (transformers and vLLM engines)", "gguf",
           "safetensors")
    h = hashlib.sha256(gguf_path.read_bytes()).hexdigest()[:16]
    out = _cache_root() / h
    if (out / "model.safetensors").is_file():
        return out
    tmp = out.with_name(f".{h}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hf_from_gguf(gguf_path, folder / "tokenizer.json", tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        raise CeprError(f"{reader.path if hasattr(reader, 'path') else 'GGUF'}: no {key} in its metadata")
    return f.parts[f.data[0]][0]


def hf_from_gguf(gguf_path: Path, tokenizer_json: Path, out: Path) -> Path:
    """Write the Llama decoder of ``gguf_path`` (as ``cepr.llm.gguf_export`` writes it) as a Hugging Face folder:
    config, float32 safetensors (the GGUF's weights dequantized), and the VLM's tokenizer."""
    import gguf
    from safetensors.numpy import save_file

    from cepr.llm.gguf_export import gguf_tensor_name, unpermute_rope_rows

    r = gguf.GGUFReader(str(gguf_path))
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    if arch != "llama":
        raise CeprError(f"{gguf_path}: architecture {arch!r}; the grounded decoder is a Llama")
    n_layers, n_heads = int(_field(r, "llama.block_count")), int(_field(r, "llama.attention.head_count"))
    n_kv = int(_field(r, "llama.attention.head_count_kv"))
    tensors = {t.name: t for t in r.tensors}
    hidden = int(_field(r, "llama.embedding_length"))
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": int(_field(r, "llama.feed_forward_length")), "num_hidden_layers": n_layers,
           "num_attention_heads": n_heads, "num_key_value_heads": n_kv,
           "head_dim": int(_field(r, "llama.rope.dimension_count")),
           "max_position_embeddings": int(_field(r, "llama.context_length")),
           "rms_norm_eps": float(_field(r, "llama.attention.layer_norm_rms_epsilon")),
           "rope_theta": float(_field(r, "llama.rope.freq_base")), "vocab_size": int(_field(r, "llama.vocab_size")),
           "bos_token_id": int(_field(r, "tokenizer.ggml.bos_token_id")),
           "eos_token_id": int(_field(r, "tokenizer.ggml.eos_token_id")),
           "pad_token_id": int(_field(r, "tokenizer.ggml.padding_token_id")), "hidden_act": "silu",
           "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32"}
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for i in range(n_layers):
        names += [f"model.layers.{i}.{k}.weight" for k in (
            "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    weights = {}
    for name in names:
        t = tensors.get(gguf_tensor_name(name))
        if t is None:
            raise CeprError(f"{gguf_path}: no tensor {gguf_tensor_name(name)}")
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
        if name.endswith("q_proj.weight"):
            w = unpermute_rope_rows(w, n_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_rope_rows(w, n_kv)
        weights[name] = np.ascontiguousarray(w)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    shutil.copy2(tokenizer_json, out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>", "model_max_length": cfg["max_position_embeddings"]}, indent=1) + "\n")
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
        "pad_token_id": cfg["pad_token_id"]}) + "\n")
    (out / "source.json").write_text(json.dumps({"gguf": str(gguf_path), "sha256": hashlib.sha256(
        gguf_path.read_bytes()).hexdigest()}) + "\n")
    return out


class _FrameEngine:
    """What every engine shares: the VLM's spec and projector, and the current frame's projected tokens."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.spec = read_spec(self.folder)
        self.projector = Projector.load(self.folder / PROJECTOR)
        self.embeddings: np.ndarray | None = None

    def set_frame(self, tokens: np.ndarray) -> None:
        if tokens.shape != (self.spec.n_tokens, self.spec.token_width):
            raise CeprError(f"vision tokens {tokens.shape}; this model takes "
                            f"{(self.spec.n_tokens, self.spec.token_width)}")
        self.set_frame_embeddings(self.projector(tokens))

    def _check(self, emb: np.ndarray, width: int) -> np.ndarray:
        if emb.shape != (self.spec.n_tokens, width):
            raise CeprError(f"projected vision tokens {emb.shape}; this decoder takes {(self.spec.n_tokens, width)}")
        return np.asarray(emb, np.float32)


class GroundedTransformers(_FrameEngine):
    """The decoder in transformers (float32), the frame's KV cache cropped back to the frame for each task."""

    def __init__(self, folder: str | Path, threads: int = 1):
        super().__init__(folder)
        try:
            import torch
            from transformers import LlamaForCausalLM
        except ImportError:
            raise CeprError("the transformers engine needs torch and transformers: pip install -e '.[llm]'") from None
        from transformers.utils import logging as hf_logging

        torch.set_num_threads(threads)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.model = LlamaForCausalLM.from_pretrained(str(decoder_hf_folder(self.folder)),
                                                          dtype=torch.float32).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.bos = int(self.model.config.bos_token_id)
        self.cache = None
        self._frame_len = 0

    def close(self) -> None:
        self.cache = None

    def set_frame_embeddings(self, emb: np.ndarray) -> None:
        import torch

        from cepr.llm.hf_cache import output_cache

        emb = self._check(emb, self.model.config.hidden_size)
        table = self.model.get_input_embeddings().weight
        with torch.no_grad():
            x = torch.cat([table[[self.bos]], torch.from_numpy(emb)])[None]
            self.cache = output_cache(self.model(inputs_embeds=x, use_cache=True))
        self._frame_len = x.shape[1]
        self.embeddings = emb

    def _step(self, ids: list[int]):
        import torch

        from cepr.llm.hf_cache import cache_keyword, output_cache

        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids]), use_cache=True, **{cache_keyword(self.model): self.cache})
        self.cache = output_cache(out)
        return out.logits[0, -1].float().numpy()

    def _rewind(self) -> None:
        """Drop what the last task added to the cache: the frame's prefix stays."""
        extra = self.cache.get_seq_length() - self._frame_len
        if extra > 0:
            self.cache.crop(-extra)

    def next_logits(self, text_ids: list[int]) -> np.ndarray:
        self._rewind()
        return self._step(list(text_ids)).copy()

    def generate(self, text_ids: list[int], eos: int, max_tokens: int = MAX_RISK_TOKENS) -> list[int]:
        self._rewind()
        out: list[int] = []
        feed = list(text_ids)
        for _ in range(max_tokens):
            nxt = int(np.argmax(self._step(feed)))
            if nxt == eos:
                break
            out.append(nxt)
            feed = [nxt]
        return out


def tensor_bytes(x: np.ndarray) -> bytes:
    """``x`` (float32) in torch's tensor file format, as vLLM's ``prompt_embeds`` reads it."""
    import torch

    buf = io.BytesIO()
    torch.save(torch.from_numpy(np.ascontiguousarray(x, np.float32)), buf)
    return buf.getvalue()


class GroundedVllm(_FrameEngine):
    """The decoder behind vLLM's OpenAI server (loopback only), every prompt sent as prompt embeddings. Scores
    are log-probabilities over the whole vocabulary (the options' softmax is the same as from logits)."""

    def __init__(self, folder: str | Path, python: str | None = None, max_model_len: int = 1024,
                 startup_s: float = 240, timeout_s: float = 120):
        super().__init__(folder)
        _needs("the vllm engine (prompt embeddings are sent in torch's tensor format)", "torch", "safetensors")
        from safetensors.numpy import load_file

        from cepr.servers.vllm_server import VllmServer

        hf = decoder_hf_folder(self.folder)
        cfg = json.loads((hf / "config.json").read_text())
        self.vocab, self.bos = int(cfg["vocab_size"]), int(cfg["bos_token_id"])
        self.table = load_file(str(hf / "model.safetensors"))["model.embed_tokens.weight"].astype(np.float32)
        self.timeout_s = timeout_s
        self.srv = VllmServer(hf, python=python, max_model_len=max_model_len, startup_s=startup_s,
                              extra_args=["--enable-prompt-embeds", f"--max-logprobs={self.vocab}"])
        self.model_id = self.srv.model_id()
        self.bytes_sent = 0

    def close(self) -> None:
        self.srv.stop()

    def set_frame_embeddings(self, emb: np.ndarray) -> None:
        self.embeddings = self._check(emb, self.table.shape[1])

    def _complete(self, text_ids: list[int], max_tokens: int, logprobs: int, stop: list[int]) -> dict:
        x = np.concatenate([self.table[[self.bos]], self.embeddings, self.table[list(text_ids)]])
        body = json.dumps({"model": self.model_id, "prompt_embeds": base64.b64encode(tensor_bytes(x)).decode(),
                           "max_tokens": max_tokens, "temperature": 0.0, "logprobs": logprobs,
                           "return_tokens_as_token_ids": True, "stop_token_ids": stop,
                           "skip_special_tokens": False}).encode()
        self.bytes_sent += len(body)
        req = urllib.request.Request(f"{self.srv.url}/completions", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return json.loads(r.read())["choices"][0]
        except urllib.error.HTTPError as e:
            raise CeprError(f"vLLM refused the prompt embeddings ({e.code}): "
                            f"{e.read().decode('utf-8', 'replace')[:300]}") from None
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as e:
            raise CeprError(f"vLLM at {self.srv.url} gave no completion: {e}") from None

    @staticmethod
    def _token_id(s: str) -> int:
        if not s.startswith("token_id:"):
            raise CeprError(f"vLLM returned token {s!r}, not a token id (return_tokens_as_token_ids)")
        return int(s[len("token_id:"):])

    def next_logits(self, text_ids: list[int]) -> np.ndarray:
        """Log-probabilities of every token after the frame and ``text_ids``."""
        choice = self._complete(text_ids, 1, self.vocab, [])
        top = choice["logprobs"]["top_logprobs"][0]
        row = np.full(self.vocab, -np.inf, np.float32)
        for tok, lp in top.items():
            row[self._token_id(tok)] = lp
        return row

    def generate(self, text_ids: list[int], eos: int, max_tokens: int = MAX_RISK_TOKENS) -> list[int]:
        choice = self._complete(text_ids, max_tokens, 1, [eos])
        ids = [self._token_id(t) for t in choice["logprobs"]["tokens"]]
        return [i for i in ids if i != eos]


def open_engine(folder: str | Path, engine: str = "llamacpp", quant: str = "q8_0", threads: int = 1,
                vllm_python: str | None = None):
    """One of ``ENGINES`` on grounded VLM ``folder`` (``quant``: the llama.cpp GGUF; transformers and vLLM read
    the Hugging Face folder)."""
    if engine == "llamacpp":
        from cepr.llm.grounded import GroundedLlamaCpp

        return GroundedLlamaCpp(folder, quant=quant, threads=threads)
    if engine == "transformers":
        return GroundedTransformers(folder, threads=threads)
    if engine == "vllm":
        return GroundedVllm(folder, python=vllm_python)
    raise CeprError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
