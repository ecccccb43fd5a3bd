"""Edge reasoners: what answers the task from the edge's scene summary, chosen by the edge module's ``reasoner``.

The edge pipeline is perception (segmentation) -> scene summary -> reasoner. A reasoner is built by a factory
registered with :data:`REASONER_REGISTRY`, called as ``factory(calibration=path_or_None)`` (the calibration file the
edge module resolved for the model it runs), and returns an object with

* ``params``: the :class:`~cepr.data.tasks.TaskParams` its questions use, and
* ``answer(summary, tasks) -> {task: LocalAnswer}``: an answer and a confidence per task.

The shipped ones are ``planner``, the calibrated rule planner of :mod:`cepr.edge.planner`, ``llamacpp`` (a GGUF
language model on the summary's text) and ``grounded`` (the grounded VLM on the segmentation pass itself). Another (a small VLM,
say) is one file with ``@register_reasoner("name")`` on its factory, which imports its heavy parts inside, or an
entry point in the group ``cepr.reasoners`` of another package.
"""

from __future__ import annotations

from pathlib import Path

from cepr.edge.llm_reasoner import LlmReasoner
from cepr.edge.planner import Planner
from cepr.registry import Registry

REASONER_REGISTRY: Registry = Registry("reasoners", "edge reasoner")
register_reasoner = REASONER_REGISTRY.register
DEFAULT_REASONER = "planner"


@register_reasoner("planner")
def planner(calibration: str | Path | None = None):
    """The rule planner: answers from the task definitions applied to the summary, with its fitted confidence
    (uncalibrated without a calibration file)."""
    return Planner.from_file(calibration) if calibration is not None else Planner()


@register_reasoner("llamacpp")
def llamacpp(calibration: str | Path | None = None, llm_model: str = "gemma3-270m", llm_threads: int = 1,
             llm_ctx: int = 2048, llm_mmproj: str | None = None, llm_lora: str | None = None,
             llm_prompt: str = "auto"):
    """A GGUF language model run in-process by llama.cpp (``cepr.edge.llm_reasoner``), answering from the summary's
    text form with log-probability confidences; with ``llm_mmproj`` (the model's vision projector GGUF) from the
    frame too; ``llm_lora`` (a GGUF LoRA adapter from ``cepr llm finetune``, or a shipped adapter's name) is
    applied to the model. ``llm_prompt``: ``summary`` (the summary's text form), ``vlm`` (our own VLM's prompt: the
    image and the question only) or ``auto`` (``vlm`` for a ``cepr-vlm-*`` GGUF). ``calibration`` (the segmentation
    model's planner fit) does not apply to it. Needs the llm extra."""
    return LlmReasoner(llm_model, threads=int(llm_threads), n_ctx=int(llm_ctx), mmproj=llm_mmproj,
                       lora=llm_lora, prompt=str(llm_prompt))


@register_reasoner("grounded")
def grounded(calibration: str | Path | None = None, vlm_model: str = "auto", vlm_quant: str = "q8_0",
             vlm_threads: int = 1, encoder: str | Path | None = None, vlm_reason: bool = True):
    """The grounded VLM (``cepr.edge.grounded_reasoner``): reads the segmentation pass's own encoder map, decoder
    in llama.cpp. ``vlm_model``: ``auto`` (the shipped one built on the segmentation model the pipeline runs,
    ``encoder``), a shipped name or a ``cepr vlm train-grounded`` folder; ``vlm_quant``: q8_0, q4_0 or f32;
    ``vlm_reason``: write the one-sentence risk summary per frame (a model trained with it). The planner's
    ``calibration`` does not apply to it (its temperature was fitted on val). Needs the llm extra."""
    from cepr.edge.grounded_reasoner import GroundedReasoner

    return GroundedReasoner(vlm_model, quant=str(vlm_quant), threads=int(vlm_threads), encoder=encoder,
                            reason=bool(vlm_reason))


def create_reasoner(name: str, calibration: str | Path | None = None, **options):
    """Reasoner ``name`` for a model with this calibration, with the reasoner's own ``options``; an unknown name
    gets a "did you mean"."""
    return REASONER_REGISTRY.get(name)(calibration=calibration, **options)
