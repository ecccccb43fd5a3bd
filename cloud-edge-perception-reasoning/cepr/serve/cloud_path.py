"""How the edge service reaches the cloud: an interface with two implementations.

* :class:`DirectCloud`: the job YAML's cloud backend (``CloudModule``: the reference expert under ``base_url:
  auto``, any OpenAI-compatible server, or ``backend: inprocess``) called from worker threads in this process,
  through a bounded queue that sheds the OLDEST waiting request when full (counted);
* :class:`QueueCloud`: Redis Streams (``cepr.stream.CloudQueue``): hard samples go on a stream in their binary
  form (msgpack summary, RLE mask), cloud workers elsewhere answer on a results stream.

Both call ``on_result(CloudAnswer)`` once per accepted request: answered, failed, or shed.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from cepr.errors import CeprError

log = logging.getLogger(__name__)


@dataclass
class CloudJob:
    request_id: str
    source: str
    frame_id: int
    task: str
    summary: object  # cepr.edge.summary.SceneSummary
    camera: dict
    rgb: np.ndarray | None
    submitted_at: float = field(default_factory=time.time)


@dataclass
class CloudAnswer:
    request_id: str
    status: str  # ok | error | shed
    answer: str | None = None
    confidence: float | None = None
    reason: str = ""
    latency_ms: float | None = None
    bytes_up: int = 0


class CloudPath:
    """The interface: ``start(on_result)``, ``submit(job)``, ``depth()``, ``counters()``, ``close()``."""

    name = "none"

    def start(self, on_result) -> None:
        self.on_result = on_result

    def submit(self, job: CloudJob) -> bool:
        return False

    def depth(self) -> int:
        return 0

    def counters(self) -> dict:
        return {"accepted": 0, "answered": 0, "failed": 0, "shed": 0, "dead_lettered": 0}

    def describe(self) -> dict:
        return {"mode": self.name}

    def close(self) -> None:
        pass


class DirectCloud(CloudPath):
    """The cloud module of the job YAML, called in this process by ``workers`` threads; at most ``max_pending``
    requests wait, and a new one beyond that sheds the oldest waiting one."""

    name = "direct"

    def __init__(self, cloud_module, max_pending: int = 8, workers: int = 1):
        if max_pending < 1 or workers < 1:
            raise CeprError(f"cloud queue: max_pending and workers must be >= 1, got {max_pending}, {workers}")
        self.module = cloud_module
        self.max_pending, self.workers = max_pending, workers
        self._q: collections.deque[CloudJob] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._c = {"accepted": 0, "answered": 0, "failed": 0, "shed": 0, "dead_lettered": 0}

    def start(self, on_result) -> None:
        self.on_result = on_result
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"cloud-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def describe(self) -> dict:
        m = self.module
        return {"mode": self.name, "backend": type(m.client.backend).__name__,
                "base_url": str(getattr(getattr(m.client.backend, "cfg", None), "base_url", "")) or None,
                "payload": m.payload.model_dump(), "link": m.link_name, "fusion": m.fusion,
                "max_pending": self.max_pending, "workers": self.workers}

    def submit(self, job: CloudJob) -> bool:
        shed = None
        with self._cond:
            if self._stop:
                return False
            self._c["accepted"] += 1
            if len(self._q) >= self.max_pending:
                shed = self._q.popleft()  # oldest first: its answer is the stalest
                self._c["shed"] += 1
            self._q.append(job)
            self._cond.notify()
        if shed is not None:
            self.on_result(CloudAnswer(shed.request_id, "shed", reason="cloud queue full: oldest request shed"))
        return True

    def depth(self) -> int:
        with self._cond:
            return len(self._q) + self._busy

    def counters(self) -> dict:
        with self._cond:
            return dict(self._c)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._q and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._q.popleft()
                self._busy += 1
            try:
                ans = self._call(job)
            except Exception as e:  # a backend bug must not kill the worker
                log.exception("cloud request %s failed", job.request_id)
                ans = CloudAnswer(job.request_id, "error", reason=f"{type(e).__name__}: {e}")
            with self._cond:
                self._busy -= 1
                self._c["answered" if ans.status == "ok" else "failed"] += 1
            self.on_result(ans)

    def _call(self, job: CloudJob) -> CloudAnswer:
        from cepr.cloud.base import CloudRequest
        from cepr.data.tasks import TaskParams, get_task

        m = self.module
        task = get_task(job.task)
        summary = job.summary.to_dict()
        payload = m.payload_chain.choose(summary, job.request_id).payload
        req = CloudRequest(task.name, task.render_prompt(TaskParams()), task.answers,
                           summary=summary if payload.sends_summary else None,
                           image=job.rgb if payload.sends_image else None, camera=job.camera,
                           key=job.request_id, payload=payload)
        r = m.client.infer(req)
        if r.status != "ok":
            return CloudAnswer(job.request_id, "error", reason=r.reason or r.status,
                               latency_ms=m.client.latency_ms(r), bytes_up=r.bytes_up)
        return CloudAnswer(job.request_id, "ok", r.answer, r.confidence, r.reason or "",
                           m.client.latency_ms(r), r.bytes_up)

    def close(self) -> None:
        with self._cond:
            self._stop = True
            pending = list(self._q)
            self._q.clear()
            self._cond.notify_all()
        for job in pending:
            self.on_result(CloudAnswer(job.request_id, "shed", reason="service stopping"))
        for t in self._threads:
            t.join(timeout=5)
        self.module.cleanup()


def _field(obj, name, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


class QueueCloud(CloudPath):
    """Redis Streams (``cepr.stream.CloudQueue``): ``submit`` puts the binary summary (and the JPEG frame when the
    payload sends one) on the request stream; a thread reads the results stream. Cloud workers run elsewhere
    (``cepr.stream.CloudWorker``)."""

    name = "queue"

    def __init__(self, url: str | None, payload=None, **queue_options):
        try:
            from cepr.stream import CloudQueue
        except ImportError as e:
            raise CeprError(f"cloud: queue needs cepr.stream and the stream extra (pip install -e '.[stream]'): "
                            f"{e}") from None
        self.url = url
        self.queue = CloudQueue(url, **queue_options)
        self.payload = payload
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_result) -> None:
        self.on_result = on_result
        self._thread = threading.Thread(target=self._read, name="cloud-results", daemon=True)
        self._thread.start()

    def describe(self) -> dict:
        return {"mode": self.name, "url": self.url}

    def submit(self, job: CloudJob) -> bool:
        image = None
        if job.rgb is not None and (self.payload is None or self.payload.sends_image):
            from cepr.cloud.payload import PayloadConfig, encode_image

            image = encode_image(job.rgb, self.payload or PayloadConfig()).data
        meta = {"source": job.source, "frame_id": job.frame_id, "camera": job.camera,
                "submitted_at": job.submitted_at}
        self.queue.submit(job.request_id, job.summary.to_bytes(), job.task, meta, image=image)
        return True

    def depth(self) -> int:
        for name in ("depth", "pending"):
            f = getattr(self.queue, name, None)
            if callable(f):
                return int(f())
        return 0

    def counters(self) -> dict:
        return {k: int(getattr(self.queue, k, 0) or 0) for k in ("accepted", "answered", "shed", "dead_lettered")}

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                for r in self.queue.results(block_ms=200):
                    status = str(_field(r, "status", "ok"))
                    self.on_result(CloudAnswer(str(_field(r, "request_id")), "ok" if status == "ok" else status,
                                               _field(r, "answer"), _field(r, "confidence"),
                                               str(_field(r, "reason", "") or ""), _field(r, "latency_ms")))
                    if self._stop.is_set():
                        break
            except Exception:
                log.exception("reading the cloud results stream failed; retrying in 1 s")
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        close = getattr(self.queue, "close", None)
        if callable(close):
            close()
