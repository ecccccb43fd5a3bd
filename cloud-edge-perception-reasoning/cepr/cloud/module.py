"""The cloud model of the Ianvs joint-inference paradigm: for one sample the edge sent, build the payload its
payload policy chose (summary, image or both), ask the backend over the (optionally modelled) link, fuse the
cloud's answer with the edge's, and fall back to the edge answer when the cloud fails. Servers that ``base_url:
auto`` names are started here (cepr.servers). The adapter in ``testalgorithms/perception-reasoning/`` only
registers this class.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from cepr.cloud.client import CloudClient, backend_config_model, create_backend
from cepr.cloud.payload import part_bytes_of, payload_frame_path
from cepr.data.cloud_robotics import load_rgb
from cepr.data.tasks import TaskParams, camera_for, get_task
from cepr.dispatch.fusion import DEFAULT_FUSION, FUSION_REGISTRY, Side, fuse, get_fusion_rule
from cepr.dispatch.payload_policy import payload_policy
from cepr.edge.providers import DEFAULT as DEFAULT_PROVIDERS
from cepr.edge.providers import resolve_providers
from cepr.errors import CeprError, did_you_mean
from cepr.hyperparameters import as_flag, check_known
from cepr.link.network import Link
from cepr.llm.spec_config import parse_speculative
from cepr.records import (
    EDGE_HANDOFF,
    PAYLOAD_PRICER,
    CloudRecord,
    CloudRequest,
    EdgeState,
    PayloadConfig,
    SampleRef,
    as_sample,
    handoff_key,
)
from cepr.registry import load_plugins
from cepr.servers.autoserve import llamacpp_server, reference_server_url
from cepr.servers.llamacpp_server import LlamaCppServerConfig
from cepr.servers.vllm_server import MetricsEndpoint, acceptance_rate, check_model, counter_delta, vllm_server

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
    try:
        return payload_policy(hps.get("payload_policy"), base)
    except CeprError as e:
        raise CeprError(f"cloudmodel: {e}") from None


def _fusion(hps: dict) -> str:
    """``fusion``: the rule for the final answer when both sides answered (cepr.dispatch.fusion), checked."""
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
        check_known("cloudmodel", hps, set(CLOUD_OWN_HPS) | backend_keys)
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
        emulate = as_flag("cloudmodel", "emulate_link", hps.get("emulate_link", True))
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

                self.vllm = MetricsEndpoint(str(hps["server_metrics_url"]), model=str(cfg.get("model", "")))
                self.vllm_spec, self.external_metrics = None, True  # its speculative config: the server's own
                self.vllm_start = self.vllm.spec_counters()  # fails early when the page does not answer
            elif cfg.get("base_url", "auto") == "auto":
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

            self.vllm, self.vllm_spec = backend_obj, parse_speculative(backend_obj.cfg.speculative)
            self.vllm_start = backend_obj.spec_counters()
        link = hps.get("link", "4g")
        self.link_name = link if isinstance(link, str) else "custom"
        self.client = CloudClient(backend_obj, link_obj, emulate=emulate)
        self.payload = payload
        PAYLOAD_PRICER.publish(self.price)  # the edge prices unsent samples with it under Ianvs (cepr.records)

    def price(self, data, edge_state: EdgeState | None) -> dict[str, int]:
        """What sending this sample would carry, by payload part (``{"image": n, "summary": m}``), for the
        payload this module would choose for it (its payload policy reads the edge's summary). The edge module
        records it on every sample it answers, so the bandwidth metrics price unsent samples by arithmetic."""
        s = as_sample(data)
        payload = self.payload_chain.choose(edge_state.summary if edge_state else None, s["key"]).payload
        image = self._image(s, payload) if payload.sends_image else None
        return part_bytes_of(payload, image, edge_state.summary if edge_state else None)

    def _image(self, s: SampleRef, payload: PayloadConfig) -> np.ndarray:
        """The frame to send: the dataset's own copy at the requested resolution when it has one."""
        return load_rgb(payload_frame_path(s["rgb"], s["label"], payload.resolution))

    def inference(self, data=None, post_process=None, edge_state: EdgeState | None = None, **kwargs) -> dict:
        """``edge_state``: what the edge saw, handed over by ``cepr run``; under Ianvs, which passes only the
        sample, it comes from ``EDGE_HANDOFF`` (cepr.records)."""
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
        finished = time.time()
        parts = part_bytes_of(payload, image, req.summary)  # the sample-dependent part of bytes_up, after the timers
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
            rgb_path=s["rgb"], started_at=started, finished_at=finished,
            payload=payload.model_dump(), payload_base=self.payload.model_dump(),
            payload_policy=self.payload_chain.describe(), payload_rule=choice.rule, payload_bytes=parts,
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
            logging.getLogger(__name__).warning("speculative-decoding counters not read: %s", e)
            return None

    def _spec_fields(self, before: dict) -> dict:
        """vLLM's speculative counters around one request: the readings (``spec_before``/``spec_after``, from which
        the ``spec_acceptance`` metric takes the whole run's totals whatever the concurrency) and this request's
        acceptance (exact when requests run one at a time; overlapping requests share their steps' counts)."""
        after = self._spec_reading()
        if after is None:
            return {}
        return {"spec_before": before, "spec_after": after, "spec_acceptance": acceptance_rate(before, after)}

    def server_stats(self) -> dict | None:
        """For the test case's record: the speculative-decoding counters of vLLM since this module started (None
        without server: vllm)."""
        if self.vllm is None:
            return None

        return {"server": "vllm", "model": self.vllm.model,
                "speculative": self.vllm_spec.vllm_config() if self.vllm_spec else None,
                "speculative_note": self.vllm_spec.note if self.vllm_spec else None,
                "counted_by": getattr(self.vllm, "counted_by",
                                      "vLLM /metrics (vllm:spec_decode_*_total), before and after the test case"),
                **counter_delta(self.vllm_start, self.vllm.spec_counters())}

    def cleanup(self):
        PAYLOAD_PRICER.withdraw(self.price)
        self.client.close()
