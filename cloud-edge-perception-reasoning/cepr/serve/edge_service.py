"""The deployable edge: camera-fed perception, local answers upgraded by the cloud, over HTTP.

In-process API (tests, benchmarks)::

    svc = EdgeService(EdgeServiceConfig(sources=["video.avi"], fps=10, job="benchmarkingjob.yaml"))
    svc.start()
    svc.add_source("rear=rtsp://10.0.0.7/stream")   # more sources at run time (a spec or a FrameSource)
    svc.remove_source("rear")                          # stopped, its frames and counters forgotten
    rec = svc.perceive_bytes(jpeg_bytes)             # a FrameRecord: summary, mask, answers
    ans = svc.ask("action", source="video", wait_s=2)  # an answer dict: source edge|cloud, upgraded_at
    svc.stop()
    app = create_app(svc)                              # the FastAPI app (uvicorn.run(app, ...))

Each perceived frame answers the configured standing ``tasks`` on the edge; the dispatch policy of the job YAML
decides per answer whether it is hard, and a hard answer goes to the cloud path (``cepr.serve.cloud_path``). The
edge answer is returned at once; when the cloud's answer arrives before ``deadline_s`` it upgrades the answer
(``source: cloud``, ``upgraded_at``), through the cloud module's fusion rule. A late one (after the deadline) is
counted (``cepr_edge_cloud_late_total``), not used; so are requests still pending past their deadline
(``cepr_edge_cloud_pending_past_deadline``) and those the cloud side dropped unanswered because they had waited
past it (``expired``: the request carries its deadline).
"""

from __future__ import annotations

import base64
import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cepr.cloud.module import CloudModule
from cepr.data.classes import palette
from cepr.data.tasks import camera_for, get_task
from cepr.dispatch import POLICY_REGISTRY, create_policy
from cepr.dispatch.fusion import Side, fuse
from cepr.edge.features import edge_features
from cepr.edge.models import AUTO, auto_model
from cepr.edge.module import EdgeModule
from cepr.edge.summary import rle_encode
from cepr.errors import CeprError
from cepr.records import PayloadConfig
from cepr.runner.resolve import resolve_algorithm
from cepr.serve.cloud_path import CloudJob, CloudPath, DirectCloud, QueueCloud
from cepr.serve.sources import FrameSource, parse_source

log = logging.getLogger(__name__)

DEFAULT_JOB = "benchmarkingjob.yaml"
UPLOAD_SOURCE = "upload"


class EdgeServiceConfig(BaseModel):
    """What ``cepr serve edge`` runs; every field is a CLI option."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(default_factory=list, description="NAME=WHERE or WHERE: video, folder, index, URL")
    fps: float = Field(10.0, gt=0, description="target frame rate of every source")
    loop: bool = Field(False, description="restart a video file or folder at its end")
    tasks: list[str] = Field(default_factory=lambda: ["action"], description="answered on every frame")
    job: str = DEFAULT_JOB
    algorithm: str | None = None
    cloud: Literal["direct", "queue", "none"] = "direct"
    queue_url: str | None = Field(None, description="queue mode: redis:// URL (default: an embedded redis-server)")
    deadline_s: float = Field(2.0, gt=0, description="a cloud answer later than this does not upgrade")
    cloud_pending: int = Field(8, ge=1, description="cloud requests waiting at most; more shed the oldest")
    cloud_workers: int = Field(1, ge=0, description="cloud worker threads in this process (queue mode: 0 = "
                                                     "workers run elsewhere)")
    keep_frames: int = Field(16, ge=1, description="recent frames kept per source (ask by frame id)")
    keep_answers: int = Field(10000, ge=10)
    max_body_mb: float = Field(20.0, gt=0)


# ---- the job YAML: edge and cloud settings, policy ------------------------------------------------------------

@dataclass
class Deployment:
    """What the service takes from a benchmark job's algorithm (its first hyperparameter combination)."""

    job: Path
    algorithm: str
    edge_hps: dict
    cloud_hps: dict
    policy: str
    policy_hps: dict

    def describe(self) -> dict:
        return {"job": str(self.job), "algorithm": self.algorithm, "policy": self.policy,
                "policy_hyperparameters": self.policy_hps}


