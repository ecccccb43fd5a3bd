"""Speculative decoding in-process with llama.cpp, measured: a draft model or prompt lookup proposes tokens, the
target verifies them, and we count how many it kept.

llama-cpp-python calls a draft model (``LlamaDraftModel``) with the tokens so far and verifies what it returns in
one batch, keeping the longest prefix that greedy decoding would have produced. ``DraftModel`` drafts greedily
with a second, smaller GGUF that shares the target's tokenizer (or the target itself: then every draft is kept, a
deterministic check of the accept path). ``Counting`` wraps any draft model and measures the **acceptance rate**:
when llama-cpp-python calls again, the tokens it appended since the last call show how many of the last drafts it
kept. ``generate`` runs one greedy completion with or without speculation and reports tokens, time and
acceptance, so plain and speculative runs can be set side by side (``benchmarks/speculative_llamacpp.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cepr.errors import CeprError
from cepr.llm.llamacpp import INSTALL_HINT, llm_path


def _llama(path, n_ctx: int, threads: int, logits_all: bool, draft=None):
    try:
        from llama_cpp import Llama
    except ImportError:
        raise CeprError(f"speculative decoding here needs llama-cpp-python: {INSTALL_HINT}") from None
    return Llama(model_path=str(llm_path(path)), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                 logits_all=logits_all, draft_model=draft, verbose=False, seed=0)


class DraftModel:
    """Greedy drafts of ``k`` tokens from a GGUF model sharing the target's tokenizer."""

    def __init__(self, model: str | Path, k: int = 4, n_ctx: int = 2048, threads: int = 1):
        import llama_cpp

        self.k = int(k)
        self.llm = _llama(model, n_ctx, threads, logits_all=False)
        self._get_logits = llama_cpp.llama_get_logits_ith
        self.n_vocab = self.llm.n_vocab()

    def _next(self) -> int:
        ptr = self._get_logits(self.llm.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def __call__(self, input_ids, /, **kwargs):
        ids = [int(t) for t in input_ids]
        have = self.llm.n_tokens
        same = 0
        cached = self.llm.input_ids[:have]
        while same < min(have, len(ids) - 1) and cached[same] == ids[same]:
            same += 1
        self.llm.n_tokens = same  # eval drops the draft's cache past the common prefix
        self.llm.eval(ids[same:])
        out = []
        for _ in range(self.k):
            tok = self._next()
            out.append(tok)
            self.llm.eval([tok])
        return np.array(out, dtype=np.intc)


@dataclass
class Counting:
    """Wraps a draft model (anything llama-cpp-python accepts as ``draft_model``) and counts proposals and kept ones."""

    inner: object
    proposed: int = 0
    accepted: int = 0
    _last_len: int | None = field(default=None, repr=False)
    _last_draft: list[int] = field(default_factory=list, repr=False)

    def __call__(self, input_ids, /, **kwargs):
        ids = [int(t) for t in input_ids]
        self._settle(ids)
        draft = self.inner(input_ids, **kwargs)
        self._last_len, self._last_draft = len(ids), [int(t) for t in draft]
        self.proposed += len(self._last_draft)
        return draft

    def _settle(self, ids: list[int], final: bool = False) -> None:
        """Count how many of the last drafts the target kept: the common prefix of the drafts and what it appended.
        ``final``: generation stopped after ``ids``; drafts past its end were never checked and are not counted."""
        if self._last_len is None or len(ids) < self._last_len:
            return
        added = ids[self._last_len:]
        n = 0
        while n < min(len(added), len(self._last_draft)) and added[n] == self._last_draft[n]:
            n += 1
        self.accepted += n
        if final and n == len(added) < len(self._last_draft):
            self.proposed -= len(self._last_draft) - len(added)
        self._last_len, self._last_draft = None, []

    def finish(self, ids: list[int]) -> None:
        """After generation: settle the last drafts against the final tokens."""
        self._settle(ids, final=True)

    @property
    def rate(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None


@dataclass
class Generation:
    text: str
    tokens: list[int]
    seconds: float
    proposed: int = 0
    accepted: int = 0

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("nan")

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None


def make_generator(model: str | Path, speculative: str = "none", draft: str | Path | None = None, k: int = 4,
                   n_ctx: int = 1024, threads: int = 1, logits_all: bool = False):
    """(Llama, Counting or None): the target with ``speculative`` = none, prompt-lookup (k tokens from n-gram
    matches in the prompt) or draft (greedy drafts of k tokens from the GGUF ``draft``; the target itself if None).
    Speculation needs the logits of every verified position, so the target keeps them all (``logits_all``);
    plain decoding keeps them only when asked, to measure what that costs."""
    if speculative == "none":
        return _llama(model, n_ctx, threads, logits_all=logits_all), None
    if speculative == "prompt-lookup":
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        inner = LlamaPromptLookupDecoding(num_pred_tokens=int(k))
    elif speculative == "draft":
        inner = DraftModel(draft if draft is not None else model, k=k, n_ctx=n_ctx, threads=threads)
    else:
        raise CeprError(f"speculative must be none, prompt-lookup or draft, not {speculative!r}")
    counter = Counting(inner)
    return _llama(model, n_ctx, threads, logits_all=True, draft=counter), counter


def generate(llm, counter: Counting | None, prompt: str, max_tokens: int = 64) -> Generation:
    """One greedy completion (temperature 0), timed from the first prompt token to the last generated one."""
    ptoks = llm.tokenize(prompt.encode(), add_bos=True, special=False)
    if counter is not None:
        counter.proposed = counter.accepted = 0
        counter._last_len, counter._last_draft = None, []
    llm.reset()
    t0 = time.perf_counter()
    out: list[int] = []
    for tok in llm.generate(ptoks, temp=0.0, top_k=1, reset=True):
        if tok == llm.token_eos() or len(out) >= max_tokens:
            break
        out.append(int(tok))
    dt = time.perf_counter() - t0
    if counter is not None:
        counter.finish(ptoks + out)
    text = llm.detokenize(out).decode("utf-8", errors="replace")
    return Generation(text, out, dt, counter.proposed if counter else 0, counter.accepted if counter else 0)
