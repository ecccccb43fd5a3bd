"""The grounded VLM as the edge's reasoner: the segmentation pass's own encoder map is its vision input.

The edge pipeline runs the ONNX segmentation model once with its ``features`` output; this reasoner pools that
pass into vision tokens (``cepr.llm.grounded.vision_tokens``), projects them in numpy and lets the decoder GGUF
in llama.cpp (in-process, ``threads`` threads) pick each task's option. The frame's tokens are evaluated once
and stay in llama.cpp's cache for every task asked about the same pass. The confidence is the options'
normalised probability at the temperature fitted on val. A model trained with risk summaries also writes one
sentence per frame (greedy), what is in or beside the path, how far and what to do; it rides in every answer's
``reason`` (scored by the ``reason_*`` testenv metrics), and its time is part of the frame's ``frame_ms``. No torch: onnxruntime, numpy, llama.cpp, tokenizers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cepr.data.tasks import TASK_NAMES, TaskParams, get_task
from cepr.edge.models import grounded_for_encoder, grounded_path, model_path
from cepr.edge.planner import LocalAnswer
from cepr.errors import CeprError
from cepr.llm.grounded import GroundedLlamaCpp, load_prompts, option_probabilities, vision_tokens

QUANTS = ("q8_0", "q4_0", "f32")


def _file_name(model: str | Path) -> str:
    """A segmentation model's file name (a shipped name resolves to its file), to tell encoders apart."""
    try:
        return model_path(model).name
    except CeprError:
        return Path(str(model)).name


class GroundedReasoner:
    """Answers from the segmentation pass (``answer(summary, tasks, vision=(features, logits, depth))``)."""

    wants_vision = True  # EdgePipeline runs the model with its features output and passes the pass

    def __init__(self, model: str | Path, quant: str = "q8_0", threads: int = 1, encoder: str | Path | None = None,
                 reason: bool = True):
        if quant not in QUANTS:
            raise CeprError(f"vlm_quant must be one of {', '.join(QUANTS)}, not {quant!r}")
        if str(model) == "auto":
            if encoder is None:
                raise CeprError("vlm_model auto needs the segmentation model it reads")
            model = grounded_for_encoder(encoder)
        self.folder = grounded_path(model)
        self.prompts, self.spec = load_prompts(self.folder)
        if encoder is not None and _file_name(encoder) != _file_name(self.spec.encoder):
            raise CeprError(f"{self.folder.name} was trained on the features of {self.spec.encoder}, but the "
                            f"segmentation model here is {encoder}: use the grounded VLM built on it "
                            "(vlm_model: auto picks the shipped one)")
        if self.spec.side != "edge":
            raise CeprError(f"{self.folder}: a {self.spec.side} grounded VLM; the edge reasoner runs edge ones")
        if self.spec.with_summary:
            raise CeprError(f"{self.folder}: trained with the summary text in the prompt, which the edge reasoner "
                            "does not send; train it without --with-summary")
        self.engine = GroundedLlamaCpp(self.folder, quant=quant, threads=int(threads))
        self.model_name = f"{self.folder.name}-{quant}"
        self.params = TaskParams()  # the prompts were rendered with the default task parameters
        self._frame = None
        self.write_reason = bool(reason)  # write the risk summary where the model was trained to
        self._reason, self._reason_ms = None, 0.0

    @property
    def embeddings(self) -> np.ndarray | None:
        """The last frame's projected vision tokens (what the ``features`` payload sends to a cloud decoder)."""
        return self.engine.embeddings

    def check_encoder(self, channels: int, classes: int) -> None:
        if (channels, classes) != (self.spec.feature_channels, self.spec.num_classes):
            raise CeprError(f"{self.model_name} reads {self.spec.encoder} ({self.spec.feature_channels} feature "
                            f"channels, {self.spec.num_classes} classes); this segmentation model gives {channels} "
                            f"and {classes}")

    def answer(self, summary, tasks=TASK_NAMES, vision=None) -> dict[str, LocalAnswer]:
        if vision is None:
            raise CeprError(f"{self.model_name}: the grounded VLM reads the segmentation pass (none was given)")
        summary.check_params(self.params)
        features, logits, depth = vision
        self.check_encoder(features.shape[0], logits.shape[0])
        t0 = time.perf_counter()
        # the tokens it was trained on were cached as float16: the same rounding here
        tokens = vision_tokens(features, logits, depth, self.spec.grid).astype(np.float16).astype(np.float32)
        if self._frame is None or not np.array_equal(tokens, self._frame):
            self.engine.set_frame(tokens)
            self._frame = tokens
            self._reason, self._reason_ms = None, 0.0
            if self.spec.risk_summary and self.write_reason:  # one sentence per frame, greedy
                t1 = time.perf_counter()
                ids = self.engine.generate(self.prompts.risk_ids, self.prompts.eos)
                self._reason = self.prompts.decode(ids)
                self._reason_ms = 1e3 * (time.perf_counter() - t1)
        frame_ms = 1e3 * (time.perf_counter() - t0)
        out = {}
        for t in tasks:
            if t not in self.prompts.task_ids:
                raise CeprError(f"{self.model_name} was not trained on the task {t!r}")
            t1 = time.perf_counter()
            answers = get_task(t).answers
            row = self.engine.next_logits(self.prompts.text_ids(t, None))[self.prompts.option_ids(t)]
            probs = option_probabilities(row, self.spec.temperature)
            best = int(np.argmax(probs))
            dist = {a: float(p) for a, p in zip(answers, probs)}
            feats = {"model": self.model_name, "ms": round(1e3 * (time.perf_counter() - t1), 3),
                     "frame_ms": round(frame_ms, 3), "reason": self._reason, "reason_ms": round(self._reason_ms, 3),
                     "logprobs": {a: round(float(np.log(max(p, 1e-12))), 4) for a, p in zip(answers, probs)}}
            out[t] = LocalAnswer(t, answers[best], round(float(probs[best]), 4), feats, distribution=dist)
            frame_ms = 0.0  # the frame's tokens are counted once
        return out
