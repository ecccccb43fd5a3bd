"""Objects in a labelled frame, placed on the ground around the robot.

Every task's ground truth (and, later, the edge scene summary) is computed from this one analysis, so the
answers depend only on a class mask, an optional depth map and the camera:

* with depth, each object pixel is back-projected to 3-D; the pixels below ``clearance`` metres form the
  object's *footprint* on the ground (an overhanging sign is no obstacle to a 0.5 m robot);
* without depth (the real Cloud-Robotics set), each column's lowest pixel of the object is followed down
  through any objects stacked directly below it (a rider on a bike, a sign on its pole) to where the stack
  meets the ground; that contact row is intersected with the ground plane of the stated camera. An object
  standing behind another is thereby placed at the nearer one's foot: conservative, never farther.

Objects are the 8-connected components of each non-walkable class.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from cepr.data.camera import Camera
from cepr.data.classes import CLASSES, NON_OBSTACLE_IDS

OBJECT_CLASS_IDS = tuple(c.id for c in CLASSES if c.id not in NON_OBSTACLE_IDS)
INF = float("inf")


@dataclass(frozen=True)
class BandProfile:
    """Where an object meets the robot's path: the nearest forward distance of its footprint in the left
    side band, the corridor and the right side band (inf where it has none), and the mean lateral position
    of its footprint inside the corridor. Every task needs only this, so a compact scene summary that
    carries it answers the tasks exactly as the full footprint would."""

    left: float = INF
    centre: float = INF
    right: float = INF
    centre_x: float = 0.0

    @property
    def nearest(self) -> float:
        return min(self.left, self.centre, self.right)


def band_profile(footprint: np.ndarray, half_width: float, side_width: float) -> BandProfile:
    if footprint.size == 0:
        return BandProfile()
    x, z = footprint[:, 0], footprint[:, 1]
    near = (z > 0) & (np.abs(x) <= half_width + side_width)  # ahead and in one of the three bands
    if not near.any():
        return BandProfile()
    x, z = x[near], z[near]

    def nearest(lo, hi):
        m = (x >= lo) & (x <= hi)
        return (float(z[m].min()), m) if m.any() else (INF, m)

    left, _ = nearest(-(half_width + side_width), -half_width)
    right, _ = nearest(half_width, half_width + side_width)
    centre, m = nearest(-half_width, half_width)
    xm = x[m]  # sum / size is what ndarray.mean computes, without its per-call overhead
    return BandProfile(left, centre, right, float(xm.sum() / xm.size) if xm.size else 0.0)


@dataclass
class SceneObject:
    """One connected component of a non-walkable class, with where it stands relative to the robot."""

    class_id: int
    area: int  # pixels
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels
    distance: float  # metres from the camera's ground point to the nearest footprint point (inf if none)
    bearing_deg: float  # angle of the footprint centroid from straight ahead, positive to the right
    footprint: np.ndarray = field(repr=False)  # (N, 2) ground points (lateral x, forward z), metres

    _profiles: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return CLASSES[self.class_id].name

    def profile(self, half_width: float, side_width: float) -> BandProfile:
        key = (half_width, side_width)
        if key not in self._profiles:
            self._profiles[key] = band_profile(self.footprint, half_width, side_width)
        return self._profiles[key]


@functools.lru_cache(maxsize=64)
def _axis_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return camera.axis_rays()


@functools.lru_cache(maxsize=64)
def _ground_rows(camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the bottom edge of each pixel row meets the ground, for ground-plane footprints: (ray x per
    column, ray length per row, forward distance per row), NaN above the horizon. A pixel's ground point is
    (x[u] * t[v], z[v]); the camera only pitches, so that is exactly ``camera.ground_points(u, v + 0.5)``."""
    rows = np.arange(camera.height) + 0.5
    _, z, t = camera.ground_points(np.zeros(camera.height), rows)
    dx = (np.arange(camera.width) + 0.5 - camera.cx) / camera.fx
    return dx, t, z


def min_object_area(width: int, height: int, fraction: float = 5e-5) -> int:
    """Smallest component kept as an object: 15 px at 640x480, 105 px at 2048x1024."""
    return max(8, round(fraction * width * height))


def _class_lut(class_ids) -> np.ndarray:
    lut = np.zeros(256, bool)
    lut[list(class_ids)] = True
    return lut


def _components(label: np.ndarray, cid: int):
    """(row, column, stats, component map) of class ``cid``'s 8-connected components, labelled within the
    class's bounding box from even coordinates: OpenCV labels in 2x2 blocks, so an aligned box numbers the
    components (and so orders equally distant objects) exactly as the whole frame does, at a fraction of the
    cost (most classes cover a small part of the frame)."""
    mask = label == cid
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    cy, cx = int(rows[0]) & ~1, int(cols[0]) & ~1
    crop = mask[cy:int(rows[-1]) + 1, cx:int(cols[-1]) + 1].view(np.uint8)
    # 16-bit labels where they cannot overflow (at most one component per 2x2 block): less to write
    ltype = cv2.CV_16U if ((crop.shape[0] + 1) // 2) * ((crop.shape[1] + 1) // 2) < 2 ** 16 - 1 else cv2.CV_32S
    _, comp, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8, ltype=ltype)
    return cy, cx, stats, comp


