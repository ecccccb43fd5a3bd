"""The joint-inference modules behind the Ianvs adapters: dataset processor, edge model and cloud model.

The adapter files in ``testalgorithms/perception-reasoning/`` only register these classes; they run the same way
under ``ianvs -f`` and ``cepr run``. How they talk:

* the dataset processor turns each index line into a :class:`SampleRef` (a dict: key, rgb, label, task, index)
  and gives every frame one question, round-robin over the configured tasks;
* the edge model answers it from its scene summary and keeps that summary on the sample object, because Ianvs
  passes the cloud model nothing but the raw sample: that is how the cloud gets "what to send" and how a
  failed cloud call falls back to the edge answer;
* the cloud model sends the payload (summary, image or both) to its backend and returns the final answer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cepr.cloud.base import CloudRequest
from cepr.cloud.client import CloudClient, backend_config_model, create_backend
from cepr.cloud.payload import PayloadConfig, payload_frame_path
from cepr.compat import prepare_sedna_env
from cepr.data.cloud_robotics import Frame, load_depth, load_rgb, load_sidecar
from cepr.data.tasks import TASK_NAMES, TaskParams, camera_for, get_task
from cepr.dispatch.features import timed_edge_features
from cepr.dispatch.fusion import Side, fuse
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
from cepr.errors import CeprError, unknown
from cepr.link.network import Link
from cepr.runner.paradigm import import_module_file
from cepr.runner.records import EDGE_HANDOFF, EDGE_STATE_KEY, CloudRecord, EdgeResult, EdgeState, handoff_key


class SampleRef(dict):
    """One sample as the modules see it: a dict (JSON-friendly, what HEM filters and records read).
    ``tolist()`` returns itself, because the Sedna build inside Ianvs calls ``data.tolist()`` before handing a
    sample to the cloud."""

    def tolist(self):
        return self


def as_sample(data, default_task: str = "path_hazard") -> SampleRef:
    """Accept a SampleRef, a plain dict, an RGB path (Ianvs without our dataset processor), or a one-element list
    or array of either."""
    if isinstance(data, SampleRef):
        return data
    if isinstance(data, (list, tuple, np.ndarray)) and len(data) >= 1 and not isinstance(data, str):
        if len(data) == 2 and all(isinstance(v, (str, np.str_)) for v in data):
            return SampleRef(key=Path(str(data[0])).stem, rgb=str(data[0]), label=str(data[1]), task=default_task,
                             index=-1)
        return as_sample(data[0], default_task)
    if isinstance(data, dict):
        if "rgb" not in data:
            raise CeprError(f"a sample dict needs an 'rgb' path, got keys {sorted(data)}")
        s = SampleRef(data)
        s.setdefault("key", Path(str(s["rgb"])).stem)
        s.setdefault("label", None)
        s.setdefault("task", default_task)
        s.setdefault("index", -1)
        return s
    if isinstance(data, (str, np.str_, Path)):
        return SampleRef(key=Path(str(data)).stem, rgb=str(data), label=None, task=default_task, index=-1)
    raise CeprError(f"cannot read a sample from {type(data).__name__}: {data!r:.200}")


def _check_hps(kind: str, given: dict, allowed) -> None:
    for k in given:
        if k not in allowed:
            raise CeprError(f"{kind}: " + unknown("hyperparameter", k, allowed, listing="known", sort=True))


def load_plugins(kind: str, files) -> None:
    """Import plug-in files (``plugins: [./my_backend.py]``) so what they register (a cloud backend, an edge
    reasoner) can be named by the next hyperparameters; each file is imported once, by path, as Ianvs imports
    module files. Plug-ins packaged with entry points need no such line."""

    if files in (None, "", []):
        return
    for f in [files] if isinstance(files, str) else list(files):
        path = Path(str(f)).expanduser()
        if not path.is_file():
            raise CeprError(f"{kind}: plugin file {str(f)!r} not found (relative paths resolve against the current "
                            f"directory {Path.cwd()})")
        import_module_file(path.resolve())


# ---- dataset processor ----------------------------------------------------------------------------------------

class TaskDatasetProcessor:
    """``processor(dataset) -> dataset`` with ``x`` replaced by SampleRefs. ``tasks``: a task name, a list, or
    "all"; frame i is asked ``tasks[i % len(tasks)]``, so every task gets an equal share of the frames."""

    def __init__(self, tasks="all", **kwargs):
        _check_hps("dataset_processor", kwargs, [])
        if tasks in ("all", None):
            tasks = list(TASK_NAMES)
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        for t in tasks:
            try:
                get_task(t)
            except KeyError as e:
                raise CeprError(f"dataset_processor: {e.args[0]}") from None
        if not tasks:
            raise CeprError("dataset_processor: tasks is empty")
        self.tasks = list(tasks)

    def samples(self, xs, ys) -> list[SampleRef]:
        ys = list(ys) if ys is not None and len(ys) else [None] * len(xs)
        if len(ys) != len(xs):
            raise CeprError(f"dataset has {len(xs)} inputs but {len(ys)} labels")
        out = []
        for i, (x, y) in enumerate(zip(xs, ys)):
            rgb = str(x[0] if isinstance(x, (list, tuple, np.ndarray)) else x)
            out.append(SampleRef(key=Path(rgb).stem, rgb=rgb, label=None if y is None else str(y),
                                 task=self.tasks[i % len(self.tasks)], index=i))
        return out

    def __call__(self, dataset):
        dataset.x = self.samples(list(dataset.x), getattr(dataset, "y", None))
        return dataset


# ---- edge ---------------------------------------------------------------------------------------------------

EDGE_HPS = ("model", "calibration", "reasoner", "plugins", "threads", "providers", "use_depth", "depth_for_distance",
            "keep_mask", "llm_model", "llm_threads", "llm_ctx", "llm_mmproj", "llm_lora", "llm_prompt")
# the language-model reasoner's own settings (cepr.edge.reasoners.llamacpp): only with reasoner: llamacpp
LLM_HPS = ("llm_model", "llm_threads", "llm_ctx", "llm_mmproj", "llm_lora", "llm_prompt")


def _flag(kind: str, name: str, value) -> bool:
    """A YAML boolean; "true"/"false" strings are accepted, anything else is an error (``bool("false")`` is True)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise CeprError(f"{kind}: {name} must be true or false, got {value!r}")


