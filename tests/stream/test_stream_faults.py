"""Fault behaviour against a real redis-server: a cloud worker killed mid-stream, Redis restarted, a cloud slower
than the submit rate, poison messages. After each, every accepted request is answered, shed or dead-lettered
(counted), exactly one result per request id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
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
ALGOS = ROOT / "testalgorithms" / "perception-reasoning"


def _algorithm_yaml(tmp_path: Path, cloud: dict) -> Path:
    """A CloudOnly algorithm file whose cloud module has these settings (one value each)."""
    hps = "\n".join(f"        - {k}:\n            values: [{v!r}]" for k, v in cloud.items())
    p = tmp_path / "cloud-stream.yaml"
    p.write_text(f"""algorithm:
  paradigm_type: "jointinference"
  modules:
    - type: "edgemodel"
      name: "CeprEdgeModel"
      url: "{ALGOS / 'cepr_edge_model.py'}"
    - type: "cloudmodel"
      name: "CeprCloudModel"
      url: "{ALGOS / 'cepr_cloud_model.py'}"
      hyperparameters:
{hps}
    - type: "hard_example_mining"
      name: "CloudOnly"
      url: "{ALGOS / 'cepr_hard_example_mining.py'}"
""")
    return p


def _one_result_each(q, ids) -> list:
    results = all_results(q)
    per_id = Counter(r.request_id for r in results)
    assert set(per_id) == set(ids), set(ids) ^ set(per_id)
    assert max(per_id.values()) == 1, [k for k, v in per_id.items() if v > 1]
    return results


def test_worker_killed_mid_stream_another_claims_and_answers(redis_srv, expert_backend, tmp_path):
    """A `cepr stream worker` subprocess (the job YAML's cloud backend: the reference expert server that base_url:
    auto starts, over a modelled 4G link) is SIGKILLed after answering some; a second worker claims what it held
    and answers the rest."""
    pytest.importorskip("fastapi")
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    q = CloudQueue(redis_srv.url)
    ids = [f"k{i}" for i in range(40)]
    for i, rid in enumerate(ids):
        q.submit(rid, make_summary(person_col=3 * i, seed=i), "path_hazard", camera_meta())
    yaml = _algorithm_yaml(tmp_path, {"backend": "openai", "base_url": "auto", "payload": "summary", "link": "4g",
                                      "timeout_s": 10.0})
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - the subprocess writes it until it is killed
    proc = subprocess.Popen([sys.executable, "-m", "cepr", "stream", "worker", "--redis", redis_srv.url, "-f",
                             str(yaml), "--name", "doomed"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: q.answered >= 5 or proc.poll() is not None, 120, "the subprocess worker's 5th answer")
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    held = q.client.xpending_range(q.stream, q.group, min="-", max="+", count=100, consumername="doomed")
    answered_before = q.answered
    assert len(held) <= 1  # a worker reads one message at a time (batch 1)
    assert 5 <= answered_before < len(ids), "killed too late to be mid-stream"
    assert_counts_add_up(q.counts())

    w2 = CloudWorker(redis_srv.url, expert_backend, "survivor", claim_idle_ms=300, block_ms=50)
    t = WorkerThread(w2)
    try:
        wait_until(lambda: q.counts()["in_flight"] == 0, 60, "the survivor to finish")
    finally:
        t.stop()
    c = q.counts()
    assert c["accepted"] == c["answered"] == len(ids) and c["pending"] == 0 and c["late"] == 0, c
    assert_counts_add_up(c)
    assert w2.stats["claimed"] == len(held)  # the message the killed worker was holding, if any
    results = _one_result_each(q, ids)
    by = Counter(r.worker for r in results)
    assert by["doomed"] == answered_before and by["survivor"] == len(ids) - answered_before
    assert all(r.status == "ok" for r in results)


@pytest.mark.parametrize("crash", [False, True], ids=["clean-restart", "sigkill-restart"])
def test_redis_restarted_pending_entries_survive_and_are_answered(redis_srv, expert_backend, crash):
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    q = CloudQueue(redis_srv.url)
    ids = [f"r{i}" for i in range(30)]
    for i, rid in enumerate(ids):
        q.submit(rid, make_summary(seed=i), "action", camera_meta())
    # a consumer that reads 3 messages and is never heard of again: they sit in the pending list
    q.client.xreadgroup(q.group, "ghost", {q.stream: ">"}, count=3)
    w = CloudWorker(redis_srv.url, SlowBackend(expert_backend, 0.05), "w1", claim_idle_ms=500, block_ms=50)
    t = WorkerThread(w)
    try:
        wait_until(lambda: q.answered >= 5, 30, "5 answers before the restart")
        redis_srv.restart(crash=crash)
        after = CloudQueue(redis_srv.url).counts()  # what the restarted server holds
        assert after["accepted"] == 30 and after["in_flight"] >= 3 and after["pending"] >= 3, after
        assert_counts_add_up(after)
        wait_until(lambda: q.counts()["in_flight"] == 0, 60, "every request answered after the restart")
    finally:
        t.stop()
    c = q.counts()
    assert c["answered"] == 30 and c["pending"] == 0, c
    assert_counts_add_up(c)
    assert w.stats["claimed"] >= 3  # the ghost's messages
    results = _one_result_each(q, ids)
    assert all(r.status == "ok" for r in results)


def test_cloud_slower_than_submit_rate_sheds_oldest_with_a_count(redis_srv, expert_backend):
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    maxlen = 8
    q = CloudQueue(redis_srv.url, maxlen=maxlen)
    w = CloudWorker(redis_srv.url, SlowBackend(expert_backend, 0.15), "slow", block_ms=20)
    t = WorkerThread(w)
    ids, backlog_seen = [f"s{i:03d}" for i in range(60)], []
    try:
        for i, rid in enumerate(ids):  # ~100 requests/s against a cloud answering ~6/s
            q.submit(rid, make_summary(seed=i), "path_hazard", camera_meta())
            c = q.counts()
            assert_counts_add_up(c)
            backlog_seen.append(c["backlog"])
            time.sleep(0.01)
        wait_until(lambda: q.counts()["in_flight"] == 0, 30, "the backlog to drain")
    finally:
        t.stop()
    assert max(backlog_seen) == maxlen  # bounded
    c = q.counts()
    assert c["shed"] > 0 and c["answered"] > 0 and c["accepted"] == len(ids) and c["dead_lettered"] == 0, c
    assert_counts_add_up(c)
    results = _one_result_each(q, ids)
    shed = [r.request_id for r in results if r.status == "shed"]
    answered = [r.request_id for r in results if r.status == "ok"]
    assert len(shed) == c["shed"] and len(answered) == c["answered"]
    assert c["late"] == 0  # what the worker held was never shed: no answer was wasted
    # oldest first: the newest maxlen - 1 requests (the backlog less the one the worker holds) are never shed, and
    # requests are shed in submit order
    assert not set(shed) & set(ids[-(maxlen - 1):]), sorted(set(shed) & set(ids[-maxlen:]))
    assert shed == sorted(shed)
    assert all("shed" in r.reason for r in results if r.status == "shed")


def test_poison_messages_are_dead_lettered_with_a_reason_and_the_worker_keeps_going(redis_srv, expert_backend):
    from cepr.stream.codec import encode_request
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    q = CloudQueue(redis_srv.url)
    good = make_summary()
    _ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    poison = {
        "garbage-summary": {"summary_bytes": os.urandom(64), "task": "path_hazard"},
        "truncated-image": {"summary_bytes": good, "task": "path_hazard", "image": png.tobytes()[:20]},
        "not-an-image": {"summary_bytes": good, "task": "path_hazard", "image": b"\x00" * 100},
        "unknown-task": {"summary_bytes": good, "task": "parking_spot"},
        "truncated-summary": {"summary_bytes": good[: len(good) // 2], "task": "action"},
    }
    ids = []
    for i in range(6):
        q.submit(f"good{i}", good, "path_hazard", camera_meta())
        ids.append(f"good{i}")
        if i < len(poison):
            name, kw = list(poison.items())[i]
            q.submit(request_id=name, meta={}, **kw)
            ids.append(name)
    # an entry no edge wrote through submit (a foreign writer): no 'summary' field at all
    fields = encode_request("foreign", good, "path_hazard", {})
    del fields[b"summary"]
    q.client.xadd(q.stream, fields)

    max_retries = 2
    w = CloudWorker(redis_srv.url, expert_backend, "w1", max_retries=max_retries, retry_backoff_s=0.02, block_ms=20)
    t = WorkerThread(w)
    try:
        wait_until(lambda: q.client.xlen(q.stream) == 0, 30, "every entry settled")
    finally:
        t.stop()
    c = q.counts()
    assert c["answered"] == 6 and c["dead_lettered"] == len(poison) and c["foreign_dead_lettered"] == 1, c
    assert c["retried"] == max_retries * (len(poison) + 1)
    assert_counts_add_up(c)
    dead = {d["id"]: d for d in q.dead_letters()}
    assert set(dead) == {*poison, "foreign"}
    reasons = {k: d["reason"] for k, d in dead.items()}
    assert "scene summary" in reasons["garbage-summary"] and "scene summary" in reasons["truncated-summary"]
    assert "OpenCV" in reasons["not-an-image"] and "OpenCV" in reasons["truncated-image"]
    assert "parking_spot" in reasons["unknown-task"]
    assert "'summary' missing" in reasons["foreign"]
    assert all(d["attempts"] == str(1 + max_retries) for d in dead.values())
    results = {r.request_id: r for r in _one_result_each(q, [*ids, "foreign"])}
    assert all(results[k].status == "dead" for k in dead) and all(results[f"good{i}"].ok for i in range(6))


def test_cloud_down_requests_retry_then_dead_letter(redis_srv):
    """The real openai backend pointed at a port nothing listens on: each attempt falls back (no connection), is
    retried, and is dead-lettered with the backend's reason."""
    pytest.importorskip("openai")
    from cepr.cloud.client import create_backend
    from cepr.servers.base import free_port
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    backend = create_backend("openai", {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "x",
                                        "timeout_s": 1.0, "retries": 0})
    q = CloudQueue(redis_srv.url)
    q.submit("down", make_summary(), "path_hazard", camera_meta())
    w = CloudWorker(redis_srv.url, backend, "w1", max_retries=1, retry_backoff_s=0.01, block_ms=20)
    wait_until(lambda: (w.run_once() is not None and q.counts()["in_flight"] == 0), 30, "the dead letter")
    c = q.counts()
    assert c["dead_lettered"] == 1 and c["retried"] == 1, c
    reason = q.dead_letters()[0]["reason"]
    assert reason.startswith("cloud fallback"), reason
