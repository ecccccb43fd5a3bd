"""The edge model of the Ianvs joint-inference paradigm: the on-board pipeline (INT8 RFNet -> scene summary ->
calibrated answer) for one sample at a time, with what the cloud may need from it (the edge state) handed on.

The edge module answers the sample's question from its scene summary and keeps that summary, because Ianvs passes
the cloud model nothing but the raw sample: under ``cepr run`` the state travels in the edge result, under Ianvs
through :data:`cepr.records.EDGE_HANDOFF`. That is how the cloud gets "what to send" and how a failed cloud call
falls back to the edge answer. The adapter in ``testalgorithms/perception-reasoning/`` only registers this class.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from cepr.compat import prepare_sedna_env
from cepr.data.cloud_robotics import Frame, load_depth, load_rgb, load_sidecar
from cepr.data.tasks import camera_for, get_task
from cepr.edge.features import timed_edge_features
from cepr.edge.llm_reasoner import PROMPTS
from cepr.edge.models import (
    ASSETS,
    AUTO,
    EDGE_RGB,
    EDGE_RGBD,
    NO_CALIBRATION,
    SHIPPED,
    auto_model,
    calibration_for,
    model_path,
    rgbd_without_depth_message,
)
from cepr.edge.providers import DEFAULT as DEFAULT_PROVIDERS
from cepr.edge.providers import resolve_providers
from cepr.edge.reasoners import DEFAULT_REASONER, REASONER_REGISTRY, create_reasoner
from cepr.edge.runtime import SegmentationModel
from cepr.errors import CeprError, did_you_mean
from cepr.hyperparameters import as_flag, check_known
from cepr.llm.llamacpp import llm_path
from cepr.llm.lora import adapter_path, check_adapter_fits
from cepr.llm.mtmd import mmproj_path
from cepr.records import (
    EDGE_HANDOFF,
    EDGE_STATE_KEY,
    PAYLOAD_PRICER,
    EdgeResult,
    EdgeState,
    as_sample,
    handoff_key,
)
from cepr.registry import load_plugins

EDGE_HPS = ("model", "calibration", "reasoner", "plugins", "threads", "providers", "use_depth", "depth_for_distance",
            "keep_mask", "llm_model", "llm_threads", "llm_ctx", "llm_mmproj", "llm_lora", "llm_prompt", "vlm_model",
            "vlm_quant", "vlm_threads", "vlm_reason")
# the language-model reasoner's own settings (cepr.edge.reasoners.llamacpp): only with reasoner: llamacpp
LLM_HPS = ("llm_model", "llm_threads", "llm_ctx", "llm_mmproj", "llm_lora", "llm_prompt")


def _llm_options(reasoner: str, hps: dict) -> dict:
    """The llamacpp reasoner's settings from the hyperparameters, checked before any case runs."""
    given = {k: hps[k] for k in LLM_HPS if k in hps}
    if reasoner != "llamacpp":
        if given:
            raise CeprError(f"edgemodel: {', '.join(sorted(given))} only apply to reasoner: llamacpp "
                            f"(this module's reasoner is {reasoner})")
        return {}

    if importlib.util.find_spec("llama_cpp") is None:
        raise CeprError("edgemodel: reasoner llamacpp needs llama-cpp-python: pip install -e '.[llm]'")
    out = {"llm_model": str(given.get("llm_model", "gemma3-270m"))}
    for k, lo in (("llm_threads", 1), ("llm_ctx", 256)):
        if k in given:
            try:
                out[k] = int(given[k])
            except (TypeError, ValueError):
                raise CeprError(f"edgemodel: {k} must be an integer, got {given[k]!r}") from None
            if out[k] < lo:
                raise CeprError(f"edgemodel: {k} must be >= {lo}, got {out[k]}")
    if given.get("llm_mmproj") not in (None, "none"):
        try:
            out["llm_mmproj"] = str(mmproj_path(given["llm_mmproj"]))
        except CeprError as e:
            raise CeprError(f"edgemodel: llm_mmproj: {e}") from None
    if "llm_prompt" in given:
        if str(given["llm_prompt"]) not in PROMPTS:
            raise CeprError(f"edgemodel: llm_prompt must be one of {', '.join(PROMPTS)}, not "
                            f"{given['llm_prompt']!r}{did_you_mean(str(given['llm_prompt']), PROMPTS)}")
        out["llm_prompt"] = str(given["llm_prompt"])
    if given.get("llm_lora") not in (None, "none"):
        try:
            out["llm_lora"] = str(adapter_path(given["llm_lora"]))
            check_adapter_fits(Path(out["llm_lora"]), llm_path(out["llm_model"]))
        except CeprError as e:
            raise CeprError(f"edgemodel: llm_lora: {e}") from None
    return out