def load_deployment(job: str | Path = DEFAULT_JOB, algorithm: str | None = None,
                    point: dict | None = None) -> Deployment:
    """The edge/cloud settings and the policy of one algorithm of the job file, chosen by the rule of
    :mod:`cepr.runner.resolve` (``algorithm``, else the first Threshold, else the first mixed deployable one;
    hyperparameters at their first values unless ``point`` names others). A policy that reads the labels is
    refused: it is an upper bound, not something to deploy."""
    r = resolve_algorithm(job, algorithm, point)
    if POLICY_REGISTRY.capabilities(r.policy).get("needs_labels"):
        raise CeprError(f"{job}: algorithm {r.name!r} uses {r.policy}, which reads the labels (an upper bound, "
                        "not deployable); pick another with --algorithm")
    return Deployment(r.file, r.name, r.hyperparameters("edgemodel"), r.hyperparameters("cloudmodel"), r.policy,
                      r.policy_hyperparameters)


# ---- records ------------------------------------------------------------------------------------------------

@dataclass
class FrameRecord:
    source: str
    frame_id: int
    captured_at: float
    perceived_at: float
    rgb: np.ndarray
    label: np.ndarray  # predicted class map at the frame's resolution
    summary: object  # SceneSummary
    camera: dict
    timings_ms: dict
    answer_ids: dict = field(default_factory=dict)  # task -> answer id

    def to_json(self, mask: str = "rle") -> dict:
        h, w = self.label.shape
        out = {"source": self.source, "frame_id": self.frame_id, "width": w, "height": h,
               "captured_at": self.captured_at, "perceived_at": self.perceived_at,
               "latency_ms": round(1e3 * (self.perceived_at - self.captured_at), 3),
               "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
               "summary": self.summary.to_dict(), "summary_bytes": len(self.summary.to_bytes()),
               "answer_ids": dict(self.answer_ids)}
        if mask == "rle":
            out["mask"] = {"format": "rle", "width": w, "height": h,
                           "encoding": "row-major (class byte, LEB128 run length) pairs, base64 "
                                       "(cepr.edge.summary.rle_decode)",
                           "data": base64.b64encode(rle_encode(self.label)).decode()}
        elif mask == "png":
            out["mask"] = {"format": "png", "width": w, "height": h, "encoding": "8-bit grayscale class ids, base64",
                           "data": base64.b64encode(encode_png(self.label)).decode()}
        return out


def encode_png(gray: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(gray, np.uint8))
    if not ok:
        raise CeprError("could not encode the mask as PNG")
    return buf.tobytes()


