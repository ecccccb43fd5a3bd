"""The edge reasoner ``llamacpp``: a GGUF language model answers each task from the scene summary's text form.

The allowed answers are offered as lettered options (``cepr.llm.prompts``); the answer is the most likely option
under the model (teacher-forced log-probabilities normalised over the options: ``cepr.llm.llamacpp``), its
confidence that probability, and the whole distribution goes to the dispatch policies (CrossEntropy reads it).
The confidence is the model's own, not fitted to held-out data as the planner's is.

With ``mmproj`` (a vision projector GGUF for the model, ``llm_mmproj`` in the edge settings) the model reads the
frame too: the edge pipeline hands over the RGB frame (``wants_image``), encoded as PNG and evaluated in front of
the summary's text through llama.cpp's multimodal library (``cepr.llm.mtmd``).

``prompt="vlm"`` asks the way our own VLM (``cepr vlm train``) was trained: the image then the task's question
with its allowed answers (``cepr.llm.vlm.vlm_question``) in its chat template, no summary text; each option is
scored by its JSON answer prefix (``{"answer": "yes",``). ``auto`` (the default) picks it for a GGUF named
``cepr-vlm-*`` and the summary prompt otherwise. The frame is resized (PIL bicubic) to the projector's square
input first, as the training's image processor does, so llama.cpp's own resize never differs from training's.
"""

from __future__ import annotations

import time

import numpy as np

from cepr.data.tasks import TASK_NAMES, TaskParams, get_task
from cepr.edge.planner import LocalAnswer
from cepr.errors import CeprError
from cepr.llm.llamacpp import LlamaCppScorer, softmax
from cepr.llm.mtmd import encode_png
from cepr.llm.prompts import frame_prompt, option_continuation, option_letters, task_prompt
from cepr.llm.vlm import VLM_ASSISTANT_TAG, is_cepr_vlm, vlm_answer_prefix, vlm_question

DEFAULT_LLM = "gemma3-270m"
PROMPTS = ("auto", "summary", "vlm")


def _projector_image_size(mmproj) -> int:
    """The square input size a clip GGUF's vision tower takes (``clip.vision.image_size``)."""
    import gguf

    field = gguf.GGUFReader(str(mmproj)).get_field("clip.vision.image_size")
    return int(field.contents()) if field is not None else 0


def _resized(rgb, size: int):
    """The RGB array resized to size x size with PIL's bicubic filter (the training image processor's)."""
    from PIL import Image

    if not size or rgb.shape[:2] == (size, size):
        return rgb
    return np.asarray(Image.fromarray(np.asarray(rgb, dtype=np.uint8)).resize((size, size), Image.BICUBIC))


class LlmReasoner:
    def __init__(self, model: str = DEFAULT_LLM, params: TaskParams | None = None, threads: int = 1,
                 n_ctx: int = 2048, mmproj: str | None = None, lora: str | None = None, prompt: str = "auto"):
        if prompt not in PROMPTS:
            raise CeprError(f"llm_prompt must be one of {', '.join(PROMPTS)}, not {prompt!r}")
        self.params = params or TaskParams()
        self.scorer = LlamaCppScorer(model, n_ctx=n_ctx, threads=threads, mmproj=mmproj, lora=lora)
        self.model_name = self.scorer.path.name + (f"+{self.scorer.lora.name}" if self.scorer.lora else "")
        if prompt == "auto":
            prompt = "vlm" if is_cepr_vlm(self.scorer.llm.metadata.get("general.name")) else "summary"
        self.prompt_style = prompt
        self.image_size = None
        if prompt == "vlm":
            if mmproj is None:
                raise CeprError(f"{self.scorer.path.name}: the vlm prompt reads the frame; set llm_mmproj (the "
                                "model's vision projector, e.g. cepr-vlm-small)")
            self.scorer.special_task = True  # its chat turns end in </s>, written out
            self.image_size = _projector_image_size(self.scorer.vision.path)
        self.wants_image = mmproj is not None  # the edge pipeline passes the frame

    def prompt(self, summary, task: str) -> tuple[str, str, tuple[str, ...]]:
        """(frame part, task part, option continuations) for ``task`` about ``summary``."""
        if self.prompt_style == "vlm":
            t = get_task(task)
            return (f"<|user|>\n{self.scorer.vision.marker}",
                    vlm_question(t.render_prompt(self.params), t.answers) + f"</s>\n{VLM_ASSISTANT_TAG}\n",
                    tuple(vlm_answer_prefix(a) for a in t.answers))
        n = len(get_task(task).answers)
        return (frame_prompt(summary), task_prompt(task, self.params),
                tuple(option_continuation(c) for c in option_letters(n)))

    def answer(self, summary, tasks=TASK_NAMES, image=None) -> dict[str, LocalAnswer]:
        """``image``: the frame (an RGB array, or encoded bytes) for a model with a vision projector."""
        summary.check_params(self.params)
        if self.prompt_style == "vlm" and image is None:
            raise CeprError(f"{self.model_name}: the vlm prompt needs the frame's image (none was given)")
        if image is not None and not isinstance(image, (bytes, bytearray)):
            if self.image_size is not None:
                image = _resized(image, self.image_size)
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
