"""How the edge service reaches the cloud: an interface with two implementations.

* :class:`DirectCloud`: the job YAML's cloud backend (``CloudModule``: the reference expert under ``base_url:
  auto``, any OpenAI-compatible server, or ``backend: inprocess``) called from worker threads in this process,
  through a bounded queue that sheds the OLDEST waiting request when full (counted);
* :class:`QueueCloud`: Redis Streams (``cepr.stream.CloudQueue``): hard samples go on a stream in their binary
  form (msgpack summary, RLE mask), cloud workers elsewhere answer on a results stream.

Both call ``on_result(CloudAnswer)`` once per accepted request: answered, failed, shed, dead-lettered (queue) or
expired (the request waited past its deadline and was dropped without calling the cloud: its answer could no
longer upgrade the edge's).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from cepr.cloud.payload import encode_image
from cepr.data.tasks import TaskParams, get_task
from cepr.errors import CeprError
from cepr.records import CloudRequest, PayloadConfig
from cepr.stream.worker import CloudWorker

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
    deadline_at: float | None = None  # absolute (time.time()): past it, the answer is of no use to the edge


@dataclass
class CloudAnswer:
    request_id: str
    status: str  # ok | error | shed | dead_lettered | expired
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
        return {"accepted": 0, "answered": 0, "failed": 0, "shed": 0, "dead_lettered": 0, "expired": 0}

    def describe(self) -> dict:
        return {"mode": self.name}

    def close(self) -> None:
        pass


class DirectCloud(CloudPath):
    """The cloud module of the job YAML, called in this process by ``workers`` threads; at most ``max_pending``
    requests wait, and a new one beyond that sheds the oldest waiting one. A worker that takes a request already
    past its ``deadline_at`` drops it without calling the cloud (``expired``)."""

    name = "direct"

    def __init__(self, cloud_module, max_pending: int = 8, workers: int = 1):
        if max_pending < 1 or workers < 1:
            raise CeprError(f"cloud queue: max_pending and workers must be >= 1, got {max_pending}, {workers}")
        self.module = cloud_module
        self.fusion = cloud_module.fusion
        self.max_pending, self.workers = max_pending, workers
        self._q: collections.deque[CloudJob] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._c = {"accepted": 0, "answered": 0, "failed": 0, "shed": 0, "dead_lettered": 0, "expired": 0}

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
                if job.deadline_at is not None and time.time() > job.deadline_at:
                    self._c["expired"] += 1
                    expired = job
                else:
                    expired = None
                    self._busy += 1
            if expired is not None:
                self.on_result(CloudAnswer(job.request_id, "expired", reason="expired: waited past its deadline; "
                                                                              "the cloud was not called"))
                continue
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


class QueueCloud(CloudPath):
    """Redis Streams (``cepr.stream.CloudQueue``): ``submit`` puts the binary summary (and the encoded frame when
    the payload sends one) on the request stream, and a thread reads the results stream. ``url``: ``embedded``
    (a local redis-server the process starts) or a ``redis://`` URL. ``cloud_module``: when given, ``workers``
    ``CloudWorker`` threads in this process answer with its backend; with ``cloud_module=None`` workers run
    elsewhere (``cepr stream worker``)."""

    name = "queue"

    def __init__(self, url: str | None = "embedded", payload=None, cloud_module=None, workers: int = 1,
                 maxlen: int = 1000, **queue_options):
        try:  # the stream extra (redis)
            from cepr.servers.redis_server import resolve_url
            from cepr.stream.queue import CloudQueue
        except ImportError as e:
            raise CeprError(f"cloud: queue needs the stream extra (pip install -e '.[stream]'): {e}") from None
        self.url = resolve_url(url or "embedded")
        self.queue = CloudQueue(self.url, maxlen=maxlen, **queue_options)
        self.payload = payload
        self.module = cloud_module
        self.fusion = getattr(cloud_module, "fusion", "cloud_wins")
        self.workers = workers if cloud_module is not None else 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers = []

    def start(self, on_result) -> None:
        self.on_result = on_result
        t = threading.Thread(target=self._read, name="cloud-results", daemon=True)
        t.start()
        self._threads.append(t)
        if self.workers:

            for i in range(self.workers):
                w = CloudWorker(self.url, self.module.client, f"edge-{os.getpid()}-{i}",
                                stream=self.queue.stream, group=self.queue.group,
                                results=self.queue.results_stream, dead=self.queue.dead)
                self._workers.append(w)
                t = threading.Thread(target=w.run, args=(self._stop,), name=f"cloud-worker-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    def describe(self) -> dict:
        return {"mode": self.name, "url": self.url, "stream": self.queue.stream, "in_process_workers": self.workers,
                "maxlen": self.queue.maxlen}

    def submit(self, job: CloudJob) -> bool:
        image = None
        if job.rgb is not None and (self.payload is None or self.payload.sends_image):
            image = encode_image(job.rgb, self.payload or PayloadConfig()).data
        meta = {"source": job.source, "frame_id": job.frame_id, "camera": job.camera,
                "submitted_at": job.submitted_at}
        self.queue.submit(job.request_id, job.summary.to_bytes(), job.task, meta, image=image,
                          deadline=job.deadline_at)
        return True

    def depth(self) -> int:
        try:
            return int(self.queue.counts()["in_flight"])
        except Exception:  # Redis down: the depth is unknown, the service goes on
            log.debug("queue depth not read", exc_info=True)
            return -1

    def counters(self) -> dict:
        try:
            c = self.queue.counts()
        except Exception as e:  # Redis down: said on /health, the service goes on
            log.debug("queue counters not read", exc_info=True)
            return {"error": f"{type(e).__name__}: {e}"}
        # late: a second answer to a request already settled (Redis' count); the edge's own count of answers
        # that came after the deadline is per source (EdgeService.stats)
        return {k: c.get(k, 0) for k in ("accepted", "answered", "shed", "dead_lettered", "expired", "retried",
                                         "in_flight", "late")}

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                for r in self.queue.results(block_ms=200):
                    status = {"ok": "ok", "shed": "shed", "dead": "dead_lettered",
                              "expired": "expired"}.get(r.status, "error")
                    self.on_result(CloudAnswer(r.request_id, status, r.answer, r.confidence, r.reason or "",
                                               r.latency_ms))
            except Exception:
                log.exception("reading the cloud results stream failed; retrying in 1 s")
                self._stop.wait(1.0)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        for w in self._workers:
            w.close()
        self.queue.close()
        if self.module is not None:
            self.module.cleanup()
