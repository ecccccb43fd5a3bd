"""``cepr bench stream``: replay a sequence through the edge service at a frame rate, with faults, and measure it.

The sequence (``cepr datasets synth --sequence``, or any Cloud-Robotics index: the real layout too) is replayed as
the robot's camera: its mp4 video, or its frames in index order, become a source of an in-process
:class:`cepr.serve.edge_service.EdgeService` paced at ``fps`` (newest-wins slot: frames that arrive while the
pipeline is busy are dropped and counted). The service answers the standing ``tasks`` on every perceived frame,
the job YAML's dispatch policy sends the hard ones to the cloud (``direct``: the job's cloud backend in worker
threads; ``queue``: Redis Streams, a local redis-server and in-process ``CloudWorker`` threads), and a cloud answer
that arrives before the deadline upgrades the edge's.

Measured: end-to-end latency (capture -> the final answer: the edge's, or the cloud's upgrade) p50/p95/p99; answer
accuracy per window against the sequence's ground truth, both per answered frame and *live* (at each capture
instant, the newest answer the robot holds against the truth of the frame being captured: drops and staleness
count); drop rate; queue depths over time; cloud share and bytes (scene summaries, cloud uplink/downlink).

Faults: ``cloud_down=(start, seconds)`` makes the cloud unreachable for that window (direct: every backend call
fails at once like a refused connection; queue: the cloud workers are stopped, requests wait in Redis, and new
workers under the same names take their pending messages back when the window ends); ``link=PRESET`` sends the
cloud traffic over a degraded link model (``cepr.link.network`` presets, waited out). Counts add up: frames
``captured = perceived + dropped + bad + unprocessed``, cloud ``accepted = answered + failed + shed +
dead_lettered + expired + in_flight`` (expired: dropped unanswered by the cloud side, having waited past the
deadline; in flight when the replay ended, reported), and every hard answer ends in one cloud status. The edge's
deadline counts are reported too: cloud answers that came after the deadline (``late``: the edge answer stood),
requests still pending past it at the end, and the expired ones.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from cepr.data.cloud_robotics import find_index, load_sample, read_index
from cepr.data.synth.sequence import load_sequence_info
from cepr.data.tasks import answers_for_sample, get_task
from cepr.errors import CeprError
from cepr.link.network import PRESETS
from cepr.records import CloudResult
from cepr.serve.edge_service import EdgeService, EdgeServiceConfig
from cepr.serve.sources import FrameSource
from cepr.servers.redis_server import RedisServer, redis_binary
from cepr.stream.backend import cloud_module_from_yaml
from cepr.stream.worker import CloudWorker

log = logging.getLogger(__name__)

SOURCE = "replay"
RESULT_JSON = "stream.json"
TIMESERIES_CSV = "stream_timeseries.csv"
WINDOWS_CSV = "stream_windows.csv"
ANSWERS_CSV = "stream_answers.csv"
FIGURE = "stream.png"


class StreamBenchConfig(BaseModel):
    """What ``cepr bench stream`` runs (every CLI option; unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    sequence: str = Field(description="a sequence's root, resolution directory or index file, or its video")
    fps: float = Field(10.0, gt=0, le=120, description="replay frame rate")
    seconds: float = Field(10.0, gt=0, description="replay length")
    replay: Literal["video", "frames"] = "video"
    tasks: list[str] = Field(default_factory=lambda: ["path_hazard"], min_length=1)
    job: str = "benchmarkingjob.yaml"
    algorithm: str | None = None
    cloud: Literal["direct", "queue"] = "direct"
    redis: str = Field("embedded", description="queue mode: embedded (a local redis-server) or a redis:// URL")
    cloud_workers: int = Field(1, ge=1)
    cloud_pending: int = Field(8, ge=1, description="direct mode: waiting cloud requests before the oldest is shed")
    deadline_s: float = Field(2.0, gt=0)
    cloud_down: tuple[float, float] | None = None
    link: str | None = None
    window_s: float = Field(1.0, gt=0)
    sample_s: float = Field(0.1, gt=0, description="queue-depth sampling period")
    drain_s: float | None = Field(None, ge=0, description="wait for cloud answers after the replay (default: "
                                                           "deadline + 1 s)")

    @field_validator("cloud_down")
    @classmethod
    def _down(cls, v):
        if v is not None and (v[0] < 0 or v[1] <= 0):
            raise ValueError(f"cloud_down must be (start >= 0, seconds > 0), got {v}")
        return v

    @field_validator("link")
    @classmethod
    def _link(cls, v):
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown link preset {v!r}; presets: {', '.join(PRESETS)}")
        return v


def parse_window(text: str) -> tuple[float, float]:
    """``START:SECONDS`` -> (start, seconds), both in seconds from the replay's first frame."""
    try:
        a, b = text.split(":")
        start, secs = float(a), float(b)
    except ValueError:
        raise CeprError(f"--cloud-down wants START:SECONDS (e.g. 3:4 = down from 3 s for 4 s), got {text!r}") from None
    if start < 0 or secs <= 0:
        raise CeprError(f"--cloud-down START:SECONDS needs START >= 0 and SECONDS > 0, got {text!r}")
    return start, secs


# ---- the sequence -------------------------------------------------------------------------------------------

@dataclass
class Sequence:
    frames: list  # cepr.data.cloud_robotics.Frame, in replay order
    video: Path | None
    fps: float | None  # as rendered
    index: Path
    name: str


def load_sequence(path: str | Path) -> Sequence:
    """A sequence from its root / resolution directory / index file (frames in index order), or from its mp4
    (the index found through the dataset.json beside it)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CeprError(f"sequence {str(path)!r} not found (relative paths resolve against {Path.cwd()}); render "
                        "one with: cepr datasets synth --sequence --out datasets/walk0 --frames 200 --fps 10")
    video = None
    if p.is_file() and p.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov"):
        video = p
        p = p.parent
    info = load_sequence_info(p) if p.is_dir() else None
    if p.is_file():
        index = p
    elif info is not None:
        index = Path(info["root"]) / info["index"]
    else:
        index = find_index(p, split="test")
    if info is not None and video is None:
        video = Path(info["root"]) / info["video"]
    frames = read_index(index)
    if not frames:
        raise CeprError(f"{index}: no frames")
    return Sequence(frames, video, float(info["fps"]) if info else None, index,
                    info["name"] if info else index.parent.name)


def ground_truth(frames, tasks) -> list[dict]:
    """Each frame's answers: the sidecar's (synthetic), else recomputed from the label (+ depth) like the
    benchmark's ground truth (real layout)."""
    out = []
    for f in frames:
        s = load_sample(f, rgb=False)
        cached = (s.sidecar or {}).get("answers") or {}
        if all(t in cached for t in tasks):
            out.append({t: cached[t] for t in tasks})
        else:
            ans = answers_for_sample(s)
            out.append({t: ans[t] for t in tasks})
    return out


# ---- the cloud side: a meter (bytes, calls) that can also be switched off -------------------------------------

class CloudMeter:
    """Wraps a cloud client's ``infer``: counts calls and bytes, and while ``down`` fails every call at once the
    way a refused connection does (the edge keeps its own answer)."""

    def __init__(self, client):
        self.client = client
        self.down = False
        self.calls = self.refused = 0
        self.bytes_up = self.bytes_down = 0
        self._lock = threading.Lock()

    def infer(self, req):
        if self.down:
            with self._lock:
                self.refused += 1
            return CloudResult("fallback", reason="cloud unreachable (injected cloud-down fault)")
        r = self.client.infer(req)
        with self._lock:
            self.calls += 1
            self.bytes_up += int(r.bytes_up or 0)
            self.bytes_down += int(r.bytes_down or 0)
        return r

    def __getattr__(self, name):  # latency_ms, close, link, ...
        return getattr(self.client, name)


class _Workers:
    """Queue mode: in-process ``CloudWorker`` threads answering from the Redis stream; ``stop``/``start`` model
    the cloud going away and coming back (same consumer names: they take their pending messages back)."""

    def __init__(self, url: str, backend, n: int):
        self.url, self.backend, self.n = url, backend, n
        self._threads: list[tuple[threading.Thread, threading.Event, object]] = []
        self.stats: dict[str, int] = {}

    def start(self) -> None:
        for i in range(self.n):
            w = CloudWorker(self.url, self.backend, f"bench-worker-{i}", block_ms=100, claim_idle_ms=1000)
            ev = threading.Event()
            t = threading.Thread(target=w.run, args=(ev,), name=f"bench-worker-{i}", daemon=True)
            t.start()
            self._threads.append((t, ev, w))

    def stop(self) -> None:
        for t, ev, w in self._threads:
            ev.set()
            t.join(timeout=10)
            for k, v in w.stats.items():
                self.stats[k] = self.stats.get(k, 0) + int(v)
            w.close()
        self._threads = []


# ---- the run --------------------------------------------------------------------------------------------------

def _pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 3)


