"""What the edge sends to the cloud for one sample: the scene summary, the image, or both; or the grounded VLM's
projected vision tokens (``features``).

The image can be sent at any of the dataset's resolutions (the frame's copy in that tree when it exists, else
a resize) or at a scale, encoded as JPEG (quality), PNG or WebP, as a base64 data URL in an OpenAI
``image_url`` part. Byte counts of the actual request/response bodies are measured by the backends; the sizes
here describe the encoded image itself.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cepr.data.cloud_robotics import Frame
from cepr.data.layout import parse_resolution
from cepr.errors import DatasetError
from cepr.records.payload import CODECS, MODES, PayloadConfig  # noqa: F401 (the settings; encoding is here)


@dataclass
class EncodedImage:
    data: bytes
    mime: str
    width: int
    height: int

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def encode_image(rgb: np.ndarray, cfg: PayloadConfig) -> EncodedImage:
    """Resize (when asked) and encode an RGB frame."""
    h, w = rgb.shape[:2]
    if cfg.resolution:
        tw, th = parse_resolution(cfg.resolution)
    elif cfg.scale:
        tw, th = max(1, round(w * cfg.scale)), max(1, round(h * cfg.scale))
    else:
        tw, th = w, h
    img = rgb if (tw, th) == (w, h) else cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if cfg.codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, cfg.quality])
        mime = "image/jpeg"
    elif cfg.codec == "webp":
        ok, buf = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, cfg.quality])
        mime = "image/webp"
    else:
        ok, buf = cv2.imencode(".png", bgr)
        mime = "image/png"
    if not ok:
        raise ValueError(f"could not encode the frame as {cfg.codec}")
    return EncodedImage(buf.tobytes(), mime, tw, th)


def build_user_content(prompt: str, summary: dict | None, image: EncodedImage | None,
                       camera: dict | None = None) -> list[dict]:
    """OpenAI chat ``content`` parts: the task prompt, the camera, the scene summary as compact JSON, the image."""
    parts = [{"type": "text", "text": prompt}]
    if camera is not None:
        parts.append({"type": "text", "text": "Camera (JSON): " + json.dumps(camera, separators=(",", ":"))})
    if summary is not None:
        parts.append({"type": "text", "text": "Scene summary from the robot's edge perception (JSON): "
                      + json.dumps(summary, separators=(",", ":"), allow_nan=False, default=str)})
    if image is not None:
        parts.append({"type": "image_url", "image_url": {"url": image.data_url()}})
    return parts


def features_blob(payload: PayloadConfig, vision: bytes | None) -> bytes | None:
    """The ``features`` payload's bytes: the edge's projected tokens (lossless in its state) in the payload's
    codec; None when the payload sends none."""
    if not payload.sends_features or vision is None:
        return None
    from cepr.llm.grounded import decode_vision, encode_vision

    return encode_vision(decode_vision(vision), payload.codec)


def features_field(blob: bytes) -> str:
    """How a request body carries the features: base64 text (counted at the transport, as an image's data URL)."""
    return base64.b64encode(blob).decode("ascii")


def part_bytes_of(payload: PayloadConfig, image: np.ndarray | None, summary: dict | None,
                  vision: bytes | None = None) -> dict[str, int]:
    """The sample-dependent parts of a request with ``payload``, in bytes as the request body carries them: the
    image as its data URL (base64 needs no JSON escaping) and the scene summary as the JSON string the chat
    message embeds. Everything else in a request (prompt, camera, framing) is the same size for every sample of
    a task; the features as their base64 text. An absent part is 0."""
    img = 0
    if payload.sends_image and image is not None:
        img = len(encode_image(image, payload).data_url())
    text = 0
    if payload.sends_summary and summary is not None:
        text = len(json.dumps(json.dumps(summary, separators=(",", ":"), allow_nan=False, default=str)))
    out = {"image": img, "summary": text}
    if payload.sends_features:
        blob = features_blob(payload, vision)
        out["features"] = len(features_field(blob)) if blob is not None else 0
    return out


def payload_frame_path(rgb_path: str, label_path: str | None, resolution: str | None) -> str:
    """The RGB file a payload sends for a frame: the dataset's own copy at ``resolution`` when it has one (no
    resize then), else the frame itself (``encode_image`` resizes it)."""

    if resolution:
        try:
            other = Frame(rgb_path, label_path or rgb_path).at_resolution(resolution)
        except DatasetError:  # no copy at that resolution: the payload resizes instead
            other = None
        if other is not None and Path(other.rgb_path).is_file():
            return str(other.rgb_path)
    return str(rgb_path)
