"""Call-performance curves and the routing measures of RouteLLM (Ong et al. 2024, "RouteLLM: Learning to Route
LLMs with Preference Data"), with the edge as the weak model and the cloud as the strong one.

Definitions (kept exact; docs/sweep.md says the same):

* **cloud share** ``c`` of a setting: the share of samples it sends to the cloud (RouteLLM's "percentage of calls
  to the strong model"), in [0, 1].
* **accuracy** ``acc``: exact-match accuracy of the final answers (the cloud's answer where a sample was sent,
  else the edge's). ``acc_weak`` = edge-only accuracy (c = 0), ``acc_strong`` = cloud-only accuracy (c = 1),
  both measured on the same cached samples.
* **PGR** (performance gap recovered) = ``(acc - acc_weak) / (acc_strong - acc_weak)``. RouteLLM presupposes a
  strong model stronger than the weak one: where the cloud is not more accurate than the edge on the cached
  samples (``acc_strong <= acc_weak``), there is no gap to recover, so APGR is NaN and CPT None (with a warning);
  per-setting PGR is still reported where the gap is not zero.
* **call-performance curve** of a policy: its settings' points ``(c, acc)``, sorted by ``c``; where settings tie on
  ``c`` the best accuracy stands for that share; closed by the edge-only point ``(0, acc_weak)`` and the
  cloud-only point ``(1, acc_strong)``, which every policy reaches (sending nothing / everything is exactly
  edge-only / cloud-only). Between points the curve is linear: the expected result of sending each sample with
  the neighbouring settings in the matching proportion, which is achievable.
* **APGR** = the area under PGR against the cloud share over [0, 1]: ``∫_0^1 PGR(c) dc``, computed exactly on the
  piecewise-linear curve (the trapezoidal rule over its points). RouteLLM's evaluation integrates with the
  trapezoidal rule too (over its measured call percentages, which run from 0% to 100%).
* **CPT(x%)** (call-performance threshold) = the smallest cloud share at which the curve's PGR reaches x/100: the
  first crossing, interpolated linearly within the segment where it happens; None when the curve never reaches
  it (possible only when the cloud is not stronger than the edge).
* **Random** (reference): sends each sample with probability c; its expected curve is the straight line from
  ``(0, acc_weak)`` to ``(1, acc_strong)``, so PGR(c) = c, APGR = 0.5, CPT(x%) = x/100 by construction.
* **Oracle** (reference, reads the labels: an upper bound, never a deployable policy): sends the edge-wrong samples
  first, those the cloud gets right before those it also gets wrong, then the samples where both are right, and
  last the ones only the edge gets right. Its curve rises with slope 1 to ``(n+/n, acc_weak + n+/n)``, stays flat
  over the ``n0`` samples that change nothing, then falls with slope -1 to ``(1, acc_strong)`` (``n+``: edge wrong,
  cloud right; ``n-``: edge right, cloud wrong; ``n0``: the rest). No policy reaches above it at equal share.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def pgr(acc, acc_weak: float, acc_strong: float):
    """Performance gap recovered; NaN where the gap is zero."""
    gap = acc_strong - acc_weak
    if gap == 0:
        return np.full_like(np.asarray(acc, np.float64), np.nan) if np.ndim(acc) else math.nan
    return (np.asarray(acc, np.float64) - acc_weak) / gap if np.ndim(acc) else (acc - acc_weak) / gap


def curve(shares, accs, acc_weak: float, acc_strong: float) -> list[tuple[float, float]]:
    """A policy's call-performance curve: its points sorted by share, the best accuracy at a tied share, closed by
    (0, acc_weak) and (1, acc_strong)."""
    best: dict[float, float] = {}
    for c, a in zip(shares, accs):
        c, a = float(c), float(a)
        if not (0.0 <= c <= 1.0) or math.isnan(a):
            raise ValueError(f"a curve point needs a share in [0, 1] and an accuracy, got ({c}, {a})")
        best[c] = max(a, best.get(c, -math.inf))
    best.setdefault(0.0, float(acc_weak))
    best.setdefault(1.0, float(acc_strong))
    return sorted(best.items())


def _pgr_points(points, acc_weak, acc_strong):
    c = np.array([p[0] for p in points], np.float64)
    return c, pgr(np.array([p[1] for p in points], np.float64), acc_weak, acc_strong)


def apgr(points, acc_weak: float, acc_strong: float) -> float:
    """Area under PGR(c) over c in [0, 1] of a closed curve (trapezoidal rule; exact for the linear pieces)."""
    if acc_strong <= acc_weak:
        warnings.warn(f"APGR: the cloud-only accuracy ({acc_strong:.4g}) is not above the edge-only accuracy "
                      f"({acc_weak:.4g}) on these samples: no performance gap to recover, so APGR is undefined: NaN",
                      RuntimeWarning, stacklevel=2)
        return math.nan
    c, p = _pgr_points(points, acc_weak, acc_strong)
    if c[0] != 0.0 or c[-1] != 1.0:
        raise ValueError("APGR needs a curve closed at shares 0 and 1 (see curve())")
    return float(np.sum((c[1:] - c[:-1]) * (p[1:] + p[:-1]) / 2.0))


def cpt(points, target: float, acc_weak: float, acc_strong: float) -> float | None:
    """The smallest cloud share at which PGR reaches ``target`` (0.5 for CPT(50%)), interpolated linearly within
    the segment where it first does; None when it never does, or when the cloud is not stronger than the edge."""
    if acc_strong <= acc_weak:
        return None
    c, p = _pgr_points(points, acc_weak, acc_strong)
    eps = 1e-12
    if p[0] >= target - eps:
        return float(c[0])
    for k in range(1, len(c)):
        if p[k] >= target - eps:
            if p[k] == p[k - 1]:
                return float(c[k])
            t = (target - p[k - 1]) / (p[k] - p[k - 1])
            return float(min(c[k], max(c[k - 1], c[k - 1] + t * (c[k] - c[k - 1]))))
    return None


def random_curve(acc_weak: float, acc_strong: float) -> list[tuple[float, float]]:
    return [(0.0, float(acc_weak)), (1.0, float(acc_strong))]


def oracle_curve(edge_correct, cloud_correct) -> list[tuple[float, float]]:
    """The Oracle's curve from per-sample correctness (see the module doc)."""
    e = np.asarray(edge_correct, bool)
    c = np.asarray(cloud_correct, bool)
    n = e.size
    if n == 0:
        raise ValueError("the Oracle curve needs samples")
    plus = int(np.sum(~e & c))
    minus = int(np.sum(e & ~c))
    zero = n - plus - minus
    aw = float(e.mean())
    pts = {0.0: aw, plus / n: aw + plus / n, (plus + zero) / n: aw + plus / n, 1.0: float(c.mean())}
    return sorted(pts.items())


