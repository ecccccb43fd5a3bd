"""The compact ``features`` dict the edge module adds to every edge result, and how policies read it.

The routing policies (RiskAware, Complexity, Learned, Budget, NetworkAware, and an offline sweep over cached edge
results) decide from the edge result alone, so everything they need travels in it. ``edge_features`` computes the
dict from what the edge already has (the scene summary, the predicted class mask and the answer distribution) in
well under a millisecond; ``cepr.edge.module.EdgeModule`` calls it and stores the result under ``features``
(and its time under ``timings_ms["features"]``). The fields:

=================== ====================================================================================
``margin``          top-1 minus top-2 probability of the edge answer ``distribution`` (1.0 with one answer)
``entropy``         normalised entropy H(p) / log K of the distribution (0 = certain, 1 = uniform)
``risk``            the scene summary's risk score in [0, 1] (``cepr.edge.summary.risk_score``)
``uncertainty``     the summary's mean normalised pixel entropy in the region ahead
``n_objects``       objects in the scene summary (at most 32, the summary's cap)
``hazards``         {class name: metres} for each hazard class (:data:`HAZARD_CLASSES`: person, rider and the
                    vehicles) with an object in the robot's corridor or its side bands: the nearest such
                    object's forward distance there (``BandProfile.nearest``); classes absent are left out
``hazard_m``        the smallest of ``hazards`` (null when empty)
``hazard_near_path`` ``hazard_m <= HAZARD_NEAR_M`` (6 m, the tasks' hazard distance)
``people_near``     people (person, rider) within :data:`PEOPLE_NEAR_M` (5 m) of the camera, any bearing
``person_m``        distance of the nearest person or rider anywhere in the frame (null when none)
``free_m``          free space ahead in the corridor (metres, capped at 20)
``mask_classes``    classes present in the predicted mask other than road (id 0): Ianvs's "object count"
``edge_density``    share of pixels of the mask (nearest-resized to :data:`COMPLEXITY_WIDTH` px wide) whose 3x3
                    neighbourhood holds another class (Ianvs's Sobel-magnitude > 0 test, without its rare
                    cancellations)
``fragments``       8-connected components of every class but road in that resized mask, summed (Ianvs's
                    "fragmentation")
=================== ====================================================================================

Distances come from depth or, without it (the real Cloud-Robotics layout), from the ground plane: whichever the
edge result's ``distances`` says. Import-light: numpy and stdlib; OpenCV only inside ``edge_features``.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping

import cv2
import numpy as np

from cepr.data.classes import CLASSES, DYNAMIC_IDS, HUMAN_IDS
from cepr.errors import CeprError

FEATURES_KEY = "features"
HAZARD_CLASSES: tuple[str, ...] = tuple(CLASSES[i].name for i in DYNAMIC_IDS)
HAZARD_NEAR_M = 6.0  # cepr.data.tasks.TaskParams.hazard_distance: what path_hazard calls a hazard
PEOPLE_NEAR_M = 5.0  # "near the camera" for people_near (privacy: a face is recognisable)
COMPLEXITY_WIDTH = 160  # the mask is nearest-resized to this width (aspect kept) for edge density / fragments
FREE_CAP_M = 20.0
ROAD_ID = 0

# every key edge_features writes, in order
FEATURE_NAMES = ("margin", "entropy", "risk", "uncertainty", "n_objects", "hazards", "hazard_m", "hazard_near_path",
                 "people_near", "person_m", "free_m", "mask_classes", "edge_density", "fragments")


def _finite_or_none(x: float, digits: int = 2):
    return round(float(x), digits) if math.isfinite(x) else None


def distribution_stats(distribution) -> tuple[float, float]:
    """(margin top1 - top2, normalised entropy) of an answer distribution (a mapping or a sequence)."""
    vals = list(distribution.values()) if isinstance(distribution, Mapping) else list(distribution or ())
    p = np.asarray(vals, dtype=np.float64)
    if p.size == 0 or not np.all(np.isfinite(p)) or p.sum() <= 0:
        return 0.0, 1.0
    p = np.clip(p, 0.0, None) / p.sum()
    if p.size == 1:
        return 1.0, 0.0
    top = np.sort(p)[::-1]
    nz = p[p > 0]
    ent = float(-(nz * np.log(nz)).sum() / math.log(p.size))
    return float(top[0] - top[1]), min(1.0, max(0.0, ent))


def mask_complexity(label: np.ndarray | None) -> tuple[int, float, int]:
    """(classes other than road, edge density, fragments) of a class mask, as defined in the module docstring."""
    if label is None or getattr(label, "size", 0) == 0:
        return 0, 0.0, 0

    h, w = label.shape[:2]
    small = np.ascontiguousarray(label, dtype=np.uint8)
    if w > COMPLEXITY_WIDTH:
        size = (COMPLEXITY_WIDTH, max(1, round(h * COMPLEXITY_WIDTH / w)))
        small = cv2.resize(small, size, interpolation=cv2.INTER_NEAREST)
    kernel = np.ones((3, 3), np.uint8)
    hi = cv2.dilate(small, kernel, borderType=cv2.BORDER_REPLICATE)
    lo = cv2.erode(small, kernel, borderType=cv2.BORDER_REPLICATE)
    edge_density = float(np.count_nonzero(hi != lo)) / small.size
    present = np.flatnonzero(np.bincount(small.ravel(), minlength=256))
    fragments = 0
    for c in present:
        if c == ROAD_ID:
            continue
        n, _ = cv2.connectedComponents((small == c).view(np.uint8), connectivity=8)
        fragments += n - 1
    return int(sum(1 for c in present if c != ROAD_ID)), edge_density, int(fragments)


def edge_features(summary, label: np.ndarray | None, distribution) -> dict:
    """The ``features`` dict of one edge result, from its ``SceneSummary``, predicted class mask (any
    resolution; None gives zero complexity) and answer distribution."""
    margin, entropy = distribution_stats(distribution)
    hazards: dict[str, float] = {}
    people_near, person = 0, math.inf
    for o in summary.objects:
        if o.class_id in DYNAMIC_IDS:
            d = o.band.nearest
            if math.isfinite(d):
                name = CLASSES[o.class_id].name
                hazards[name] = min(hazards.get(name, math.inf), round(float(d), 2))
        if o.class_id in HUMAN_IDS and math.isfinite(o.distance):
            person = min(person, o.distance)
            people_near += o.distance <= PEOPLE_NEAR_M
    hazard_m = min(hazards.values()) if hazards else math.inf
    n_classes, density, fragments = mask_complexity(label)
    return {"margin": round(margin, 4), "entropy": round(entropy, 4), "risk": round(float(summary.risk), 3),
            "uncertainty": round(float(summary.uncertainty), 3), "n_objects": len(summary.objects),
            "hazards": hazards, "hazard_m": _finite_or_none(hazard_m), "hazard_near_path": hazard_m <= HAZARD_NEAR_M,
            "people_near": int(people_near), "person_m": _finite_or_none(person),
            "free_m": round(min(float(summary.free_space[1]), FREE_CAP_M), 2), "mask_classes": n_classes,
            "edge_density": round(density, 4), "fragments": fragments}


def timed_edge_features(summary, label, distribution) -> tuple[dict, float]:
    """``(edge_features(...), milliseconds it took)``."""
    t0 = time.perf_counter()
    f = edge_features(summary, label, distribution)
    return f, 1e3 * (time.perf_counter() - t0)


# ---- reading them in a policy ------------------------------------------------------------------------------

def edge_result(x, policy: str) -> Mapping:
    """``x`` as an edge result (a mapping), or a CeprError that says what the policy got."""
    if not isinstance(x, Mapping):
        raise CeprError(f"{policy} decides from the edge's result (a dict with 'confidence' and 'features'), got "
                        f"{type(x).__name__}: use `hard_example_mining_mode: inference-then-mining` in testenv.yaml")
    return x


def features_of(x, policy: str) -> Mapping:
    """The ``features`` dict of an edge result; a CeprError naming the field when it is missing."""
    res = edge_result(x, policy)
    f = res.get(FEATURES_KEY)
    if not isinstance(f, Mapping):
        what = "no 'features'" if f is None else f"'features' of type {type(f).__name__}"
        raise CeprError(f"{policy} reads the edge result's 'features' (which cepr's edge module adds; "
                        f"docs/dispatch.md), but got {what}; keys: {sorted(map(str, res))}. Edge results saved "
                        "before cepr added features, or from another edge module, lack them: rerun the edge")
    return f


def number(value, policy: str, field: str, allow_none: bool = False) -> float | None:
    """A finite real number read from an edge result (``field`` names it in the error); None only if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise CeprError(f"{policy}: the edge result's {field} must be a finite number, got {value!r:.100}")
    return float(value)


def feature(x, name: str, policy: str, allow_none: bool = False, features: Mapping | None = None) -> float | None:
    """One numeric feature ``features.<name>``, checked (``features``: the dict, when the caller has it)."""
    f = features_of(x, policy) if features is None else features
    if name not in f:
        raise CeprError(f"{policy} reads the edge result's features.{name}, which is missing (features has: "
                        f"{', '.join(sorted(map(str, f)))})")
    v = f[name]
    if isinstance(v, bool):
        return float(v)
    return number(v, policy, f"features.{name}", allow_none)


def confidence(x, policy: str) -> float:
    """The edge result's ``confidence``, checked to be a number in [0, 1]."""
    res = edge_result(x, policy)
    if "confidence" not in res:
        raise CeprError(f"{policy} reads the edge result's confidence, which is missing (keys: "
                        f"{sorted(map(str, res))})")
    c = number(res["confidence"], policy, "confidence")
    if not 0.0 <= c <= 1.0:
        raise CeprError(f"{policy}: the edge result's confidence must be in [0, 1], got {c}")
    return c
