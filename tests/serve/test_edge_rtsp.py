"""The edge service reads a real RTSP stream: GStreamer's RTSP server (tests/serve/rtsp_server.py, run by the system
python with Debian's python3-gi and gir1.2-gst-rtsp-server-1.0) serves frames of the synthetic walk as H.264 on
127.0.0.1, and the service's OpenCV source (FFmpeg) reads it. Skipped, with the reason, where the system python
has no GstRtspServer (.ci/run installs it where apt-get exists)."""

from __future__ import annotations

import json
import re
import select
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
cv2 = pytest.importorskip("cv2")

from helpers import free_port

REPO = Path(__file__).resolve().parents[2]
SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"
GI_CHECK = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
            "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
            "missing = [e for e in ('appsrc', 'pngdec', 'videoconvert', 'x264enc', 'rtph264pay') "
            "if Gst.ElementFactory.find(e) is None]; "
            "assert not missing, 'GStreamer elements missing: ' + ', '.join(missing)")
STREAM_FPS = 25.0
W, H = 320, 240


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # the job YAML's paths resolve against the current directory, as in Ianvs


def _no_rtsp_server() -> str | None:
    """Why the system python cannot run the RTSP server, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} does not exist (the RTSP server runs under the system python with python3-gi)"
    r = subprocess.run([SYSTEM_PYTHON, "-c", GI_CHECK], check=False, capture_output=True, text=True, timeout=60)
    if r.returncode:
        why = (r.stderr.strip().splitlines() or ["?"])[-1]
        return (f"{SYSTEM_PYTHON} cannot run GStreamer's RTSP server ({why}); install python3-gi "
                "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,ugly} (see .ci/run)")
    return None


class RtspServer:
    """tests/serve/rtsp_server.py as a subprocess; its stdout lines are collected by a thread."""

    def __init__(self, frames: Path, fps: float):
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), "--frames", str(frames), "--fps", str(fps),
                                      "--port", "0", "--path", "walk"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.url = None
        end = time.monotonic() + 20
        while self.url is None:
            if time.monotonic() > end or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"the RTSP server did not start: rc={self.proc.returncode}, "
                                     f"stderr={self.proc.stderr.read()[-2000:]!r}")
            if select.select([self.proc.stdout], [], [], 0.2)[0]:
                line = self.proc.stdout.readline().strip()
                self.lines.append(line)
                if line.startswith("RTSP READY "):
                    self.url = line.split()[2]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


@pytest.fixture
def walk_frames(tmp_path):
    """12 frames of the synthetic walk (cepr's sequence renderer) at 320x240, as PNGs."""
    from cepr.data.synth.sequence import generate_sequence

    rep = generate_sequence(tmp_path / "walk0", frames=12, fps=STREAM_FPS, seed=0, resolution=f"{W}x{H}",
                            progress=False)
    folder = rep.out / f"{W}x{H}" / "rgb" / "test" / "walk0"
    files = sorted(folder.glob("*.png"))
    assert len(files) == 12, files
    return folder, [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in files]


@pytest.fixture
def rtsp(walk_frames):
    why = _no_rtsp_server()
    if why:
        pytest.skip(why)
    server = RtspServer(walk_frames[0], STREAM_FPS)
    try:
        yield server
    finally:
        server.stop()


def _metric(text: str, name: str, source: str) -> float:
    m = re.search(rf'^{name}{{[^}}]*source="{source}"[^}}]*}} ([0-9.e+-]+)$', text, re.MULTILINE)
    assert m, f"{name}{{source={source!r}}} is not in /metrics"
    return float(m.group(1))


def test_rtsp_source_is_read_perceived_and_counted(rtsp, walk_frames):
    """A source added at run time as rtsp://127.0.0.1:PORT/walk: OpenCV opens it, reads it over TCP (OpenCV's
    FFmpeg backend asks for RTP over the RTSP connection when OPENCV_FFMPEG_CAPTURE_OPTIONS is unset), and the
    frames are the walk's, decoded (H.264 is lossy: close, not equal), at the stream's rate, perceived as the
    original PNGs are, none bad; /metrics and /v1/state count them under the source's name."""
    import uvicorn

    from cepr.serve.edge_app import create_app
    from cepr.serve.edge_service import EdgeService, EdgeServiceConfig

    _, originals = walk_frames
    svc = EdgeService(EdgeServiceConfig(cloud="none", fps=30, tasks=["action"])).start()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(svc), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        t_open = time.monotonic()
        src = svc.add_source(f"walk={rtsp.url}")  # opens the stream now (an error here, not in a thread)
        opened_s = time.monotonic() - t_open
        assert src.kind == "stream"
        end = time.monotonic() + 30
        while svc.stats()["sources"]["walk"]["perceived"] < 10:
            assert time.monotonic() < end and not src.error, svc.stats()["sources"]["walk"]
            time.sleep(0.05)
        c0, t0 = src.captured, time.monotonic()  # the read rate, past the frames buffered while opening
        time.sleep(1.0)
        read_fps = (src.captured - c0) / (time.monotonic() - t0)
        s = svc.stats()["sources"]["walk"]
        print(f"\nRTSP: opened in {opened_s:.2f} s, read {read_fps:.1f} frames/s (stream {STREAM_FPS:g}), "
              f"{s['captured']} captured, {s['perceived']} perceived, {s['dropped']} dropped")
        assert s["bad"] == 0 and s["error"] is None and s["kind"] == "stream" and s["where"] == rtsp.url, s
        assert read_fps >= 0.6 * STREAM_FPS, read_fps  # live: at the stream's pace, not stalled

        rec = svc.frame("walk")
        assert rec.rgb.shape == (H, W, 3) and rec.label.shape == (H, W)
        diffs = [float(np.abs(rec.rgb.astype(np.int16) - o).mean()) for o in originals]
        best = int(np.argmin(diffs))
        # one walk frame, decoded close to its PNG (x264 ultrafast at 2 Mbit/s: a mean |difference| of about 7 of
        # 255 against 11 or more for the next frame), and the right one: over TCP no frame is lost, so the
        # frame_id-th frame read is the server's (frame_id mod 12)-th
        assert diffs[best] < 10 and diffs[best] < 0.8 * sorted(diffs)[1], diffs
        assert best == rec.frame_id % len(originals), (best, rec.frame_id, diffs)
        ref = svc.perceive_array(originals[best], source="upload")
        agree = float((rec.label == ref.label).mean())
        assert agree > 0.8, agree  # perceived as the original frame is
        summary = rec.summary.to_dict()
        assert summary == json.loads(json.dumps(summary)) and len(rec.summary.to_bytes()) > 0

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/state", timeout=10) as r:
            state = json.loads(r.read())["sources"]["walk"]
        perceived = _metric(text, "cepr_edge_frames_total", "walk")
        assert perceived >= 10 and _metric(text, "cepr_edge_frames_captured_total", "walk") >= perceived
        assert _metric(text, "cepr_edge_bad_frames_total", "walk") == 0
        lat = (_metric(text, "cepr_edge_frame_latency_seconds_sum", "walk")
               / _metric(text, "cepr_edge_frame_latency_seconds_count", "walk"))
        print(f"RTSP: capture to perceived, mean {1e3 * lat:.1f} ms")
        assert state["kind"] == "stream" and state["perceived"] >= perceived and state["bad"] == 0, state
        ids = [a["frame_id"] for a in svc.answers("walk")]
        assert ids == sorted(set(ids)) and len(ids) >= perceived
    finally:
        svc.stop()
        server.should_exit = True
        thread.join(timeout=10)
    s = svc.stats()["sources"]["walk"]
    assert s["perceived"] + s["dropped"] <= s["captured"] <= s["perceived"] + s["dropped"] + 1, s
    assert rtsp.stop() == 0, rtsp.proc.stderr.read()[-2000:]  # SIGTERM: a clean exit
    setups = [line for line in rtsp.lines if line.startswith("RTSP SETUP ")]
    assert setups and all("RTP/AVP/TCP" in line for line in setups), rtsp.lines
