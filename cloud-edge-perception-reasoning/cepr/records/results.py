"""The records that travel edge -> dispatch -> cloud -> metrics, typed.

* ``EdgeResult``: what an edge model's ``predict`` returns for one sample (answer, confidence, timings, bytes...);
* ``EdgeState``: what the cloud may need from the edge (the scene summary, the edge answer, the camera);
* ``CloudRecord``: what a cloud model's ``inference`` returns (answer, status, bytes, tokens, timings...);
* ``SampleRecord``: one line of ``samples.jsonl``.

Results stay plain dicts on the wire between modules, because that is what Ianvs/Sedna pass around and what
``metric(y_true, y_pred)`` receives: the models validate a dict where the paradigm hands it on
(``EdgeResult.check``, ``CloudRecord.check``) and build the dicts cepr's modules return (``as_result``). Fields
are optional except the answer, so other projects' modules, which return less, validate too; a field that is
present must have the right type. Extra fields are kept (a module may report more than cepr knows).

How the edge state reaches the cloud module (``EdgeHandoff``): under ``cepr run`` explicitly, as the edge
result's ``edge_state`` entry, which the paradigm passes to the cloud module's ``edge_state`` parameter; under
Ianvs, whose Sedna hands the cloud model nothing but the raw sample, through ``EDGE_HANDOFF``, a bounded store
keyed by sample that the edge module fills and the cloud module reads.

What a sample would have cost to send (``EdgeResult.send_bytes``, bytes by payload part) goes the other way: the
cloud module prices it, because its payload settings and payload policy decide the request. ``cepr run`` hands the
edge module the cloud module's ``price`` (the ``pricer`` argument of ``predict``); under Ianvs the cloud module
publishes it in ``PAYLOAD_PRICER`` when it is built. The bandwidth metrics then only add numbers up.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from cepr.errors import CeprError

# what a cloud result must report for the latency, byte and token metrics (a missing one is an error on that
# sample, recorded in its samples.jsonl line, and in the metric, never a 0)
REPORTED_BY_CLOUD = ("latency_ms", "bytes_up", "bytes_down", "prompt_tokens", "completion_tokens")
EDGE_STATE_KEY = "edge_state"  # the edge result entry that carries the EdgeState (never written to JSONL)
MASK_KEY = "mask"  # the edge result entry that carries the predicted class map (in memory, for mIoU)
_IN_MEMORY = (EDGE_STATE_KEY, MASK_KEY)


class EdgeState(BaseModel):
    """What the cloud may need from the edge for one sample: what to send and what to fall back to."""

    model_config = ConfigDict(frozen=True)

    summary: dict  # SceneSummary.to_dict()
    answer: str
    camera: dict  # Camera.to_dict()
    confidence: float | None = None  # the edge answer's calibrated confidence (fusion rules read it)
    distribution: dict[str, float] | None = None  # the edge's distribution over the task's answers
    # the grounded VLM's projected vision tokens of the frame (cepr.llm.grounded.encode_vision, lossless F32) and
    # the VLM that made them: what the ``features`` payload sends, for a decoder trained on them in the cloud
    vision: bytes | None = None
    vision_model: str | None = None


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

    source: str | None = None
    key: str | None = None
    task: str | None = None
    answer: Any = None
    confidence: float | None = None
    latency_ms: float | None = None
    label_path: str | None = None
    rgb_path: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def check(cls, result, where: str):
        """``result`` (a dict, as modules return it) validated; a CeprError naming the field otherwise."""
        if result is None:
            return None
        if not isinstance(result, dict):
            raise CeprError(f"{where} must return a result dict, got {type(result).__name__}")
        try:
            return cls.model_validate(result)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise CeprError(f"{where} returned a bad result: {field}: {err['msg']} (got {err.get('input')!r:.80})"
                            ) from None

    def as_result(self, **in_memory) -> dict:
        """The dict a module returns: every field, plus in-memory entries (the mask, the edge state)."""
        out = self.model_dump()
        out.update({k: v for k, v in in_memory.items() if v is not None})
        return out

    def as_json(self) -> dict:
        """For samples.jsonl: what the module reported, without the in-memory entries."""
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if k not in _IN_MEMORY}


class EdgeResult(_Result):
    source: Literal["edge"] | None = "edge"
    distribution: dict[str, float] | None = None
    timings_ms: dict[str, float] | None = None
    summary_bytes: int | None = None  # the binary form (msgpack + RLE mask), what the edge service streams
    summary_text_bytes: int | None = None  # the compact JSON text form, what a cloud request carries
    model: str | None = None
    reasoner: str | None = None  # the language model that answered (a GGUF, a grounded VLM); None: the planner
    reason: str | None = None  # the reasoner's risk summary of the frame (the grounded VLM's), when it writes one
    provider: str | None = None  # the ONNX Runtime execution provider that ran the model (CPUExecutionProvider...)
    calibration: str | None = None
    distances: Literal["depth", "ground_plane"] | None = None
    features: dict[str, Any] | None = None  # what routing policies read (cepr.edge.features)
    # what sending this sample to the cloud would carry, by payload part ({"image": n, "summary": m}: the image as
    # its data URL, the summary as the JSON string a request embeds), for the payload the cloud module would
    # choose; None when no cloud module priced it
    send_bytes: dict[str, int] | None = None


class CloudRecord(_Result):
    source: Literal["cloud", "edge"] | None = "cloud"  # who answered: "edge" when the cloud fell back or failed
    cloud_answer: str | None = None
    status: Literal["ok", "error", "fallback"] | None = None
    reason: str | None = None
    server_ms: float | None = None
    ttft_ms: float | None = None
    inter_token_ms: float | None = None  # per token (a streamed chunk may carry several), see cepr.records.cloud
    tokens_per_s: float | None = None  # completion tokens over the whole request
    transfer_ms: float | None = None
    bytes_up: int | None = None
    bytes_down: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_counted: str | None = None
    model: str | None = None
    attempts: int | None = None
    payload: dict | None = None  # the payload settings (mode, resolution, codec, quality) this request used
    payload_base: dict | None = None  # the cloud module's own payload settings (what a payload policy starts from)
    payload_policy: list[dict] | None = None  # the payload policies and their settings (None: fixed)
    payload_rule: str | None = None  # why this payload: the rule of the payload policy that chose it
    payload_bytes: dict[str, int] | None = None  # the sample-dependent parts of bytes_up: {"image": n, "summary": m}
    privacy_redacted: bool | None = None  # PrivacyAware kept the image on the edge (people near the camera)
    fusion: str | None = None  # the fusion rule of the final answer (cepr.dispatch.fusion)
    fused_from: Literal["edge", "cloud", "agree"] | None = None  # whose answer is final when both answered
    # server: vllm: its speculative-decoding counters (drafts, draft_tokens, accepted_tokens) before and after the
    # request, and the request's acceptance rate (None when nothing was drafted)
    spec_before: dict[str, int] | None = None
    spec_after: dict[str, int] | None = None
    spec_acceptance: float | None = None


class SampleRecord(BaseModel):
    """One line of samples.jsonl, written as the sample finishes."""

    index: int
    key: str | None
    task: str | None
    is_hard: bool
    answer: Any
    source: str | None
    truth: str | None = None
    correct: bool | None = None
    edge: dict | None = None
    cloud: dict | None = None
    problems: list[str] | None = None  # what a side that ran did not report (never counted as 0 by the metrics)

    @classmethod
    def build(cls, index: int, sample, result: list, truth: dict | None) -> SampleRecord:
        """From the paradigm's ``[is_hard, final, edge, cloud]`` and the task ground truth (when known)."""
        is_hard, final, edge, cloud = result
        final = final if isinstance(final, dict) else {"answer": final}
        rec = cls(index=index, key=sample.get("key") if isinstance(sample, dict) else str(sample),
                  task=final.get("task"), is_hard=bool(is_hard), answer=final.get("answer"),
                  source=final.get("source"),
                  edge=None if edge is None else EdgeResult.check(edge, "the edge model").as_json(),
                  cloud=None if cloud is None else CloudRecord.check(cloud, "the cloud model").as_json())
        if truth is not None and rec.task in truth:
            rec.truth = truth[rec.task]
            rec.correct = rec.answer == rec.truth
        problems = [f"{side} result has no {f!r}" for side, d, fields in (
            ("edge", rec.edge, ("latency_ms",)), ("cloud", rec.cloud, REPORTED_BY_CLOUD))
            if d is not None for f in fields if d.get(f) is None]
        rec.problems = problems or None
        return rec

    def to_line(self) -> dict:
        """The samples.jsonl line (truth and correct only where the ground truth is known, problems only where
        there are some)."""
        drop = ({"truth", "correct"} if self.truth is None else set()) | ({"problems"} if not self.problems else set())
        return self.model_dump(exclude=drop or None)