class _DepthGround:
    """Each pixel's ground point (x, z) from depth, and whether it is a footprint point: a return (depth > 0)
    no higher than ``clearance``. Computed once per frame; objects take their pixels from it."""

    def __init__(self, depth: np.ndarray, camera: Camera, clearance: float):
        rx, ry, rz = _axis_rays(camera)
        d = depth.astype(np.float32, copy=False)
        self.ok = (d > 0) & (camera.mount_height + ry[:, None] * d <= clearance)
        self.x = rx[None, :] * d
        self.z = rz[:, None] * d

    def footprint(self, sub: np.ndarray, x0: int, y0: int) -> np.ndarray:
        box = np.s_[y0:y0 + sub.shape[0], x0:x0 + sub.shape[1]]
        sel = sub & self.ok[box]
        return np.stack([self.x[box][sel], self.z[box][sel]], axis=1).astype(np.float64)


class _PlaneGround:
    """Ground-plane footprints: each column's lowest object pixel, followed down through the objects stacked
    below it (``_stack_bottom``), placed where that contact row meets the ground."""

    def __init__(self, label: np.ndarray, camera: Camera, class_ids):
        self.stack_bottom = _stack_bottom(_class_lut(class_ids)[label])
        self.dx, self.t, self.z = _ground_rows(camera)

    def footprint(self, sub: np.ndarray, x0: int, y0: int) -> np.ndarray:
        cols = np.nonzero(sub.any(axis=0))[0]
        bottom = sub.shape[0] - 1 - np.argmax(sub[::-1, cols], axis=0) + y0
        u = cols + x0
        contact = self.stack_bottom[bottom, u]
        x, z = self.dx[u] * self.t[contact], self.z[contact]
        ok = np.isfinite(z)
        return np.stack([x[ok], z[ok]], axis=1)


def extract_objects(label: np.ndarray, depth: np.ndarray | None, camera: Camera, clearance: float = 1.2,
                    min_area: int | None = None, class_ids=OBJECT_CLASS_IDS) -> list[SceneObject]:
    """Connected components of ``class_ids`` in ``label`` with their ground footprint, nearest first."""
    h, w = label.shape
    if (camera.width, camera.height) != (w, h):
        camera = camera.scaled(w, h)
    if depth is not None and depth.shape != label.shape:
        raise ValueError(f"depth shape {depth.shape} differs from label shape {label.shape}")
    if min_area is None:
        min_area = min_object_area(w, h)
    present = cv2.calcHist([np.ascontiguousarray(label, np.uint8)], [0], None, [256], [0, 256]).ravel()
    wanted = [cid for cid in class_ids if present[cid] >= min_area]
    if not wanted:
        return []
    ground = _DepthGround(depth, camera, clearance) if depth is not None else _PlaneGround(label, camera, class_ids)
    objects: list[SceneObject] = []
    for cid in wanted:
        cy, cx, stats, comp = _components(label, cid)
        for k in np.flatnonzero(stats[:, 4] >= min_area):
            if k == 0:
                continue
            x0, y0, bw, bh, area = (int(s) for s in stats[k])
            fp = ground.footprint(comp[y0:y0 + bh, x0:x0 + bw] == k, x0 + cx, y0 + cy)
            x0, y0 = x0 + cx, y0 + cy
            if len(fp):
                dist = float(np.hypot(fp[:, 0], fp[:, 1]).min())
                cxz = fp.sum(axis=0) / len(fp)  # = fp.mean(axis=0), bit for bit
                bearing = float(np.degrees(np.arctan2(cxz[0], cxz[1])))
            else:
                dist = float("inf")
                bearing = float(np.degrees(np.arctan2(x0 + bw / 2.0 - camera.cx, camera.fx)))
            objects.append(SceneObject(cid, area, (x0, y0, bw, bh), dist, bearing, fp))
    objects.sort(key=lambda o: (o.distance, -o.area))
    return objects


def _stack_bottom(is_object: np.ndarray) -> np.ndarray:
    """For each pixel, the last row of the unbroken run of object pixels going down from it.

    That is one less than the first non-object row below it (the image height if none): a running minimum,
    from the bottom row up, of each row's index where it is not an object and of the height where it is."""
    h = is_object.shape[0]
    dtype = np.int16 if h < 2 ** 15 else np.int32
    up = np.empty(is_object.shape, dtype)  # row r of ``up`` is row h - 1 - r of the image
    up[0] = h
    up[1:] = np.where(is_object[:0:-1], dtype(h), np.arange(h - 1, 0, -1, dtype=dtype)[:, None])
    np.minimum.accumulate(up, axis=0, out=up)
    return up[::-1] - dtype(1)
