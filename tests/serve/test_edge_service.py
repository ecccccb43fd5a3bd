"""The edge service for real: the FastAPI app over uvicorn on 127.0.0.1 (a free port), the shipped edge model, real
OpenCV decoding of folders and videos, and the real reference cloud expert for the cloud upgrade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
cv2 = pytest.importorskip("cv2")

from helpers import free_port, make_rgb
from real_layout import make_real_layout

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the job YAML's paths resolve against the current directory, as in Ianvs


class Http:
    """The app under a real uvicorn in a thread, on a free loopback port."""

    def __init__(self, service):
        import uvicorn

        from cepr.serve.edge_app import create_app

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        end = time.time() + 20
        while not self.server.started:
            assert time.time() < end, "uvicorn did not start"
            time.sleep(0.02)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, path: str, data: bytes | None = None, headers: dict | None = None, method=None):
        req = urllib.request.Request(self.url(path), data=data, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def json(self, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        code, raw, _ = self.request(path, data, {"Content-Type": "application/json"} if data else None)
        return code, json.loads(raw)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def multipart(field: str, filename: str, data: bytes, ctype: str) -> tuple[bytes, str]:
    boundary = "cepr-test-boundary-7d1f"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def metric_samples(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture(scope="module")
def edge_only():
    """An edge-only service (cloud: none) behind HTTP, for the tests that need no cloud."""
    from cepr.serve.edge_service import EdgeService, EdgeServiceConfig

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        svc = EdgeService(EdgeServiceConfig(cloud="none", tasks=["action", "path_hazard"])).start()
    finally:
        os.chdir(cwd)
    http = Http(svc)
    yield svc, http
    http.close()
    svc.stop()


def test_perceive_synthetic_and_real_layout_frames(edge_only, tmp_path):
    from cepr.edge.summary import rle_decode

    svc, http = edge_only
    # a synthetic frame as raw JPEG bytes; the mask back as RLE
    code, raw, _ = http.request("/v1/perceive?source=synth", jpeg(make_rgb(320, 240, 0)),
                                {"Content-Type": "image/jpeg"})
    assert code == 200, raw
    out = json.loads(raw)
    assert (out["width"], out["height"]) == (320, 240)
    assert {"objects", "free_m", "risk", "object_fields"} <= set(out["summary"])
    import base64

    mask = rle_decode(base64.b64decode(out["mask"]["data"]), 320, 240)
    assert np.array_equal(mask, svc.frame("synth", out["frame_id"]).label)
    assert {a["task"] for a in out["answers"]} == {"action", "path_hazard"}
    assert all(a["source"] == "edge" and a["cloud_status"] in ("not_sent", "no_cloud") for a in out["answers"])
    assert 0 < out["summary_bytes"] < 4096

    # a frame of the real Cloud-Robotics layout (no depth), as a multipart PNG upload; the mask back as PNG
    root = make_real_layout(tmp_path / "Cloud-Robotics", n_test=1, n_train=1, resolutions=("640x480",))
    png = next((root / "640x480" / "rgb" / "test").rglob("*.png")).read_bytes()
    body, ctype = multipart("frame", "f.png", png, "image/png")
    code, raw, _ = http.request("/v1/perceive?source=real&mask=png", body, {"Content-Type": ctype})
    assert code == 200, raw
    out = json.loads(raw)
    assert (out["width"], out["height"]) == (640, 480)
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(out["mask"]["data"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (480, 640) and np.array_equal(mask, svc.frame("real", out["frame_id"]).label)
    assert out["summary"]["distances"] == "ground_plane"  # no depth camera: distances from the ground plane

    # ask about that source's latest frame: the standing task's answer, and a task answered on demand
    code, a = http.json("/v1/ask", {"task": "people_count", "source": "real"})
    assert code == 200 and a["source"] == "edge" and a["frame_id"] == out["frame_id"] and a["answer"]
    code, a = http.json("/v1/ask", {"task": "no_such_task"})
    assert code == 400 and "no_such_task" in a["detail"]
    code, a = http.json("/v1/ask", {"task": "action", "source": "real", "frame_id": 999})
    assert code == 404 and "no frame 999" in a["detail"]


def test_bad_frames_are_400_and_the_service_keeps_running(edge_only):
    svc, http = edge_only
    before = svc.stats()["sources"].get("badcam", {}).get("bad", 0)
    code, raw, _ = http.request("/v1/perceive?source=badcam", b"\xff\xd8\xff\xe0 this is not a jpeg at all",
                                {"Content-Type": "image/jpeg"})
    assert code == 400 and "not a decodable image" in json.loads(raw)["detail"]
    code, raw, _ = http.request("/v1/perceive?source=badcam", b"", {"Content-Type": "image/jpeg"}, method="POST")
    assert code == 400 and "empty" in json.loads(raw)["detail"]
    body, ctype = multipart("frame", "f.png", b"\x89PNG\r\n\x1a\n truncated", "image/png")
    code, raw, _ = http.request("/v1/perceive?source=badcam", body, {"Content-Type": ctype})
    assert code == 400 and "not a decodable image" in json.loads(raw)["detail"]
    assert svc.stats()["sources"]["badcam"]["bad"] == before + 3
    code, health = http.json("/health")
    assert code == 200 and health["status"] == "ok"
    code, raw, _ = http.request("/v1/perceive?source=badcam", jpeg(make_rgb(160, 120, 1)),
                                {"Content-Type": "image/jpeg"})
    assert code == 200
    _, raw, _ = http.request("/metrics")
    assert metric_samples(raw.decode())[("cepr_edge_bad_frames_total", (("source", "badcam"),))] == before + 3


def write_frames(folder: Path, n: int, w: int = 640, h: int = 480) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    frames = [make_rgb(w, h, i) for i in range(n)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{i:04d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return frames


def write_video(path: Path, n: int, w: int = 640, h: int = 480) -> None:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    assert vw.isOpened(), "this OpenCV cannot write MJPG"
    for i in range(n):
        vw.write(cv2.cvtColor(make_rgb(w, h, i), cv2.COLOR_RGB2BGR))
    vw.release()


def test_folder_and_video_sources_at_once_drop_oldest_newest_wins(tmp_path):
    """Two sources at 400 fps, far faster than the edge model: frames are dropped and counted, the newest always
    wins (perceived ids only increase, the last frame is always perceived), and each source has its own stream,
    answers and metrics labels."""
    from cepr.serve.edge_service import EdgeService, EdgeServiceConfig

    n_folder, n_video = 40, 40
    write_frames(tmp_path / "walk", n_folder)
    (tmp_path / "walk" / "frame_0005.jpg").write_bytes(b"\xff\xd8 corrupt")  # a bad frame in the folder
    write_video(tmp_path / "drive.avi", n_video)
    cfg = EdgeServiceConfig(sources=[str(tmp_path / "walk"), f"front={tmp_path / 'drive.avi'}"], fps=400,
                            cloud="none")
    svc = EdgeService(cfg).start()
    http = Http(svc)
    try:
        assert svc.wait_sources(60), svc.stats()
        st = svc.stats()["sources"]
        assert set(st) == {"walk", "front"}
        for name, n, bad in (("walk", n_folder, 1), ("front", n_video, 0)):
            s = st[name]
            assert s["bad"] == bad and s["captured"] == n - bad, s
            assert s["dropped"] > 0, f"{name}: 400 fps should outrun perception: {s}"
            assert s["perceived"] + s["dropped"] == s["captured"], s  # every frame perceived or counted dropped
            ids = [a["frame_id"] for a in svc.answers(name)]
            assert ids == sorted(set(ids)) and len(ids) == s["perceived"]  # in order, one answer per frame
            assert ids[-1] == n - 1  # newest wins: the last frame is never the one dropped
            assert s["finished"] and s["error"] is None
        assert 5 not in [a["frame_id"] for a in svc.answers("walk")]
        _, raw, _ = http.request("/metrics")
        m = metric_samples(raw.decode())
        for name in ("walk", "front"):
            lab = (("source", name),)
            assert m[("cepr_edge_frames_total", lab)] == st[name]["perceived"]
            assert m[("cepr_edge_frames_dropped_total", lab)] == st[name]["dropped"]
            assert m[("cepr_edge_frames_captured_total", lab)] == st[name]["captured"]
            assert m[("cepr_edge_perception_seconds_count", lab)] == st[name]["perceived"]
            assert m[("cepr_edge_queue_depth", lab)] == 0
        assert m[("cepr_edge_bad_frames_total", (("source", "walk"),))] == 1
        # the live page's data and the latest overlay of each source
        code, state = http.json("/v1/state")
        assert code == 200 and set(state["sources"]) == {"walk", "front"} and state["recent_answers"]
        code, raw, hdr = http.request("/v1/frames/front/latest.jpg")
        assert code == 200 and hdr["content-type"] == "image/jpeg"
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (480, 640, 3)
        code, raw, _ = http.request("/")
        page = raw.decode()
        assert code == 200 and "/v1/state" in page and "<img" in page
        assert "<link" not in page and "http://" not in page and "https://" not in page  # nothing external
    finally:
        http.close()
        svc.stop()


def test_ask_edge_now_then_cloud_upgrade_within_the_deadline():
    """cloud-only (every answer hard) with the real reference expert (base_url: auto): /v1/ask answers from the
    edge at once, and the same answer is upgraded by the cloud's before the deadline."""
    from cepr.serve.edge_service import EdgeService, EdgeServiceConfig

    svc = EdgeService(EdgeServiceConfig(algorithm="cloud-only", tasks=["action"], deadline_s=20)).start()
    http = Http(svc)
    try:
        rgb = make_rgb(640, 480, 2)
        code, raw, _ = http.request("/v1/perceive?source=cam", jpeg(rgb), {"Content-Type": "image/jpeg"})
        assert code == 200
        code, a = http.json("/v1/ask", {"task": "path_hazard", "source": "cam"})
        assert code == 200, a
        assert a["source"] == "edge" and a["hard"] and a["cloud_status"] in ("pending", "answered")
        edge_answer = a["edge_answer"]
        code, b = http.json(f"/v1/answers/{a['answer_id']}?wait_s=20")
        assert code == 200 and b["cloud_status"] == "answered", b
        assert b["source"] == "cloud" and b["cloud_answer"] in ("yes", "no") and b["edge_answer"] == edge_answer
        assert b["answered_at"] < b["upgraded_at"] <= b["deadline_at"]
        # the standing task went to the cloud too; wait_s on /v1/ask waits for the upgrade
        code, c = http.json("/v1/ask", {"task": "action", "source": "cam", "wait_s": 20})
        assert code == 200 and c["source"] == "cloud" and c["upgraded_at"] is not None
        _, raw, _ = http.request("/metrics")
        m = metric_samples(raw.decode())
        lab = (("source", "cam"),)
        assert m[("cepr_edge_answers_upgraded_total", lab)] == 2
        assert m[("cepr_edge_cloud_share", lab)] == 1.0
        assert m[("cepr_edge_cloud_bytes_up_total", lab)] > 1000  # summary + 640x480 JPEG, twice
        assert m[("cepr_edge_cloud_requests_total", (("outcome", "answered"), ("source", "cam")))] == 2
        cloud = svc.stats()["cloud"]
        assert cloud["mode"] == "direct" and cloud["accepted"] == 2 and cloud["answered"] == 2
    finally:
        http.close()
        svc.stop()


