"""Frame sources for the edge service: OpenCV capture (a video file, an RTSP/HTTP URL, a USB camera index) or a
folder of frames read in sorted order, paced at a target frame rate, feeding a one-slot buffer.

Drop policy: **newest wins**. Each source has one slot; a frame captured while the previous one still waits for
perception replaces it, and the replaced frame is counted as dropped. So perception always works on the newest
frame, and a slow model costs frame rate, never latency.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cepr.errors import CeprError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


@dataclass
class Frame:
    source: str
    frame_id: int  # the frame's number in its video or folder (+ its length per earlier pass under --loop)
    rgb: np.ndarray  # (H, W, 3) uint8, RGB order
    captured_at: float  # time.time() when read


class LatestSlot:
    """A one-slot buffer: ``put`` replaces an unconsumed frame (newest wins) and says so; ``take`` waits for one."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Frame | None = None
        self.closed = False

    def put(self, item: Frame) -> Frame | None:
        """Store ``item``; return the frame it replaced (dropped), or None."""
        with self._cond:
            old, self._item = self._item, item
            self._cond.notify_all()
            return old

    def take(self, timeout: float | None = None) -> Frame | None:
        with self._cond:
            if self._item is None and not self.closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def depth(self) -> int:
        with self._cond:
            return 0 if self._item is None else 1

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def parse_source(spec: str, index: int) -> tuple[str, str]:
    """``NAME=WHERE`` or ``WHERE`` -> (name, where). Default names: a folder's or file's stem, ``cam<N>`` for a
    camera index, ``stream<i>`` for a URL."""
    spec = str(spec).strip()
    if not spec:
        raise CeprError("--source is empty: give a video file, a folder of frames, a camera index or a URL")
    m = re.match(r"^([A-Za-z0-9_.-]{1,40})=(.+)$", spec)
    if m and "://" not in m.group(1):
        return m.group(1), m.group(2)
    if spec.isdigit():
        return f"cam{spec}", spec
    if "://" in spec:
        return f"stream{index}", spec
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(spec).stem or Path(spec).name)[:40] or f"source{index}"
    return stem, spec


def source_kind(where: str) -> str:
    if where.isdigit():
        return "camera"
    if "://" in where:
        return "stream"
    p = Path(where).expanduser()
    if p.is_dir():
        return "folder"
    if p.is_file():
        return "video"
    raise CeprError(f"source {where!r}: no such file or folder (relative paths resolve against {Path.cwd()}); "
                    "give a video file, a folder of frames, a camera index (0) or an rtsp:// / http:// URL")


class FrameSource:
    """Reads one source on its own thread into ``slot`` at ``fps`` (files and folders are paced to it; live
    cameras and streams are read as fast as they deliver and published at most ``fps`` times a second)."""

    def __init__(self, name: str, where: str, fps: float, loop: bool = False, on_drop=None, on_bad=None,
                 on_frame=None, max_frames: int | None = None):
        """``max_frames``: a file or folder source ends after reading that many frames (a replay of exactly N)."""
        if not _NAME.match(name):
            raise CeprError(f"source name {name!r}: use 1-40 letters, digits, '_', '-' or '.'")
        if fps <= 0:
            raise CeprError(f"fps must be > 0, got {fps}")
        self.name, self.where, self.fps, self.loop = name, where, float(fps), loop
        self.max_frames = max_frames
        self.kind = source_kind(where)
        self.slot = LatestSlot()
        self.on_drop, self.on_bad, self.on_frame = on_drop, on_bad, on_frame
        self.captured = 0
        self.dropped = 0
        self.bad = 0
        self.finished = False  # the file or folder ended (no loop)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._files: list[Path] = []
        if self.kind == "folder":
            self._files = sorted(p for p in Path(where).expanduser().iterdir()
                                 if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not self._files:
                raise CeprError(f"source {where!r}: the folder has no frames ({', '.join(IMAGE_SUFFIXES)})")

    def describe(self) -> dict:
        return {"name": self.name, "where": self.where, "kind": self.kind, "fps": self.fps, "loop": self.loop}

    def start(self) -> None:
        cap = None
        if self.kind != "folder":  # open now, so a bad path or URL is an error at start, not a silent thread
            cap = self._open()
        self._thread = threading.Thread(target=self._run, args=(cap,), name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.slot.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _open(self):
        target = int(self.where) if self.kind == "camera" else self.where
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            raise CeprError(f"source {self.name}: OpenCV cannot open {self.where!r} ({self.kind}); check the path, "
                            "URL or camera index, and that this OpenCV build has the codec (FFmpeg)")
        return cap

    def _publish(self, rgb: np.ndarray, index: int) -> None:
        self.captured += 1
        frame = Frame(self.name, index, rgb, time.time())
        if self.on_frame is not None:
            self.on_frame(frame)
        old = self.slot.put(frame)
        if old is not None:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(old)

    def _bad(self, why: str) -> None:
        self.bad += 1
        log.warning("source %s: %s", self.name, why)
        if self.on_bad is not None:
            self.on_bad(why)

    def _run(self, cap) -> None:
        try:
            if self.kind == "folder":
                self._run_folder()
            else:
                self._run_capture(cap)
        except Exception as e:  # a source that dies is reported on /health, the service keeps running
            self.error = f"{type(e).__name__}: {e}"
            log.exception("source %s stopped", self.name)
        finally:
            if cap is not None:
                cap.release()
            self.finished = True
            self.slot.close()

    def _enough(self, n: int) -> bool:
        return self.max_frames is not None and n >= self.max_frames

    def _pace(self, t0: float, n: int) -> bool:
        """Sleep until frame ``n``'s time; False when stopped."""
        delay = t0 + n / self.fps - time.perf_counter()
        return not self._stop.wait(delay) if delay > 0 else not self._stop.is_set()

    def _run_folder(self) -> None:
        t0, n, base = time.perf_counter(), 0, 0
        while True:
            for i, path in enumerate(self._files):
                if self._enough(n) or not self._pace(t0, n):
                    return
                n += 1
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is None:
                    self._bad(f"cannot decode {path.name} (corrupt or not an image); skipped")
                    continue
                self._publish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), base + i)
            base += len(self._files)  # ids keep growing across passes: answers and frames stay apart
            if not self.loop:
                return

    def _run_capture(self, cap) -> None:
        live = self.kind in ("camera", "stream")
        t0, n, index, failures = time.perf_counter(), 0, 0, 0
        last_pub = 0.0
        while not self._stop.is_set():
            if not live and (self._enough(n) or not self._pace(t0, n)):
                return
            ok, bgr = cap.read()
            if not ok or bgr is None:
                if not live:  # end of the file
                    if self.loop:
                        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # the ids go on counting
                        continue
                    return
                failures += 1
                self._bad(f"read failed ({failures} in a row)")
                if failures >= 5:  # a camera unplugged or a stream gone: reopen, with a pause
                    cap.release()
                    if self._stop.wait(1.0):
                        return
                    cap = self._open()
                    failures = 0
                continue
            failures = 0
            n += 1
            i, index = index, index + 1
            if live:
                now = time.perf_counter()
                if now - last_pub < 1.0 / self.fps:
                    continue  # faster than asked: keep reading so the device's buffer stays fresh
                last_pub = now
            self._publish(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), i)
