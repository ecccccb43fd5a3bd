"""The edge reasoner ``llamacpp``: a GGUF language model answers each task from the scene summary's text form.

The allowed answers are offered as lettered options (``cepr.llm.prompts``); the answer is the most likely option
under the model (teacher-forced log-probabilities normalised over the options: ``cepr.llm.llamacpp``), its
confidence that probability, and the whole distribution goes to the dispatch policies (CrossEntropy reads it).
The confidence is the model's own, not fitted to held-out data as the planner's is.

With ``mmproj`` (a vision projector GGUF for the model, ``llm_mmproj`` in the edge settings) the model reads the
frame too: the edge pipeline hands over the RGB frame (``wants_image``), encoded as PNG and evaluated in front of
the summary's text through llama.cpp's multimodal library (``cepr.llm.mtmd``).
"""

from __future__ import annotations

import time

from cepr.data.tasks import TASK_NAMES, TaskParams, get_task
from cepr.edge.planner import LocalAnswer
from cepr.llm.llamacpp import LlamaCppScorer, softmax
from cepr.llm.prompts import frame_prompt, option_continuation, option_letters, task_prompt

DEFAULT_LLM = "gemma3-270m"


class LlmReasoner:
    def __init__(self, model: str = DEFAULT_LLM, params: TaskParams | None = None, threads: int = 1,
                 n_ctx: int = 2048, mmproj: str | None = None, lora: str | None = None):
        self.params = params or TaskParams()
        self.scorer = LlamaCppScorer(model, n_ctx=n_ctx, threads=threads, mmproj=mmproj, lora=lora)
        self.model_name = self.scorer.path.name + (f"+{self.scorer.lora.name}" if self.scorer.lora else "")
        self.wants_image = mmproj is not None  # the edge pipeline passes the frame

    def prompt(self, summary, task: str) -> tuple[str, str, tuple[str, ...]]:
        """(frame part, task part, option continuations) for ``task`` about ``summary``."""
        n = len(get_task(task).answers)
        return (frame_prompt(summary), task_prompt(task, self.params),
                tuple(option_continuation(c) for c in option_letters(n)))

    def answer(self, summary, tasks=TASK_NAMES, image=None) -> dict[str, LocalAnswer]:
        """``image``: the frame (an RGB array, or encoded bytes) for a model with a vision projector."""
        summary.check_params(self.params)
        if image is not None and not isinstance(image, (bytes, bytearray)):
            from cepr.llm.mtmd import encode_png

            image = encode_png(image)
        out = {}
        for t in tasks:
            t0 = time.perf_counter()
            answers = get_task(t).answers
            logprobs = self.scorer.option_logprobs(*self.prompt(summary, t), image=image)
            probs = softmax(logprobs)
            best = max(range(len(answers)), key=lambda i: probs[i])  # ties: the first option
            dist = dict(zip(answers, probs))
            feats = {"logprobs": {a: round(v, 4) for a, v in zip(answers, logprobs)}, "model": self.model_name,
                     "ms": round(1e3 * (time.perf_counter() - t0), 3), "image": image is not None}
            out[t] = LocalAnswer(t, answers[best], round(probs[best], 4), feats, distribution=dist)
        return out
