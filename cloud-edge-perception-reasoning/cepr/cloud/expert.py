"""The reference cloud expert: a larger perception model plus the planner, answering chat requests.

It is **not a language model**. It reads the task from the question and answers with the same planner the edge
uses, from the best information the request carries:

* image only: the cloud reference segmentation model (RGB only, full resolution) on the image, objects placed on
  the ground plane of the camera; objects it is unsure of (mean class probability < ``MIN_OBJECT_CONFIDENCE``)
  are dropped;
* image and a depth-based scene summary: the same segmentation, each object placed at the distances the edge
  measured with depth for the object it overlaps most (``borrow_distances``); objects the edge did not see keep
  ground-plane distances;
* summary only: the summary as it is. Its job is to make the embedded default benchmark
honest and fast; real vision-language models plug in through the same OpenAI-compatible client by YAML.
"""

from __future__ import annotations

import base64
import collections
import difflib
import json
import math
import os
import re
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from cepr.cloud.openai_backend import estimate_tokens
from cepr.data.camera import Camera
from cepr.data.tasks import TASK_NAMES, TASKS, TaskParams
from cepr.edge.models import model_path
from cepr.edge.planner import Planner
from cepr.edge.runtime import SegmentationModel
from cepr.edge.summary import borrow_distances, summarize, summary_from_dict

EXPERT_MODEL_NAME = "cepr-reference-expert-not-an-llm"
# objects of the expert's own segmentation with a lower mean class probability are dropped: at full resolution
# the model leaves small, unsure blobs (a few "wall" pixels on the road) that the planner would take for
# obstacles. Chosen on 100 val frames (docs/cloud.md: benchmarks/cloud_expert_accuracy.py --split val).
MIN_OBJECT_CONFIDENCE = 0.8
# what one request may ask of the server (``cepr serve cloud`` flags override them): an image's pixels (read from the
# file's header, before anything is decoded: a small PNG can inflate to gigabytes) and the question's characters
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_QUESTION_CHARS = 4000
# model sessions by default: one per core (each of ``threads`` threads), at most this many (each holds its own copy
# of the weights and its own memory arena)
MAX_DEFAULT_SESSIONS = 4
_SUMMARY_TAG = "Scene summary from the robot's edge perception (JSON): "
_CAMERA_TAG = "Camera (JSON): "


class RequestError(ValueError):
    """The chat request cannot be answered (no question, unreadable image...); the server replies 400."""


@dataclass
class ExpertReply:
    text: str
    task: str
    source: str  # "image", "image+summary" or "summary"
    prompt_tokens: int
    completion_tokens: int


def identify_task(question: str) -> str:
    """The task whose prompt the question matches best (its allowed answers decide ties)."""
    m = re.search(r"Allowed answers:\s*(.+?)\.?\s*$", question, re.MULTILINE)
    allowed = {a.strip() for a in m.group(1).split(",")} if m else set()
    best, best_score = None, -1.0
    for name, task in TASKS.items():
        score = difflib.SequenceMatcher(None, task.render_prompt(), question.split("\nAllowed answers:")[0]).ratio()
        if allowed and allowed == set(task.answers):
            score += 1.0
        if score > best_score:
            best, best_score = name, score
    if best_score < 0.5:
        raise RequestError("the question matches none of the tasks: " + ", ".join(TASK_NAMES))
    return best


