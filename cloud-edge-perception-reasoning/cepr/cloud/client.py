"""Cloud backends by name (lazy imports, "did you mean" errors) and the client that adds the link model.

:data:`BACKEND_REGISTRY` holds every backend by name. A backend is a class built as ``Backend(config: dict)`` with
``infer(CloudRequest) -> CloudResult`` and ``close()``; it declares the pydantic model of its settings as the
capability ``config_model`` (a class, or a ``"package.module:Class"`` target for a lazily registered backend). A new
backend is one file with ``@register_backend("name", config_model=MyConfig)`` on its class, or an entry point in the
group ``cepr.backends`` of another package.
"""

from __future__ import annotations

import json
import time

from cepr.cloud.parsing import AnswerParseError, parse_answer
from cepr.records import CloudRequest, CloudResult, Timings, Usage
from cepr.registry import Registry, import_target

_OPENAI_CONFIG = "cepr.cloud.openai_backend:OpenAIBackendConfig"

BACKEND_REGISTRY: Registry[type] = Registry("backends", "cloud backend", capabilities={"config_model": None})
register_backend = BACKEND_REGISTRY.register
# any OpenAI-compatible server; imported only when chosen (it brings the openai SDK)
BACKEND_REGISTRY.add_lazy("openai", "cepr.cloud.openai_backend:OpenAIBackend", config_model=_OPENAI_CONFIG)
# a Hugging Face causal LM in this process (the llm extra: transformers and torch, imported when built)
BACKEND_REGISTRY.add_lazy("transformers", "cepr.cloud.transformers_backend:TransformersBackend",
                          config_model="cepr.cloud.transformers_backend:TransformersConfig")
# vLLM's offline engine (vllm.LLM), in this process or in a worker with vLLM's own python (cepr.llm.vllm_env)
BACKEND_REGISTRY.add_lazy("vllm", "cepr.cloud.vllm_backend:VllmBackend",
                          config_model="cepr.cloud.vllm_backend:VllmConfig")
# a grounded VLM in the cloud: an image through its encoder, or the edge's projected vision tokens (payload: features);
# the decoder in llama.cpp, transformers or vLLM with prompt embeddings (llm extra)
BACKEND_REGISTRY.add_lazy("grounded", "cepr.cloud.grounded_backend:GroundedCloudBackend",
                          config_model="cepr.cloud.grounded_backend:GroundedCloudConfig")
BACKENDS = BACKEND_REGISTRY.view()


def backend_config_model(name: str) -> type | None:
    """The pydantic model of backend ``name``'s settings (imported now if it is given as a target)."""
    model = BACKEND_REGISTRY.capabilities(name)["config_model"]
    return import_target(model) if isinstance(model, str) else model


def create_backend(name: str, config: dict):
    """Backend ``name`` built from its settings; an unknown name gets a "did you mean" and the list of backends."""
    return BACKEND_REGISTRY.get(name)(config)


# the reference expert in this process, no HTTP; it takes the openai backend's settings (plus its own three)
@register_backend("inprocess", config_model=_OPENAI_CONFIG)
class InProcessExpert:
    """The reference expert called directly. Byte counts are those of the JSON request and reply bodies the
    HTTP backend would send for the same payload (no HTTP framing or streaming overhead)."""

    name = "inprocess"

    def __init__(self, config: dict):
        # a backend's modules load when it is chosen (the registry is lazy: `import cepr` stays light)
        from cepr.cloud.expert import EXPERT_MODEL_NAME, ReferenceExpert
        from cepr.cloud.openai_backend import OpenAIBackendConfig

        cfg = dict(config)
        model = cfg.pop("expert_model", "cloud")
        threads = cfg.pop("threads", 1)
        sessions = cfg.pop("sessions", None)  # model sessions for concurrent samples (None: one per core)
        providers = cfg.pop("providers", "cpu")  # ONNX Runtime execution provider(s) of the expert's model
        cfg.setdefault("model", EXPERT_MODEL_NAME)
        self.cfg = OpenAIBackendConfig(**cfg)
        self.expert = ReferenceExpert(model, threads=threads, sessions=sessions, providers=providers)

    def infer(self, req: CloudRequest) -> CloudResult:
        from cepr.cloud.openai_backend import build_messages  # loaded with the backend, as above

        t0 = time.perf_counter()
        msgs = build_messages(self.cfg, req)
        body = json.dumps({"model": self.cfg.model, "messages": msgs, "max_tokens": self.cfg.max_tokens})
        reply = self.expert.answer(msgs)
        total = 1e3 * (time.perf_counter() - t0)
        usage = Usage(reply.prompt_tokens, reply.completion_tokens, counted="estimate")  # the expert's own count
        down = len(json.dumps({"choices": [{"message": {"role": "assistant", "content": reply.text}}]}))
        try:
            answer, reason, conf = parse_answer(reply.text, req.answers)
        except AnswerParseError as e:
            return CloudResult("error", reason=f"unparsable answer: {e}", raw_text=reply.text, usage=usage,
                               timings=Timings(total_ms=total), bytes_up=len(body), bytes_down=down,
                               model=self.cfg.model)
        return CloudResult("ok", answer, reason, conf, reply.text, usage, Timings(total_ms=total), len(body), down,
                           self.cfg.model)

    def close(self) -> None:
        pass


class CloudClient:
    """A backend plus an optional link model: the modelled transfer time of the bytes that crossed is added to
    the result, and (``emulate``, the default) waited out, so the run's wall clock, and so its throughput, pays
    for the link as the robot would. ``emulate=False`` only adds it to the latency, for quick runs."""

    def __init__(self, backend, link=None, emulate: bool = True):
        self.backend = backend
        self.link = link
        self.emulate = emulate

    def infer(self, req: CloudRequest) -> CloudResult:
        r = self.backend.infer(req)
        if self.link is not None and (r.bytes_up or r.bytes_down):
            r.timings.transfer_ms = self.link.transfer(r.bytes_up, r.bytes_down, key=req.key).total_ms
            if self.emulate:
                time.sleep(r.timings.transfer_ms / 1e3)
        return r

    def latency_ms(self, r: CloudResult) -> float:
        """Cloud part of a sample's end-to-end latency: server/round-trip time plus modelled transfer."""
        return r.timings.total_ms + r.timings.transfer_ms

    def close(self) -> None:
        self.backend.close()
