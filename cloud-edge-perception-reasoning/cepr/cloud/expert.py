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
import difflib
import json
import math
import re
from dataclasses import dataclass

import cv2
import numpy as np

from cepr.cloud.openai_backend import estimate_tokens
from cepr.data.camera import Camera
from cepr.data.tasks import TASK_NAMES, TASKS, TaskParams

EXPERT_MODEL_NAME = "cepr-reference-expert-not-an-llm"
# objects of the expert's own segmentation with a lower mean class probability are dropped: at full resolution
# the model leaves small, unsure blobs (a few "wall" pixels on the road) that the planner would take for
# obstacles. Chosen on 100 val frames (docs/cloud.md: benchmarks/cloud_expert_accuracy.py --split val).
MIN_OBJECT_CONFIDENCE = 0.8
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


def _decode_image(url: str) -> np.ndarray:
    if not url.startswith("data:image/"):
        raise RequestError("only base64 data URLs are accepted for image_url (no network access here)")
    try:
        raw = base64.b64decode(url.split(",", 1)[1], validate=False)
    except (IndexError, ValueError) as e:
        raise RequestError(f"bad base64 image: {e}") from None
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise RequestError("the image could not be decoded")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def parse_messages(messages: list[dict]) -> tuple[str, dict | None, dict | None, np.ndarray | None, str]:
    """(question, summary dict, camera dict, image, all text) from OpenAI chat messages."""
    texts, summary, camera, image, question = [], None, None, None, None
    for msg in messages:
        if not isinstance(msg, dict):
            raise RequestError("every message must be an object")
        content = msg.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else (content or [])
        for part in parts:
            if not isinstance(part, dict):
                raise RequestError("content parts must be objects")
            if part.get("type") == "text":
                t = str(part.get("text", ""))
                texts.append(t)
                if msg.get("role") != "user":
                    continue
                if t.startswith(_SUMMARY_TAG):
                    try:
                        summary = json.loads(t[len(_SUMMARY_TAG):])
                    except json.JSONDecodeError as e:
                        raise RequestError(f"scene summary is not valid JSON: {e}") from None
                elif t.startswith(_CAMERA_TAG):
                    camera = json.loads(t[len(_CAMERA_TAG):])
                elif question is None:
                    question = t
            elif part.get("type") == "image_url":
                image = _decode_image(str((part.get("image_url") or {}).get("url", "")))
    if not question:
        raise RequestError("no question in the user message")
    return question, summary, camera, image, "\n".join(texts)


def image_tokens(width: int, height: int) -> int:
    """Our accounting of an image's prompt tokens: one per 32x32 patch (vision-language models bill similarly)."""
    return math.ceil(width / 32) * math.ceil(height / 32)


class ReferenceExpert:
    def __init__(self, model: str = "cloud", params: TaskParams | None = None, threads: int = 1,
                 min_object_confidence: float = MIN_OBJECT_CONFIDENCE):
        from cepr.edge.models import model_path
        from cepr.edge.planner import Planner
        from cepr.edge.runtime import SegmentationModel

        self.params = params or TaskParams()
        self.min_object_confidence = min_object_confidence
        self.model = SegmentationModel(model_path(model), threads=threads)
        self.planner = Planner(self.params)

    def answer(self, messages: list[dict]) -> ExpertReply:
        from cepr.edge.summary import borrow_distances, summarize, summary_from_dict

        question, summary, camera, image, all_text = parse_messages(messages)
        task = identify_task(question)
        if image is not None:
            h, w = image.shape[:2]
            cam = Camera.from_dict(camera).scaled(w, h) if camera else Camera.assumed(w, h)
            depth = None
            if self.model.use_depth:
                raise RequestError("the expert's model needs depth, which an image cannot carry")
            seg = self.model(image, depth)
            s = summarize(seg.label, None, cam, probs=seg.probs, params=self.params, mask_size=None,
                          min_confidence=self.min_object_confidence)
            source, extra_tokens = "image", image_tokens(w, h)
            if summary is not None and summary.get("distance_source") == "depth":
                # what is there from our segmentation, where it is from the edge's depth measurements
                s = borrow_distances(s, summary_from_dict(summary), self.params)
                source = "image+summary"
        elif summary is not None:
            s = summary_from_dict(summary)
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
