"""``backend: grounded``: a grounded VLM in the cloud, fed an image or the edge's projected vision tokens.

* ``payload: features`` (split computing): the edge runs the segmentation encoder and the grounded VLM's
  projector, the request carries the projected tokens (FP16 or INT8, base64 in the JSON body like an image's
  data URL), and the cloud runs a decoder trained on those tokens. With ``vlm_model: auto`` it loads the VLM the
  edge named in the request (the one whose projector made the tokens).
* ``payload: image`` (JPEG, PNG or WebP, at the payload's resolution): the cloud decodes the image as sent, runs
  the VLM's own encoder on it (``grounded-cloud``: the w32 cloud encoder; the default for ``vlm_model: auto``),
  pools and projects its vision tokens, and decodes.

The decoder runs on ``engine``: llama.cpp in-process (``vlm_quant``, ``vlm_threads`` threads), transformers
in-process, or vLLM's OpenAI server started on loopback with prompt embeddings (``cepr.cloud.grounded_engines``).
A shipped name or a ``cepr vlm train-grounded`` folder pins the VLM, which must take the same token width. The
reply is what a chat server's would be: the answer, the calibrated confidence and, for a model trained with them,
the risk summary as the reason. Byte counts are those of the JSON request and reply bodies (no HTTP framing).
"""

from __future__ import annotations

import json
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cepr.cloud.grounded_engines import ENGINES, QUANTS, one_of
from cepr.cloud.payload import features_field
from cepr.errors import CeprError
from cepr.records import CloudRequest, CloudResult, PayloadConfig, Timings, Usage

CLOUD_VLM = "grounded-cloud"  # what vlm_model: auto loads for an image payload


class GroundedCloudConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vlm_model: str = Field("auto", description="auto: the VLM the edge names (features) or grounded-cloud "
                                               "(an image); or a shipped name or a folder")
    engine: str = Field("llamacpp", description="llamacpp, transformers or vllm (prompt embeddings)")
    vlm_quant: str = Field("q8_0", description="the decoder GGUF llama.cpp reads")
    vlm_threads: int = Field(1, ge=1)
    vllm_python: str | None = Field(None, description="vLLM's python (default: as cepr serve vllm finds it)")
    reason: bool = Field(True, description="write the risk summary as the reply's reason (a model trained to)")
    payload: PayloadConfig = PayloadConfig(mode="features")

    @field_validator("vlm_quant")
    @classmethod
    def _quant(cls, v):
        return one_of(v, QUANTS, "vlm_quant")

    @field_validator("engine")
    @classmethod
    def _engine(cls, v):
        return one_of(v, ENGINES, "engine")

    @field_validator("payload")
    @classmethod
    def _features_or_image(cls, v):
        if v.mode not in ("features", "image"):
            raise ValueError(f"backend grounded reads the features or the image payload, not {v.mode!r}")
        return v


