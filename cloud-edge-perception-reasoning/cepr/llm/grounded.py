"""A grounded vision-language model: the edge's own RFNet encoder as the vision tower, LLaVA-style.

One ONNX pass of the segmentation model gives the mask and, through its ``features`` output, the encoder's
1/32-resolution map (``cepr.edge.export``). ``vision_tokens`` turns that pass into a fixed grid of tokens, one per
cell of a ``GRID`` (rows x columns) over the frame; each token is, for its cell:

* the encoder map, average-pooled (128 channels for the edge's w16 models, 256 for the cloud's w32);
* the class probabilities (softmax of the logits), averaged: what the mask says is there;
* three depth figures: the mean and the minimum of the valid depth, scaled by ``DEPTH_SCALE_M`` and clipped to
  [0, 1], and the valid share; all zero on a frame without depth (the real Cloud-Robotics layout).

A projector (layer norm, linear, tanh-GELU, linear) maps the tokens to the decoder's embedding width, and a Llama
decoder reads them in front of the task's text: the edge language model's prompt (``cepr.llm.prompts``: the
question and lettered options, optionally after the compact scene summary). The answer is the option whose
letter is most likely as the next token; its confidence is the normalised probability of the options' letters,
with a temperature fitted on the val split (``temperature`` in ``grounded.json``).

This module is numpy only: the projector runs here, and the decoder in an engine (transformers for training and
checks, llama.cpp with the projected tokens as embeddings at the edge, vLLM's prompt embeddings in the cloud).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cepr.errors import CeprError

GRID = (8, 10)  # rows x columns of vision tokens: the w16 encoder's own 1/32 grid at its 320x240 input
DEPTH_SCALE_M = 20.0
DEPTH_FIGURES = 3  # mean, minimum, valid share
CONFIG = "grounded.json"
RISK_PROMPT = ("Risk summary: in one sentence, what is in or beside the robot's path, how far, and what should it "
               "do?\nSummary:")
MAX_RISK_TOKENS = 64
PROJECTOR = "projector.npz"


@dataclass(frozen=True)
class GroundedSpec:
    """What a grounded VLM was built on and how its tokens are laid out (``grounded.json``)."""

    encoder: str  # the segmentation model whose pass feeds it (a shipped name or a path)
    side: str  # "edge" or "cloud"
    feature_channels: int
    num_classes: int
    grid: tuple[int, int] = GRID
    with_summary: bool = False  # the compact scene summary's text before the question
    risk_summary: bool = False  # trained to write a one-sentence risk summary after RISK_PROMPT
    temperature: float = 1.0  # the confidence's temperature, fitted on val
    tasks: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # training figures, provenance

    @property
    def token_width(self) -> int:
        return self.feature_channels + self.num_classes + DEPTH_FIGURES

    @property
    def n_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"], d["tasks"] = list(self.grid), list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GroundedSpec:
        known = {f for f in cls.__dataclass_fields__}
        bad = sorted(set(d) - known)
        if bad:
            raise CeprError(f"{CONFIG}: unknown key(s) {bad}")
        d = dict(d)
        d["grid"] = tuple(d.get("grid", GRID))
        d["tasks"] = tuple(d.get("tasks", ()))
        return cls(**d)


def _bins(n: int, k: int) -> list[tuple[int, int]]:
    """Adaptive pooling's cell bounds: cell i covers [floor(i n / k), ceil((i + 1) n / k))."""
    return [(i * n // k, -(-(i + 1) * n // k)) for i in range(k)]


def pool_grid(x: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(C, H, W) -> (rows * cols, C): the mean over each cell of an adaptive average pool."""
    c, h, w = x.shape
    rows, cols = grid
    if h < rows or w < cols:
        raise CeprError(f"a {h}x{w} map cannot be pooled to a {rows}x{cols} grid")
    out = np.empty((rows, cols, c), np.float32)
    for i, (y0, y1) in enumerate(_bins(h, rows)):
        band = x[:, y0:y1].astype(np.float32)
        for j, (x0, x1) in enumerate(_bins(w, cols)):
            out[i, j] = band[:, :, x0:x1].mean(axis=(1, 2))
    return out.reshape(rows * cols, c)


def depth_figures(depth: np.ndarray | None, grid: tuple[int, int]) -> np.ndarray:
    """(rows * cols, 3): mean and minimum valid depth (scaled, clipped to [0, 1]) and the valid share per cell;
    zeros without depth."""
    rows, cols = grid
    out = np.zeros((rows, cols, DEPTH_FIGURES), np.float32)
    if depth is None:
        return out.reshape(rows * cols, DEPTH_FIGURES)
    d = np.asarray(depth, np.float32)[::4, ::4]  # a quarter of the resolution is plenty for cell statistics
    valid = np.isfinite(d) & (d > 0)
    for i, (y0, y1) in enumerate(_bins(d.shape[0], rows)):
        for j, (x0, x1) in enumerate(_bins(d.shape[1], cols)):
            v = d[y0:y1, x0:x1][valid[y0:y1, x0:x1]]
            if v.size:
                out[i, j] = (min(1.0, float(v.mean()) / DEPTH_SCALE_M), min(1.0, float(v.min()) / DEPTH_SCALE_M),
                             v.size / valid[y0:y1, x0:x1].size)
    return out.reshape(rows * cols, DEPTH_FIGURES)


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def vision_tokens(features: np.ndarray, logits: np.ndarray, depth: np.ndarray | None,
                  grid: tuple[int, int] = GRID) -> np.ndarray:
    """The (rows * cols, feature channels + classes + 3) float32 tokens of one segmentation pass: ``features``
    (C, h, w) the encoder map, ``logits`` (K, h', w') the class logits, ``depth`` the frame's depth in metres or
    None."""
    if features.ndim != 3 or logits.ndim != 3:
        raise CeprError(f"vision_tokens takes one frame's maps: features {features.shape}, logits {logits.shape}")
    probs = _softmax(logits.astype(np.float32), 0)
    return np.concatenate([pool_grid(features, grid), pool_grid(probs, grid), depth_figures(depth, grid)], axis=1)


# ---- the projector, in numpy ----------------------------------------------------------------------------------

def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class Projector:
    """Layer norm, linear, tanh-GELU, linear: vision tokens to decoder embeddings (weights from ``projector.npz``,
    the names the training module writes)."""

    NAMES = ("norm.weight", "norm.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")

    def __init__(self, weights: dict[str, np.ndarray], eps: float = 1e-5):
        missing = [n for n in self.NAMES if n not in weights]
        if missing:
            raise CeprError(f"projector weights lack {missing}")
        self.w = {n: np.asarray(weights[n], np.float32) for n in self.NAMES}
        self.eps = eps

    @classmethod
    def load(cls, path: str | Path) -> Projector:
        with np.load(path) as z:
            return cls({k: z[k] for k in z.files})

    @property
    def in_width(self) -> int:
        return self.w["fc1.weight"].shape[1]

    @property
    def out_width(self) -> int:
        return self.w["fc2.weight"].shape[0]

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        x = np.asarray(tokens, np.float32)
        if x.shape[-1] != self.in_width:
            raise CeprError(f"vision tokens are {x.shape[-1]} wide; this projector takes {self.in_width}")
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        x = (x - mu) / np.sqrt(var + self.eps) * self.w["norm.weight"] + self.w["norm.bias"]
        x = gelu_tanh(x @ self.w["fc1.weight"].T + self.w["fc1.bias"])
        return x @ self.w["fc2.weight"].T + self.w["fc2.bias"]


# ---- the prompt's token ids ------------------------------------------------------------------------------------

class Prompts:
    """The token ids of each task's prompt (ending with the space before the letter) and its options' letters,
    from the decoder's own tokenizer (a ``tokenizers.Tokenizer``)."""

    def __init__(self, tok):
        from cepr.data.tasks import TASK_NAMES
        from cepr.llm.prompts import OPTION_LETTERS, task_prompt

        self.tok = tok
        space_letter = [tok.encode(f" {c}", add_special_tokens=False).ids for c in OPTION_LETTERS[:26]]
        if any(len(x) != 2 or x[0] != space_letter[0][0] for x in space_letter):
            raise CeprError("the tokenizer does not split ' A' into a space and a letter")
        self.space = space_letter[0][0]
        self.letters = [x[1] for x in space_letter]
        self.task_ids = {t: tok.encode(task_prompt(t), add_special_tokens=False).ids + [self.space]
                         for t in TASK_NAMES}

    @property
    def risk_ids(self) -> list[int]:
        """The risk summary's prompt (its sentence follows after a space)."""
        return self.tok.encode(RISK_PROMPT, add_special_tokens=False).ids

    @property
    def eos(self) -> int:
        return self.tok.token_to_id("</s>")

    def sentence_ids(self, sentence: str) -> list[int]:
        """A risk summary's target ids: the sentence after a space, then ``</s>``."""
        return self.tok.encode(" " + sentence, add_special_tokens=False).ids + [self.eos]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode([i for i in ids if i != self.eos]).strip()

    def text_ids(self, task: str, summary: str | None) -> list[int]:
        """``summary``: the scene summary's compact text (``cepr.llm.prompts.summary_text``), for a model trained
        with it, else None."""
        from cepr.llm.prompts import frame_prompt

        pre = self.tok.encode("\n" + frame_prompt(json.loads(summary)), add_special_tokens=False).ids \
            if summary is not None else []
        return pre + self.task_ids[task]

    def option_ids(self, task: str) -> list[int]:
        from cepr.data.tasks import get_task

        return self.letters[:len(get_task(task).answers)]


# ---- a built model's folder -----------------------------------------------------------------------------------

TOKENIZER = "tokenizer.json"


def load_prompts(folder: str | Path) -> tuple[Prompts, GroundedSpec]:
    """(prompts, spec) of a grounded VLM folder: what every engine needs beside its weights (tokenizers only)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise CeprError("the grounded VLM needs the tokenizers package: pip install -e '.[llm]'") from None
    folder = Path(folder)
    spec = read_spec(folder)
    for path in (folder / "decoder" / TOKENIZER, folder / TOKENIZER):
        if path.is_file():
            return Prompts(Tokenizer.from_file(str(path))), spec
    raise CeprError(f"{folder}: no {TOKENIZER} (neither in decoder/ nor beside {CONFIG})")


# ---- a built model's folder -----------------------------------------------------------------------------------

def read_spec(folder: str | Path) -> GroundedSpec:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise CeprError(f"{folder}: no {CONFIG}; not a grounded VLM folder (cepr vlm train-grounded writes one)")
    return GroundedSpec.from_dict(json.loads(path.read_text()))


def write_spec(folder: str | Path, spec: GroundedSpec) -> Path:
    path = Path(folder) / CONFIG
    path.write_text(json.dumps(spec.to_dict(), indent=1) + "\n")
    return path


def option_probabilities(letter_logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The normalised probability of each option from its letter's next-token logit (the confidence's source)."""
    z = np.asarray(letter_logits, np.float64) / max(float(temperature), 1e-6)
    z = z - z.max()
    p = np.exp(z)
    return p / p.sum()


# ---- the projected tokens on the wire (the ``features`` payload) -----------------------------------------------

VISION_MAGIC = b"CEPRV1"
_VISION_CODECS = {"f32": 0, "fp16": 1, "int8": 2}


def encode_vision(x: np.ndarray, codec: str = "fp16") -> bytes:
    """A (tokens, width) array of projected vision tokens as bytes: a 12-byte header (magic, codec, tokens,
    width), then FP32 or FP16 values, or for INT8 one FP16 scale per token (its largest magnitude / 127) and the
    values rounded to int8."""
    import struct

    if codec not in _VISION_CODECS:
        raise CeprError(f"vision codec must be one of {', '.join(_VISION_CODECS)}, not {codec!r}")
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise CeprError(f"vision tokens must be (tokens, width), got {x.shape}")
    head = VISION_MAGIC + struct.pack("<BBHH", _VISION_CODECS[codec], 0, *x.shape)
    if codec == "f32":
        return head + x.tobytes()
    if codec == "fp16":
        return head + x.astype(np.float16).tobytes()
    scale = (np.abs(x).max(axis=1) / 127.0).astype(np.float16)
    safe = np.where(scale > 0, scale.astype(np.float32), 1.0)[:, None]
    q = np.clip(np.rint(x / safe), -127, 127).astype(np.int8)
    return head + scale.tobytes() + q.tobytes()


def decode_vision(blob: bytes) -> np.ndarray:
    """The float32 (tokens, width) array ``encode_vision`` wrote; a clear error for anything else."""
    import struct

    if not isinstance(blob, (bytes, bytearray)) or len(blob) < 12 or blob[:6] != VISION_MAGIC:
        raise CeprError("not a vision-token payload (it must start with the CEPRV1 header)")
    code, _, n, d = struct.unpack("<BBHH", blob[6:12])
    names = {v: k for k, v in _VISION_CODECS.items()}
    if code not in names:
        raise CeprError(f"vision-token payload with an unknown codec id {code}")
    body, codec = memoryview(blob)[12:], names[code]
    want = {"f32": 4 * n * d, "fp16": 2 * n * d, "int8": 2 * n + n * d}[codec]
    if len(body) != want:
        raise CeprError(f"vision-token payload of {n} x {d} {codec}: {len(body)} bytes, expected {want}")
    if codec == "f32":
        return np.frombuffer(body, np.float32).reshape(n, d).copy()
    if codec == "fp16":
        return np.frombuffer(body, np.float16).reshape(n, d).astype(np.float32)
    scale = np.frombuffer(body[:2 * n], np.float16).astype(np.float32)
    return np.frombuffer(body[2 * n:], np.int8).reshape(n, d).astype(np.float32) * scale[:, None]


# ---- the decoder in llama.cpp, the projected tokens as embeddings ----------------------------------------------

class GroundedLlamaCpp:
    """A grounded VLM folder's decoder GGUF (``decoder-<quant>.gguf``) in llama.cpp in-process, one context of
    ``threads`` threads. Per frame: ``<s>``, then the projected vision tokens as one embedding batch (llama.cpp's
    ``llama_batch`` with ``embd`` set, the input libmtmd itself evaluates image embeddings with), kept in the cache
    for the frame's tasks; per task its prompt ids, then the next-token logits of the options' letters."""

    def __init__(self, folder: str | Path, quant: str = "q8_0", threads: int = 1, n_ctx: int = 2048):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise CeprError("the grounded VLM in llama.cpp needs llama-cpp-python: pip install -e '.[llm]'") from None
        self.folder = Path(folder)
        self.spec = read_spec(self.folder)
        self.projector = Projector.load(self.folder / PROJECTOR)
        gguf = self.folder / f"decoder-{quant}.gguf"
        if not gguf.is_file():
            raise CeprError(f"{gguf} not found (cepr vlm train-grounded writes decoder-f32/q8_0/q4_0.gguf)")
        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         logits_all=False, verbose=False)
        if self.llm.n_embd() != self.projector.out_width:
            raise CeprError(f"{gguf}: embedding width {self.llm.n_embd()}, the projector gives "
                            f"{self.projector.out_width}")
        self.n_vocab = self.llm.n_vocab()
        self._frame_len = 0
        self.embeddings: np.ndarray | None = None  # the current frame's projected tokens

    def close(self) -> None:
        self.llm.close()

    def _decode_embeddings(self, emb: np.ndarray, start: int) -> None:
        import llama_cpp

        n, d = emb.shape
        batch = llama_cpp.llama_batch_init(n, d, 1)
        try:
            batch.n_tokens = n
            np.ctypeslib.as_array(batch.embd, shape=(n * d,))[:] = np.ascontiguousarray(emb, np.float32).ravel()
            for i in range(n):
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i == n - 1
            rc = llama_cpp.llama_decode(self.llm.ctx, batch)
            if rc != 0:
                raise CeprError(f"llama.cpp failed to evaluate the vision embeddings (llama_decode returned {rc})")
        finally:
            llama_cpp.llama_batch_free(batch)

    def set_frame(self, tokens: np.ndarray) -> None:
        """Evaluate the model's BOS token and the frame's (cells, width) vision tokens from position 0."""
        if tokens.shape != (self.spec.n_tokens, self.spec.token_width):
            raise CeprError(f"vision tokens {tokens.shape}; this model takes "
                            f"{(self.spec.n_tokens, self.spec.token_width)}")
        self.set_frame_embeddings(self.projector(tokens))

    def set_frame_embeddings(self, emb: np.ndarray) -> None:
        """Evaluate BOS and already projected (cells, embedding width) tokens: what the ``features`` payload
        carries to a decoder in the cloud."""
        if emb.shape != (self.spec.n_tokens, self.llm.n_embd()):
            raise CeprError(f"projected vision tokens {emb.shape}; this decoder takes "
                            f"{(self.spec.n_tokens, self.llm.n_embd())}")
        self.llm.n_tokens = 0  # eval drops the cache past n_tokens
        self.llm.eval([self.llm.token_bos()])
        self._decode_embeddings(np.asarray(emb, np.float32), 1)
        self.llm.n_tokens = self._frame_len = 1 + len(emb)
        self.embeddings = np.asarray(emb, np.float32)

    def generate(self, text_ids: list[int], eos: int, max_tokens: int = MAX_RISK_TOKENS) -> list[int]:
        """Greedy continuation of the current frame and ``text_ids`` until ``eos`` (not returned) or
        ``max_tokens``."""
        import llama_cpp

        self.llm.n_tokens = self._frame_len
        out: list[int] = []
        feed = list(text_ids)
        for _ in range(max_tokens):
            self.llm.eval(feed)
            ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
            nxt = int(np.argmax(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))))
            if nxt == eos:
                break
            out.append(nxt)
            feed = [nxt]
        return out

    def next_logits(self, text_ids: list[int]) -> np.ndarray:
        """The next-token logits after the current frame and ``text_ids``."""
        import llama_cpp

        self.llm.n_tokens = self._frame_len
        self.llm.eval(list(text_ids))
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32).copy()
