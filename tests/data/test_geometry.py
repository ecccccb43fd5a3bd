"""The fast object extraction equals its plain definitions: full-frame rays, per-class labelling of the whole
frame, a row-by-row stack scan (the golden file checks whole summaries; these check each shortcut alone)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cepr.data import geometry as G
from cepr.data.camera import Camera

CAMERAS = [Camera.assumed(640, 480), Camera.assumed(2048, 1024), Camera.assumed(161, 121),
           Camera.from_fov(640, 480, 70.0, mount_height=0.43, pitch_deg=11.3),
           Camera.from_fov(320, 240, 100.0, mount_height=0.9, pitch_deg=-2.0)]


@pytest.mark.parametrize("cam", CAMERAS, ids=lambda c: f"{c.width}x{c.height}-{c.pitch_deg}")
def test_axis_rays_are_the_grid_bit_for_bit(cam):
    grid = cam.grid_rays().astype(np.float32)
    rx, ry, rz = cam.axis_rays()
    assert np.array_equal(grid[..., 0], np.broadcast_to(rx, grid.shape[:2]))
    assert np.array_equal(grid[..., 1], np.broadcast_to(ry[:, None], grid.shape[:2]))
    assert np.array_equal(grid[..., 2], np.broadcast_to(rz[:, None], grid.shape[:2]))


@pytest.mark.parametrize("cam", CAMERAS, ids=lambda c: f"{c.width}x{c.height}-{c.pitch_deg}")
def test_ground_rows_are_ground_points(cam):
    dx, t, z = G._ground_rows(cam)
    rng = np.random.default_rng(0)
    u, v = rng.integers(0, cam.width, 500), rng.integers(0, cam.height, 500)
    x0, z0, _ = cam.ground_points(u, v + 0.5)
    assert np.array_equal(dx[u] * t[v], x0, equal_nan=True)
    assert np.array_equal(z[v], z0, equal_nan=True)


def _stack_bottom_by_rows(is_object):
    h = is_object.shape[0]
    out = np.empty(is_object.shape, np.int32)
    out[h - 1] = h - 1
    for v in range(h - 2, -1, -1):
        out[v] = np.where(is_object[v + 1], out[v + 1], v)
    return out


@pytest.mark.parametrize("density", [0.0, 0.3, 0.8, 1.0])
def test_stack_bottom_matches_row_scan(density):
    is_object = np.random.default_rng(1).random((57, 33)) < density
    assert np.array_equal(G._stack_bottom(is_object), _stack_bottom_by_rows(is_object))


def _random_label(seed, h=97, w=131):
    """Blobs of a few object classes on road, small enough to make many components and ties."""
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w), np.uint8)  # road
    for _ in range(60):
        c = int(rng.choice(G.OBJECT_CLASS_IDS[:6]))
        y, x = rng.integers(0, h), rng.integers(0, w)
        label[y:y + rng.integers(1, 12), x:x + rng.integers(1, 12)] = c
    return label


@pytest.mark.parametrize("seed", range(6))
def test_per_class_boxes_label_like_the_whole_frame(seed):
    label = _random_label(seed)
    for cid in np.unique(label):
        if cid not in G.OBJECT_CLASS_IDS:
            continue
        cy, cx, stats, _ = G._components(label, int(cid))
        _, _, full, _ = cv2.connectedComponentsWithStats((label == cid).astype(np.uint8), connectivity=8)
        got = stats[1:].copy()
        got[:, 0] += cx
        got[:, 1] += cy
        assert np.array_equal(got, full[1:]), cid  # same components, same numbering


def test_extract_objects_both_distance_sources_on_random_labels():
    cam = Camera.assumed(131, 97)
    label = _random_label(3)
    depth = np.random.default_rng(3).uniform(0.0, 15.0, label.shape).astype(np.float32)
    for d in (depth, None):
        objs = G.extract_objects(label, d, cam, min_area=1)
        n = sum(cv2.connectedComponents((label == c).astype(np.uint8), connectivity=8)[0] - 1
                for c in np.unique(label) if c in G.OBJECT_CLASS_IDS)
        assert len(objs) == n
        assert all(o.footprint.ndim == 2 and o.footprint.shape[1] == 2 for o in objs)
        assert [o.distance for o in objs] == sorted(o.distance for o in objs)


def test_more_components_than_16_bit_labels_hold():
    label = np.zeros((500, 600), np.uint8)
    cid = G.OBJECT_CLASS_IDS[0]
    label[::2, ::2] = cid  # isolated pixels: one component per 2x2 block, 75,000 of them
    _, _, stats, comp = G._components(label, cid)
    assert len(stats) - 1 == 75_000 and comp.max() == 75_000
