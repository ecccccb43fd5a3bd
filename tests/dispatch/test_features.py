"""The edge result's features: what the routing policies read, computed from the summary and the mask."""

import math

import numpy as np
import pytest

from cepr.data.geometry import BandProfile
from cepr.edge.features import (
    COMPLEXITY_WIDTH,
    FEATURE_NAMES,
    HAZARD_CLASSES,
    PEOPLE_NEAR_M,
    distribution_stats,
    edge_features,
    mask_complexity,
)
from cepr.edge.module import EdgeModule
from cepr.edge.summary import SceneSummary, SummaryObject
from cepr.records import SampleRef

INF = math.inf


def obj(cls, distance, band=None):
    return SummaryObject(cls, 100, (0, 0, 10, 10), distance, 0.0, 1.0, band or BandProfile())


def summary(objects, risk=0.3, free=(20.0, 7.5, 20.0)):
    return SceneSummary(640, 480, tuple(objects), free, risk, 0.05, (0.6, 1.2), "ground_plane")


def test_distribution_stats():
    assert distribution_stats({"a": 0.7, "b": 0.2, "c": 0.1}) == pytest.approx(
        (0.5, -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(3)))
    assert distribution_stats({"a": 1.0}) == (1.0, 0.0)
    assert distribution_stats({"a": 0.5, "b": 0.5}) == (0.0, 1.0)


def test_mask_complexity_counts_as_defined():
    m = np.zeros((120, 160), np.uint8)  # road
    m[:40] = 10  # sky: one band
    m[60:70, 10:20] = 11  # two separate people
    m[60:70, 100:110] = 11
    m[90:91, 0:5] = 13  # a car touching a person diagonally? no: far away, its own fragment
    classes, density, fragments = mask_complexity(m)
    assert classes == 3  # sky, person, car (road does not count)
    assert fragments == 1 + 2 + 1
    # edge pixels: those with another class in their 3x3 neighbourhood
    pad = np.pad(m, 1, mode="edge")
    win = np.stack([pad[dy:dy + 120, dx:dx + 160] for dy in range(3) for dx in range(3)])
    assert density == pytest.approx(float(np.mean(win.max(0) != win.min(0))))
    # diagonal neighbours are one fragment (8-connectivity), and a larger mask is resized to 160 px wide first
    d = np.zeros((480, 640), np.uint8)
    d[100:140, 100:140] = 5
    d[140:180, 140:180] = 5
    assert mask_complexity(d)[2] == 1
    assert COMPLEXITY_WIDTH == 160
    assert mask_complexity(None) == (0, 0.0, 0)


def test_edge_features_from_a_summary():
    objs = [obj(11, 3.0, BandProfile(INF, 4.0, INF)), obj(11, 4.5), obj(13, 9.0, BandProfile(8.0, INF, INF)),
            obj(12, 12.0), obj(2, 5.0, BandProfile(INF, 2.0, INF))]
    f = edge_features(summary(objs), np.zeros((48, 64), np.uint8), {"go": 0.8, "stop": 0.2})
    assert set(f) == set(FEATURE_NAMES)
    assert f["hazards"] == {"person": 4.0, "car": 8.0}  # in or beside the path; the building is no hazard
    assert f["hazard_m"] == 4.0 and f["hazard_near_path"] is True
    assert f["people_near"] == 2 and f["person_m"] == 3.0  # the rider at 12 m is beyond PEOPLE_NEAR_M
    assert PEOPLE_NEAR_M == 5.0
    assert f["n_objects"] == 5 and f["free_m"] == 7.5 and f["risk"] == 0.3
    assert f["margin"] == pytest.approx(0.6)
    empty = edge_features(summary([]), None, {"go": 1.0})
    assert empty["hazards"] == {} and empty["hazard_m"] is None and empty["person_m"] is None
    assert empty["hazard_near_path"] is False
    assert set(HAZARD_CLASSES) == {"person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"}


def _one_sample(index_file, task="action") -> SampleRef:
    rgb, label = index_file.read_text().splitlines()[0].split()[:2]
    root = index_file.parent
    return SampleRef(key="s", rgb=str(root / rgb), label=str(root / label), task=task, index=0)


def test_edge_module_adds_features_with_depth_and_on_the_ground_plane(tiny_data):
    m = EdgeModule()
    m.load()
    s = _one_sample(tiny_data / "160x120" / "test-index.txt")
    with_depth = m.predict(s)
    flat = EdgeModule(depth_for_distance=False)
    flat.load()
    ground = flat.predict(s)
    for r, dist in ((with_depth, "depth"), (ground, "ground_plane")):
        assert r["distances"] == dist
        assert set(r["features"]) == set(FEATURE_NAMES)
        assert "features" in r["timings_ms"]
        assert r["latency_ms"] >= r["timings_ms"]["features"]
    # the mask-based terms do not depend on where distances come from
    for k in ("mask_classes", "edge_density", "fragments", "margin"):
        assert with_depth["features"][k] == ground["features"][k] or k == "margin"