def _llm_options(reasoner: str, hps: dict) -> dict:
    """The llamacpp reasoner's settings from the hyperparameters, checked before any case runs."""
    given = {k: hps[k] for k in LLM_HPS if k in hps}
    if reasoner != "llamacpp":
        if given:
            raise CeprError(f"edgemodel: {', '.join(sorted(given))} only apply to reasoner: llamacpp "
                            f"(this module's reasoner is {reasoner})")
        return {}
    import importlib.util

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
        from cepr.llm.mtmd import mmproj_path

        try:
            out["llm_mmproj"] = str(mmproj_path(given["llm_mmproj"]))
        except CeprError as e:
            raise CeprError(f"edgemodel: llm_mmproj: {e}") from None
    if "llm_prompt" in given:
        from cepr.llm.reasoner import PROMPTS

        if str(given["llm_prompt"]) not in PROMPTS:
            from cepr.errors import did_you_mean

            raise CeprError(f"edgemodel: llm_prompt must be one of {', '.join(PROMPTS)}, not "
                            f"{given['llm_prompt']!r}{did_you_mean(str(given['llm_prompt']), PROMPTS)}")
        out["llm_prompt"] = str(given["llm_prompt"])
    if given.get("llm_lora") not in (None, "none"):
        from cepr.llm.llamacpp import llm_path
        from cepr.llm.lora import adapter_path, check_adapter_fits

        try:
            out["llm_lora"] = str(adapter_path(given["llm_lora"]))
            check_adapter_fits(Path(out["llm_lora"]), llm_path(out["llm_model"]))
        except CeprError as e:
            raise CeprError(f"edgemodel: llm_lora: {e}") from None
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
      ``llm_mmproj: cepr-vlm-small``);
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
        _check_hps("edgemodel", hps, EDGE_HPS)
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
        self.reasoner_options = _llm_options(self.reasoner, hps)
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
        self.use_depth = _flag("edgemodel", "use_depth", hps.get("use_depth", True))
        self.depth_for_distance = _flag("edgemodel", "depth_for_distance", hps.get("depth_for_distance", True))
        self.keep_mask = _flag("edgemodel", "keep_mask", hps.get("keep_mask", True))
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
        from cepr.edge.runtime import SegmentationModel

        pipe = self.pipelines.get(name)
        if pipe is None:
            path = self.model_file if name == self.model and self.model_file is not None else model_path(name)
            if self.calibration == "auto":
                cal = calibration_for(name)
            else:
                cal = self.calibration_file
            reasoner = create_reasoner(self.reasoner, cal, **self.reasoner_options)
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

    def predict(self, data=None, **kwargs) -> dict:
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
        # what routing policies read (cepr.dispatch.features): from the summary and mask the edge already has
        features, features_ms = timed_edge_features(r.summary, r.label, dist)
        timings = {"load": round(load_ms, 3), **{k: round(v, 3) for k, v in r.timings_ms.items()},
                   "features": round(features_ms, 3)}
        compute_ms = r.total_ms + features_ms
        state = EdgeState(summary=r.summary.to_dict(), answer=local.answer, camera=camera.to_dict(),
                          confidence=local.confidence, distribution=dist)
        EDGE_HANDOFF.put(handoff_key(s), state)  # for a runner that hands the cloud only the sample (Ianvs)
        result = EdgeResult(key=s["key"], task=task.name, answer=local.answer, confidence=local.confidence,
                            distribution=dist, label_path=s["label"], rgb_path=s["rgb"],
                            latency_ms=round(compute_ms, 3), timings_ms=timings, summary_bytes=len(r.summary_bytes),
                            summary_text_bytes=len(json.dumps(state.summary, separators=(",", ":"))),
                            model=pipe.model.path.name, provider=pipe.model.provider,
                            calibration=cal.name if cal is not None else None,
                            distances="depth" if depth is not None and self.depth_for_distance else "ground_plane",
                            features=features, started_at=started, finished_at=time.time())
        return result.as_result(mask=r.label if self.keep_mask else None, **{EDGE_STATE_KEY: state})

    def cleanup(self):
        self.pipelines.clear()
        self.calibrations.clear()