def interpolate(points, share: float) -> float:
    """The curve's accuracy at ``share`` (linear between points)."""
    c = np.array([p[0] for p in points])
    a = np.array([p[1] for p in points])
    return float(np.interp(share, c, a))


def summary(points, acc_weak: float, acc_strong: float) -> dict:
    """APGR, CPT(50%), CPT(80%) and the points of one closed curve."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        area = apgr(points, acc_weak, acc_strong)
    return {"apgr": area, "cpt50": cpt(points, 0.5, acc_weak, acc_strong),
            "cpt80": cpt(points, 0.8, acc_weak, acc_strong),
            "points": [[round(s, 10), round(a, 10)] for s, a in points]}


def pareto_front(acc, p95, uplink) -> np.ndarray:
    """Mask of the non-dominated points: higher accuracy, lower p95 latency, fewer uplink bytes. A point is
    dominated when another is at least as good on all three and strictly better on one."""
    a = np.asarray(acc, np.float64)
    lat = np.asarray(p95, np.float64)
    b = np.asarray(uplink, np.float64)
    keep = np.ones(a.size, bool)
    for i in range(a.size):
        ge = (a >= a[i]) & (lat <= lat[i]) & (b <= b[i])
        gt = (a > a[i]) | (lat < lat[i]) | (b < b[i])
        keep[i] = not np.any(ge & gt)
    return keep
