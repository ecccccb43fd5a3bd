"""Several OpenAI-compatible servers behind one endpoint: deploy/nginx/vllm-replicas.conf under the real nginx.

Two real ``cepr serve cloud`` reference servers (cheap stand-ins for vLLM replicas: the same OpenAI routes,
streaming and a Prometheus /metrics) on loopback, and nginx started as a foreground child with a temporary prefix
and the repository's own template, rendered with the test's ports. Through it, the suite's ``openai`` backend:
the requests are spread over both replicas (counted by each replica's own /metrics), streaming survives the proxy
(time to first token is recorded), and after one replica is killed every remaining request still succeeds (nginx's
passive health check passes it on), with the suite's error count stated. Skipped when nginx is not installed
(Debian: apt-get install nginx; .ci/run does it).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cepr.servers.autoserve import ReferenceServer
from cepr.servers.base import free_port

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "vllm-replicas.conf"


def find_nginx() -> str | None:
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def render(template: str, replicas: list[int], listen: int, access_log: Path) -> str:
    """The template with its ``# @replica`` lines replaced by one line per replica port (same options), its
    ``# @listen`` line by a loopback listen on ``listen`` and its access log moved to ``access_log``."""
    out, replica_done = [], False
    for line in template.splitlines():
        if line.rstrip().endswith("# @replica"):
            if not replica_done:
                for port in replicas:
                    out.append(re.sub(r"server\s+\S+", f"server 127.0.0.1:{port}", line, count=1))
                replica_done = True
        elif line.rstrip().endswith("# @listen"):
            out.append(re.sub(r"listen\s+[^;]+;", f"listen 127.0.0.1:{listen};", line))
        elif line.rstrip().endswith("# @access_log"):
            out.append(re.sub(r"access_log\s+\S+", f"access_log {access_log}", line))
        else:
            out.append(line)
    if not replica_done:
        raise AssertionError(f"{TEMPLATE} has no '# @replica' line")
    return "\n".join(out) + "\n"


