"""``backend: grounded``: a grounded VLM's decoder in the cloud, fed the edge's projected vision tokens.

Split computing: the edge runs the segmentation encoder and the grounded VLM's projector, the request carries
the projected tokens (``payload: features``, FP16 or INT8, base64 in the JSON body like an image's data URL), and
the cloud runs a decoder trained on those tokens, in llama.cpp in-process (``vlm_threads`` threads). With
``vlm_model: auto`` it loads the VLM the edge named in the request (the one whose projector made the tokens);
a shipped name or a ``cepr vlm train-grounded`` folder pins one, which must take the same token width. Its reply
is what a chat server's would be: the answer, the calibrated confidence and, for a model trained with them, the
risk summary as the reason. Byte counts are those of the JSON request and reply bodies (no HTTP framing).
"""

from __future__ import annotations

import json
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cepr.cloud.payload import features_field
from cepr.errors import CeprError
from cepr.records import CloudRequest, CloudResult, PayloadConfig, Timings, Usage

QUANTS = ("q8_0", "q4_0", "f32")


class GroundedCloudConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vlm_model: str = Field("auto", description="auto: the VLM the edge names; or a shipped name or a folder")
    vlm_quant: str = "q8_0"
    vlm_threads: int = Field(1, ge=1)
    reason: bool = Field(True, description="write the risk summary as the reply's reason (a model trained to)")
    payload: PayloadConfig = PayloadConfig(mode="features")

    @field_validator("vlm_quant")
    @classmethod
    def _quant(cls, v):
        if v not in QUANTS:
            raise ValueError(f"vlm_quant must be one of {', '.join(QUANTS)}, not {v!r}")
        return v

    @field_validator("payload")
    @classmethod
    def _features_only(cls, v):
        if not v.sends_features:
            raise ValueError(f"backend grounded reads the features payload only, not {v.mode!r}")
        return v


class GroundedCloudBackend:
    name = "grounded"

    def __init__(self, config: dict):
        self.cfg = GroundedCloudConfig(**config)
        if self.cfg.vlm_model != "auto":
            from cepr.edge.models import grounded_path

            grounded_path(self.cfg.vlm_model)  # a bad name fails before any case runs
        self._engines: dict[str, tuple] = {}

    def _engine(self, requested: str | None):
        from cepr.edge.models import grounded_path
        from cepr.llm.grounded import GroundedLlamaCpp, load_prompts

        name = self.cfg.vlm_model if self.cfg.vlm_model != "auto" else requested
        if not name:
            raise CeprError("vlm_model auto: the request does not name the VLM whose projector made its tokens")
        folder = str(grounded_path(name))
        if folder not in self._engines:
            prompts, spec = load_prompts(folder)
            self._engines[folder] = (GroundedLlamaCpp(folder, quant=self.cfg.vlm_quant,
                                                      threads=self.cfg.vlm_threads), prompts, spec)
        return self._engines[folder]

    def infer(self, req: CloudRequest) -> CloudResult:
        from cepr.llm.grounded import decode_vision, option_probabilities

        t0 = time.perf_counter()
        if req.features is None:
            return CloudResult("error", reason="the request carries no vision tokens (payload: features)")
        body = json.dumps({"model": self.cfg.vlm_model, "task": req.task, "prompt": req.user_prompt(),
                           "features_model": req.features_model, "features": features_field(req.features)})
        try:
            emb = decode_vision(req.features)
            engine, prompts, spec = self._engine(req.features_model)
            engine.set_frame_embeddings(emb)
        except CeprError as e:
            return CloudResult("error", reason=str(e), timings=Timings(total_ms=1e3 * (time.perf_counter() - t0)),
                               bytes_up=len(body), model=self.cfg.vlm_model)
        text_ids = prompts.text_ids(req.task, None)
        row = engine.next_logits(text_ids)[prompts.option_ids(req.task)]
        probs = option_probabilities(row, spec.temperature)
        k = int(np.argmax(probs))
        reason, completion = "", 1
        if spec.risk_summary and self.cfg.reason:
            ids = engine.generate(prompts.risk_ids, prompts.eos)
            reason, completion = prompts.decode(ids), 1 + len(ids)
        text = json.dumps({"answer": req.answers[k], "reason": reason, "confidence": round(float(probs[k]), 4)})
        down = len(json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}))
        usage = Usage(1 + len(emb) + len(text_ids), completion, counted="server")
        model = f"{engine.folder.name}-{self.cfg.vlm_quant}"
        return CloudResult("ok", req.answers[k], reason, round(float(probs[k]), 4), text, usage,
                           Timings(total_ms=1e3 * (time.perf_counter() - t0)), len(body), down, model)

    def close(self) -> None:
        for engine, _, _ in self._engines.values():
            engine.close()
        self._engines.clear()
