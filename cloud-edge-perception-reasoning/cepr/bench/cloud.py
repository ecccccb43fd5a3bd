"""``cepr bench cloud``: throughput and latency of the reference cloud server against request concurrency.

The requests are what the default job sends: one task question, the robot's camera, the edge's scene summary
(the INT8 RGB-D edge model run on the frame, distances from depth) and the frame as a 640x480 JPEG (q85), built
with the cloud client's own payload code (``cepr.cloud.openai_backend.build_messages``) from frames of a dataset
split. The bodies are built before any timing starts; the client then sends them from ``concurrency`` threads at
once (a closed loop: each thread sends its next request when its last one was answered) over keep-alive HTTP
connections, and measures each request from the first byte sent to the last byte read.

Levels are interleaved over repeats (1, 2, 4, 8, 1, 2, 4, 8, ...) so that a change of machine load meets every
level alike; a level's throughput is the median over its repeats, its latency percentiles are over the requests
of all its repeats. Every answer is kept per request body, so a run also says whether a body was answered the
same at every level (``answers_consistent``).

Throughput of a closed loop can never exceed ``concurrency / min latency``: each thread's requests follow one
another, so ``n_i`` of them take at least ``n_i * min latency``.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import threading
import time
import urllib.parse
import urllib.request

import numpy as np

from cepr.bench.machine import machine_info
from cepr.cloud.expert import EXPERT_MODEL_NAME
from cepr.cloud.openai_backend import OpenAIBackendConfig, build_messages
from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import TASK_NAMES, TaskParams, camera_for, get_task
from cepr.edge.models import model_path
from cepr.edge.pipeline import EdgePipeline
from cepr.records import CloudRequest, PayloadConfig
from cepr.servers.autoserve import ReferenceServer

DEFAULT_CONCURRENCY = (1, 2, 4, 8)
# what the requests carry: the default job's payload, or the scene summary alone (a text-only model)
PAYLOADS = {"summary+image": {"mode": "summary+image", "resolution": "640x480", "codec": "jpeg", "quality": 85},
            "summary": {"mode": "summary"}}
PAYLOAD_TEXT = {"summary+image": "summary + 640x480 JPEG q85 (the default job's)",
                "summary": "scene summary only, no image"}


def _jiffies(pids=()) -> tuple[int, int] | None:
    """(CPU time the whole machine was busy, CPU time of this process and of ``pids``), in clock ticks, from /proc;
    None where /proc is not there."""
    try:
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        busy = sum(cpu) - cpu[3] - (cpu[4] if len(cpu) > 4 else 0)  # all but idle and iowait
        ours = 0
        for pid in ("self", *map(str, pids)):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ours += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
            except (OSError, IndexError, ValueError):
                pass
        return busy, ours
    except (OSError, ValueError):
        return None


def _tick() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def wait_for_idle(min_idle: float, max_wait_s: float = 60.0, window_s: float = 1.0) -> tuple[float, float]:
    """Wait until the machine's CPUs were at least ``min_idle`` idle (0..1) over ``window_s``, at most
    ``max_wait_s``. Returns (idle share last seen, seconds waited)."""
    t0, idle = time.monotonic(), 1.0
    cores = os.cpu_count() or 1
    while True:
        a = _jiffies()
        time.sleep(window_s)
        b = _jiffies()
        if a is None or b is None:
            return 1.0, 0.0
        idle = max(0.0, 1.0 - (b[0] - a[0]) / _tick() / window_s / cores)
        if idle >= min_idle or time.monotonic() - t0 >= max_wait_s:
            return idle, time.monotonic() - t0


def build_bodies(data: str, split: str = "test", frames: int = 16, payload=None, edge_model: str = "edge-int8",
                 max_tokens: int = 128, model: str | None = None) -> list[bytes]:
    """Chat-completion request bodies (JSON bytes, not streamed), one per frame, as the default job sends them:
    question (tasks in turn), camera, the edge's scene summary and the image by ``payload`` (default: summary and
    a 640x480 JPEG, quality 85). ``model``: the name the bodies carry (default: the reference expert's); a vLLM
    server refuses any name but the one it serves."""

    payload = payload or PayloadConfig(mode="summary+image", resolution="640x480", codec="jpeg", quality=85)
    cfg = OpenAIBackendConfig(model=model or EXPERT_MODEL_NAME, payload=payload, max_tokens=max_tokens,
                              stream=False)
    ds = CloudRoboticsDataset(find_index(data, split=split))
    pipe = EdgePipeline(model_path(edge_model)) if payload.sends_summary else None
    bodies = []
    for i, s in enumerate(itertools.islice(ds, max(1, frames))):
        task = get_task(TASK_NAMES[i % len(TASK_NAMES)])
        h, w = s.rgb.shape[:2]
        summary = pipe.run_sample(s).summary.to_dict() if pipe is not None else None
        req = CloudRequest(task.name, task.render_prompt(TaskParams()), task.answers, summary=summary,
                           image=s.rgb, camera=camera_for(s.sidecar, w, h).to_dict(), key=s.frame.rgb_path.name)
        body = {"model": cfg.model, "messages": build_messages(cfg, req), "max_tokens": cfg.max_tokens,
                "temperature": cfg.temperature, "stream": False}
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    if not bodies:
        raise ValueError(f"no frames in the {split} split of {data}")
    return bodies


class _Client:
    """One keep-alive HTTP connection to the server's ``/v1/chat/completions``."""

    def __init__(self, base_url: str, timeout_s: float):
        u = urllib.parse.urlsplit(base_url.rstrip("/"))
        self.host, self.port = u.hostname or "127.0.0.1", u.port or (443 if u.scheme == "https" else 80)
        self.https = u.scheme == "https"
        self.path = (u.path or "") + "/chat/completions"
        self.timeout_s = timeout_s
        self.conn = None

    def post(self, body: bytes) -> tuple[int, bytes]:
        for attempt in range(2):  # a keep-alive connection the server closed is reopened once
            if self.conn is None:
                cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
                self.conn = cls(self.host, self.port, timeout=self.timeout_s)
            try:
                self.conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _answer_text(status: int, raw: bytes) -> str | None:
    if status != 200:
        return None
    try:
        return json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def run_level(base_url: str, bodies: list[bytes], concurrency: int, requests: int, timeout_s: float = 120.0,
              start: int = 0, server_pids=None) -> dict:
    """``requests`` requests from ``concurrency`` threads at once (closed loop). Request ``k`` sends body
    ``(start + k) % len(bodies)``. Returns the wall time, every request's latency, status and answer, and
    ``other_cores``: the CPU the rest of the machine used meanwhile (cores, on average; not this process nor
    ``server_pids``), None where /proc is missing or ``server_pids`` is None (the server's processes unknown)."""
    lock = threading.Lock()
    nxt = [0]
    lat = [None] * requests
    status = [0] * requests
    answers = [None] * requests
    errors: list[str] = []
    barrier = threading.Barrier(concurrency + 1)

    def worker():
        client = _Client(base_url, timeout_s)
        barrier.wait()
        try:
            while True:
                with lock:
                    k = nxt[0]
                    nxt[0] += 1
                if k >= requests:
                    return
                t0 = time.perf_counter()
                try:
                    st, raw = client.post(bodies[(start + k) % len(bodies)])
                except OSError as e:
                    st, raw = -1, b""
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                lat[k] = time.perf_counter() - t0
                status[k] = st
                answers[k] = _answer_text(st, raw)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    j0 = None if server_pids is None else _jiffies(server_pids)
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    j1 = None if server_pids is None else _jiffies(server_pids)
    other = (None if j0 is None or j1 is None
             else max(0.0, ((j1[0] - j0[0]) - (j1[1] - j0[1])) / _tick() / wall))
    return {"concurrency": concurrency, "requests": requests, "wall_s": wall, "latency_s": lat,
            "status": status, "answers": answers, "errors": errors[:5], "start": start, "other_cores": other}


def _summarise(concurrency: int, runs: list[dict]) -> dict:
    lat = np.array([x for r in runs for x, st in zip(r["latency_s"], r["status"]) if st == 200], np.float64)
    ok = sum(st == 200 for r in runs for st in r["status"])
    n = sum(r["requests"] for r in runs)
    rps = [sum(st == 200 for st in r["status"]) / r["wall_s"] for r in runs]
    ms = (lambda q: round(float(np.percentile(lat, q)) * 1e3, 1)) if lat.size else (lambda q: None)
    return {
        "concurrency": concurrency, "requests": n, "ok": ok, "errors": n - ok, "repeats": len(runs),
        "throughput_rps": round(float(np.median(rps)), 3), "throughput_rps_runs": [round(x, 3) for x in rps],
        "latency_ms": {"p50": ms(50), "p95": ms(95), "min": round(float(lat.min()) * 1e3, 3) if lat.size else None,
                       "max": round(float(lat.max()) * 1e3, 1) if lat.size else None},
        "wall_s_runs": [round(r["wall_s"], 3) for r in runs],
        "other_cores_runs": [None if r.get("other_cores") is None else round(r["other_cores"], 2) for r in runs],
        "error_examples": sorted({e for r in runs for e in r["errors"]})[:5],
    }


def bench_cloud(base_url: str | None = None, data: str = "datasets/cloud-robotics-synth-bench", split: str = "test",
                frames: int = 16, requests: int = 32, concurrency=DEFAULT_CONCURRENCY, repeat: int = 1,
                model: str = "cloud", threads: int = 1, sessions: int | None = None, warmup: int | None = None,
                timeout_s: float = 120.0, progress: bool = True, server_args=(), wait_idle: float | None = None,
                request_model: str | None = None, payload: str = "summary+image", max_tokens: int = 128) -> dict:
    """Run the sweep against ``base_url`` or, when None, against a ``cepr serve cloud`` started here on a free
    loopback port (``model``, ``threads``, ``sessions``) and stopped afterwards. ``wait_idle`` (0..1): before
    each run, wait (up to a minute) until the machine's CPUs were that idle for a second (a shared machine).
    ``request_model``: the model name in the requests (what ``base_url`` serves, e.g. a vLLM server's; default:
    the reference expert's); ``payload``: ``summary+image`` (the default job's: the summary and a 640x480 JPEG)
    or ``summary`` (text only, for a model without image input); ``max_tokens``: per reply."""
    concurrency = [int(c) for c in concurrency]
    if not concurrency or min(concurrency) < 1 or requests < 1 or repeat < 1:
        raise ValueError("concurrency levels, requests and repeat must be >= 1")
    say = print if progress else (lambda *a, **k: None)
    say(f"building {frames} request bodies from {data} ({split}) ...", flush=True)
    if payload not in PAYLOADS:
        raise ValueError(f"payload must be one of {sorted(PAYLOADS)}, got {payload!r}")
    bodies = build_bodies(data, split, frames, PayloadConfig(**PAYLOADS[payload]), max_tokens=max_tokens,
                          model=request_model)
    server = None
    if base_url is None:
        say(f"starting cepr serve cloud (model {model}, threads {threads}, sessions {sessions or 'default'}) ...",
            flush=True)
        server = ReferenceServer(model, threads, sessions=sessions, extra_args=server_args)
        base_url = server.url
    info = machine_info()
    pids = [server.proc.pid] if server is not None else None  # a server elsewhere: its CPU is not known
    waits = []
    try:
        warm = max(concurrency) * 2 if warmup is None else warmup
        if warm:
            run_level(base_url, bodies, max(concurrency), warm, timeout_s)
        runs: dict[int, list[dict]] = {c: [] for c in concurrency}
        for rep in range(repeat):
            for c in concurrency:
                if wait_idle:
                    waits.append(wait_for_idle(wait_idle))
                r = run_level(base_url, bodies, c, requests, timeout_s, start=0, server_pids=pids)
                runs[c].append(r)
                s = _summarise(c, [r])
                other = "" if r["other_cores"] is None else f", other load {r['other_cores']:.2f} cores"
                say(f"  repeat {rep + 1}/{repeat} concurrency {c}: {s['throughput_rps']:.2f} req/s, "
                    f"p50 {s['latency_ms']['p50']} ms, {s['errors']} errors{other}", flush=True)
        health = _health(base_url)
    finally:
        if server is not None:
            server.stop()
    # the same body must get the same answer at every level and repeat
    per_body: dict[int, set] = {}
    for rs in runs.values():
        for r in rs:
            for k, a in enumerate(r["answers"]):
                if a is not None:
                    per_body.setdefault((r["start"] + k) % len(bodies), set()).add(a)
    info_after = machine_info()
    return {
        "base_url": base_url, "started_server": server is not None, "model": model if server else None,
        "threads": threads if server else None, "sessions": sessions if server else None, "server": health,
        "data": str(data), "split": split, "frames": len(bodies),
        "body_bytes_median": int(np.median([len(b) for b in bodies])),
        "payload": PAYLOAD_TEXT[payload], "request_model": request_model, "max_tokens": max_tokens,
        "requests": requests, "repeat": repeat,
        "warmup": warm, "machine": {**info, "loadavg_after": info_after["loadavg"]},
        "wait_idle": wait_idle, "idle_before_runs": [round(i, 2) for i, _ in waits],
        "waited_s": round(sum(w for _, w in waits), 1),
        "levels": [_summarise(c, runs[c]) for c in concurrency],
        "answers_consistent": all(len(v) == 1 for v in per_body.values()),
        "answers": {str(k): sorted(v) for k, v in sorted(per_body.items())},
    }


def _health(base_url: str) -> dict | None:
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(root + "/health", timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def format_bench_cloud(r: dict) -> str:
    m = r["machine"]
    who = (f"cepr serve cloud started here: model {r['model']}, sessions {r['sessions'] or 'default'}, "
           f"threads {r['threads']}" if r["started_server"] else f"server {r['base_url']}")
    srv = r.get("server") or {}
    if srv.get("sessions"):
        who += f" (server reports {srv['sessions']} session(s) x {srv.get('threads')} thread(s))"
    lines = [
        f"cloud server throughput vs concurrency: {who}",
        (f"{r['frames']} request bodies ({r['payload']}, median {r['body_bytes_median']:,} B), "
         f"{r['requests']} requests per level, {r['repeat']} repeat(s)"),
        f"machine: {m['cpu']}, {m['cores']} cores, load {m['loadavg']} -> {m['loadavg_after']}, {m['date']}",
        "",
        "| concurrency | req/s | req/s of each repeat | p50 ms | p95 ms | errors | other load (cores) |",
        "|---|---|---|---|---|---|---|",
    ]
    for lv in r["levels"]:
        each = ", ".join(f"{x:.1f}" for x in lv["throughput_rps_runs"])
        other = [x for x in lv["other_cores_runs"] if x is not None]
        other = f"{float(np.median(other)):.2f}" if other else "?"
        lines.append(f"| {lv['concurrency']} | {lv['throughput_rps']:.2f} | {each} | {lv['latency_ms']['p50']} | "
                     f"{lv['latency_ms']['p95']} | {lv['errors']} | {other} |")
    lines.append("")
    lines.append("req/s: median over the repeats; p50/p95: over every request of the level; other load: CPU used "
                 "meanwhile by the rest of the machine (median over the repeats; ? with --base-url, whose server's "
                 "CPU is not known here)")
    lines.append("same answer for each request body at every level: " + ("yes" if r["answers_consistent"] else "NO"))
    return "\n".join(lines)