# ---- cloud --------------------------------------------------------------------------------------------------

CLOUD_OWN_HPS = ("backend", "plugins", "emulate_link", "payload", "resolution", "scale", "codec", "quality", "link", "link_seed",
                 "expert_model", "server_threads", "server_sessions", "expert_providers", "server", "server_model",
                 "server_speculative", "server_draft_tokens", "server_ctx", "server_max_model_len", "server_dtype",
                 "server_kv_cache_gib", "vllm_python", "server_mmproj", "server_metrics_url",
                 "payload_policy", "fusion")
# what base_url: auto starts: the reference expert, a GGUF model behind llama.cpp's server (cepr serve llamacpp), or
# an HF model folder behind vLLM's (cepr serve vllm)
AUTO_SERVERS = ("reference", "llamacpp", "vllm")
LLAMACPP_HPS = ("server_model", "server_speculative", "server_draft_tokens", "server_ctx", "server_mmproj")
VLLM_HPS = ("server_model", "server_speculative", "server_max_model_len", "server_dtype", "server_kv_cache_gib",
            "vllm_python")
SERVER_HPS = {"reference": (), "llamacpp": LLAMACPP_HPS, "vllm": VLLM_HPS}


def _server_sessions(hps: dict) -> int | None:
    """``server_sessions``: model sessions of the reference expert answering at once (None: the server's default,
    one per core); an integer >= 1."""
    v = hps.get("server_sessions")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise CeprError(f"cloudmodel: server_sessions must be an integer >= 1, got {v!r}")
    return v


def _expert_providers(hps: dict):
    """``expert_providers``: the ONNX Runtime execution provider(s) of the reference expert that cepr serves
    (``cpu`` by default; as the edge module's ``providers``), checked against this onnxruntime build."""
    v = hps.get("expert_providers", DEFAULT_PROVIDERS)
    try:
        resolve_providers(v, warn=False)
    except CeprError as e:
        raise CeprError(f"cloudmodel: expert_providers: {e}") from None
    return v