# the grounded VLM reasoner's own settings (cepr.edge.reasoners.grounded): only with reasoner: grounded
VLM_HPS = ("vlm_model", "vlm_quant", "vlm_threads", "vlm_reason")


def _vlm_options(reasoner: str, hps: dict) -> dict:
    """The grounded reasoner's settings from the hyperparameters, checked before any case runs."""
    from cepr.edge.grounded_reasoner import QUANTS
    from cepr.edge.models import grounded_path

    given = {k: hps[k] for k in VLM_HPS if k in hps}
    if reasoner != "grounded":
        if given:
            raise CeprError(f"edgemodel: {', '.join(sorted(given))} only apply to reasoner: grounded "
                            f"(this module's reasoner is {reasoner})")
        return {}
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("tokenizers") is None:
        raise CeprError("edgemodel: reasoner grounded needs llama-cpp-python and tokenizers: pip install -e '.[llm]'")
    out = {"vlm_model": str(given.get("vlm_model", "auto")), "vlm_quant": str(given.get("vlm_quant", "q8_0"))}
    if out["vlm_model"] != AUTO:
        try:
            out["vlm_model"] = str(grounded_path(out["vlm_model"]))
        except CeprError as e:
            raise CeprError(f"edgemodel: vlm_model: {e}") from None
    if out["vlm_quant"] not in QUANTS:
        raise CeprError(f"edgemodel: vlm_quant must be one of {', '.join(QUANTS)}, not {out['vlm_quant']!r}"
                        f"{did_you_mean(out['vlm_quant'], QUANTS)}")
    if "vlm_reason" in given:
        out["vlm_reason"] = as_flag("edgemodel", "vlm_reason", given["vlm_reason"])
    if "vlm_threads" in given:
        try:
            out["vlm_threads"] = int(given["vlm_threads"])
        except (TypeError, ValueError):
            raise CeprError(f"edgemodel: vlm_threads must be an integer, got {given['vlm_threads']!r}") from None
        if out["vlm_threads"] < 1:
            raise CeprError(f"edgemodel: vlm_threads must be >= 1, got {out['vlm_threads']}")
    return out