class GroundedCloudBackend:
    name = "grounded"

    def __init__(self, config: dict):
        self.cfg = GroundedCloudConfig(**config)
        if self.cfg.vlm_model != "auto":
            from cepr.edge.models import grounded_path

            grounded_path(self.cfg.vlm_model)  # a bad name fails before any case runs
        self._engines: dict[str, tuple] = {}
        self._encoders: dict[str, object] = {}

    def engine_for(self, requested: str | None):
        """(engine, prompts, spec) of the VLM ``vlm_model`` names, or ``requested`` under auto; opened once."""
        from cepr.cloud.grounded_engines import open_engine
        from cepr.edge.models import grounded_path
        from cepr.llm.grounded import load_prompts

        name = self.cfg.vlm_model if self.cfg.vlm_model != "auto" else requested
        if not name:
            raise CeprError("vlm_model auto: the request does not name the VLM whose projector made its tokens")
        folder = str(grounded_path(name))
        if folder not in self._engines:
            prompts, spec = load_prompts(folder)
            self._engines[folder] = (open_engine(folder, self.cfg.engine, self.cfg.vlm_quant, self.cfg.vlm_threads,
                                                 self.cfg.vllm_python), prompts, spec)
        return self._engines[folder]

    def image_embeddings(self, rgb: np.ndarray, engine, spec) -> np.ndarray:
        """An RGB frame (as the cloud received it) through the VLM's encoder, pooled and projected."""
        from cepr.edge.models import model_path
        from cepr.edge.runtime import SegmentationModel
        from cepr.llm.grounded import vision_tokens

        if spec.encoder not in self._encoders:
            self._encoders[spec.encoder] = SegmentationModel(model_path(spec.encoder), threads=self.cfg.vlm_threads)
        model = self._encoders[spec.encoder]
        if model.use_depth:
            raise CeprError(f"{spec.encoder} reads depth; an image payload carries none (use payload: features)")
        seg = model(rgb, None, features=True)
        return engine.projector(vision_tokens(seg.features, seg.logits, None, spec.grid))

    def answer(self, task: str, answers, emb: np.ndarray, engine, prompts, spec) -> dict:
        """The reply to ``task`` on a frame's projected tokens: answer, calibrated confidence, the risk summary
        (a model trained to write one), the reply text and the token counts."""
        from cepr.llm.grounded import option_probabilities

        engine.set_frame_embeddings(emb)
        text_ids = prompts.text_ids(task, None)
        row = engine.next_logits(text_ids)[prompts.option_ids(task)]
        probs = option_probabilities(row, spec.temperature)
        k = int(np.argmax(probs))
        reason, completion = "", 1
        if spec.risk_summary and self.cfg.reason:
            ids = engine.generate(prompts.risk_ids, prompts.eos)
            reason, completion = prompts.decode(ids), 1 + len(ids)
        conf = round(float(probs[k]), 4)
        return {"answer": answers[k], "reason": reason, "confidence": conf,
                "text": json.dumps({"answer": answers[k], "reason": reason, "confidence": conf}),
                "prompt_tokens": 1 + len(emb) + len(text_ids), "completion_tokens": completion,
                "model": f"{engine.folder.name}-" + (self.cfg.vlm_quant if self.cfg.engine == "llamacpp"
                                                     else self.cfg.engine)}

    def infer(self, req: CloudRequest) -> CloudResult:
        import cv2

        from cepr.cloud.payload import encode_image
        from cepr.llm.grounded import decode_vision

        t0 = time.perf_counter()
        payload = req.payload or self.cfg.payload
        if payload.sends_features:
            if req.features is None:
                return CloudResult("error", reason="the request carries no vision tokens (payload: features)")
            body = json.dumps({"model": self.cfg.vlm_model, "task": req.task, "prompt": req.user_prompt(),
                               "features_model": req.features_model, "features": features_field(req.features)})
        elif req.image is None:
            return CloudResult("error", reason="the request carries no image (payload: image)")
        else:
            image = encode_image(req.image, payload)
            body = json.dumps({"model": self.cfg.vlm_model, "task": req.task, "prompt": req.user_prompt(),
                               "image": image.data_url()})
        try:
            if payload.sends_features:
                engine, prompts, spec = self.engine_for(req.features_model)
                emb = decode_vision(req.features)
            else:
                engine, prompts, spec = self.engine_for(CLOUD_VLM)
                bgr = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_COLOR)  # the image as sent
                if bgr is None:
                    raise CeprError("the request's image could not be decoded")
                emb = self.image_embeddings(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), engine, spec)
            r = self.answer(req.task, req.answers, emb, engine, prompts, spec)
        except CeprError as e:
            return CloudResult("error", reason=str(e), timings=Timings(total_ms=1e3 * (time.perf_counter() - t0)),
                               bytes_up=len(body), model=self.cfg.vlm_model)
        down = len(json.dumps({"choices": [{"message": {"role": "assistant", "content": r["text"]}}]}))
        return CloudResult("ok", r["answer"], r["reason"], r["confidence"], r["text"],
                           Usage(r["prompt_tokens"], r["completion_tokens"], counted="server"),
                           Timings(total_ms=1e3 * (time.perf_counter() - t0)), len(body), down, r["model"])

    def close(self) -> None:
        for engine, _, _ in self._engines.values():
            engine.close()
        self._engines.clear()
        self._encoders.clear()


class GroundedExpert:
    """What ``cepr serve cloud --vlm NAME`` answers chat requests with: the grounded VLM on the request's image
    (its own encoder, then the decoder on ``engine``; with vLLM, the engine listens on loopback for this service
    only). A scene summary in the request is not read: the VLM was trained on the image alone. One frame at a
    time (the engine holds one frame's cache)."""

    provider = "cpu"
    sessions = 1

    def __init__(self, vlm: str = CLOUD_VLM, engine: str = "llamacpp", quant: str = "q8_0", threads: int = 1,
                 vllm_python: str | None = None, max_image_pixels: int | None = None,
                 max_question_chars: int | None = None):
        import threading

        from cepr.cloud.expert import MAX_IMAGE_PIXELS, MAX_QUESTION_CHARS

        self.backend = GroundedCloudBackend({"vlm_model": vlm, "engine": engine, "vlm_quant": quant,
                                             "vlm_threads": threads, "vllm_python": vllm_python,
                                             "payload": {"mode": "image"}})
        self.model_name, self.threads = vlm, threads
        self.max_image_pixels = max_image_pixels or MAX_IMAGE_PIXELS
        self.max_question_chars = max_question_chars or MAX_QUESTION_CHARS
        self._lock = threading.Lock()
        self.backend.engine_for(vlm)  # the engine (vLLM: its server) starts before this service listens

    def answer(self, messages: list[dict]):
        from cepr.cloud.expert import ExpertReply, RequestError, identify_task, parse_messages
        from cepr.data.tasks import get_task

        question, _, _, image, _ = parse_messages(messages, self.max_image_pixels, self.max_question_chars)
        if image is None:
            raise RequestError(f"{self.model_name} answers from an image: the request carries none")
        task = identify_task(question)
        with self._lock:
            engine, prompts, spec = self.backend.engine_for(self.model_name)
            try:
                r = self.backend.answer(task, get_task(task).answers, self.backend.image_embeddings(image, engine, spec),
                                        engine, prompts, spec)
            except CeprError as e:
                raise RequestError(str(e)) from None
        return ExpertReply(r["text"], task, "image", r["prompt_tokens"], r["completion_tokens"])

    def close(self) -> None:
        self.backend.close()
