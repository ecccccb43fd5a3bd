"""Deadlines, restarts and the embedded server's lifetime, against a real redis-server: a worker drops requests read
past their deadline (counted ``expired``, the ledger holds at every instant); a worker SIGKILLed and restarted
under the same name spends no retry on the messages it held; the embedded redis-server dies with a SIGKILLed
parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from stream_support import (
    SlowBackend,
    WorkerThread,
    all_results,
    assert_counts_add_up,
    camera_meta,
    make_summary,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]


def test_slow_worker_short_deadline_expires_the_rest_and_the_sum_holds(redis_srv, expert_backend):
    """A cloud answering in 250 ms, 12 requests queued at once with a 0.6 s deadline: the first few are answered,
    the rest are read past their deadline and acknowledged as expired without a cloud call; the ledger
    accepted = answered + shed + dead_lettered + expired + in_flight holds at every instant it was read."""
    from cepr.stream.codec import BadFrame, decode_request, encode_request
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    q = CloudQueue(redis_srv.url)
    calls = []

    class Counting(SlowBackend):
        def infer(self, req):
            calls.append(req.key)
            return super().infer(req)

    t_sub = time.time()
    ids = [f"d{i}" for i in range(12)]
    for i, rid in enumerate(ids):
        q.submit(rid, make_summary(seed=i), "path_hazard", camera_meta(), deadline=t_sub + 0.6)
    q.submit("no-deadline", make_summary(seed=99), "path_hazard", camera_meta())  # never expires
    seen, stop = [], threading.Event()

    def watch():  # the ledger, read over and over while the worker settles requests
        while not stop.is_set():
            seen.append(q.counts())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    w = CloudWorker(redis_srv.url, Counting(expert_backend, 0.25), "slow", block_ms=20)
    t = WorkerThread(w)
    try:
        wait_until(lambda: q.counts()["in_flight"] == 0, 30, "every request settled")
    finally:
        t.stop()
        stop.set()
        watcher.join(5)
    c = q.counts()
    assert c["accepted"] == 13 and c["expired"] >= 5 and c["answered"] >= 2, c  # 0.6 s / 0.25 s: 3 answered
    assert c["answered"] + c["expired"] == 13 and c["dead_lettered"] == 0 and c["shed"] == 0, c
    assert len(seen) >= 5
    for snap in seen:
        assert_counts_add_up(snap)
    results = {r.request_id: r for r in all_results(q)}
    expired = [r for r in results.values() if r.status == "expired"]
    assert len(expired) == c["expired"] == w.stats["expired"]
    assert all(r.request_id not in calls for r in expired)  # the cloud was not called for them
    assert all(r.answered_at > t_sub + 0.6 and "deadline" in r.reason for r in expired)
    assert results["no-deadline"].ok and results["d0"].ok  # the first one was read in time
    # the deadline travels in the entry and is checked on decode
    f = encode_request("x", make_summary(), "action", {}, deadline=123.5)
    assert decode_request(f).deadline == 123.5
    f[b"deadline"] = b"soon"
    with pytest.raises(BadFrame, match="deadline"):
        decode_request(f)


_DRILL_WORKER = """
import sys, time
from cepr.cloud.client import create_backend
from cepr.stream.worker import CloudWorker
expert = create_backend("inprocess", {"expert_model": "cloud"})
class Slow:
    def infer(self, req):
        time.sleep(0.05)
        return expert.infer(req)
w = CloudWorker(sys.argv[1], Slow(), "drill", max_retries=1, batch=6, block_ms=20, claim_idle_ms=600000)
print("ready", flush=True)
w.run()
"""


def test_worker_restarted_under_the_same_name_spends_no_retries(redis_srv, tmp_path):
    """A worker process (batch 6: it holds several messages) is SIGKILLed mid-stream twice and restarted
    under the same consumer name each time. With max_retries=1 counting deliveries, the messages it held would
    have been dead-lettered after one restart; counting failed attempts, every message is answered."""
    from cepr.stream.queue import CloudQueue

    q = CloudQueue(redis_srv.url)
    ids = [f"r{i}" for i in range(24)]
    for i, rid in enumerate(ids):
        q.submit(rid, make_summary(person_col=2 * i, seed=i), "action", camera_meta())
    script = tmp_path / "drill_worker.py"
    script.write_text(_DRILL_WORKER)
    held_after_kills = []
    for _kill in range(3):
        proc = subprocess.Popen([sys.executable, str(script), redis_srv.url], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.stdout.read()
            if len(held_after_kills) == 2:  # the last run finishes the work
                wait_until(lambda p=proc: q.counts()["in_flight"] == 0 or p.poll() is not None, 60, "the rest")
                break
            before = q.answered
            wait_until(lambda b=before, p=proc: q.answered >= b + 4 or p.poll() is not None, 60, "4 more answers")
            assert proc.poll() is None, proc.stdout.read()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
        held = q.client.xpending_range(q.stream, q.group, min="-", max="+", count=100, consumername="drill")
        held_after_kills.append(len(held))
    assert min(held_after_kills) >= 1, held_after_kills  # it was killed holding messages, each time
    c = q.counts()
    assert c["answered"] == len(ids) and c["dead_lettered"] == 0 and c["pending"] == 0, c
    assert_counts_add_up(c)
    results = all_results(q)
    assert sorted(r.request_id for r in results) == sorted(ids) and all(r.ok for r in results)
    assert q.client.hlen(f"{q.stream}:started") == 0 and q.client.hlen(f"{q.stream}:failures") == 0


def test_a_message_that_kills_every_worker_is_still_dead_lettered(redis_srv, expert_backend):
    """Restarts are free, but a message whose every attempt ends with the worker dead (no outcome) is dead-lettered
    after 1 + max_retries such attempts, like a message that fails that often."""
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    class Crash(BaseException):  # what a crash looks like from Redis: the attempt began and never ended
        pass

    class KillsOnPoison:
        def infer(self, req):
            if req.key == "poison":
                raise Crash()
            return expert_backend.infer(req)

    q = CloudQueue(redis_srv.url)
    q.submit("poison", make_summary(), "action", camera_meta())
    q.submit("fine", make_summary(seed=1), "action", camera_meta())
    for _life in range(3):  # max_retries=1: two crashed attempts, then the third taker dead-letters it
        w = CloudWorker(redis_srv.url, KillsOnPoison(), "crashy", max_retries=1, block_ms=20)
        try:
            while True:
                w.run_once()
                if q.counts()["in_flight"] == 0:
                    break
        except Crash:
            pass
        finally:
            w.close()
        if q.counts()["in_flight"] == 0:
            break
    c = q.counts()
    assert c["dead_lettered"] == 1 and c["answered"] == 1, c
    dead = q.dead_letters()[0]
    assert dead["id"] == "poison" and "died while answering" in dead["reason"], dead


_EMBEDDED = """
import time
from cepr.servers.redis_server import embedded
print(embedded().proc.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_embedded_redis_dies_with_a_sigkilled_parent(tmp_path):
    pytest.importorskip("redis")
    from cepr.errors import CeprError
    from cepr.servers.redis_server import redis_binary

    try:
        redis_binary()
    except CeprError as e:
        pytest.skip(str(e))
    parent = subprocess.Popen([sys.executable, "-c", _EMBEDDED], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(parent.stdout.readline())
        assert _alive(pid)
        os.kill(parent.pid, signal.SIGKILL)  # no atexit, no finally: only the kernel can stop redis now
        parent.wait(10)
        wait_until(lambda: not _alive(pid), 10, f"redis-server {pid} to exit after its parent was SIGKILLed")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdout.close()
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited, its new parent just has not reaped it yet
