"""Helpers for tests/stream: real summaries, a slow real backend, a worker thread, count checks."""

from __future__ import annotations

import threading
import time

import numpy as np


def make_summary(person_col: int = 60, seed: int = 0) -> bytes:
    """The binary scene summary (msgpack + RLE mask) of a 160x120 mask: road, sky, a person and a car."""
    from cepr.data.tasks import camera_for
    from cepr.edge.summary import summarize

    rng = np.random.default_rng(seed)
    label = np.zeros((120, 160), np.uint8)
    label[:40] = 10
    label[70:100, person_col:person_col + 20] = 11
    c = int(rng.integers(0, 120))
    label[60:90, c:c + 30] = 13
    return summarize(label, None, camera_for(None, 160, 120)).to_bytes()


def camera_meta() -> dict:
    from cepr.data.tasks import camera_for

    return {"camera": camera_for(None, 160, 120).to_dict()}


class SlowBackend:
    """A real backend whose answers take at least ``delay_s`` (a cloud slower than the frame rate)."""

    def __init__(self, backend, delay_s: float):
        self.backend, self.delay_s = backend, delay_s

    def infer(self, req):
        t0 = time.perf_counter()
        r = self.backend.infer(req)
        time.sleep(max(0.0, self.delay_s - (time.perf_counter() - t0)))
        return r


class WorkerThread:
    """A CloudWorker running in a thread until stopped."""

    def __init__(self, worker):
        self.worker, self.stop_event = worker, threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.worker.run(self.stop_event)
        except BaseException as e:  # noqa: BLE001 - surfaced by stop()
            self.error = e

    def stop(self):
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "worker thread did not stop"
        if self.error is not None:
            raise self.error


def wait_until(cond, timeout_s: float, what: str, poll_s: float = 0.02):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def assert_counts_add_up(c: dict) -> None:
    assert c["accepted"] == c["answered"] + c["shed"] + c["dead_lettered"] + c["expired"] + c["in_flight"], c
    assert c["in_flight"] == c["backlog"], c


def all_results(q) -> list:
    return list(q.results(block_ms=None, count=100000, from_start=True))
