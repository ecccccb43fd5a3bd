"""Several model sessions in the reference cloud expert: the same answers as one session, every concurrent request
answered, the setting reachable from the command line and YAML, and ``cepr bench cloud`` end to end.

No test here times anything: the machines are noisy. The one figure checked is an invariant of a closed loop:
``concurrency`` threads each sending their next request when the last was answered cannot reach a throughput above
``concurrency / min latency``.
"""

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cepr.bench.cloud import build_bodies, run_level
from cepr.cloud.expert import MAX_DEFAULT_SESSIONS, ReferenceExpert, SessionPool, default_sessions
from cepr.errors import CeprError


def cepr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cepr", *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def bodies(tiny_data):
    """The default job's request bodies (summary + 640x480 JPEG) for 4 test frames, tasks in turn."""
    return build_bodies(str(tiny_data), "test", frames=4)


@pytest.fixture(scope="module")
def one_session_answers(cloud_model, bodies):
    """Each body's answer text from one session, answered one after another."""
    one = ReferenceExpert(cloud_model, sessions=1)
    assert one.sessions == 1
    return [one.answer(json.loads(b)["messages"]).text for b in bodies]


def test_several_sessions_answer_as_one_session(cloud_model, bodies, one_session_answers):
    three = ReferenceExpert(cloud_model, sessions=3)
    assert three.sessions == 3 and len({id(m.session) for m in three.models}) == 3
    msgs = [json.loads(b)["messages"] for b in bodies] * 6
    with ThreadPoolExecutor(6) as ex:  # every session busy, requests waiting for one
        got = list(ex.map(lambda m: three.answer(m).text, msgs))
    assert got == one_session_answers * 6
    assert three._pool.free == 3  # every session given back


def test_session_pool_serves_waiters_first_come_first_served():
    pool = SessionPool(["a"])
    held = pool.acquire()
    order, threads = [], []
    for i in range(4):  # each waits in turn: thread i is queued before thread i + 1 starts
        t = threading.Thread(target=lambda i=i: (order.append((i, pool.acquire())), pool.release(order[-1][1])))
        t.start()
        threads.append(t)
        while len(pool._waiting) < i + 1:
            time.sleep(0.001)
    pool.release(held)
    for t in threads:
        t.join(10)
    assert order == [(0, "a"), (1, "a"), (2, "a"), (3, "a")] and pool.free == 1


def test_default_sessions_follow_the_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(6)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert default_sessions(1) == min(6, MAX_DEFAULT_SESSIONS)
    assert default_sessions(2) == 3 and default_sessions(4) == 1 and default_sessions(16) == 1
    with pytest.raises(ValueError, match="sessions must be >= 1"):
        ReferenceExpert("cloud", sessions=0)


def test_concurrent_requests_to_a_server_are_all_answered_as_one_session_answers(start_server, bodies,
                                                                                  one_session_answers):
    srv = start_server("--sessions", "2")
    assert json.loads(srv.get("/health"))["sessions"] == 2
    r = run_level(srv.url, bodies, concurrency=6, requests=24)
    assert r["status"] == [200] * 24 and not r["errors"]
    assert r["answers"] == [one_session_answers[k % len(bodies)] for k in range(24)]
    assert srv.metrics()["cepr_requests_total"] == 24
    # the invariant of a closed loop (not a timing: it holds on any machine)
    assert 24 / r["wall_s"] <= 6 / min(r["latency_s"])


def test_server_refuses_zero_sessions(cloud_model):
    p = cepr("serve", "cloud", "--model", cloud_model, "--sessions", "0")
    assert p.returncode != 0 and "--sessions must be >= 1" in p.stdout + p.stderr


def test_bench_cloud_runs_end_to_end(tiny_data, cloud_model, tmp_path):
    out = tmp_path / "bench.json"
    p = cepr("bench", "cloud", "--data", tiny_data, "--frames", 4, "--requests", 8, "--concurrency", "1,2",
             "--model", cloud_model, "--sessions", 2, "--json", out, "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "| concurrency | req/s | req/s of each repeat | p50 ms | p95 ms | errors |" in p.stdout
    r = json.loads(out.read_text())
    assert r["started_server"] and r["sessions"] == 2 and r["server"]["sessions"] == 2
    assert r["frames"] == 4 and r["requests"] == 8 and r["answers_consistent"] is True
    assert {"cpu", "cores", "loadavg", "date"} <= set(r["machine"])
    assert [lv["concurrency"] for lv in r["levels"]] == [1, 2]
    for lv in r["levels"]:
        assert lv["ok"] == 8 and lv["errors"] == 0
        assert {"p50", "p95", "min", "max"} <= set(lv["latency_ms"]) and len(lv["other_cores_runs"]) == 1
        assert 0 < lv["latency_ms"]["min"] <= lv["latency_ms"]["p50"] <= lv["latency_ms"]["p95"]
        # throughput never exceeds what latency allows (rounded figures: a relative slack of 1e-3)
        assert lv["throughput_rps"] <= lv["concurrency"] / (lv["latency_ms"]["min"] / 1e3) * (1 + 1e-3)


def test_bench_cloud_refuses_bad_levels(tiny_data):
    p = cepr("bench", "cloud", "--data", tiny_data, "--concurrency", "1,x")
    assert p.returncode != 0 and "--concurrency" in p.stdout + p.stderr


def test_server_sessions_from_yaml_reach_the_started_server(monkeypatch):
    from cepr.cloud.module import CloudModule
    from cepr.servers import autoserve

    started = []

    class FakeServer:
        def __init__(self, model, threads, sessions=None):
            started.append((model, threads, sessions))
            self.url, self.proc = f"http://127.0.0.1:{9000 + len(started)}/v1", self

        def poll(self):
            return None

        def stop(self):
            pass

    monkeypatch.setattr(autoserve, "ReferenceServer", FakeServer)
    monkeypatch.setattr(autoserve, "_servers", {})
    a = CloudModule(server_sessions=3, link="none")
    b = CloudModule(server_sessions=3, link="none")  # the same key: the same server
    c = CloudModule(link="none")  # none set: the server's default
    assert started == [("cloud", 1, 3), ("cloud", 1, None)]
    assert a.client.backend.cfg.base_url == b.client.backend.cfg.base_url != c.client.backend.cfg.base_url
    for m in (a, b, c):
        m.cleanup()
    for bad in (0, "2", 1.5, True):
        with pytest.raises(CeprError, match="server_sessions must be an integer >= 1"):
            CloudModule.check_hyperparameters(server_sessions=bad)
    CloudModule.check_hyperparameters(server_sessions=2)


def test_wait_for_idle_returns_an_idle_share():
    from cepr.bench.cloud import wait_for_idle

    idle, waited = wait_for_idle(0.0, window_s=0.05)
    assert 0.0 <= idle <= 1.0 and 0.0 <= waited < 5
