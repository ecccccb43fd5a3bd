"""What travels on the request, results and dead-letter streams (Redis stream entries: flat byte fields).

Request entry (``encode_request`` / ``decode_request``)::

    id       request id (the edge's; the key of idempotence: one result per id)
    task     task name (cepr.data.tasks: path_hazard, action, people_count, nearest_obstacle, traversability)
    summary  the scene summary's binary form: SceneSummary.to_bytes() (msgpack, RLE class mask)
    meta     JSON object: whatever the edge adds (camera, edge answer and confidence, frame index, deadline_ms ...)
    image    optional: the frame as an encoded image (JPEG/PNG bytes), decoded by OpenCV on the worker
    t        submit time (time.time(), seconds)
    deadline optional: the absolute time (time.time(), seconds) after which the edge no longer uses an answer;
             a worker that reads the request later acknowledges it unanswered and counts it ``expired``

Result entry (``encode_result`` / ``StreamResult``): id, status (ok | error | fallback from the cloud backend;
``shed`` when the bounded queue dropped the request; ``dead`` when it was dead-lettered), answer, confidence,
reason, worker, attempts, submitted_at, answered_at, server_ms (the backend's own time) and ``detail`` (JSON: the
cloud result's usage, bytes and model). ``expired`` when a worker read it after its deadline (not answered).

A field that is missing or unreadable raises :class:`BadFrame` naming it; the worker retries and then
dead-letters such an entry with that reason.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from cepr.data.tasks import TaskParams, camera_for, get_task
from cepr.edge.summary import SceneSummary
from cepr.errors import CeprError
from cepr.records import CloudRequest

TERMINAL = ("ok", "error", "fallback", "shed", "dead", "expired")


class BadFrame(CeprError):
    """A stream entry that cannot become a cloud request (missing field, bad msgpack, undecodable image)."""


def _b(v) -> bytes:
    if isinstance(v, bytes):
        return v
    return str(v).encode()


def _s(fields: dict, name: str, required: bool = True) -> str | None:
    v = fields.get(name.encode(), fields.get(name))
    if v is None:
        if required:
            raise BadFrame(f"field {name!r} missing (fields: {sorted(_names(fields))})")
        return None
    try:
        return v.decode() if isinstance(v, bytes) else str(v)
    except UnicodeDecodeError:
        raise BadFrame(f"field {name!r} is not UTF-8 text") from None


def _names(fields: dict) -> list[str]:
    return [k.decode(errors="replace") if isinstance(k, bytes) else str(k) for k in fields]


def encode_request(request_id: str, summary_bytes: bytes, task: str, meta: dict | None = None,
                   image: bytes | None = None, submitted_at: float | None = None,
                   deadline: float | None = None) -> dict[bytes, bytes]:
    if not request_id:
        raise CeprError("request_id must be a non-empty string")
    if not isinstance(summary_bytes, (bytes, bytearray)):
        raise CeprError(f"summary_bytes must be bytes (SceneSummary.to_bytes()), got {type(summary_bytes).__name__}")
    out = {b"id": _b(request_id), b"task": _b(task), b"summary": bytes(summary_bytes),
           b"meta": json.dumps(meta or {}, separators=(",", ":"), default=str).encode(),
           b"t": repr(time.time() if submitted_at is None else submitted_at).encode()}
    if image is not None:
        out[b"image"] = bytes(image)
    if deadline is not None:
        d = float(deadline)
        if not math.isfinite(d):
            raise CeprError(f"deadline must be a finite time.time() value, got {deadline!r}")
        out[b"deadline"] = repr(d).encode()
    return out


def request_deadline(fields: dict) -> float | None:
    """The entry's ``deadline`` (absolute, time.time() seconds), or None when it has none or it is unreadable
    (``decode_request`` then names the problem)."""
    v = fields.get(b"deadline", fields.get("deadline"))
    if v is None:
        return None
    try:
        d = float(v.decode() if isinstance(v, bytes) else v)
    except (ValueError, UnicodeDecodeError):
        return None
    return d if math.isfinite(d) else None


@dataclass
class StreamRequest:
    request_id: str
    task: str
    summary_bytes: bytes
    meta: dict
    image_bytes: bytes | None
    submitted_at: float
    deadline: float | None = None

    def summary(self):
        """The decoded :class:`cepr.edge.summary.SceneSummary`."""
        try:
            return SceneSummary.from_bytes(self.summary_bytes)
        except Exception as e:  # noqa: BLE001 - msgpack raises several types for garbage
            raise BadFrame(f"summary is not a cepr scene summary: {type(e).__name__}: {e}") from None

    def image(self):
        """The frame as an RGB array (OpenCV decoding), or None when none was sent."""
        if self.image_bytes is None:
            return None

        bgr = cv2.imdecode(np.frombuffer(self.image_bytes, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BadFrame(f"image ({len(self.image_bytes)} bytes) is not an image OpenCV can decode")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def cloud_request(self):
        """The :class:`cepr.records.CloudRequest` a cloud backend answers."""
        try:
            task = get_task(self.task)
        except KeyError as e:
            raise BadFrame(f"task: {e.args[0]}") from None
        summary = self.summary().to_dict()
        image = self.image()
        camera = self.meta.get("camera")
        if camera is None and image is not None:
            camera = camera_for(None, image.shape[1], image.shape[0]).to_dict()
        return CloudRequest(task.name, task.render_prompt(TaskParams()), task.answers, summary=summary,
                            image=image, camera=camera, key=self.request_id)


def decode_request(fields: dict) -> StreamRequest:
    rid = _s(fields, "id")
    task = _s(fields, "task")
    summary = fields.get(b"summary", fields.get("summary"))
    if summary is None:
        raise BadFrame(f"field 'summary' missing (fields: {sorted(_names(fields))})")
    try:
        meta = json.loads(_s(fields, "meta", required=False) or "{}")
    except json.JSONDecodeError as e:
        raise BadFrame(f"meta is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise BadFrame(f"meta must be a JSON object, got {type(meta).__name__}")
    try:
        t = float(_s(fields, "t", required=False) or 0.0)
    except ValueError:
        raise BadFrame("field 't' is not a number") from None
    raw_deadline = _s(fields, "deadline", required=False)
    deadline = request_deadline(fields)
    if raw_deadline is not None and deadline is None:
        raise BadFrame(f"field 'deadline' is not a finite number: {raw_deadline[:40]!r}")
    return StreamRequest(rid, task, bytes(summary), meta, fields.get(b"image", fields.get("image")), t, deadline)


@dataclass
class StreamResult:
    request_id: str
    status: str  # one of TERMINAL
    answer: str | None = None
    confidence: float | None = None
    reason: str = ""
    worker: str = ""
    attempts: int = 0
    submitted_at: float = 0.0
    answered_at: float = 0.0
    server_ms: float = 0.0
    detail: dict = field(default_factory=dict)
    entry_id: str = ""  # the result's own id on the results stream

    @property
    def latency_ms(self) -> float:
        """Submit to answer written, on the machines' wall clocks."""
        return 1e3 * (self.answered_at - self.submitted_at)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def encode_result(r: StreamResult) -> list[bytes]:
    """A flat [field, value, ...] list (what the Lua scripts take as arguments)."""
    pairs = {"id": r.request_id, "status": r.status, "answer": "" if r.answer is None else r.answer,
             "confidence": "" if r.confidence is None else repr(float(r.confidence)), "reason": r.reason,
             "worker": r.worker, "attempts": str(r.attempts), "submitted_at": repr(r.submitted_at),
             "answered_at": repr(r.answered_at), "server_ms": repr(float(r.server_ms)),
             "detail": json.dumps(r.detail, separators=(",", ":"), default=str)}
    return [_b(x) for kv in pairs.items() for x in kv]


def decode_result(entry_id, fields: dict) -> StreamResult:
    def g(name, default=""):
        v = fields.get(name.encode(), fields.get(name))
        return default if v is None else (v.decode(errors="replace") if isinstance(v, bytes) else str(v))

    conf = g("confidence")
    return StreamResult(request_id=g("id"), status=g("status"), answer=g("answer") or None,
                        confidence=float(conf) if conf else None, reason=g("reason"), worker=g("worker"),
                        attempts=int(g("attempts", "0") or 0), submitted_at=float(g("submitted_at", "0") or 0),
                        answered_at=float(g("answered_at", "0") or 0), server_ms=float(g("server_ms", "0") or 0),
                        detail=json.loads(g("detail", "{}") or "{}"),
                        entry_id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
