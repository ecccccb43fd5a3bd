"""Calibration of confidences: expected calibration error and reliability tables."""

from __future__ import annotations

import math
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


def fit_logistic(Xb: np.ndarray, y: np.ndarray, l2: float, iters: int, tol: float) -> np.ndarray:
    """Weights of an L2-regularised logistic regression by Newton's method. ``Xb``'s first column is the bias (1s),
    which is not regularised and starts at the log-odds of ``y``'s mean (clipped to [1e-3, 1 - 1e-3]); stops when
    no weight moves by ``tol`` or more. Shared by the planner's confidence fit and the Learned router."""
    rate = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
    w = np.zeros(Xb.shape[1])
    w[0] = math.log(rate / (1 - rate))
    reg = l2 * np.eye(Xb.shape[1])
    reg[0, 0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(Xb @ w, -30, 30)))
        grad = Xb.T @ (p - y) + reg @ w
        hess = (Xb * (p * (1 - p))[:, None]).T @ Xb + reg + 1e-9 * np.eye(Xb.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < tol:
            break
    return w
