"""Cloud backends by name (lazy imports, "did you mean" errors) and the client that adds the link model."""

from __future__ import annotations

import difflib
import importlib
import json

from cepr.cloud.base import CloudRequest
from cepr.cloud.result import CloudResult, Timings, Usage
from cepr.errors import CeprError

BACKENDS = {
    "openai": "cepr.cloud.openai_backend:OpenAIBackend",  # any OpenAI-compatible server
    "inprocess": "cepr.cloud.client:InProcessExpert",  # the reference expert in this process, no HTTP
}


def create_backend(name: str, config: dict):
    if name not in BACKENDS:
        hint = difflib.get_close_matches(name, BACKENDS, n=1)
        raise CeprError(f"unknown cloud backend {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                        + f" (backends: {', '.join(BACKENDS)})")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(config)


class InProcessExpert:
    """The reference expert called directly. Byte counts are those of the JSON request and reply bodies the
    HTTP backend would send for the same payload (no HTTP framing or streaming overhead)."""

    name = "inprocess"

    def __init__(self, config: dict):
        from cepr.cloud.expert import EXPERT_MODEL_NAME, ReferenceExpert
        from cepr.cloud.openai_backend import OpenAIBackendConfig

        cfg = dict(config)
        model = cfg.pop("expert_model", "cloud")
        threads = cfg.pop("threads", 1)
        cfg.setdefault("model", EXPERT_MODEL_NAME)
        self.cfg = OpenAIBackendConfig(**cfg)
        self.expert = ReferenceExpert(model, threads=threads)

    def infer(self, req: CloudRequest) -> CloudResult:
        import time

        from cepr.cloud.openai_backend import build_messages
        from cepr.cloud.parsing import AnswerParseError, parse_answer

        t0 = time.perf_counter()
        msgs = build_messages(self.cfg, req)
        body = json.dumps({"model": self.cfg.model, "messages": msgs, "max_tokens": self.cfg.max_tokens})
        reply = self.expert.answer(msgs)
        total = 1e3 * (time.perf_counter() - t0)
        usage = Usage(reply.prompt_tokens, reply.completion_tokens)
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
    """A backend plus an optional link model: the modelled transfer time of the counted bytes is added."""

    def __init__(self, backend, link=None):
        self.backend = backend
        self.link = link

    def infer(self, req: CloudRequest) -> CloudResult:
        r = self.backend.infer(req)
        if self.link is not None and (r.bytes_up or r.bytes_down):
            r.timings.transfer_ms = self.link.transfer(r.bytes_up, r.bytes_down, key=req.key).total_ms
        return r

    def latency_ms(self, r: CloudResult) -> float:
        """Cloud part of a sample's end-to-end latency: server/round-trip time plus modelled transfer."""
        return r.timings.total_ms + r.timings.transfer_ms

    def close(self) -> None:
        self.backend.close()