class Nginx:
    """nginx in the foreground (``daemon off``), as a child of this process, all its files under ``prefix``."""

    def __init__(self, binary: str, prefix: Path, replicas: list[int]):
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.error_log, self.access_log = prefix / "error.log", prefix / "access.log"
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / d).mkdir(parents=True, exist_ok=True)
        (prefix / "vllm-replicas.conf").write_text(render(TEMPLATE.read_text(), replicas, self.port, self.access_log))
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        temps = "\n".join(f"    {d}_temp_path {prefix / d};" for d in ("fastcgi", "uwsgi", "scgi"))
        (prefix / "nginx.conf").write_text(f"""\
daemon off;
user {user} {group};
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {self.error_log} warn;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {prefix / 'body'};
    proxy_temp_path {prefix / 'proxy'};
{temps}
    include {prefix / 'vllm-replicas.conf'};
}}
""")
        self.cmd = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(self.error_log)]
        check = subprocess.run([*self.cmd, "-t"], check=False, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t refused the rendered template:\n{check.stderr}"
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited at start-up: {self.proc.stderr.read()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2).read()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"nginx did not answer /health within 10 s:\n{self.error_log.read_text()}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: nginx's fast shutdown, workers included
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stderr.close()


def requests_count(server: ReferenceServer) -> int:
    """Chat requests this replica received, from its own /metrics (cepr_requests_total)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    m = re.search(r"^cepr_requests_total\s+(\S+)$", text, re.MULTILINE)
    assert m, text
    return round(float(m.group(1)))


def kill(server: ReferenceServer) -> None:
    """SIGKILL, as a crashed replica: no goodbye to open connections."""
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(10)
    server.stop()


@pytest.fixture
def replicas():
    pytest.importorskip("fastapi")
    from cepr.edge.models import model_path

    cloud_model = str(model_path("cloud"))  # the shipped reference model (ONNX): no torch needed
    servers: list[ReferenceServer] = []
    try:
        with ThreadPoolExecutor(2) as ex:  # both start at once: half the wait
            futures = [ex.submit(ReferenceServer, cloud_model, 1, 60, (), 1) for _ in range(2)]
            for f in futures:
                servers.append(f.result())
        yield servers
    finally:
        for s in servers:
            kill(s)


@pytest.fixture
def nginx(replicas, tmp_path):
    binary = find_nginx()
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx; .ci/run installs it)")
    n = Nginx(binary, tmp_path / "nginx", [s.port for s in replicas])
    try:
        yield n
    finally:
        n.stop()


def cloud_requests(n: int):
    """``n`` requests the reference expert answers from the scene summary alone, each with the answer the planner
    gives for that summary (what the expert must say, whichever replica answers)."""
    from cepr.data.camera import Camera
    from cepr.data.tasks import TASKS
    from cepr.edge.planner import Planner
    from cepr.edge.summary import summarize
    from cepr.records import CloudRequest

    out = []
    cam = Camera.assumed(160, 120)
    for i in range(n):
        label = np.zeros((120, 160), np.uint8)  # road
        label[:30] = 10  # sky
        x = 20 + 15 * (i % 8)
        label[60:110, x:x + 12] = (11, 13, 5, 29)[i % 4]  # person, car, pole, dustbin, moving across the frame
        depth = np.full((120, 160), 3.0 + 0.5 * (i % 5), np.float32)
        summ = summarize(label, depth, cam)
        task = ("path_hazard", "action")[i % 2]
        req = CloudRequest(task, TASKS[task].render_prompt(), TASKS[task].answers, summary=summ.to_dict(),
                           camera=cam.to_dict(), key=f"r{i}:{task}")
        out.append((req, Planner().answer(summ, (task,))[task].answer))
    return out


def test_two_replicas_behind_nginx_share_the_load_and_survive_losing_one(replicas, nginx, tiny_data):
    from cepr.cloud.openai_backend import OpenAIBackend

    a, b = replicas
    template = TEMPLATE.read_text().splitlines()
    assert sum(line.rstrip().endswith("# @replica") for line in template) == 2
    assert any(line.strip() == "least_conn;" for line in template)
    backend = OpenAIBackend({"base_url": nginx.url, "model": "cepr-reference-expert-not-an-llm", "timeout_s": 10.0,
                             "payload": {"mode": "summary"}, "retries": 2})
    reqs = cloud_requests(24)
    status, body = nginx.get("/metrics")  # not balanced on purpose: each replica's /metrics is its own
    assert status == 404 and b"each replica" in body

    # 1. both replicas up: 8 requests one at a time, 8 from 4 threads at once
    first = [backend.infer(r) for r, _ in reqs[:8]]
    with ThreadPoolExecutor(4) as ex:
        first += list(ex.map(lambda rq: backend.infer(rq[0]), reqs[8:16]))
    for r, (req, want) in zip(first, reqs[:16]):
        assert r.status == "ok", r.reason
        assert r.answer == want, (req.key, r.answer, want)
        assert r.timings.ttft_ms is not None and r.timings.ttft_ms > 0  # streamed through the proxy
        assert r.usage.counted == "server-estimate" and r.attempts == 1
    na, nb = requests_count(a), requests_count(b)
    assert na + nb == 16, (na, nb)  # each request reached exactly one replica
    assert na >= 3 and nb >= 3, f"least_conn left a replica nearly idle: {na} / {nb}"
    upstreams = {m for m in re.findall(r"upstream=(\S+)", nginx.access_log.read_text())}
    assert {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"} <= upstreams

    # the concurrency sweep (cepr bench cloud --base-url ... --request-model ... --payload summary) through nginx
    from cepr.bench.cloud import bench_cloud

    sweep = bench_cloud(nginx.url, str(tiny_data), frames=4, requests=8, concurrency=(1, 4), warmup=0,
                        timeout_s=10.0, progress=False, request_model="cepr-reference-expert-not-an-llm",
                        payload="summary")
    assert [(lv["concurrency"], lv["ok"], lv["errors"]) for lv in sweep["levels"]] == [(1, 8, 0), (4, 8, 0)]
    assert sweep["answers_consistent"] and sweep["payload"] == "scene summary only, no image"
    assert sweep["server"]["status"] == "ok"  # /health through the balancer
    na, nb = requests_count(a), requests_count(b)
    assert na + nb == 16 + 16, (na, nb)

    # 2. one replica dies (SIGKILL): every remaining request still gets its answer, from the other one
    kill(a)
    after = [backend.infer(r) for r, _ in reqs[16:]]
    errors = sum(r.status != "ok" for r in after)
    assert errors == 0, [r.reason for r in after if r.status != "ok"]
    assert [r.answer for r in after] == [w for _, w in reqs[16:]]
    assert [r.attempts for r in after] == [1] * len(after)  # nginx passed the request on; the client saw no failure
    assert requests_count(b) == nb + len(after)
    log = nginx.error_log.read_text()
    assert "Connection refused" in log and f"127.0.0.1:{a.port}" in log, log
    # the request that met the dead replica was passed on in the same request: two upstreams on its log line
    assert re.search(rf"upstream=127\.0\.0\.1:{a.port}, 127\.0\.0\.1:{b.port}", nginx.access_log.read_text())
    assert nginx.get("/health")[0] == 200

    # 3. both dead: nginx answers 502, the suite falls back (the edge answer stands), no crash
    kill(b)
    gone = [backend.infer(r) for r, _ in reqs[:2]]
    assert [r.status for r in gone] == ["fallback", "fallback"], [r.reason for r in gone]
    assert all("502" in r.reason for r in gone), [r.reason for r in gone]
    assert nginx.get("/health")[0] == 502