def _dist(xs) -> dict:
    return {"n": len(xs), "p50": _pct(xs, 50), "p95": _pct(xs, 95), "p99": _pct(xs, 99),
            "mean": round(sum(xs) / len(xs), 3) if xs else None, "max": round(max(xs), 3) if xs else None}


def run_stream_bench(cfg: StreamBenchConfig, out: str | Path, progress: bool = True) -> dict:
    """Run the replay and write ``stream.json``, the CSVs and the figure under ``out``; returns the result."""
    for t in cfg.tasks:
        try:
            get_task(t)
        except KeyError as e:
            raise CeprError(f"--tasks: {e.args[0]}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seq = load_sequence(cfg.sequence)
    n = round(cfg.seconds * cfg.fps)
    if n < 1:
        raise CeprError(f"--seconds {cfg.seconds} at --fps {cfg.fps} is less than one frame")
    if n > len(seq.frames):
        raise CeprError(f"{seq.index} has {len(seq.frames)} frames; --seconds {cfg.seconds:g} at --fps {cfg.fps:g} "
                        f"needs {n}: render a longer walk (cepr datasets synth --sequence --frames {n}) or "
                        "shorten --seconds")
    frames = seq.frames[:n]
    truth = ground_truth(frames, cfg.tasks)
    tmp = tempfile.TemporaryDirectory(prefix="cepr-stream-")
    if cfg.replay == "video":
        if seq.video is None or not seq.video.is_file():
            raise CeprError(f"{seq.index}: no video beside it (dataset.json has no sequence.video): use "
                            "--replay frames")
        where = str(seq.video)
    else:  # the first n frames, linked in index order (any index: the real layout spans several folders)
        d = Path(tmp.name) / "frames"
        d.mkdir()
        for i, f in enumerate(frames):
            (d / f"{i:06d}{Path(f.rgb_path).suffix}").symlink_to(Path(f.rgb_path).resolve())
        where = str(d)

    redis_server = workers = meter = None
    try:
        url = None
        if cfg.cloud == "queue":  # the cloud elsewhere: workers this bench can stop, the edge only queues
            if cfg.redis == "embedded":
                redis_binary()  # names what is missing before anything starts
                redis_server = RedisServer(dir=Path(tmp.name) / "redis").start()
                url = redis_server.url
            else:
                url = cfg.redis
        svc = EdgeService(EdgeServiceConfig(
            sources=[], fps=cfg.fps, tasks=cfg.tasks, job=cfg.job, algorithm=cfg.algorithm, cloud=cfg.cloud,
            queue_url=url, deadline_s=cfg.deadline_s, cloud_pending=cfg.cloud_pending,
            cloud_workers=cfg.cloud_workers if cfg.cloud == "direct" else 0,
            keep_answers=max(10000, 2 * n * len(cfg.tasks))))
        if cfg.link is not None:
            svc.deployment.cloud_hps["link"] = cfg.link
        if cfg.cloud == "queue":
            module = cloud_module_from_yaml(svc.deployment.job, svc.deployment.algorithm,
                                            overrides={"link": cfg.link} if cfg.link else None)
            meter = CloudMeter(module.client)
            workers = _Workers(url, meter, cfg.cloud_workers)
            workers._module = module
            workers.start()
        t_setup = time.perf_counter()
        svc.start()
        if cfg.cloud == "direct":
            meter = CloudMeter(svc.cloud.module.client)
            svc.cloud.module.client = meter
        setup_s = time.perf_counter() - t_setup
        result = _replay(cfg, svc, where, n, truth, meter, workers, progress)
        result["setup_s"] = round(setup_s, 3)
    finally:
        try:
            if "svc" in locals():
                svc.stop()
        finally:
            if workers is not None:
                workers.stop()
                workers._module.cleanup()
            if redis_server is not None:
                redis_server.stop()
            tmp.cleanup()
    result["sequence"] = {"index": str(seq.index), "video": str(seq.video) if seq.video else None,
                          "name": seq.name, "rendered_fps": seq.fps, "frames_available": len(seq.frames)}
    _write(result, out)
    return result


def _replay(cfg, svc, where, n, truth, meter, workers, progress) -> dict:
    src = FrameSource(SOURCE, where, cfg.fps, max_frames=n)  # exactly the n frames with truth, however late we stop
    series = []
    down = {"active": False}

    def cloud_depth() -> int | None:
        d = int(svc.cloud.depth())
        return None if d < 0 else d  # -1: Redis did not answer

    def sample(t0):
        s = svc.stats()["sources"].get(SOURCE, {})
        try:
            cd = cloud_depth()
        except Exception:  # noqa: BLE001 - Redis busy/unreachable for a moment: a gap in the series, not a failed run
            cd = None
        series.append({"t": round(time.time() - t0, 3), "frame_queue": src.slot.depth(), "cloud_queue": cd,
                       "captured": src.captured, "perceived": s.get("perceived", 0), "dropped": src.dropped,
                       "answers": s.get("answers", 0), "cloud_sent": s.get("cloud_sent", 0),
                       "cloud_down": int(down["active"])})

    flip = threading.Lock()

    def set_down(flag: bool):
        with flip:
            if down["active"] == flag:
                return
            down["active"] = flag
            if cfg.cloud == "direct":
                meter.down = flag
            elif flag:
                workers.stop()
            else:
                workers.start()

    bar = None
    if progress:
        bar = tqdm(total=n, unit="frame", desc=f"replay {cfg.fps:g} fps")
    t0 = time.time()  # at or before the source's own clock: frame i is read at t0 + i / fps or a little later
    svc.add_source(src)  # the service's own source path: pacing, newest-wins slot, drop counters
    timers = []
    if cfg.cloud_down is not None:  # on time, not at the sampling period
        a, b = cfg.cloud_down
        for at, flag in ((a, True), (a + b, False)):
            timers.append(threading.Timer(max(0.0, t0 + at - time.time()), set_down, (flag,)))
            timers[-1].daemon = True
            timers[-1].start()
    end = t0 + (n - 0.5) / cfg.fps  # frame n - 1 is read at (n - 1) / fps, frame n (one too many) at n / fps
    while time.time() < end and not src.finished and src.captured < n:
        sample(t0)
        if bar:
            bar.n = min(n, src.captured)
            bar.refresh()
        time.sleep(max(0.0, min(cfg.sample_s, end - time.time())))
    src.stop()  # the replay ends: n frames read at most (the source stops itself at n)
    replay_end = time.time() - t0
    svc.wait_sources(timeout=30)
    if bar:
        bar.n = src.captured
        bar.close()
    for t in timers:  # a window reaching past the replay: the cloud comes back for the drain
        t.cancel()
    set_down(False)
    drain = cfg.deadline_s + 1.0 if cfg.drain_s is None else cfg.drain_s
    t_drain = time.time()
    while time.time() - t_drain < drain:
        sample(t0)
        if (cloud_depth() or 0) == 0 and not any(a["cloud_status"] == "pending"
                                                   for a in svc.answers(SOURCE, limit=10 ** 6)):
            break
        time.sleep(cfg.sample_s)
    sample(t0)
    stats = svc.stats()
    rows = svc.answers(SOURCE, limit=10 ** 6)
    cloud_counts = dict(stats["cloud"] or {})
    if cfg.cloud == "queue":
        cloud_counts.update(svc.cloud.queue.counts())
    summary_sum = svc.metrics.registry.get_sample_value("cepr_edge_summary_bytes_sum", {"source": SOURCE}) or 0.0
    return _analyse(cfg, n, truth, rows, series, stats["sources"].get(SOURCE, {}), cloud_counts, meter,
                    replay_end, t0, summary_sum, src)


def _analyse(cfg, n, truth, rows, series, sstats, cloud_counts, meter, replay_end, t0, summary_sum, src) -> dict:
    tasks = cfg.tasks
    answers = []
    for a in rows:
        fid = int(a["frame_id"])
        final_at = a["upgraded_at"] or a["answered_at"]
        gt = truth[fid][a["task"]] if fid < n else None  # read while the replay stopped: counted, not scored
        answers.append({
            "frame_id": fid, "task": a["task"], "t_capture": round(a["captured_at"] - t0, 4),
            "truth": gt, "edge_answer": a["edge_answer"], "final_answer": a["answer"], "source": a["source"],
            "hard": a["hard"], "cloud_status": a["cloud_status"],
            "edge_latency_ms": round(1e3 * (a["answered_at"] - a["captured_at"]), 3),
            "final_latency_ms": round(1e3 * (final_at - a["captured_at"]), 3),
            "t_final": round(final_at - t0, 4), "t_edge": round(a["answered_at"] - t0, 4),
            "cloud_latency_ms": a["cloud_latency_ms"], "correct": None if gt is None else int(a["answer"] == gt),
            "edge_correct": None if gt is None else int(a["edge_answer"] == gt)})
    scored = [r for r in answers if r["correct"] is not None]
    answers.sort(key=lambda r: (r["frame_id"], r["task"]))
    # live accuracy: at frame i's capture instant (t0 + i / fps: the source is paced) the newest answer the robot
    # holds (edge answer once given, the cloud's once it upgraded) against frame i's truth
    by_task = {t: sorted((r for r in scored if r["task"] == t), key=lambda r: r["t_edge"]) for t in tasks}
    live = []
    for i in range(n):
        ti = i / cfg.fps
        for t in tasks:
            held = None
            for r in by_task[t]:
                if r["t_edge"] > ti:
                    break
                held = r["final_answer"] if r["t_final"] <= ti else r["edge_answer"]
            live.append((ti, t, held is not None and held == truth[i][t], held is None))
    nwin = max(1, math.ceil(n / cfg.fps / cfg.window_s))
    windows = []
    for w in range(nwin):
        lo, hi = w * cfg.window_s, (w + 1) * cfg.window_s
        ra = [r for r in scored if lo <= r["frame_id"] / cfg.fps < hi]
        lv = [x for x in live if lo <= x[0] < hi]
        ser = [s for s in series if lo <= s["t"] < hi]
        lat = [r["final_latency_ms"] for r in ra]
        windows.append({
            "t_start": round(lo, 3), "frames": sum(1 for i in range(n) if lo <= i / cfg.fps < hi),
            "answered_frames": len({r["frame_id"] for r in ra}),
            "accuracy": round(sum(r["correct"] for r in ra) / len(ra), 4) if ra else None,
            "edge_accuracy": round(sum(r["edge_correct"] for r in ra) / len(ra), 4) if ra else None,
            "live_accuracy": round(sum(x[2] for x in lv) / len(lv), 4) if lv else None,
            "cloud_share": round(sum(r["hard"] for r in ra) / len(ra), 4) if ra else None,
            "upgraded": sum(r["source"] == "cloud" for r in ra),
            "latency_p50_ms": _pct(lat, 50), "latency_p95_ms": _pct(lat, 95),
            "frame_queue_max": max((s["frame_queue"] for s in ser), default=None),
            "cloud_queue_max": max((s["cloud_queue"] for s in ser if s["cloud_queue"] is not None), default=None),
            "cloud_down": int(any(s["cloud_down"] for s in ser))})
    status = {}
    for r in answers:
        status[r["cloud_status"]] = status.get(r["cloud_status"], 0) + 1
    captured, perceived = int(src.captured), int(sstats.get("perceived", 0))
    dropped, bad = int(src.dropped), int(sstats.get("bad", 0))
    frames_ledger = {"captured": captured, "perceived": perceived, "dropped": dropped, "bad": bad,
                     "unprocessed_at_end": captured - perceived - dropped - bad}
    frames_ledger["adds_up"] = frames_ledger["unprocessed_at_end"] >= 0
    c = cloud_counts
    failed = int(c.get("failed", 0))
    in_flight = int(c.get("in_flight", c.get("depth", 0)))
    cloud_ledger = {"accepted": int(c.get("accepted", 0)), "answered": int(c.get("answered", 0)), "failed": failed,
                    "shed": int(c.get("shed", 0)), "dead_lettered": int(c.get("dead_lettered", 0)),
                    "expired": int(c.get("expired", 0)), "in_flight_at_end": in_flight}
    cloud_ledger["adds_up"] = cloud_ledger["accepted"] == (cloud_ledger["answered"] + failed + cloud_ledger["shed"]
                                                          + cloud_ledger["dead_lettered"] + cloud_ledger["expired"]
                                                          + in_flight)
    edge_deadline = {"late": int(sstats.get("cloud_late", 0)), "expired": int(sstats.get("cloud_expired", 0)),
                     "pending_past_deadline_at_end": int(sstats.get("cloud_pending_past_deadline", 0))}
    hard = sum(r["hard"] for r in answers)
    answer_ledger = {"answers": len(answers), "edge_only": len(answers) - hard, "sent_to_cloud": hard,
                     "by_cloud_status": dict(sorted(status.items()))}
    answer_ledger["adds_up"] = sum(status.values()) == len(answers)
    fl = [r["final_latency_ms"] for r in answers]
    el = [r["edge_latency_ms"] for r in answers]
    ul = [r["final_latency_ms"] for r in answers if r["source"] == "cloud"]
    acc = sum(r["correct"] for r in scored) / len(scored) if scored else None
    live_acc = sum(x[2] for x in live) / len(live) if live else None
    return {
        "config": cfg.model_dump(), "frames_replayed": n, "replay_s": round(replay_end, 3),
        "latency_ms": {"end_to_end": _dist(fl), "edge": _dist(el), "upgraded_by_cloud": _dist(ul)},
        "accuracy": round(acc, 4) if acc is not None else None,
        "edge_accuracy": round(sum(r["edge_correct"] for r in scored) / len(scored), 4) if scored else None,
        "answers_scored": len(scored),
        "live_accuracy": round(live_acc, 4) if live_acc is not None else None,
        "drop_rate": round(dropped / captured, 4) if captured else None,
        "cloud_share": round(hard / len(answers), 4) if answers else None,
        "upgraded_share": round(sum(r["source"] == "cloud" for r in answers) / len(answers), 4) if answers else None,
        "bytes": {"summary_total": int(summary_sum),
                  "summary_per_frame": round(summary_sum / perceived, 1) if perceived else None,
                  "cloud_up": meter.bytes_up if meter else 0, "cloud_down": meter.bytes_down if meter else 0,
                  "cloud_calls": meter.calls if meter else 0, "cloud_refused_by_fault": meter.refused if meter else 0},
        "frames": frames_ledger, "cloud": cloud_ledger, "answers": answer_ledger, "edge_deadline": edge_deadline,
        "counts_add_up": bool(frames_ledger["adds_up"] and cloud_ledger["adds_up"] and answer_ledger["adds_up"]),
        "windows": windows, "timeseries": series, "per_answer": answers,
    }


# ---- outputs ----------------------------------------------------------------------------------------------------

def _write(result: dict, out: Path) -> None:
    doc = {k: v for k, v in result.items() if k not in ("timeseries", "per_answer")}
    doc["files"] = {"timeseries": TIMESERIES_CSV, "windows": WINDOWS_CSV, "answers": ANSWERS_CSV, "figure": FIGURE}
    for name, rows in ((TIMESERIES_CSV, result["timeseries"]), (WINDOWS_CSV, result["windows"]),
                       (ANSWERS_CSV, result["per_answer"])):
        with open(out / name, "w", newline="") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    try:
        plot(result, out / FIGURE)
    except ImportError as e:
        doc["files"]["figure"] = None
        log.warning("no figure: %s (pip install -e '.[report]')", e)
    (out / RESULT_JSON).write_text(json.dumps(doc, indent=1))


def plot(result: dict, path: Path) -> Path:
    """Latency of every answer, live accuracy per window and the queue depths over the replay (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ans, ser, win = result["per_answer"], result["timeseries"], result["windows"]
    cfg = result["config"]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.4, 2]})
    ax = axes[0]
    edge = [r for r in ans if r["source"] != "cloud"]
    up = [r for r in ans if r["source"] == "cloud"]
    ax.scatter([r["t_capture"] for r in edge], [r["final_latency_ms"] for r in edge], s=8, label="edge answer")
    ax.scatter([r["t_capture"] for r in up], [r["final_latency_ms"] for r in up], s=14, marker="^",
               label="upgraded by the cloud")
    ax.set_ylabel("capture -> final answer (ms)")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    lat = result["latency_ms"]["end_to_end"]
    ax.set_title(f"stream replay at {cfg['fps']:g} fps for {cfg['seconds']:g} s, cloud {cfg['cloud']}"
                 + (f", link {cfg['link']}" if cfg.get("link") else "")
                 + (f", cloud down {cfg['cloud_down'][0]:g}-{sum(cfg['cloud_down']):g} s" if cfg.get("cloud_down")
                    else "") + f"\np50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms; drop rate "
                 f"{result['drop_rate']}; live accuracy {result['live_accuracy']}", fontsize=9)
    ax = axes[1]
    ws = [w["t_start"] for w in win]
    ax.step(ws, [w["live_accuracy"] if w["live_accuracy"] is not None else float("nan") for w in win],
            where="post", label="live accuracy")
    ax.step(ws, [w["accuracy"] if w["accuracy"] is not None else float("nan") for w in win], where="post",
            linestyle="--", label="per answered frame")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("accuracy / window")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[2]
    ts = [s["t"] for s in ser]
    ax.step(ts, [s["frame_queue"] for s in ser], where="post", label="frame slot (newest wins)")
    ax.step(ts, [s["cloud_queue"] if s["cloud_queue"] is not None else float("nan") for s in ser], where="post",
            label="cloud requests waiting/in flight")
    ax.set_ylabel("queue depth")
    ax.set_xlabel("seconds since the first frame")
    ax.legend(loc="upper right", fontsize=8)
    if cfg.get("cloud_down"):
        a, b = cfg["cloud_down"]
        for x in axes:
            x.axvspan(a, a + b, color="red", alpha=0.12, label=None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_result(r: dict) -> str:
    """The printed summary."""
    L = r["latency_ms"]
    e2e, edge = L["end_to_end"], L["edge"]
    fr, cl, an = r["frames"], r["cloud"], r["answers"]
    dl = r.get("edge_deadline", {})
    lines = [
        f"replayed {r['frames_replayed']} frames in {r['replay_s']:.1f} s ({r['config']['fps']:g} fps, cloud "
        f"{r['config']['cloud']}" + (f", link {r['config']['link']}" if r["config"]["link"] else "")
        + (f", cloud down from {r['config']['cloud_down'][0]:g} s for {r['config']['cloud_down'][1]:g} s"
           if r["config"]["cloud_down"] else "") + ")",
        (f"latency capture->final answer ms: p50 {e2e['p50']}  p95 {e2e['p95']}  p99 {e2e['p99']}  "
        f"(edge answer p50 {edge['p50']}  p95 {edge['p95']}; cloud upgrades p50 {L['upgraded_by_cloud']['p50']})"),
        (f"accuracy {r['accuracy']} (edge alone {r['edge_accuracy']}), live accuracy {r['live_accuracy']}, "
        f"drop rate {r['drop_rate']}, cloud share {r['cloud_share']}, upgraded {r['upgraded_share']}"),
        (f"bytes: summaries {r['bytes']['summary_per_frame']}/frame, cloud up {r['bytes']['cloud_up']} down "
        f"{r['bytes']['cloud_down']} in {r['bytes']['cloud_calls']} calls"),
        (f"frames: captured {fr['captured']} = perceived {fr['perceived']} + dropped {fr['dropped']} + bad "
        f"{fr['bad']} + unprocessed {fr['unprocessed_at_end']}"),
        (f"cloud: accepted {cl['accepted']} = answered {cl['answered']} + failed {cl['failed']} + shed {cl['shed']} "
        f"+ dead-lettered {cl['dead_lettered']} + expired {cl.get('expired', 0)} + in flight "
        f"{cl['in_flight_at_end']}  ({'adds up' if cl['adds_up'] else 'DOES NOT ADD UP'})"),
        (f"deadline ({r['config']['deadline_s']:g} s): cloud answers after it (late, edge answer kept) "
         f"{dl.get('late', 0)}, expired unanswered {dl.get('expired', 0)}, still pending past it at the end "
         f"{dl.get('pending_past_deadline_at_end', 0)}"),
        f"answers: {an['answers']} = edge only {an['edge_only']} + sent {an['sent_to_cloud']}; cloud status "
        + ", ".join(f"{k} {v}" for k, v in an["by_cloud_status"].items()),
        "accuracy per window (live): " + " ".join(
            "-" if w["live_accuracy"] is None else f"{w['live_accuracy']:.2f}" + ("*" if w["cloud_down"] else "")
            for w in r["windows"]) + ("   (* cloud down)" if r["config"]["cloud_down"] else ""),
    ]
    return "\n".join(lines)


# ---- for `cepr report` ------------------------------------------------------------------------------------------

def find_stream_results(job_dir: str | Path) -> list[Path]:
    """``stream.json`` files of ``cepr bench stream`` runs in a job folder or beside it in the workspace (the
    default ``--out workspace/stream-bench``): ``<dir>/stream*/stream.json``, ``<dir>/../stream*/stream.json``."""
    d = Path(job_dir)
    found = sorted(d.glob(f"stream*/{RESULT_JSON}")) + sorted(d.parent.glob(f"stream*/{RESULT_JSON}"))
    return [p for p in dict.fromkeys(found) if p.is_file()]


def report_rows(paths: list[Path]) -> tuple[list[str], list[list[str]]]:
    """One leaderboard-like row per stream result (header, rows) for the report's table."""
    header = ["run", "fps", "s", "cloud", "faults", "p50 ms", "p95 ms", "p99 ms", "accuracy", "live acc.",
              "drop rate", "cloud share", "accepted = answered + failed + shed + dead + expired + in flight",
              "late (after deadline)"]
    rows = []
    for p in paths:
        r = json.loads(p.read_text())
        c, L, cl = r["config"], r["latency_ms"]["end_to_end"], r["cloud"]
        faults = ", ".join(x for x in (f"cloud down {c['cloud_down'][0]:g}+{c['cloud_down'][1]:g} s"
                                       if c.get("cloud_down") else "", f"link {c['link']}" if c.get("link") else "")
                           if x) or "none"
        rows.append([p.parent.name, f"{c['fps']:g}", f"{c['seconds']:g}", c["cloud"], faults, str(L["p50"]),
                     str(L["p95"]), str(L["p99"]), str(r["accuracy"]), str(r["live_accuracy"]), str(r["drop_rate"]),
                     str(r["cloud_share"]),
                     f"{cl['accepted']} = {cl['answered']} + {cl['failed']} + {cl['shed']} + {cl['dead_lettered']} + "
                     f"{cl.get('expired', 0)} + {cl['in_flight_at_end']}" + ("" if cl["adds_up"] else
                                                                             " (does not add up)"),
                     str(r.get("edge_deadline", {}).get("late", "-"))])
    return header, rows
