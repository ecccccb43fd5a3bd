"""Semantic segmentation scores from a running confusion matrix."""

from __future__ import annotations

import warnings

import numpy as np

from cepr.data.classes import IGNORE_ID, NUM_CLASSES


class ConfusionMatrix:
    """Accumulates (truth, prediction) pixel counts; ignore-labelled pixels are skipped."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        self.n = num_classes
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, truth: np.ndarray, pred: np.ndarray) -> None:
        if truth.shape != pred.shape:
            raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
        t = truth.ravel().astype(np.int64)
        p = pred.ravel().astype(np.int64)
        keep = (t != IGNORE_ID) & (t < self.n)
        self.matrix += np.bincount(t[keep] * self.n + np.clip(p[keep], 0, self.n - 1),
                                   minlength=self.n * self.n).reshape(self.n, self.n)

    @property
    def pixels(self) -> int:
        return int(self.matrix.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes whose union is non-empty, from one confusion matrix over the whole data set
        (mmsegmentation's convention): a class predicted but absent from the truth counts, with IoU 0."""
        if self.pixels == 0:
            warnings.warn("mIoU of no labelled pixels is undefined: returning NaN", RuntimeWarning, stacklevel=2)
            return float("nan")
        return float(np.nanmean(self.iou()))

    def pixel_accuracy(self) -> float:
        if self.pixels == 0:
            warnings.warn("pixel accuracy of no labelled pixels is undefined: returning NaN", RuntimeWarning,
                          stacklevel=2)
            return float("nan")
        return float(np.trace(self.matrix) / self.pixels)
