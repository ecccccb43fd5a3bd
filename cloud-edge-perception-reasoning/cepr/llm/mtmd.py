"""Images into a llama.cpp model in-process: a vision projector (``mmproj`` GGUF) through llama.cpp's multimodal
library (libmtmd, bundled with llama-cpp-python 0.3.36).

``VisionProjector(llm, mmproj)`` loads the projector beside a loaded ``llama_cpp.Llama``. ``eval(text, images)``
tokenizes ``text``, in which each ``marker`` stands for the next image, evaluates the text pieces with the
model's own ``eval`` and each image's embeddings with libmtmd, from the model's current position, and returns
the counts. Images are encoded files (PNG, JPEG, ...): libmtmd decodes them, pads them to a square and resizes
them to the projector's image size, as its clip preprocessing for LLaVA-style projectors does.
"""

from __future__ import annotations

import contextlib
import ctypes
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cepr.errors import CeprError
from cepr.llm.vlm import SHIPPED_VLMS, shipped_vlm_file

_LOG: list[str] = []  # libmtmd's recent warnings and errors (its info lines are dropped), for error messages
_CALLBACK = None  # the ctypes callback, kept alive


def _quiet_logs(mtmd) -> None:
    """Route libmtmd's log (which prints every image's steps to stderr) into ``_LOG``: warnings and errors only."""
    global _CALLBACK
    if _CALLBACK is not None:
        return
    import llama_cpp

    def cb(level, text, _user):
        if level in (3, 4):  # GGML_LOG_LEVEL_WARN, _ERROR
            _LOG.append(text.decode(errors="replace").strip())
            del _LOG[:-20]

    _CALLBACK = llama_cpp.llama_log_callback(cb)
    mtmd.mtmd_log_set(_CALLBACK, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(_CALLBACK, ctypes.c_void_p(0))


def _recent_log() -> str:
    lines = [x for x in _LOG if x]
    _LOG.clear()
    return f" (llama.cpp: {'; '.join(lines[-3:])})" if lines else ""


@dataclass
class EvalCounts:
    text_tokens: int
    image_tokens: int
    images: int

    @property
    def total(self) -> int:
        return self.text_tokens + self.image_tokens


def mmproj_path(path: str | Path) -> Path:
    """A vision projector GGUF: a path, or a shipped VLM's projector by name (``cepr-vlm-small``)."""
    if str(path) in SHIPPED_VLMS and SHIPPED_VLMS[str(path)][1] == "mmproj":
        return shipped_vlm_file(str(path))
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise CeprError(f"vision projector {str(path)!r} not found (an mmproj GGUF file, e.g. the tiny one "
                        "from `cepr models tiny`: <out>/vlm/mmproj-f32.gguf)")
    return p


class VisionProjector:
    """A libmtmd context for ``llm`` (a ``llama_cpp.Llama``) and the projector GGUF at ``mmproj``."""

    def __init__(self, llm, mmproj: str | Path, threads: int = 1):
        import llama_cpp.mtmd_cpp as mtmd

        _quiet_logs(mtmd)
        self._m = mtmd
        self.llm = llm
        self.path = mmproj_path(mmproj)
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = int(threads)
        params.warmup = False
        self.ctx = mtmd.mtmd_init_from_file(str(self.path).encode(), llm.model, params)
        if not self.ctx:
            raise CeprError(f"{self.path}: llama.cpp could not load this vision projector (not a clip GGUF, or "
                            f"its embedding size differs from the language model's {llm.n_embd()}){_recent_log()}")
        if not mtmd.mtmd_support_vision(self.ctx):
            self.close()
            raise CeprError(f"{self.path}: this projector has no vision encoder")
        self.marker = mtmd.mtmd_default_marker().decode()

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self._m.mtmd_free(self.ctx)
            self.ctx = None

    def __del__(self):
        with contextlib.suppress(AttributeError, TypeError):  # interpreter shutdown: the library may be gone
            self.close()

    def _bitmap(self, data: bytes, i: int):
        if not data:
            raise CeprError(f"image {i}: empty")
        buf = (ctypes.c_uint8 * len(data)).from_buffer(bytearray(data))
        bmp = self._m.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(data), False)
        if not bmp:
            raise CeprError(f"image {i}: llama.cpp could not decode these {len(data)} bytes as an image "
                            f"(PNG, JPEG, BMP, GIF, ...; starts with {data[:8]!r}){_recent_log()}")
        return bmp

    def eval(self, text: str, images: list[bytes], add_special: bool = True) -> EvalCounts:
        """Evaluate ``text`` with ``images`` in place of its markers, appended at ``llm.n_tokens``; the logits of
        the last position are there afterwards when the text does not end with an image."""
        m, llm = self._m, self.llm
        if text.count(self.marker) != len(images):
            raise CeprError(f"{len(images)} image(s) for {text.count(self.marker)} marker(s) {self.marker!r}")
        bitmaps = []
        chunks = None
        try:
            for i, data in enumerate(images):
                bitmaps.append(self._bitmap(data, i))
            raw = text.encode()
            inp = m.mtmd_input_text()
            inp.text = raw
            inp.text_len = len(raw)
            inp.add_special = bool(add_special)
            inp.parse_special = True
            chunks = m.mtmd_input_chunks_init()
            arr = (m.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            rc = m.mtmd_tokenize(self.ctx, chunks, ctypes.byref(inp), arr, len(bitmaps))
            if rc != 0:
                raise CeprError(f"llama.cpp could not tokenize the prompt with its {len(images)} image(s) "
                                f"(mtmd_tokenize returned {rc})")
            n_text = n_img = 0
            total = m.mtmd_helper_get_n_tokens(chunks)
            if llm.n_tokens + total > llm.n_ctx():
                raise CeprError(f"prompt of {llm.n_tokens + total} tokens (images included) does not fit the "
                                f"context of {llm.n_ctx()}")
            for i in range(m.mtmd_input_chunks_size(chunks)):
                chunk = m.mtmd_input_chunks_get(chunks, i)
                if m.mtmd_input_chunk_get_type(chunk) == m.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    ptr = m.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    toks = [ptr[j] for j in range(n.value)]
                    if toks:
                        llm.eval(toks)
                    n_text += len(toks)
                else:
                    new_pos = ctypes.c_int32(0)
                    rc = m.mtmd_helper_eval_chunk_single(self.ctx, llm.ctx, chunk, llm.n_tokens, 0, llm.n_batch,
                                                         False, ctypes.byref(new_pos))
                    if rc != 0:
                        raise CeprError(f"llama.cpp failed to evaluate an image (code {rc}){_recent_log()}")
                    n_img += new_pos.value - llm.n_tokens
                    llm.n_tokens = new_pos.value
            return EvalCounts(n_text, n_img, len(images))
        finally:
            if chunks is not None:
                m.mtmd_input_chunks_free(chunks)
            for b in bitmaps:
                m.mtmd_bitmap_free(b)


def encode_png(rgb) -> bytes:
    """An RGB array (H, W, 3, uint8) as PNG bytes (what libmtmd decodes)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise CeprError("could not encode the frame as PNG")
    return buf.tobytes()
