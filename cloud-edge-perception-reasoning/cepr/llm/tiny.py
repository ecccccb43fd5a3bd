"""Tiny language models for tests, built offline and deterministically: ``cepr models tiny``.

One seed gives, byte for byte, the same set:

* a byte-level BPE tokenizer trained with ``tokenizers`` on the suite's own texts (``cepr.training.corpus``), with the
  special tokens ``<s> </s> <pad> <unk>`` (ids 0-3) and a chat template;
* a tiny ``LlamaForCausalLM`` (hidden 64, 2 layers, 2 query heads and 1 key/value head of head_dim 32, untied
  output), randomly initialised from the seed, saved as a Hugging Face folder with the tokenizer;
* the same model as GGUF, F32 and Q8_0, written by ``cepr.llm.gguf_export``;
* a draft model sharing the tokenizer (1 layer), Hugging Face and GGUF, for speculative decoding.

The weights are random: the models say nothing useful, but two engines must compute the same thing from them.
Their initialisation is wider than a trained model's so that the logits spread over a few units and greedy
decoding does not hinge on rounding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>")  # ids 0, 1, 2, 3
BOS, EOS, PAD, UNK = SPECIAL_TOKENS

# A plain role-tagged template (Jinja, as Hugging Face and llama.cpp read it). Every message ends with </s>, so a
# model stops after its answer; the generation prompt opens the assistant's turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """The shape of one tiny Llama model."""

    hidden: int = 64
    layers: int = 2
    heads: int = 2
    kv_heads: int = 1  # grouped-query attention, so a converter that confuses the head counts fails
    head_dim: int = 32  # vLLM's CPU attention needs >= 32
    ffn: int = 128  # a multiple of 32: Q8_0 quantizes rows in blocks of 32
    max_positions: int = 2048
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5


TARGET = TinySpec()
DRAFT = TinySpec(layers=1)
VOCAB_SIZE = 1024


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE (GPT-2's pre-tokenizer regex) over ``texts``; adds ``<s>`` in front of every encoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, tok.token_to_id(BOS))])
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


def _hf_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                   chat_template=CHAT_TEMPLATE, model_max_length=TARGET.max_positions)


def init_weights(model, seed: int) -> None:
    """Fill every parameter from a NumPy generator (stable across torch versions), in name order.

    Embeddings ~ N(0, 1); projections ~ N(0, 1/fan_in); RMSNorm weights ~ 1 + N(0, 0.1^2) (not all ones, so a
    converter that drops or swaps a norm shows); the output head ~ N(0, 9/hidden): logits of a few units."""
    import torch

    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            shape = tuple(p.shape)
            if name.endswith("norm.weight") or "layernorm" in name:
                v = 1.0 + 0.1 * rng.standard_normal(shape)
            elif "embed_tokens" in name:
                v = rng.standard_normal(shape)
            elif name.startswith("lm_head"):
                v = rng.standard_normal(shape) * (3.0 / np.sqrt(shape[1]))
            else:
                v = rng.standard_normal(shape) / np.sqrt(shape[1])
            p.copy_(torch.from_numpy(v.astype(np.float32)))


def build_hf_model(spec: TinySpec, vocab_size: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=spec.hidden, intermediate_size=spec.ffn,
                      num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                      num_key_value_heads=spec.kv_heads, head_dim=spec.head_dim,
                      max_position_embeddings=spec.max_positions, rms_norm_eps=spec.rms_eps,
                      rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = LlamaForCausalLM(cfg).float().eval()
    init_weights(model, seed)
    return model


def _save_hf(model, hf_tok, out: Path) -> None:
    from transformers.utils import logging as hf_logging

    out.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one shard of a few hundred KiB needs no progress bar
    try:
        model.save_pretrained(out)
        hf_tok.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