class EdgeModule:
    """The on-board pipeline (INT8 RFNet -> scene summary -> calibrated planner) as an Ianvs edge model.

    Hyperparameters:

    * ``model``: ``auto`` (default) runs the shipped RGB-D model (``edge-int8``) on a frame that has depth and the
      shipped RGB-only model (``edge-rgb-int8``) on one that has none, such as the real Cloud-Robotics set;
      or a shipped name or an ONNX path, used for every frame;
    * ``calibration``: ``auto`` (default) follows the model actually run (its shipped calibration, or
      ``<model>.calibration.json`` beside an ONNX path, else none); a shipped name or a path; ``none`` for the
      planner's uncalibrated confidence;
    * ``reasoner``: what answers from the scene summary, by its name in ``cepr.edge.reasoners`` (``planner``,
      the calibrated rule planner, by default; it gets the calibration above); ``llamacpp`` is a GGUF language
      model in-process, set by ``llm_model`` (``gemma3-270m``, the shipped name, or a GGUF path), ``llm_threads``
      (1) and ``llm_ctx`` (2048 tokens); it answers only the task asked; ``llm_mmproj``, the model's vision
      projector GGUF, makes it read the frame too; ``llm_lora``, a GGUF LoRA adapter (``cepr llm finetune``) or
      a shipped adapter's name, is applied to the model (its architecture checked before any case runs);
      ``llm_prompt``: ``auto`` (default), ``summary`` or ``vlm`` (our own VLM's prompt, image and question only;
      ``auto`` picks it for a ``cepr-vlm-*`` GGUF such as the shipped ``cepr-vlm-small-q4_0`` with
      ``llm_mmproj: cepr-vlm-small``); ``grounded`` is the grounded VLM, which reads the segmentation pass's own
      encoder map (llama.cpp in-process), set by ``vlm_model`` (``auto``: the shipped one built on the model that
      runs, ``grounded-edge`` or ``grounded-edge-rgb``; or a ``cepr vlm train-grounded`` folder), ``vlm_quant``
      (``q8_0``, ``q4_0`` or ``f32``), ``vlm_threads`` (1) and ``vlm_reason`` (true: write the one-sentence risk
      summary per frame where the model was trained to; the edge result's ``reason``);
    * ``threads``: ONNX Runtime intra-op threads (1);
    * ``providers``: ONNX Runtime execution provider(s), ``cpu`` (default), ``cuda``, ``tensorrt``, or a list
      tried in order (``[cuda, cpu]`` falls back to the CPU with a warning; a single provider this onnxruntime
      build lacks is an error, found before any case runs); see ``cepr.edge.providers``. Each edge result says
      which one ran (``provider``);
    * ``use_depth`` (true): read the frame's depth where it has one. False ignores the depth camera: ``auto``
      picks the RGB-only model and distances come from the ground plane; naming an RGB-D model is an error;
    * ``depth_for_distance`` (true): measure distances with the depth that was read; false measures them on the
      ground plane (as the cloud expert must from an image). Where no depth was read, it is always the ground plane;
    * ``keep_mask`` (true): keep the predicted mask in the edge result (in memory, for the mIoU metric).

    ``load()`` / ``load(model_url=...)`` and ``predict(data=...)`` / ``predict(data)`` are both accepted (Sedna's
    TORCH backend and its others call them differently); the model always comes from ``model``."""

    def __init__(self, **hps):
        check_known("edgemodel", hps, EDGE_HPS)
        load_plugins("edgemodel", hps.get("plugins"))
        self.model = str(hps.get("model", AUTO))
        self.model_file = None if self.model == AUTO else model_path(self.model)  # a bad name fails here
        cal = hps.get("calibration", AUTO)
        self.calibration = "none" if cal in NO_CALIBRATION else str(cal)
        self.calibration_file = (model_path(self.calibration) if self.calibration not in ("none", AUTO) else None)
        self.reasoner = str(hps.get("reasoner", DEFAULT_REASONER))
        try:
            REASONER_REGISTRY.get(self.reasoner)
        except CeprError as e:
            raise CeprError(f"edgemodel: {e}") from None
        self.reasoner_options = _llm_options(self.reasoner, hps) | _vlm_options(self.reasoner, hps)
        try:
            self.threads = int(hps.get("threads", 1))
        except (TypeError, ValueError):
            raise CeprError(f"edgemodel: threads must be an integer, got {hps.get('threads')!r}") from None
        if self.threads < 1:
            raise CeprError(f"edgemodel: threads must be >= 1, got {self.threads}")
        self.providers = hps.get("providers", DEFAULT_PROVIDERS)
        try:  # names, options and this onnxruntime build's providers, checked before any case runs
            resolve_providers(self.providers, warn=False)
        except CeprError as e:
            raise CeprError(f"edgemodel: providers: {e}") from None
        self.use_depth = as_flag("edgemodel", "use_depth", hps.get("use_depth", True))
        self.depth_for_distance = as_flag("edgemodel", "depth_for_distance", hps.get("depth_for_distance", True))
        self.keep_mask = as_flag("edgemodel", "keep_mask", hps.get("keep_mask", True))
        self.pipelines: dict[str, object] = {}  # model name or path -> EdgePipeline, built on first use
        self.calibrations: dict[str, Path | None] = {}  # model name or path -> the calibration file it uses

        # Sedna only needs model_path to name an existing file; under auto, the first shipped edge model present
        sedna_file = self.model_file or next((ASSETS / SHIPPED[n] for n in (EDGE_RGBD, EDGE_RGB)
                                              if (ASSETS / SHIPPED[n]).is_file()), None)
        prepare_sedna_env(str(sedna_file) if sedna_file else None)

    @classmethod
    def check_hyperparameters(cls, **hps) -> None:
        """Raise a CeprError for bad hyperparameters. Construction is cheap (models load in ``load()``)."""
        cls(**hps)

    @property
    def pipeline(self):
        """The pipeline of a fixed ``model`` (None before ``load()``, and always None under ``model: auto``)."""
        return self.pipelines.get(self.model) if self.model_file is not None else None

    def _pipeline(self, name: str):
        from cepr.edge.pipeline import EdgePipeline  # onnxruntime: only when an edge model is built

        pipe = self.pipelines.get(name)
        if pipe is None:
            path = self.model_file if name == self.model and self.model_file is not None else model_path(name)
            if self.calibration == "auto":
                cal = calibration_for(name)
            else:
                cal = self.calibration_file
            extra = {"encoder": name} if self.reasoner == "grounded" else {}  # it reads this model's pass
            reasoner = create_reasoner(self.reasoner, cal, **self.reasoner_options, **extra)
            seg = SegmentationModel(path, threads=self.threads, providers=self.providers)
            pipe = EdgePipeline(seg, reasoner, depth_for_distance=self.depth_for_distance)
            if pipe.model.use_depth and not self.use_depth:
                raise CeprError(f"edgemodel: use_depth is false, but {rgbd_without_depth_message(path.name)}")
            self.pipelines[name] = pipe
            self.calibrations[name] = cal
        return pipe

    def load(self, model_url=None, **kwargs):
        if self.model_file is not None:  # auto picks per frame, on first use
            self._pipeline(self.model)
        return self

    def predict(self, data=None, pricer=None, **kwargs) -> dict:
        """One sample through the edge pipeline. ``pricer``: the cloud module's ``price`` (``cepr run`` hands it
        over; otherwise the one in ``cepr.records.PAYLOAD_PRICER``), which records what sending the sample would
        carry (``send_bytes``), outside the edge's timings."""
        if kwargs.get("mining_mode") == "self-design":
            raise CeprError("mining mode self-design hands the whole sample to the edge model, which must then "
                            "return [is_hard, final, edge, cloud] itself; cepr's edge model does not route. Use "
                            "inference-then-mining or mining-then-inference")
        s = as_sample(data)
        frame = Frame(s["rgb"], s["label"] or s["rgb"])
        dp = frame.depth_path if self.use_depth else None
        name = self.model if self.model_file is not None else auto_model(dp is not None)
        pipe, cal = self._pipeline(name), self.calibrations[name]  # built on first use, outside the timings
        started = time.time()
        t0 = time.perf_counter()
        rgb = load_rgb(s["rgb"])
        depth = load_depth(dp) if dp is not None and (pipe.model.use_depth or self.depth_for_distance) else None
        sp = frame.sidecar_path
        camera = camera_for(load_sidecar(sp) if sp is not None else None, rgb.shape[1], rgb.shape[0])
        load_ms = 1e3 * (time.perf_counter() - t0)
        task = get_task(s["task"])
        r = pipe(rgb, depth, camera, tasks=(task.name,))  # only the task asked (a language model is not free)
        local = r.answers[task.name]
        if local.distribution is not None:
            dist = {a: float(local.distribution.get(a, 0.0)) for a in task.answers}
        else:  # the planner's: its confidence on its answer, the rest spread evenly
            others = [a for a in task.answers if a != local.answer]
            rest = (1.0 - local.confidence) / len(others) if others else 0.0
            dist = {a: (local.confidence if a == local.answer else rest) for a in task.answers}
        # what routing policies read (cepr.edge.features): from the summary and mask the edge already has
        features, features_ms = timed_edge_features(r.summary, r.label, dist)
        timings = {"load": round(load_ms, 3), **{k: round(v, 3) for k, v in r.timings_ms.items()},
                   "features": round(features_ms, 3)}
        compute_ms = r.total_ms + features_ms
        vision = {}
        if r.vision is not None:  # a grounded VLM reasoner: its tokens, for the features payload
            from cepr.llm.grounded import encode_vision

            vision = {"vision": encode_vision(r.vision, "f32"), "vision_model": str(pipe.planner.folder)}
        state = EdgeState(summary=r.summary.to_dict(), answer=local.answer, camera=camera.to_dict(),
                          confidence=local.confidence, distribution=dist, **vision)
        EDGE_HANDOFF.put(handoff_key(s), state)  # for a runner that hands the cloud only the sample (Ianvs)
        result = EdgeResult(key=s["key"], task=task.name, answer=local.answer, confidence=local.confidence,
                            distribution=dist, label_path=s["label"], rgb_path=s["rgb"],
                            latency_ms=round(compute_ms, 3), timings_ms=timings, summary_bytes=len(r.summary_bytes),
                            summary_text_bytes=len(json.dumps(state.summary, separators=(",", ":"))),
                            model=pipe.model.path.name, provider=pipe.model.provider,
                            calibration=cal.name if cal is not None else None,
                            distances="depth" if depth is not None and self.depth_for_distance else "ground_plane",
                            features=features, started_at=started, finished_at=time.time(),
                            **{k: (local.features or {})[f] for k, f in (("reasoner", "model"), ("reason", "reason"))
                               if (local.features or {}).get(f) is not None})  # a language model's name, its reason
        pricer = pricer or PAYLOAD_PRICER.current
        if pricer is not None:
            result.send_bytes = pricer(s, state)
        return result.as_result(mask=r.label if self.keep_mask else None, **{EDGE_STATE_KEY: state})

    def cleanup(self):
        self.pipelines.clear()
        self.calibrations.clear()
