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

from cepr.cloud.client import CloudClient, create_backend
from cepr.cloud.payload import features_blob, part_bytes_of, payload_frame_path
from cepr.cloud.settings import CloudSettings, backend_config
from cepr.data.cloud_robotics import load_rgb
from cepr.data.tasks import TaskParams, camera_for, get_task
from cepr.dispatch.fusion import Side, fuse
from cepr.errors import CeprError
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
from cepr.servers.vllm_server import MetricsEndpoint, acceptance_rate, counter_delta


class CloudModule:
    """A cloud backend (``openai`` for any OpenAI-compatible server, ``inprocess`` for the reference expert in
    this process) plus payload and link settings, as an Ianvs cloud model: ``inference(data, post_process=None,
    **kwargs)``. ``base_url: auto`` starts the server its ``server`` setting names (the reference expert by
    default; the job stops it).

    The flat hyperparameters become one typed :class:`~cepr.cloud.settings.CloudSettings` (``self.settings``):
    the backend and the server as discriminated unions, the expert, payload, link and fusion settings.

    ``payload_policy`` (``fixed`` by default; ``AdaptivePayload``, ``PrivacyAware``, a mapping with settings, or a
    list applied in order: :mod:`cepr.dispatch.payload_policy`) chooses each request's payload from the edge's
    scene summary, starting from the fixed settings (``payload``, ``resolution``, ...); each cloud result records
    the payload it sent (``payload``, ``payload_rule``, ``privacy_redacted``, ``payload_bytes``). ``fusion``
    (``cloud_wins`` by default, ``confidence``, ``safety_first``: :mod:`cepr.dispatch.fusion`) makes the final
    answer when both sides answered (``fused_from``)."""

    @classmethod
    def check_hyperparameters(cls, **hps) -> None:
        """Raise a CeprError for bad hyperparameters, without starting anything."""
        CloudSettings.from_flat(hps)

    def __init__(self, **hps):
        s = self.settings = CloudSettings.from_flat(hps)
        self.payload_chain, self.fusion, self.payload = s.chain, s.fusion, s.payload
        self.link_name = s.link.name
        self.vllm = None  # the vLLM behind this module (server: vllm, or the vllm backend): counters per request
        self.vllm_spec = None
        self.external_metrics = False  # server_metrics_url: the counters of a vLLM that cepr did not start
        cfg = backend_config(s)
        if s.backend.auto:  # cepr starts the server that ``server`` names, and fills in what it serves
            started = s.server.start(s)
            cfg["base_url"] = started.url
            cfg.setdefault("model", started.model)
            for k, v in started.defaults.items():
                cfg.setdefault(k, v)
            if started.counters is not None:
                self.vllm, self.vllm_spec = started.counters, s.server.spec
                self.vllm_start = self.vllm.spec_counters()  # this test case's baseline
        elif s.metrics_url is not None:  # a vLLM someone else started: read its counters
            self.vllm = MetricsEndpoint(str(s.metrics_url), model=str(cfg.get("model", "")))
            self.external_metrics = True  # its speculative config: the server's own
            self.vllm_start = self.vllm.spec_counters()  # fails early when the page does not answer
        elif s.backend.name == "inprocess":
            cfg.update(expert_model=s.expert.model, threads=s.threads, sessions=s.expert.sessions,
                       providers=s.expert.providers)
        try:
            backend_obj = create_backend(s.backend.name, cfg)
        except ValueError as e:
            raise CeprError(f"cloudmodel: bad backend settings: {e}") from None
        if s.backend.name == "vllm" and backend_obj.cfg.speculative:  # vLLM's offline engine: its counters
            self.vllm, self.vllm_spec = backend_obj, parse_speculative(backend_obj.cfg.speculative)
            self.vllm_start = backend_obj.spec_counters()
        self.client = CloudClient(backend_obj, s.link.build(), emulate=s.link.emulate)
        PAYLOAD_PRICER.publish(self.price)  # the edge prices unsent samples with it under Ianvs (cepr.records)

    def price(self, data, edge_state: EdgeState | None) -> dict[str, int]:
        """What sending this sample would carry, by payload part (``{"image": n, "summary": m}``), for the
        payload this module would choose for it (its payload policy reads the edge's summary). The edge module
        records it on every sample it answers, so the bandwidth metrics price unsent samples by arithmetic."""
        s = as_sample(data)
        payload = self.payload_chain.choose(edge_state.summary if edge_state else None, s["key"]).payload
        image = self._image(s, payload) if payload.sends_image else None
        return part_bytes_of(payload, image, edge_state.summary if edge_state else None,
                             edge_state.vision if edge_state else None)

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
        if payload.sends_features and (edge is None or edge.vision is None):
            raise CeprError("payload features sends the grounded VLM's vision tokens of the frame: the edge must run "
                            "reasoner: grounded, and the edge must run first (inference-then-mining)")
        image = self._image(s, payload) if payload.sends_image else None
        camera = edge.camera if edge else None
        if camera is None and image is not None:
            camera = camera_for(None, image.shape[1], image.shape[0]).to_dict()
        req = CloudRequest(task.name, task.render_prompt(TaskParams()), task.answers,
                           summary=edge.summary if edge and payload.sends_summary else None,
                           image=image, camera=camera, key=s["key"], payload=payload,
                           features=features_blob(payload, edge.vision if edge else None),
                           features_model=edge.vision_model if edge else None)
        spec0 = self._spec_reading()
        r = self.client.infer(req)
        spec = self._spec_fields(spec0) if spec0 is not None else {}
        finished = time.time()
        # the sample-dependent part of bytes_up, after the timers
        parts = part_bytes_of(payload, image, req.summary, edge.vision if edge else None)
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
