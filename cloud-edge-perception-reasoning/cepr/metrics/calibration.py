"""Calibration of confidences: expected calibration error and reliability tables."""

from __future__ import annotations

import warnings

import numpy as np


def reliability_table(confidence, correct, bins: int = 10) -> list[dict]:
    """Equal-width confidence bins: count, mean confidence and accuracy of each non-empty bin."""
    c = np.asarray(confidence, np.float64)
    y = np.asarray(correct, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(c, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        if m.any():
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(m.sum()),
                         "confidence": float(c[m].mean()), "accuracy": float(y[m].mean())})
    return rows


def expected_calibration_error(confidence, correct, bins: int = 10) -> float:
    """Sum over bins of (bin share) * |accuracy - mean confidence|; NaN with a warning when empty."""
    c = np.asarray(confidence, np.float64)
    if c.size == 0:
        warnings.warn("ECE of no predictions is undefined: returning NaN", RuntimeWarning, stacklevel=2)
        return float("nan")
    return float(sum(r["count"] / c.size * abs(r["accuracy"] - r["confidence"])
                     for r in reliability_table(c, correct, bins)))