def _auto_server(hps: dict, auto: bool) -> dict:
    """What ``base_url: auto`` starts (``server``: reference, the default, or llamacpp) and the llama.cpp server's
    settings, checked before any case runs."""
    server = str(hps.get("server", "reference"))
    if server not in AUTO_SERVERS:
        from cepr.errors import did_you_mean

        raise CeprError(f"cloudmodel: server must be one of {', '.join(AUTO_SERVERS)}, not {server!r}"
                        f"{did_you_mean(server, AUTO_SERVERS)}")
    foreign = [k for k in sorted(set(LLAMACPP_HPS) | set(VLLM_HPS)) if k in hps and k not in SERVER_HPS[server]]
    if foreign:
        owners = [name for name, keys in SERVER_HPS.items() if set(foreign) <= set(keys)]
        raise CeprError(f"cloudmodel: {', '.join(foreign)} only apply to server: {' or '.join(owners) or 'llamacpp'}"
                        + (f" (this one is server: {server})" if "server" in hps else ""))
    if server == "reference":
        return {"server": server}
    if not auto:
        raise CeprError(f"cloudmodel: server: {server} is what base_url: auto starts (with backend: openai); "
                        "with a base_url of your own, drop it")
    if server == "vllm":
        return _vllm_settings(hps)
    from cepr.serve.llamacpp_server import LlamaCppServerConfig

    cfg = LlamaCppServerConfig(model=str(hps.get("server_model", "gemma3-270m")),
                               speculative=str(hps.get("server_speculative", "none")),
                               draft_tokens=int(hps.get("server_draft_tokens", 10)),
                               n_ctx=int(hps.get("server_ctx", 4096)),
                               mmproj=None if hps.get("server_mmproj") in (None, "none") else str(hps["server_mmproj"]))
    try:
        cfg.check()
    except CeprError as e:
        raise CeprError(f"cloudmodel: {e}") from None
    return {"server": server, "model": cfg.model, "speculative": cfg.speculative, "draft_tokens": cfg.draft_tokens,
            "ctx": cfg.n_ctx, "mmproj": cfg.mmproj}


def _vllm_settings(hps: dict) -> dict:
    """``server: vllm``'s settings, checked (the model folder and the speculative config; not vLLM's python, which
    is looked up when the server starts)."""
    from cepr.llm.spec_config import parse_speculative
    from cepr.serve.vllm_server import check_model

    if "server_model" not in hps:
        raise CeprError("cloudmodel: server: vllm needs server_model (a Hugging Face model folder, e.g. what "
                        "`cepr models tiny --out DIR` writes to DIR/hf)")
    spec = parse_speculative(hps.get("server_speculative"), where="cloudmodel: server_speculative")
    try:
        max_len, kv = int(hps.get("server_max_model_len", 1024)), float(hps.get("server_kv_cache_gib", 1.0))
    except (TypeError, ValueError) as e:
        raise CeprError(f"cloudmodel: server_max_model_len / server_kv_cache_gib must be numbers: {e}") from None
    if max_len < 16 or kv <= 0:
        raise CeprError(f"cloudmodel: server_max_model_len must be >= 16 and server_kv_cache_gib > 0, got {max_len} "
                        f"and {kv}")
    return {"server": "vllm", "model": check_model(hps["server_model"]), "speculative": spec,
            "dtype": str(hps.get("server_dtype", "float32")), "max_model_len": max_len, "kv_cache_gib": kv,
            "python": hps.get("vllm_python")}


def _payload_chain(hps: dict, base: PayloadConfig):
    """``payload_policy``: what each hard sample sends (cepr.dispatch.payload_policy), over the fixed settings."""
    from cepr.dispatch.payload_policy import payload_policy

    try:
        return payload_policy(hps.get("payload_policy"), base)
    except CeprError as e:
        raise CeprError(f"cloudmodel: {e}") from None


def _fusion(hps: dict) -> str:
    """``fusion``: the rule for the final answer when both sides answered (cepr.dispatch.fusion), checked."""
    from cepr.dispatch.fusion import DEFAULT_FUSION, FUSION_REGISTRY, get_fusion_rule

    name = str(hps.get("fusion", DEFAULT_FUSION))
    try:
        get_fusion_rule(name)
    except CeprError as e:
        raise CeprError(f"cloudmodel: {e}") from None
    return FUSION_REGISTRY.canonical(name)


