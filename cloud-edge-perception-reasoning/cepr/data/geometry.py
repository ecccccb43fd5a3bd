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
    ahead = z > 0

    def nearest(lo, hi):
        m = ahead & (x >= lo) & (x <= hi)
        return (float(z[m].min()), m) if m.any() else (INF, m)

    left, _ = nearest(-(half_width + side_width), -half_width)
    right, _ = nearest(half_width, half_width + side_width)
    centre, m = nearest(-half_width, half_width)
    return BandProfile(left, centre, right, float(x[m].mean()) if m.any() else 0.0)


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


def min_object_area(width: int, height: int, fraction: float = 5e-5) -> int:
    """Smallest component kept as an object: 15 px at 640x480, 105 px at 2048x1024."""
    return max(8, round(fraction * width * height))


def _class_lut(class_ids) -> np.ndarray:
    lut = np.zeros(256, bool)
    lut[list(class_ids)] = True
    return lut


def extract_objects(label: np.ndarray, depth: np.ndarray | None, camera: Camera, clearance: float = 1.2,
                    min_area: int | None = None, class_ids=OBJECT_CLASS_IDS) -> list[SceneObject]:
    """Connected components of ``class_ids`` in ``label`` with their ground footprint, nearest first.

    Each class is labelled within its own bounding box: the same components, in the same order, as over the
    whole frame, at a fraction of the cost (most classes cover a small part of it)."""
    h, w = label.shape
    if (camera.width, camera.height) != (w, h):
        camera = camera.scaled(w, h)
    if depth is not None and depth.shape != label.shape:
        raise ValueError(f"depth shape {depth.shape} differs from label shape {label.shape}")
    if min_area is None:
        min_area = min_object_area(w, h)
    present = np.bincount(label.ravel(), minlength=256)
    wanted = [cid for cid in class_ids if present[cid] >= min_area]
    if not wanted:
        return []
    rays = _axis_rays(camera) if depth is not None else None
    stack_bottom = _stack_bottom(_class_lut(class_ids)[label]) if depth is None else None
    objects: list[SceneObject] = []
    for cid in wanted:
        mask = label == cid
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        # from even coordinates: OpenCV labels in 2x2 blocks, so an aligned box numbers the components (and
        # orders equally distant objects) exactly as the whole frame does
        cy, cx = int(rows[0]) & ~1, int(cols[0]) & ~1
        crop = mask[cy:int(rows[-1]) + 1, cx:int(cols[-1]) + 1].view(np.uint8)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
        for k in range(1, n):
            x0, y0, bw, bh, area = (int(s) for s in stats[k])
            if area < min_area:
                continue
            sub = comp[y0:y0 + bh, x0:x0 + bw] == k
            x0, y0 = x0 + cx, y0 + cy
            if depth is not None:
                fp = _footprint_from_depth(sub, x0, y0, depth, rays, camera, clearance)
            else:
                fp = _footprint_from_ground_plane(sub, x0, y0, camera, stack_bottom)
            if len(fp):
                rng = np.hypot(fp[:, 0], fp[:, 1])
                dist = float(rng.min())
                cxz = fp.mean(axis=0)
                bearing = float(np.degrees(np.arctan2(cxz[0], cxz[1])))
            else:
                dist = float("inf")
                u_mid = x0 + bw / 2.0
                bearing = float(np.degrees(np.arctan2(u_mid - camera.cx, camera.fx)))
            objects.append(SceneObject(cid, area, (x0, y0, bw, bh), dist, bearing, fp))
    objects.sort(key=lambda o: (o.distance, -o.area))
    return objects


def _footprint_from_depth(sub, x0, y0, depth, rays, camera, clearance) -> np.ndarray:
    bh, bw = sub.shape
    d = depth[y0:y0 + bh, x0:x0 + bw][sub]  # the object's pixels in row-major order
    ok = d > 0
    if not ok.any():
        return np.zeros((0, 2))
    rx, ry, rz = rays
    ok2 = np.zeros(sub.shape, bool)
    ok2[sub] = ok
    d = d[ok].astype(np.float32)
    height = camera.mount_height + np.broadcast_to(ry[y0:y0 + bh, None], sub.shape)[ok2] * d
    keep = height <= clearance
    d = d[keep]
    ok2[ok2] = keep
    x = np.broadcast_to(rx[x0:x0 + bw], sub.shape)[ok2] * d
    z = np.broadcast_to(rz[y0:y0 + bh, None], sub.shape)[ok2] * d
    return np.stack([x, z], axis=1).astype(np.float64)


def _stack_bottom(is_object: np.ndarray) -> np.ndarray:
    """For each pixel, the last row of the unbroken run of object pixels going down from it.

    That is one less than the first non-object row below it (the image height if none): a running minimum,
    from the bottom up, of each row's index where it is not an object and of the height where it is."""
    h = is_object.shape[0]
    below = np.empty(is_object.shape, np.int32)
    below[-1] = h
    below[:-1] = np.where(is_object[1:], np.int32(h), np.arange(1, h, dtype=np.int32)[:, None])
    np.minimum.accumulate(below[::-1], axis=0, out=below[::-1])
    below -= 1
    return below


def _footprint_from_ground_plane(sub, x0, y0, camera, stack_bottom) -> np.ndarray:
    cols = np.nonzero(sub.any(axis=0))[0]
    # lowest pixel of the object in each column, then down through whatever object it rests on
    bottom = sub.shape[0] - 1 - np.argmax(sub[::-1, cols], axis=0) + y0
    contact = stack_bottom[bottom, cols + x0]
    x, z, _ = camera.ground_points(cols + x0, contact + 0.5)  # the contact pixel's bottom edge
    ok = np.isfinite(z)
    return np.stack([x[ok], z[ok]], axis=1)