def overlay_jpeg(rgb: np.ndarray, label: np.ndarray, alpha: float = 0.45, quality: int = 80) -> bytes:
    """The frame with its class mask blended on top (class colours of cepr.data.classes), as JPEG."""

    colours = palette()[label]
    mixed = (rgb.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha).astype(np.uint8)
    mixed[label == 255] = rgb[label == 255]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(mixed, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CeprError("could not encode the overlay as JPEG")
    return buf.tobytes()


def decode_image(data: bytes, what: str = "the body") -> np.ndarray:
    """JPEG/PNG/... bytes -> RGB; a CeprError naming the problem otherwise."""
    if not data:
        raise CeprError(f"{what} is empty: send a JPEG or PNG frame")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        head = data[:8].hex()
        raise CeprError(f"{what} ({len(data)} bytes, starting {head}) is not a decodable image (corrupt or not "
                        "JPEG/PNG)")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise CeprError(f"{what} is {arr.shape[1]}x{arr.shape[0]}: too small to perceive (8x8 at least)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


class Metrics:
    """Prometheus metrics in the service's own registry (several services may live in one process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        lat = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
        self.captured = Counter("cepr_edge_frames_captured", "frames read from the source", ["source"], registry=r)
        self.frames = Counter("cepr_edge_frames", "frames perceived", ["source"], registry=r)
        self.drops = Counter("cepr_edge_frames_dropped", "frames replaced unperceived (newest wins)", ["source"],
                             registry=r)
        self.bad = Counter("cepr_edge_bad_frames", "frames that could not be decoded or read", ["source"],
                           registry=r)
        self.queue = Gauge("cepr_edge_queue_depth", "frames waiting for perception (0 or 1: one slot)", ["source"],
                           registry=r)
        self.cloud_queue = Gauge("cepr_edge_cloud_queue_depth", "this service's cloud requests waiting or in "
                                 "flight (sent, no result yet)", ["source"], registry=r)
        self.cloud_backlog = Gauge("cepr_edge_cloud_backlog", "the cloud path's whole backlog (direct: waiting + in "
                                   "flight; queue: the Redis stream's in flight, every edge's)", registry=r)
        self.cloud_pending_late = Gauge("cepr_edge_cloud_pending_past_deadline", "cloud requests still without a "
                                        "result although their deadline has passed", ["source"], registry=r)
        self.cloud_late = Counter("cepr_edge_cloud_late", "cloud answers that arrived after the deadline (the edge "
                                  "answer stood)", ["source"], registry=r)
        self.cloud_expired = Counter("cepr_edge_cloud_expired", "cloud requests dropped unanswered by the cloud side "
                                     "because they had waited past their deadline", ["source"], registry=r)
        self.perception = Histogram("cepr_edge_perception_seconds", "edge pipeline time per frame", ["source"],
                                    buckets=lat, registry=r)
        self.frame_latency = Histogram("cepr_edge_frame_latency_seconds", "capture to perceived", ["source"],
                                       buckets=lat, registry=r)
        self.cloud_latency = Histogram("cepr_edge_cloud_latency_seconds", "hard answer to the cloud's answer",
                                       ["source"], buckets=lat, registry=r)
        self.answers = Counter("cepr_edge_answers", "answers given", ["source"], registry=r)
        self.cloud = Counter("cepr_edge_cloud_requests", "cloud requests by outcome", ["source", "outcome"],
                             registry=r)
        self.upgraded = Counter("cepr_edge_answers_upgraded", "answers upgraded by the cloud within the deadline",
                                ["source"], registry=r)
        self.cloud_share = Gauge("cepr_edge_cloud_share", "share of answers sent to the cloud", ["source"],
                                 registry=r)
        self.cloud_bytes = Counter("cepr_edge_cloud_bytes_up", "request bytes sent to the cloud (direct mode)",
                                   ["source"], registry=r)
        self.summary_bytes = Histogram("cepr_edge_summary_bytes", "binary scene summary size", ["source"],
                                       buckets=(256, 512, 1024, 2048, 4096, 8192), registry=r)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _SourceState:
    def __init__(self, name: str, keep: int, src=None):
        self.name = name
        self.src = src  # FrameSource or None (uploads)
        self.frames: collections.OrderedDict[int, FrameRecord] = collections.OrderedDict()
        self.keep = keep
        self.latest: FrameRecord | None = None
        self.perceived = 0
        self.answers = 0
        self.sent = 0
        self.bad = 0
        self.uploads = itertools.count()
        self.thread: threading.Thread | None = None
        self.error: str | None = None
        self.overlay: tuple[int, bytes] | None = None  # (frame id, JPEG) of the latest frame
        self.busy = False  # a frame is in the edge pipeline
        self.cloud_late = 0  # cloud answers after the deadline
        self.cloud_expired = 0  # requests the cloud side dropped past their deadline

    def add(self, rec: FrameRecord) -> None:
        self.frames[rec.frame_id] = rec
        self.frames.move_to_end(rec.frame_id)
        while len(self.frames) > self.keep:
            self.frames.popitem(last=False)
        self.latest = rec
        self.perceived += 1


# ---- the service ------------------------------------------------------------------------------------------

class EdgeService:
    """Sources -> newest-wins slot -> edge pipeline -> standing answers -> policy -> cloud path. ``start()`` /
    ``stop()`` (or ``with``); thread-safe; ``create_app(service)`` puts it behind HTTP."""

    def __init__(self, config: EdgeServiceConfig | None = None, **overrides):
        self.config = cfg = (config or EdgeServiceConfig()).model_copy(update=overrides) if overrides else (
            config or EdgeServiceConfig())
        EdgeServiceConfig.model_validate(cfg.model_dump())  # overrides checked too

        for t in cfg.tasks:
            try:
                get_task(t)
            except KeyError as e:
                raise CeprError(f"tasks: {e.args[0]}") from None
        self.deployment = load_deployment(cfg.job, cfg.algorithm)
        self.metrics = Metrics()
        self._lock = threading.RLock()  # records, answers
        self._pipe_lock = threading.Lock()  # one frame through the edge model at a time
        self._answer_cond = threading.Condition(self._lock)
        self._answers: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._cloud_jobs: dict[str, tuple[str, str, float]] = {}  # request id -> (answer id, source, deadline)
        self._sources: dict[str, _SourceState] = {}
        self._stop = threading.Event()
        self._started = False
        self.started_at: float | None = None
        self.edge = self.pipeline = None
        self.cloud = None
        self.policy = None

        self._pending_sources = []
        for i, spec in enumerate(cfg.sources):
            name, where = parse_source(spec, i)
            if name in [s.name for s in self._pending_sources] or name == UPLOAD_SOURCE:
                raise CeprError(f"two sources are named {name!r}: name them, e.g. --source front={where}")
            self._pending_sources.append(FrameSource(name, where, cfg.fps, cfg.loop))

    # -- lifecycle --
    def start(self) -> EdgeService:
        if self._started:
            return self

        d = self.deployment
        self.policy = create_policy(d.policy, **d.policy_hps)
        self.edge = EdgeModule(**d.edge_hps)
        name = self.edge.model if self.edge.model != AUTO else auto_model(False)  # cameras give no depth
        self.pipeline = self.edge._pipeline(name)
        if self.pipeline.model.use_depth:
            raise CeprError(f"edge model {name!r} needs depth, and the service's sources are RGB: use model: auto "
                            "or an RGB-only model in the edge settings")
        self.calibration = self.edge.calibrations.get(name)

        if self.config.cloud == "direct":
            self.cloud = DirectCloud(CloudModule(**d.cloud_hps), self.config.cloud_pending,
                                     max(1, self.config.cloud_workers))
        elif self.config.cloud == "queue":
            p = d.cloud_hps
            payload = PayloadConfig(mode=p.get("payload", "summary+image"), resolution=p.get("resolution"),
                                    codec=p.get("codec", "jpeg"), quality=int(p.get("quality", 85)))
            module = CloudModule(**d.cloud_hps) if self.config.cloud_workers else None
            self.cloud = QueueCloud(self.config.queue_url, payload=payload, cloud_module=module,
                                    workers=self.config.cloud_workers, maxlen=self.config.cloud_pending)
        else:
            self.cloud = CloudPath()
        self.cloud.start(self._on_cloud)
        self.started_at = time.time()
        self._started = True
        for src in self._pending_sources:
            self._attach(src)
        self._pending_sources = []
        return self

    def add_source(self, source, name: str | None = None, fps: float | None = None, loop: bool | None = None):
        """Add a camera/file/stream source, before or after ``start()``; returns its
        :class:`cepr.serve.sources.FrameSource`. ``source``: a spec as on the command line (``NAME=WHERE`` or
        ``WHERE``: a video file, folder, index file, camera number or URL), or a ``FrameSource`` (its own name, fps
        and loop; ``name``/``fps``/``loop`` are then not allowed). ``fps``/``loop`` default to the service's. A
        started service starts reading it at once (pacing, newest-wins slot, the drop/bad counters)."""
        if isinstance(source, FrameSource):
            if name is not None or fps is not None or loop is not None:
                raise CeprError("add_source: name, fps and loop come from the FrameSource itself")
            src = source
        elif isinstance(source, (str, Path)):
            spec = str(source) if name is None else f"{name}={source}"
            with self._lock:
                n = len(self._sources) + len(self._pending_sources)
            src_name, where = parse_source(spec, n)
            src = FrameSource(src_name, where, self.config.fps if fps is None else fps,
                              self.config.loop if loop is None else loop)
        else:
            raise CeprError(f"add_source: a spec string or a FrameSource, got {type(source).__name__}")
        with self._lock:
            taken = set(self._sources) | {s.name for s in self._pending_sources} | {UPLOAD_SOURCE}
            if src.name in taken:
                raise CeprError(f"a source named {src.name!r} exists already (sources: "
                                f"{', '.join(sorted(taken - {UPLOAD_SOURCE})) or 'none'}; {UPLOAD_SOURCE!r} is "
                                "reserved for uploads): give it another name, e.g. rear=WHERE")
            if not self._started:
                self._pending_sources.append(src)
                return src
        self._attach(src)
        return src

    def remove_source(self, name: str, timeout: float = 10.0) -> None:
        """Stop a source and forget it (its frames, answers stay in the answer log; its metrics stay at their
        last values). A LookupError names the sources there are."""
        with self._lock:
            pending = next((s for s in self._pending_sources if s.name == name), None)
            if pending is not None:
                self._pending_sources.remove(pending)
                return
            st = self._sources.get(name)
            if st is None:
                raise LookupError(f"no source {name!r} (have: {', '.join(self._sources) or 'none'})")
            del self._sources[name]
        if st.src is not None:
            st.src.stop()
        if st.thread is not None:
            st.thread.join(timeout=timeout)
        if st.src is not None:
            self.metrics.queue.labels(name).set(0)

    def _attach(self, src) -> None:
        st = _SourceState(src.name, self.config.keep_frames, src)
        m = self.metrics
        src.on_drop = lambda f, n=src.name: m.drops.labels(n).inc()
        src.on_bad = lambda why, n=src.name: m.bad.labels(n).inc()
        src.on_frame = lambda f, n=src.name: m.captured.labels(n).inc()
        self._zero_metrics(src.name)
        with self._lock:
            self._sources[src.name] = st
        src.start()
        st.thread = threading.Thread(target=self._perceive_loop, args=(st,), name=f"perceive-{src.name}",
                                     daemon=True)
        st.thread.start()

    def stop(self) -> None:
        self._stop.set()
        for st in list(self._sources.values()):
            if st.src is not None:
                st.src.stop()
            if st.thread is not None:
                st.thread.join(timeout=10)
        if self.cloud is not None:
            self.cloud.close()
        if self.edge is not None:
            self.edge.cleanup()
        self._started = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def wait_sources(self, timeout: float = 60.0) -> bool:
        """Wait until every file/folder source has ended and its last frame is perceived (True), or timeout."""
        end = time.time() + timeout
        while time.time() < end:
            done = all(st.src is None or (st.src.finished and st.src.slot.depth() == 0
                                          and not st.busy) for st in self._sources.values())
            if done:
                return True
            time.sleep(0.02)
        return False

    # -- perception --
    def _perceive_loop(self, st: _SourceState) -> None:
        src = st.src
        while not self._stop.is_set():
            frame = src.slot.take(timeout=0.5)
            self.metrics.queue.labels(st.name).set(src.slot.depth())
            if frame is None:
                if src.finished:
                    return
                continue
            st.busy = True
            try:
                self._perceive(st, frame.rgb, frame.frame_id, frame.captured_at)
            except Exception as e:  # one bad frame must not stop the source
                st.error = f"{type(e).__name__}: {e}"
                self.metrics.bad.labels(st.name).inc()
                log.exception("source %s: frame %s failed", st.name, frame.frame_id)
            finally:
                st.busy = False

    def _perceive(self, st: _SourceState, rgb: np.ndarray, frame_id: int, captured_at: float) -> FrameRecord:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise CeprError(f"a frame must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        camera = camera_for(None, w, h)  # the assumed Cloud-Robotics camera, scaled to the frame
        t0 = time.perf_counter()
        with self._pipe_lock:
            r = self.pipeline(rgb, None, camera, tasks=tuple(self.config.tasks))
        dt = time.perf_counter() - t0
        now = time.time()
        rec = FrameRecord(st.name, frame_id, captured_at, now, rgb, r.label, r.summary, camera.to_dict(),
                          {**r.timings_ms, "total": 1e3 * dt})
        m = self.metrics
        m.frames.labels(st.name).inc()
        m.perception.labels(st.name).observe(dt)
        m.frame_latency.labels(st.name).observe(max(0.0, now - captured_at))
        m.summary_bytes.labels(st.name).observe(len(r.summary_bytes))
        with self._lock:
            st.add(rec)
        for task in self.config.tasks:
            self._answer(st, rec, task, r.answers[task], r.label)
        return rec

    def _source(self, name: str) -> _SourceState:
        with self._lock:
            st = self._sources.get(name)
            if st is None:
                st = self._sources[name] = _SourceState(name, self.config.keep_frames)
                self._zero_metrics(name)
            return st

    def _zero_metrics(self, name: str) -> None:
        m = self.metrics
        for metric in (m.frames, m.drops, m.bad, m.captured, m.answers, m.upgraded, m.cloud_late, m.cloud_expired):
            metric.labels(name)  # present at 0 from the start

    def perceive_array(self, rgb: np.ndarray, source: str = UPLOAD_SOURCE) -> FrameRecord:
        """Perceive one RGB frame now (not through a slot); it becomes ``source``'s latest frame."""
        if not self._started:
            raise CeprError("the edge service is not started: call start() first")
        st = self._source(source)
        if st.src is not None:
            raise CeprError(f"source {source!r} is a camera/file source: upload frames under another name")
        return self._perceive(st, rgb, next(st.uploads), time.time())

    def perceive_bytes(self, data: bytes, source: str = UPLOAD_SOURCE) -> FrameRecord:
        try:
            rgb = decode_image(data)
        except CeprError:
            self.metrics.bad.labels(source).inc()
            with self._lock:
                self._source(source).bad += 1
            raise
        return self.perceive_array(rgb, source)

    # -- answers --
    def _answer(self, st: _SourceState, rec: FrameRecord, task: str, local, label) -> dict:
        answers = get_task(task).answers
        if local.distribution is not None:
            dist = {a: float(local.distribution.get(a, 0.0)) for a in answers}
        else:
            others = [a for a in answers if a != local.answer]
            rest = (1.0 - local.confidence) / len(others) if others else 0.0
            dist = {a: (local.confidence if a == local.answer else rest) for a in answers}
        answer_id = f"{st.name}-{rec.frame_id}-{task}"
        x = {"key": answer_id, "task": task, "answer": local.answer, "confidence": local.confidence,
             "distribution": dist, "features": edge_features(rec.summary, label, dist)}
        try:
            hard = bool(self.policy(x))
        except CeprError as e:
            log.warning("policy %s failed on %s: %s (kept on the edge)", self.deployment.policy, answer_id, e)
            hard = False
        now = time.time()
        a = {"answer_id": answer_id, "source_name": st.name, "frame_id": rec.frame_id, "task": task,
             "answer": local.answer, "confidence": round(float(local.confidence), 4), "source": "edge",
             "edge_answer": local.answer, "edge_confidence": round(float(local.confidence), 4),
             "cloud_answer": None, "cloud_confidence": None, "hard": hard,
             "cloud_status": "not_sent", "captured_at": rec.captured_at, "answered_at": now,
             "deadline_at": now + self.config.deadline_s if hard else None, "upgraded_at": None,
             "cloud_latency_ms": None, "cloud_bytes_up": None, "fused_from": None, "_dist": dist}
        with self._lock:
            self._answers.pop(answer_id, None)
            self._answers[answer_id] = a
            while len(self._answers) > self.config.keep_answers:
                self._answers.popitem(last=False)
            rec.answer_ids[task] = answer_id
            st.answers += 1
        m = self.metrics
        m.answers.labels(st.name).inc()
        if hard:
            self._send(st, rec, a)
        with self._lock:
            m.cloud_share.labels(st.name).set(st.sent / st.answers)
        return a

    def _send(self, st: _SourceState, rec: FrameRecord, a: dict) -> None:
        if self.config.cloud == "none":
            a["cloud_status"] = "no_cloud"
            self.metrics.cloud.labels(st.name, "no_cloud").inc()
            return
        rid = f"{a['answer_id']}-{int(1e6 * time.time()) % 10**9}"
        with self._lock:
            self._cloud_jobs[rid] = (a["answer_id"], st.name, a["deadline_at"])
            a["cloud_status"] = "pending"
            st.sent += 1
        job = CloudJob(rid, st.name, rec.frame_id, a["task"], rec.summary, rec.camera, rec.rgb,
                       deadline_at=a["deadline_at"])
        try:
            ok = self.cloud.submit(job)
        except Exception:  # Redis gone, a full stream...: the edge answer stands, counted as refused
            log.exception("cloud submit failed for %s", a["answer_id"])
            ok = False
        self.metrics.cloud.labels(st.name, "sent" if ok else "refused").inc()
        if not ok:
            with self._lock:
                self._cloud_jobs.pop(rid, None)
                a["cloud_status"] = "refused"

    def _on_cloud(self, r) -> None:
        now = time.time()
        with self._lock:
            aid, src, _deadline = self._cloud_jobs.pop(r.request_id, (None, None, None))
            a = self._answers.get(aid) if aid else None
            st = self._sources.get(src) if src else None
            if r.status == "expired" and st is not None:
                st.cloud_expired += 1
            if r.status == "ok" and a is not None and now > a["deadline_at"] and st is not None:
                st.cloud_late += 1
            if a is None:
                return
            a["cloud_latency_ms"] = round(1e3 * (now - a["answered_at"]), 3)
            a["cloud_bytes_up"] = r.bytes_up or None
            if r.status != "ok":
                a["cloud_status"] = r.status if r.status in ("shed", "dead_lettered", "expired") else "failed"
                a["cloud_reason"] = r.reason
            elif now > a["deadline_at"]:  # the edge answer stands
                a["cloud_status"] = "late"
                a["cloud_answer"], a["cloud_confidence"] = r.answer, r.confidence
            else:
                rule = getattr(self.cloud, "fusion", "cloud_wins")
                task = get_task(a["task"])
                final, fused_from = fuse(rule, task.name, task.answers,
                                         Side(a["edge_answer"], a["edge_confidence"], a["_dist"]),
                                         Side(r.answer, r.confidence))
                a.update(answer=final, confidence=r.confidence if r.confidence is not None else a["confidence"],
                         source="cloud", cloud_answer=r.answer, cloud_confidence=r.confidence, upgraded_at=now,
                         cloud_status="answered", fused_from=fused_from)
            self._answer_cond.notify_all()
        m = self.metrics
        m.cloud.labels(src, a["cloud_status"]).inc()
        if a["cloud_status"] in ("answered", "late"):
            m.cloud_latency.labels(src).observe(a["cloud_latency_ms"] / 1e3)
        if a["cloud_status"] == "answered":
            m.upgraded.labels(src).inc()
        elif a["cloud_status"] == "late":
            m.cloud_late.labels(src).inc()
        elif a["cloud_status"] == "expired":
            m.cloud_expired.labels(src).inc()
        if r.bytes_up:
            m.cloud_bytes.labels(src).inc(r.bytes_up)

    def cloud_pending(self) -> dict[str, dict[str, int]]:
        """Per source: this service's cloud requests without a result (``pending``) and, of those, the ones
        whose deadline has passed (``past_deadline``)."""
        now = time.time()
        with self._lock:
            out = {name: {"pending": 0, "past_deadline": 0} for name in self._sources}
            for _aid, src, deadline in self._cloud_jobs.values():
                d = out.setdefault(src, {"pending": 0, "past_deadline": 0})
                d["pending"] += 1
                d["past_deadline"] += int(deadline is not None and now > deadline)
        return out

    def refresh_gauges(self) -> None:
        """Set the gauges (frame slots, cloud queue depth per source and in all, pending past the deadline) to
        their values now; ``GET /metrics`` calls it before each scrape."""
        m = self.metrics
        with self._lock:
            sources = list(self._sources.items())
        for name, st in sources:
            m.queue.labels(name).set(st.src.slot.depth() if st.src else 0)
        for name, d in self.cloud_pending().items():
            m.cloud_queue.labels(name).set(d["pending"])
            m.cloud_pending_late.labels(name).set(d["past_deadline"])
        if self.cloud is not None:
            m.cloud_backlog.set(self.cloud.depth())

    @staticmethod
    def _public(a: dict) -> dict:
        out = {k: v for k, v in a.items() if not k.startswith("_")}
        if out["cloud_status"] == "pending" and out["deadline_at"] and time.time() > out["deadline_at"]:
            out["cloud_status"] = "pending_past_deadline"
        return out

    def answer(self, answer_id: str, wait_s: float = 0.0) -> dict:
        """An answer by id; ``wait_s`` > 0 waits (at most until its deadline) for a pending cloud upgrade."""
        end = time.time() + wait_s
        with self._answer_cond:
            a = self._answers.get(answer_id)
            if a is None:
                raise KeyError(f"no answer {answer_id!r} (kept: the last {self.config.keep_answers})")
            while a["cloud_status"] == "pending":
                left = min(end, a["deadline_at"] or end) - time.time()
                if left <= 0:
                    break
                self._answer_cond.wait(left)
            return self._public(a)

    def ask(self, task: str, source: str | None = None, frame_id: int | None = None, wait_s: float = 0.0) -> dict:
        """The answer to ``task`` about ``source``'s latest frame (or ``frame_id``): the edge's at once, the
        cloud's if the policy sent it and it arrives within ``wait_s`` (and the deadline)."""
        try:
            get_task(task)
        except KeyError as e:
            raise CeprError(e.args[0]) from None
        with self._lock:
            if source is None:
                live = [s for s in self._sources.values() if s.latest is not None]
                if not live:
                    raise LookupError("no frame perceived yet")
                st = max(live, key=lambda s: s.latest.perceived_at)
            else:
                st = self._sources.get(source)
                if st is None:
                    raise LookupError(f"no source {source!r} (have: {', '.join(self._sources) or 'none'})")
            if frame_id is None:
                rec = st.latest
                if rec is None:
                    raise LookupError(f"source {st.name!r} has no perceived frame yet")
            else:
                rec = st.frames.get(int(frame_id))
                if rec is None:
                    kept = list(st.frames)
                    raise LookupError(f"source {st.name!r} has no frame {frame_id} (kept: "
                                      f"{kept[0] if kept else '-'}..{kept[-1] if kept else '-'})")
            aid = rec.answer_ids.get(task)
        if aid is None:
            with self._pipe_lock:
                local = self.pipeline.planner.answer(rec.summary, (task,))[task]
            aid = self._answer(st, rec, task, local, rec.label)["answer_id"]
        return self.answer(aid, wait_s)

    def answers(self, source: str | None = None, since: float = 0.0, limit: int = 1000) -> list[dict]:
        with self._lock:
            rows = [self._public(a) for a in self._answers.values()
                    if (source is None or a["source_name"] == source) and a["answered_at"] >= since]
        return rows[-limit:]

    # -- state --
    def frame(self, source: str, frame_id: int | None = None) -> FrameRecord:
        with self._lock:
            st = self._sources.get(source)
            if st is None:
                raise LookupError(f"no source {source!r} (have: {', '.join(self._sources) or 'none'})")
            rec = st.latest if frame_id is None else st.frames.get(int(frame_id))
        if rec is None:
            raise LookupError(f"source {source!r}: no such frame")
        return rec

    def overlay(self, source: str) -> bytes:
        rec = self.frame(source)
        st = self._sources[source]
        cached = st.overlay
        if cached is None or cached[0] != rec.frame_id:
            st.overlay = cached = (rec.frame_id, overlay_jpeg(rec.rgb, rec.label))
        return cached[1]

    def stats(self) -> dict:
        """Counters per source and of the cloud path (what /health and the live page show)."""
        out = {}
        pending = self.cloud_pending()
        with self._lock:
            for name, st in self._sources.items():
                src = st.src
                d = {"kind": src.kind if src else "upload", "where": src.where if src else None,
                     "fps_target": src.fps if src else None,
                     "captured": src.captured if src else st.perceived + st.bad,
                     "perceived": st.perceived, "dropped": src.dropped if src else 0,
                     "bad": (src.bad if src else 0) + st.bad,
                     "answers": st.answers, "cloud_sent": st.sent,
                     "cloud_share": round(st.sent / st.answers, 4) if st.answers else None,
                     "finished": bool(src.finished) if src else False,
                     "error": (src.error if src else None) or st.error,
                     "latest_frame_id": st.latest.frame_id if st.latest else None,
                     "latest_age_s": round(time.time() - st.latest.captured_at, 3) if st.latest else None,
                     "queue_depth": src.slot.depth() if src else 0,
                     "cloud_pending": pending.get(name, {}).get("pending", 0),
                     "cloud_pending_past_deadline": pending.get(name, {}).get("past_deadline", 0),
                     "cloud_late": st.cloud_late, "cloud_expired": st.cloud_expired}
                out[name] = d
        deadline = {k: sum(v[f"cloud_{k}"] for v in out.values())
                    for k in ("late", "expired", "pending_past_deadline")}
        return {"sources": out, "cloud": {**self.cloud.describe(), **self.cloud.counters(),
                                          "depth": self.cloud.depth()} if self.cloud else None,
                "edge_deadline": deadline,
                "deployment": self.deployment.describe(), "tasks": list(self.config.tasks),
                "deadline_s": self.config.deadline_s, "uptime_s": round(time.time() - (self.started_at or time.time()),
                                                                        3)}