def handoff_key(sample: dict) -> str:
    """Which sample an edge state belongs to: its position, frame and question."""
    return f"{sample.get('index')}:{sample.get('key')}:{sample.get('task')}"


class EdgeHandoff:
    """The edge state of recent samples, keyed by sample key: how the cloud module finds what the edge saw when
    the runner hands it only the raw sample (Ianvs). Bounded (oldest entries dropped), because the edge fills it
    for every sample and the cloud reads it only for the hard ones; thread-safe for concurrent samples."""

    def __init__(self, capacity: int = 1024):
        self.capacity = capacity
        self._items: OrderedDict[str, EdgeState] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, state: EdgeState) -> None:
        with self._lock:
            self._items[key] = state
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def take(self, key: str) -> EdgeState | None:
        """The state stored for ``key`` (removed), or None when the edge has not run on that sample."""
        with self._lock:
            return self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


EDGE_HANDOFF = EdgeHandoff()

Pricer = Callable[[dict, EdgeState], dict]


class PayloadPricer:
    """The price of a sample's request by payload part, from the cloud module that would send it: how the edge
    module records ``send_bytes`` when the runner does not hand it the cloud module's ``price`` (Ianvs builds
    every module before the first sample). The most recently built cloud module prices; ``withdraw`` at its
    cleanup."""

    def __init__(self):
        self._fn: Pricer | None = None
        self._lock = threading.Lock()

    def publish(self, fn: Pricer) -> None:
        with self._lock:
            self._fn = fn

    def withdraw(self, fn: Pricer) -> None:
        with self._lock:
            if self._fn == fn:
                self._fn = None

    @property
    def current(self) -> Pricer | None:
        return self._fn


PAYLOAD_PRICER = PayloadPricer()


def part_bytes(parts: dict | None) -> int | None:
    """The total of a ``send_bytes``/``payload_bytes`` record (None when it is missing)."""
    if not isinstance(parts, dict):
        return None
    return int(sum(int(v) for v in parts.values()))