def image_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or WebP header, without decoding the pixels; None for other formats."""
    if raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) >= 24 and raw[12:16] == b"IHDR":
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if raw[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(raw):
            if raw[i] != 0xFF:
                return None
            marker = raw[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
                i += 2
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(raw[i + 7:i + 9], "big"), int.from_bytes(raw[i + 5:i + 7], "big")
            i += 2 + int.from_bytes(raw[i + 2:i + 4], "big")
        return None
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP" and len(raw) >= 30:
        kind = raw[12:16]
        if kind == b"VP8 ":
            return (int.from_bytes(raw[26:28], "little") & 0x3FFF, int.from_bytes(raw[28:30], "little") & 0x3FFF)
        if kind == b"VP8L":
            b = int.from_bytes(raw[21:25], "little")
            return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
        if kind == b"VP8X":
            return int.from_bytes(raw[24:27], "little") + 1, int.from_bytes(raw[27:30], "little") + 1
    return None


def _decode_image(url: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    if not url.startswith("data:image/"):
        raise RequestError("only base64 data URLs are accepted for image_url (no network access here)")
    try:
        raw = base64.b64decode(url.split(",", 1)[1], validate=False)
    except (IndexError, ValueError) as e:
        raise RequestError(f"bad base64 image: {e}") from None
    size = image_size(raw)
    if size is None:
        raise RequestError("the image is not a PNG, JPEG or WebP file (or its header is cut off)")
    if size[0] * size[1] > max_pixels:
        raise RequestError(f"the image is {size[0]}x{size[1]} pixels, more than this server accepts "
                           f"({max_pixels} pixels, --max-image-pixels)")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise RequestError("the image could not be decoded")
    if img.shape[0] * img.shape[1] > max_pixels:  # the header lied
        raise RequestError(f"the image has more than {max_pixels} pixels (--max-image-pixels)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _json_block(text: str, what: str) -> dict:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise RequestError(f"{what} must be a JSON object")
    return d


def parse_messages(messages: list[dict], max_pixels: int = MAX_IMAGE_PIXELS,
                   max_question_chars: int = MAX_QUESTION_CHARS
                   ) -> tuple[str, dict | None, dict | None, np.ndarray | None, str]:
    """(question, summary dict, camera dict, image, all text) from OpenAI chat messages."""
    texts, summary, camera, image, question = [], None, None, None, None
    for msg in messages:
        if not isinstance(msg, dict):
            raise RequestError("every message must be an object")
        content = msg.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
        if not isinstance(parts, list):
            raise RequestError("a message's content must be a string or a list of parts")
        for part in parts:
            if not isinstance(part, dict):
                raise RequestError("content parts must be objects")
            if part.get("type") == "text":
                t = str(part.get("text", ""))
                texts.append(t)
                if msg.get("role") != "user":
                    continue
                if t.startswith(_SUMMARY_TAG):
                    summary = _json_block(t[len(_SUMMARY_TAG):], "scene summary")
                elif t.startswith(_CAMERA_TAG):
                    camera = _json_block(t[len(_CAMERA_TAG):], "camera block")
                elif question is None:
                    question = t
            elif part.get("type") == "image_url":
                url = part.get("image_url")
                image = _decode_image(str((url if isinstance(url, dict) else {}).get("url", "")), max_pixels)
    if not question:
        raise RequestError("no question in the user message")
    if len(question) > max_question_chars:
        raise RequestError(f"the question has {len(question)} characters, more than this server accepts "
                           f"({max_question_chars}, --max-question-chars)")
    return question, summary, camera, image, "\n".join(texts)


def _camera(camera: dict, w: int, h: int) -> Camera:
    try:
        return Camera.from_dict(camera).scaled(w, h)
    except (TypeError, ValueError, KeyError, ZeroDivisionError, AttributeError) as e:
        raise RequestError(f"bad camera block: {e}") from None


def _summary(summary: dict):
    try:
        return summary_from_dict(summary)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
        raise RequestError(f"bad scene summary: {type(e).__name__}: {e}") from None


def image_tokens(width: int, height: int) -> int:
    """Our accounting of an image's prompt tokens: one per 32x32 patch (vision-language models bill similarly)."""
    return math.ceil(width / 32) * math.ceil(height / 32)