def test_cli_serves_a_folder_and_the_live_page(tmp_path):
    write_frames(tmp_path / "frames", 6, 320, 240)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cepr", "serve", "edge", "--source", str(tmp_path / "frames"),
                             "--port", str(port), "--cloud", "none", "--fps", "20", "--loop"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end, health = time.time() + 60, None
        while time.time() < end:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    health = json.loads(r.read())
                if health["sources"]["frames"]["perceived"] > 8:
                    break
            except (urllib.error.URLError, ConnectionError, KeyError):
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        assert health and health["status"] == "ok" and health["sources"]["frames"]["perceived"] > 8, health
        assert health["sources"]["frames"]["latest_frame_id"] >= 6  # --loop: ids go on past the folder's 6 frames
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert b"cepr edge service" in r.read()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    bad = subprocess.run([sys.executable, "-m", "cepr", "serve", "edge", "--source", str(tmp_path / "nope.mp4"),
                          "--port", str(port), "--cloud", "none"], check=False, cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "nope.mp4" in bad.stderr and "no such file" in bad.stderr


def test_queue_mode_through_a_real_redis_server(redis_srv):
    """--cloud queue: hard answers travel as binary summaries on a Redis stream (a real local redis-server), a
    CloudWorker thread answers with the job's cloud backend (the reference expert), and the answer is upgraded."""
    from cepr.serve.edge_service import EdgeService, EdgeServiceConfig

    svc = EdgeService(EdgeServiceConfig(algorithm="cloud-only", cloud="queue", queue_url=redis_srv.url,
                                        tasks=["path_hazard"], deadline_s=20)).start()
    try:
        rec = svc.perceive_array(make_rgb(640, 480, 4), source="cam")
        a = svc.answer(rec.answer_ids["path_hazard"], wait_s=20)
        assert a["cloud_status"] == "answered" and a["source"] == "cloud" and a["upgraded_at"], a
        c = svc.stats()["cloud"]
        assert c["mode"] == "queue" and c["accepted"] == 1 and c["answered"] == 1 and c["in_flight"] == 0, c
    finally:
        svc.stop()


def test_http_mjpeg_stream_source(tmp_path):
    """An IP camera's HTTP MJPEG stream (multipart/x-mixed-replace, the common form), served continuously on loopback
    by a plain HTTP server: OpenCV reads it as a source, its frames are perceived, none is bad, and every captured
    frame is perceived or counted dropped (one may sit in the slot when the service stops)."""
    import http.server
    import socketserver
    import threading
    import time

    from cepr.serve.edge_service import EdgeService, EdgeServiceConfig

    write_frames(tmp_path / "cam", 12)
    jpegs = [p.read_bytes() for p in sorted((tmp_path / "cam").iterdir())]
    done = threading.Event()

    class Camera(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                k = 0
                while not done.is_set():
                    j = jpegs[k % len(jpegs)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(j)
                                     + j + b"\r\n")
                    self.wfile.flush()
                    k += 1
                    time.sleep(0.04)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Camera)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/stream.mjpg"
    svc = EdgeService(EdgeServiceConfig(sources=[f"ipcam={url}"], fps=25, cloud="none")).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and svc.stats()["sources"]["ipcam"]["perceived"] < 10:
            time.sleep(0.1)
    finally:
        svc.stop()
        done.set()
        server.shutdown()
    s = svc.stats()["sources"]["ipcam"]
    assert s["perceived"] >= 10 and s["bad"] == 0, s
    assert s["perceived"] + s["dropped"] <= s["captured"] <= s["perceived"] + s["dropped"] + 1, s
    ids = [a["frame_id"] for a in svc.answers("ipcam")]
    assert ids == sorted(set(ids)) and len(ids) == s["perceived"]


def test_add_and_remove_a_source_at_run_time(edge_only, tmp_path):
    """The public source API (what `cepr bench stream` uses): a folder added to a running service is read and
    perceived; a second source under the same name is refused; a removed source is gone from the state."""
    from cepr.serve.sources import FrameSource

    svc, http = edge_only
    write_frames(tmp_path / "side", 3, 160, 120)
    src = svc.add_source(f"side={tmp_path / 'side'}", fps=50)
    assert isinstance(src, FrameSource) and src.name == "side" and src.fps == 50
    wait = time.time() + 30
    while svc.stats()["sources"]["side"]["perceived"] + svc.stats()["sources"]["side"]["dropped"] < 3:
        assert time.time() < wait, svc.stats()["sources"]["side"]
        time.sleep(0.05)
    with pytest.raises(Exception, match="exists already"):
        svc.add_source(FrameSource("side", str(tmp_path / "side"), 5))
    with pytest.raises(Exception, match="reserved"):
        svc.add_source(str(tmp_path / "side"), name="upload")
    svc.remove_source("side")
    assert "side" not in svc.stats()["sources"]
    with pytest.raises(LookupError, match="no source 'side'"):
        svc.remove_source("side")
    code, state = http.json("/v1/state")
    assert code == 200 and "side" not in state["sources"]


def test_deadline_late_expired_pending_and_queue_depth_per_source(redis_srv, expert_backend):
    """Queue mode, a real redis-server, the cloud workers elsewhere (a CloudWorker thread started by the test).
    Requests of sources a (2) and b (1) wait with no worker: /metrics shows the queue depth per source, then the
    same requests pending past the 0.8 s deadline; a worker that comes afterwards drops them unanswered
    (expired, counted per source). A request answered by a cloud slower than the deadline arrives late: counted,
    and the edge answer stands. The live page shows the new counters."""
    from cepr.serve.edge_service import EdgeService, EdgeServiceConfig
    from cepr.stream.worker import CloudWorker

    srv, expert = redis_srv, expert_backend

    class Slow:
        def infer(self, req):
            time.sleep(1.2)  # slower than the deadline
            return expert.infer(req)

    svc = EdgeService(EdgeServiceConfig(algorithm="cloud-only", cloud="queue", queue_url=srv.url,
                                        cloud_workers=0, tasks=["path_hazard"], deadline_s=0.8)).start()
    http = Http(svc)
    stop = threading.Event()
    worker = None
    try:
        recs = [svc.perceive_array(make_rgb(320, 240, i), source=s) for i, s in enumerate("aab")]
        _, raw, _ = http.request("/metrics")
        m = metric_samples(raw.decode())
        assert m[("cepr_edge_cloud_queue_depth", (("source", "a"),))] == 2
        assert m[("cepr_edge_cloud_queue_depth", (("source", "b"),))] == 1
        assert m[("cepr_edge_cloud_backlog", ())] == 3  # the Redis stream's in flight
        time.sleep(max(0.0, recs[-1].perceived_at + 0.85 - time.time()))
        _, raw, _ = http.request("/metrics")
        m = metric_samples(raw.decode())
        assert m[("cepr_edge_cloud_pending_past_deadline", (("source", "a"),))] == 2
        assert m[("cepr_edge_cloud_pending_past_deadline", (("source", "b"),))] == 1
        assert svc.stats()["edge_deadline"]["pending_past_deadline"] == 3
        w = CloudWorker(srv.url, Slow(), "late-cloud", block_ms=20)
        worker = threading.Thread(target=w.run, args=(stop,), daemon=True)
        worker.start()
        end = time.time() + 20
        while svc.stats()["edge_deadline"]["expired"] < 3:
            assert time.time() < end, svc.stats()
            time.sleep(0.05)
        # now a request the worker takes at once, but answers after the deadline
        rec = svc.perceive_array(make_rgb(320, 240, 7), source="a")
        aid = rec.answer_ids["path_hazard"]
        while svc.answer(aid)["cloud_status"] in ("pending", "pending_past_deadline"):
            assert time.time() < end + 20, svc.answer(aid)
            time.sleep(0.05)
        a = svc.answer(aid)
        assert a["cloud_status"] == "late" and a["source"] == "edge" and a["answer"] == a["edge_answer"], a
        assert a["upgraded_at"] is None and a["cloud_answer"] in ("yes", "no")
        _, raw, _ = http.request("/metrics")
        m = metric_samples(raw.decode())
        for src, expired, late in (("a", 2, 1), ("b", 1, 0)):
            lab = (("source", src),)
            assert m[("cepr_edge_cloud_expired_total", lab)] == expired
            assert m[("cepr_edge_cloud_late_total", lab)] == late
            assert m[("cepr_edge_cloud_pending_past_deadline", lab)] == 0
            assert m[("cepr_edge_cloud_queue_depth", lab)] == 0
        assert m[("cepr_edge_answers_upgraded_total", (("source", "a"),))] == 0
        c = svc.stats()["cloud"]
        assert c["accepted"] == 4 and c["expired"] == 3 and c["answered"] == 1 and c["in_flight"] == 0, c
        code, state = http.json("/v1/state")
        assert code == 200 and state["edge_deadline"] == {"late": 1, "expired": 3, "pending_past_deadline": 0}
        assert state["sources"]["a"]["cloud_late"] == 1 and state["sources"]["b"]["cloud_expired"] == 1
        _, raw, _ = http.request("/")
        assert b"expired" in raw and b"late" in raw and b"edge_deadline" in raw
    finally:
        stop.set()
        if worker is not None:
            worker.join(10)
        http.close()
        svc.stop()


def test_direct_cloud_drops_requests_that_waited_past_the_deadline():
    """--cloud direct, one worker thread, the reference expert over the modelled 4G link (each call waits out the
    transfer of a 640x480 JPEG) and a 0.1 s deadline: the first request is taken at once and answered late, the
    ones that queued behind it are past their deadline when the thread gets to them and are dropped unanswered
    (expired); the ledger accepted = answered + failed + shed + expired + depth holds."""
    from cepr.serve.edge_service import EdgeService, EdgeServiceConfig

    svc = EdgeService(EdgeServiceConfig(algorithm="cloud-only", tasks=["path_hazard"], deadline_s=0.1)).start()
    try:
        ids = [svc.perceive_array(make_rgb(640, 480, i), source="cam").answer_ids["path_hazard"] for i in range(3)]
        end = time.time() + 30
        while svc.stats()["cloud"]["depth"] > 0 or any(svc.answer(a)["cloud_status"] in (
                "pending", "pending_past_deadline") for a in ids):
            assert time.time() < end, [svc.answer(a) for a in ids]
            time.sleep(0.05)
        statuses = [svc.answer(a)["cloud_status"] for a in ids]
        assert statuses[0] == "late" and "expired" in statuses[1:], statuses
        c = svc.stats()["cloud"]
        assert c["expired"] == statuses.count("expired") >= 1, c
        assert c["accepted"] == c["answered"] + c["failed"] + c["shed"] + c["expired"] + c["depth"] == 3, c
        assert svc.stats()["sources"]["cam"]["cloud_expired"] == c["expired"]
        assert all(svc.answer(a)["source"] == "edge" for a in ids)
    finally:
        svc.stop()


def test_a_file_source_stops_itself_after_max_frames(tmp_path):
    """A replay of exactly N frames (what `cepr bench stream` asks): the source ends after reading N, however late
    its reader is stopped; without the limit it reads the whole file."""
    from cepr.serve.sources import FrameSource

    write_frames(tmp_path / "walk", 12)
    write_video(tmp_path / "drive.avi", 12)
    for where in (tmp_path / "walk", tmp_path / "drive.avi"):
        for limit, want in ((5, 5), (None, 12)):
            src = FrameSource("s", str(where), 500, max_frames=limit)
            src.start()
            deadline = time.time() + 20
            while not src.finished and time.time() < deadline:
                time.sleep(0.02)
            src.stop()
            assert src.finished and src.captured == want, (where.name, limit, src.captured)