class CloudModule:
    """A cloud backend (``openai`` for any OpenAI-compatible server, ``inprocess`` for the reference expert in
    this process) plus payload and link settings, as an Ianvs cloud model: ``inference(data, post_process=None,
    **kwargs)``. ``base_url: auto`` starts the reference cloud expert server (and the job stops it).

    ``payload_policy`` (``fixed`` by default; ``AdaptivePayload``, ``PrivacyAware``, a mapping with settings, or a
    list applied in order: :mod:`cepr.dispatch.payload_policy`) chooses each request's payload from the edge's
    scene summary, starting from the fixed settings (``payload``, ``resolution``, ...); each cloud result records
    the payload it sent (``payload``, ``payload_rule``, ``privacy_redacted``). ``fusion`` (``cloud_wins`` by
    default, ``confidence``, ``safety_first``: :mod:`cepr.dispatch.fusion`) makes the final answer when both
    sides answered (``fused_from``)."""

    @staticmethod
    def _settings(hps: dict):
        """(backend name, backend config, payload, link) from the hyperparameters, validated with no side effects
        (nothing is started): ``check_hyperparameters`` runs this for every test case before the first one. The
        backend config holds the payload when the backend's settings model takes one."""
        load_plugins("cloudmodel", hps.get("plugins"))
        backend = hps.get("backend", "openai")
        config_model = backend_config_model(backend)  # an unknown backend gets a "did you mean" here
        backend_keys = set(config_model.model_fields) - {"payload"}
        _check_hps("cloudmodel", hps, set(CLOUD_OWN_HPS) | backend_keys)
        try:
            payload = PayloadConfig(mode=hps.get("payload", "summary+image"), resolution=hps.get("resolution"),
                                    scale=hps.get("scale"), codec=hps.get("codec", "jpeg"),
                                    quality=int(hps.get("quality", 85)))
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise CeprError(f"cloudmodel: bad payload settings: {e}") from None
        cfg = {k: v for k, v in hps.items() if k in backend_keys}
        auto = backend == "openai" and cfg.get("base_url", "auto") == "auto"
        if backend == "openai" and not auto and "model" not in cfg:
            raise CeprError("cloudmodel: the openai backend needs `model` (the served model's name)")
        if hps.get("server_metrics_url") is not None and (backend != "openai" or auto):
            raise CeprError("cloudmodel: server_metrics_url reads the speculative counters of a vLLM server you "
                            "started (backend: openai with your base_url); with base_url: auto or another backend "
                            "cepr reads its own engine's counters: drop it")
        fields = config_model.model_fields
        # stand-ins for what is filled in at start (base_url: auto, the in-process expert's model name)
        stand_ins = {"base_url": "http://127.0.0.1/v1", "model": "auto"}
        args = {**{k: v for k, v in stand_ins.items() if k in fields}, **cfg}
        if auto:
            args["base_url"] = stand_ins["base_url"]
        chain = _payload_chain(hps, payload)
        if "payload" in fields:
            cfg["payload"] = args["payload"] = payload
        try:  # the backend's own config model, with stand-ins for what base_url: auto fills in at start
            config_model(**args)
            for p in chain.possible() if "payload" in fields else ():  # every payload the policy can choose
                config_model(**{**args, "payload": p})
        except ValueError as e:
            raise CeprError(f"cloudmodel: bad backend settings: {e}"
                            + ("" if chain.fixed else f" (with payload_policy {', '.join(chain.names())})")) from None
        if "payload" in fields and not chain.fixed:  # the backend checks at start what it may be asked to send
            cfg["payload"] = next((p for p in chain.possible() if p.sends_image), payload)
        link = hps.get("link", "4g")
        try:
            link_obj = None if link in (None, "none") else Link(link, seed=int(hps.get("link_seed", 0)))
        except ValueError as e:
            raise CeprError(f"cloudmodel: bad link: {e}") from None
        emulate = _flag("cloudmodel", "emulate_link", hps.get("emulate_link", True))
        _server_sessions(hps)
        _expert_providers(hps)
        server = _auto_server(hps, auto)
        if cfg.get("message_style") == "vlm" and server["server"] == "llamacpp" and not server.get("mmproj"):
            raise CeprError("cloudmodel: message_style: vlm sends the frame as an image part: server: llamacpp "
                            "needs server_mmproj (the VLM's vision projector GGUF)")
        return backend, cfg, payload, link_obj, emulate, chain, _fusion(hps)

    @classmethod
    def check_hyperparameters(cls, **hps) -> None:
        """Raise a CeprError for bad hyperparameters, without starting anything."""
        cls._settings(hps)

    def __init__(self, **hps):
        backend, cfg, payload, link_obj, emulate, self.payload_chain, self.fusion = self._settings(hps)
        self.expert_model = hps.get("expert_model", "cloud")
        self.vllm = None  # the vLLM server behind this module (server: vllm): its counters are read per request
        self.external_metrics = False  # server_metrics_url: the counters of a vLLM that cepr did not start
        if backend == "openai":
            if cfg.get("base_url", "auto") == "auto" and _auto_server(hps, True)["server"] == "vllm":
                from cepr.serve.vllm_server import vllm_server

                s = _auto_server(hps, True)
                self.vllm = vllm_server(s["model"], speculative=s["speculative"], dtype=s["dtype"],
                                        max_model_len=s["max_model_len"], python=s["python"],
                                        kv_cache_gib=s["kv_cache_gib"])
                self.vllm_spec = s["speculative"]
                self.vllm_start = self.vllm.spec_counters()  # this test case's baseline
                cfg["base_url"] = self.vllm.url
                cfg.setdefault("model", self.vllm.model_id())
                cfg.setdefault("answer_format", "json_schema")  # vLLM's structured output: the answer JSON's schema
            elif cfg.get("base_url", "auto") == "auto" and _auto_server(hps, True)["server"] == "llamacpp":
                from cepr.cloud.autoserve import llamacpp_server

                s = _auto_server(hps, True)
                srv = llamacpp_server(s["model"], int(hps.get("server_threads", 1)), s["speculative"],
                                      s["draft_tokens"], s["ctx"], mmproj=s["mmproj"])
                cfg["base_url"] = srv.url
                cfg.setdefault("model", srv.model_id())
                cfg.setdefault("answer_format", "json_object")  # the reply constrained to the answer JSON
                # without a projector its server drops text given as a list of parts; with one (its multimodal
                # chat handler) parts are how the image travels
                cfg.setdefault("content_format", "parts" if s["mmproj"] else "string")
            elif hps.get("server_metrics_url") is not None:  # a vLLM someone else started: read its counters
                from cepr.serve.vllm_server import MetricsEndpoint

                self.vllm = MetricsEndpoint(str(hps["server_metrics_url"]), model=str(cfg.get("model", "")))
                self.vllm_spec, self.external_metrics = None, True  # its speculative config: the server's own
                self.vllm_start = self.vllm.spec_counters()  # fails early when the page does not answer
            elif cfg.get("base_url", "auto") == "auto":
                from cepr.cloud.autoserve import reference_server_url
                from cepr.cloud.expert import EXPERT_MODEL_NAME  # brings the openai SDK: only for auto

                cfg["base_url"] = reference_server_url(self.expert_model, int(hps.get("server_threads", 1)),
                                                       _server_sessions(hps), providers=_expert_providers(hps))
                cfg.setdefault("model", EXPERT_MODEL_NAME)
        elif backend == "inprocess":
            cfg["expert_model"] = self.expert_model
            cfg["threads"] = int(hps.get("server_threads", 1))
            cfg["sessions"] = _server_sessions(hps)
            cfg["providers"] = _expert_providers(hps)
        try:
            backend_obj = create_backend(backend, cfg)
        except ValueError as e:
            raise CeprError(f"cloudmodel: bad backend settings: {e}") from None
        if backend == "vllm" and backend_obj.cfg.speculative:  # vLLM's offline engine: its counters, read the same way
            from cepr.llm.spec_config import parse_speculative

            self.vllm, self.vllm_spec = backend_obj, parse_speculative(backend_obj.cfg.speculative)
            self.vllm_start = backend_obj.spec_counters()
        link = hps.get("link", "4g")
        self.link_name = link if isinstance(link, str) else "custom"
        self.client = CloudClient(backend_obj, link_obj, emulate=emulate)
        self.payload = payload

    def _image(self, s: SampleRef, payload: PayloadConfig) -> np.ndarray:
        """The frame to send: the dataset's own copy at the requested resolution when it has one."""
        return load_rgb(payload_frame_path(s["rgb"], s["label"], payload.resolution))

    def inference(self, data=None, post_process=None, edge_state: EdgeState | None = None, **kwargs) -> dict:
        """``edge_state``: what the edge saw, handed over by ``cepr run``; under Ianvs, which passes only the
        sample, it comes from ``EDGE_HANDOFF`` (cepr.runner.records)."""
        s = as_sample(data)
        task = get_task(s["task"])
        stored = EDGE_HANDOFF.take(handoff_key(s))
        edge = edge_state if edge_state is not None else stored
        started = time.time()
        choice = self.payload_chain.choose(edge.summary if edge else None, s["key"])  # this sample's payload
        payload = choice.payload
        if payload.sends_summary and edge is None:
            raise CeprError(f"payload {payload.mode!r} sends the edge's scene summary, but the edge has not run on "
                            "this sample (mining-then-inference sends hard samples straight to the cloud): use "
                            "payload: image, or hard_example_mining_mode: inference-then-mining in testenv.yaml")
        image = self._image(s, payload) if payload.sends_image else None
        camera = edge.camera if edge else None
        if camera is None and image is not None:
            camera = camera_for(None, image.shape[1], image.shape[0]).to_dict()
        req = CloudRequest(task.name, task.render_prompt(TaskParams()), task.answers,
                           summary=edge.summary if edge and payload.sends_summary else None,
                           image=image, camera=camera, key=s["key"], payload=payload)
        spec0 = self._spec_reading()
        r = self.client.infer(req)
        spec = self._spec_fields(spec0) if spec0 is not None else {}
        ok = r.status == "ok"
        answer, fused_from = (edge.answer if edge else None), None  # a fallback or an unusable reply: the edge's
        if ok:
            answer, fused_from = fuse(self.fusion, task.name, task.answers,
                                      Side(edge.answer, edge.confidence, edge.distribution) if edge else None,
                                      Side(r.answer, r.confidence))
        out = CloudRecord(
            source="cloud" if ok else "edge",  # a fallback or an unusable reply leaves the edge's answer standing
            key=s["key"], task=task.name, answer=answer,
            cloud_answer=r.answer if ok else None, status=r.status, reason=r.reason, confidence=r.confidence,
            latency_ms=round(self.client.latency_ms(r), 3), server_ms=round(r.timings.total_ms, 3),
            ttft_ms=r.timings.ttft_ms, inter_token_ms=r.timings.inter_token_ms, tokens_per_s=r.timings.tokens_per_s,
            transfer_ms=round(r.timings.transfer_ms, 3), bytes_up=r.bytes_up,
            bytes_down=r.bytes_down, prompt_tokens=r.usage.prompt_tokens, completion_tokens=r.usage.completion_tokens,
            tokens_counted=r.usage.counted, model=r.model, attempts=r.attempts, label_path=s["label"],
            rgb_path=s["rgb"], started_at=started, finished_at=time.time(),
            payload=payload.model_dump(), payload_base=self.payload.model_dump(),
            payload_policy=self.payload_chain.describe(), payload_rule=choice.rule,
            privacy_redacted=choice.privacy_redacted, fusion=self.fusion, fused_from=fused_from, **spec).as_result()
        if callable(post_process):
            out = post_process(out)
        return out

    def _spec_reading(self) -> dict | None:
        """vLLM's speculative counters now; None without speculation or when /metrics does not answer (logged:
        the sample goes on without them)."""
        if self.vllm is None or (self.vllm_spec is None and not self.external_metrics):
            return None
        try:
            return self.vllm.spec_counters()
        except CeprError as e:
            import logging

            logging.getLogger(__name__).warning("speculative-decoding counters not read: %s", e)
            return None

    def _spec_fields(self, before: dict) -> dict:
        """vLLM's speculative counters around one request: the readings (``spec_before``/``spec_after``, from which
        the ``spec_acceptance`` metric takes the whole run's totals whatever the concurrency) and this request's
        acceptance (exact when requests run one at a time; overlapping requests share their steps' counts)."""
        from cepr.serve.vllm_server import acceptance_rate

        after = self._spec_reading()
        if after is None:
            return {}
        return {"spec_before": before, "spec_after": after, "spec_acceptance": acceptance_rate(before, after)}

    def server_stats(self) -> dict | None:
        """For the test case's record: the speculative-decoding counters of vLLM since this module started (None
        without server: vllm)."""
        if self.vllm is None:
            return None
        from cepr.serve.vllm_server import counter_delta

        return {"server": "vllm", "model": self.vllm.model,
                "speculative": self.vllm_spec.vllm_config() if self.vllm_spec else None,
                "speculative_note": self.vllm_spec.note if self.vllm_spec else None,
                "counted_by": getattr(self.vllm, "counted_by",
                                      "vLLM /metrics (vllm:spec_decode_*_total), before and after the test case"),
                **counter_delta(self.vllm_start, self.vllm.spec_counters())}

    def cleanup(self):
        self.client.close()