def default_sessions(threads: int = 1) -> int:
    """Model sessions of a :class:`ReferenceExpert` by default: the cores this process may use divided by
    ``threads``, at least 1, at most ``MAX_DEFAULT_SESSIONS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_DEFAULT_SESSIONS, cores // max(1, int(threads))))


class SessionPool:
    """Model sessions handed out first come, first served: a released session goes to the request that has waited
    longest (a plain queue wakes waiters in no set order, and under load some requests waited many turns)."""

    def __init__(self, items):
        self._lock = threading.Lock()
        self._free = list(items)
        self._waiting: collections.deque = collections.deque()  # [session or None, Event] per waiting caller

    def acquire(self):
        with self._lock:
            if self._free and not self._waiting:
                return self._free.pop()
            slot = [None, threading.Event()]
            self._waiting.append(slot)
        slot[1].wait()
        return slot[0]

    def release(self, item) -> None:
        with self._lock:
            if self._waiting:
                slot = self._waiting.popleft()
                slot[0] = item
                slot[1].set()
            else:
                self._free.append(item)

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)


class ReferenceExpert:
    """``answer`` may be called from several threads at once. ``sessions`` model sessions (of ``threads`` intra-op
    threads each; None: :func:`default_sessions`) segment images at once; a request takes a free one for its
    segmentation only (decoding, the summary and the planner run outside it) and waits for one when all are busy.
    Sessions are copies of one model: which one answers does not change the answer."""

    def __init__(self, model: str = "cloud", params: TaskParams | None = None, threads: int = 1,
                 min_object_confidence: float = MIN_OBJECT_CONFIDENCE, max_image_pixels: int = MAX_IMAGE_PIXELS,
                 max_question_chars: int = MAX_QUESTION_CHARS, sessions: int | None = None, providers="cpu"):
        """``providers``: the ONNX Runtime execution provider(s) of the model sessions (``cpu``, ``cuda``,
        ``[cuda, cpu]``...: :mod:`cepr.edge.providers`); ``self.provider`` is the one that runs."""
        sessions = default_sessions(threads) if sessions is None else sessions
        if int(sessions) < 1:
            raise ValueError(f"sessions must be >= 1, got {sessions}")
        self.params = params or TaskParams()
        self.min_object_confidence = min_object_confidence
        self.max_image_pixels, self.max_question_chars = int(max_image_pixels), int(max_question_chars)
        self.threads = int(threads)
        self.models = [SegmentationModel(model_path(model), threads=threads, providers=providers)
                       for _ in range(int(sessions))]
        self.model = self.models[0]
        self.provider = self.model.provider
        self._pool = SessionPool(self.models)
        self.planner = Planner(self.params)

    @property
    def sessions(self) -> int:
        return len(self.models)

    def _segment(self, image: np.ndarray):
        """The segmentation of ``image`` by a free session (waits for one)."""
        m = self._pool.acquire()
        try:
            return m(image, None)
        finally:
            self._pool.release(m)

    def answer(self, messages: list[dict]) -> ExpertReply:
        question, summary, camera, image, all_text = parse_messages(messages, self.max_image_pixels,
                                                                    self.max_question_chars)
        task = identify_task(question)
        if image is not None:
            h, w = image.shape[:2]
            cam = _camera(camera, w, h) if camera else Camera.assumed(w, h)
            if self.model.use_depth:
                raise RequestError("the expert's model needs depth, which an image cannot carry")
            seg = self._segment(image)
            s = summarize(seg.label, None, cam, probs=seg.probs, params=self.params, mask_size=None,
                          min_confidence=self.min_object_confidence)
            source, extra_tokens = "image", image_tokens(w, h)
            if summary is not None and summary.get("distances") == "depth":
                # what is there from our segmentation, where it is from the edge's depth measurements
                s = borrow_distances(s, _summary(summary), self.params)
                source = "image+summary"
        elif summary is not None:
            s = _summary(summary)
            source, extra_tokens = "summary", 0
        else:
            raise RequestError("the request carries neither an image nor a scene summary")
        ans = self.planner.answer(s, (task,))[task]
        reply = {"answer": ans.answer, "reason": _reason(task, ans.answer, s), "confidence": round(ans.confidence, 3)}
        text = json.dumps(reply)
        return ExpertReply(text, task, source, estimate_tokens(all_text) + extra_tokens, estimate_tokens(text))


def _reason(task: str, answer: str, s) -> str:
    near = [o for o in s.objects if math.isfinite(o.band.centre)]
    near.sort(key=lambda o: o.band.centre)
    where = f"{near[0].name} in the path at {near[0].band.centre:.1f} m" if near else "nothing in the path"
    return f"{where}; free space ahead {s.free_space[1]:.1f} m ({task} = {answer})"
