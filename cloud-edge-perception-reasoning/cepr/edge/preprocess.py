"""Frame -> network input, shared by training and ONNX inference so the two can never drift apart."""

from __future__ import annotations

import cv2
import numpy as np

RGB_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
RGB_STD = np.array([0.229, 0.224, 0.225], np.float32)
DEPTH_MAX_M = 20.0  # depth is scaled to [0, 1] over this range; 0 stays 0 ("no return")


def prepare_rgb(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (3, h, w), resized to ``size`` = (w, h) when given, normalised."""
    if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
        rgb = cv2.resize(rgb, tuple(size), interpolation=cv2.INTER_AREA)
    x = (rgb.astype(np.float32) * (1.0 / 255.0) - RGB_MEAN) / RGB_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def prepare_depth(depth: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """float32 metres (H, W) -> float32 (1, h, w) in [0, 1]; nearest resize keeps object edges sharp."""
    if size is not None and (depth.shape[1], depth.shape[0]) != tuple(size):
        depth = cv2.resize(depth, tuple(size), interpolation=cv2.INTER_NEAREST)
    return (np.clip(depth, 0.0, DEPTH_MAX_M) * (1.0 / DEPTH_MAX_M)).astype(np.float32)[None]


def upsample_argmax(logits: np.ndarray, width: int, height: int) -> np.ndarray:
    """Class map (height, width) uint8 of bilinearly upsampled (C, h, w) logits.

    A running maximum over per-class resizes, restricted to the classes that win somewhere at the network's
    resolution: several times cheaper than upsampling all 30 channels and taking an argmax, and the same
    wherever a class that wins nowhere at 1/4 resolution does not win between those pixels either.
    """
    low = logits.argmax(0)
    classes = np.unique(low)
    size = (width, height)
    best = cv2.resize(np.ascontiguousarray(logits[classes[0]]), size, interpolation=cv2.INTER_LINEAR)
    label = np.full((height, width), classes[0], np.uint8)
    for c in classes[1:]:
        up = cv2.resize(np.ascontiguousarray(logits[c]), size, interpolation=cv2.INTER_LINEAR)
        wins = up > best
        np.maximum(best, up, out=best)
        label[wins] = c
    return label


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z
