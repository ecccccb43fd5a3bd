"""Pinhole camera on a ground robot: projection, back-projection and ground-plane distance.

World frame (the robot's): x right, y up, z forward, ground at y = 0, camera at (0, mount_height, 0).
Camera frame (OpenCV): x right, y down, z along the optical axis. ``pitch_deg`` > 0 tilts the camera down.
Depth maps hold z-depth along the optical axis in metres (0 = no return, e.g. sky).

The real Cloud-Robotics set ships no calibration. Its frames are 2048x1024 with resized copies at
1280x760 and 640x480, so a camera is defined at the reference resolution and ``scaled`` per axis for the
copies. ``Camera.assumed`` states the parameters we assume for real data (quadruped dog camera ~0.5 m high).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

REFERENCE_SIZE = (2048, 1024)
ASSUMED_HFOV_DEG = 90.0
ASSUMED_MOUNT_HEIGHT_M = 0.5
ASSUMED_PITCH_DEG = 5.0


@dataclass(frozen=True)
class Camera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    mount_height: float = ASSUMED_MOUNT_HEIGHT_M  # metres above the ground
    pitch_deg: float = ASSUMED_PITCH_DEG  # downward tilt

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float, mount_height: float = ASSUMED_MOUNT_HEIGHT_M,
                 pitch_deg: float = ASSUMED_PITCH_DEG) -> Camera:
        """Square-pixel camera with the principal point at the image centre."""
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(width, height, f, f, width / 2.0, height / 2.0, mount_height, pitch_deg)

    @classmethod
    def assumed(cls, width: int = REFERENCE_SIZE[0], height: int = REFERENCE_SIZE[1]) -> Camera:
        """The camera we assume for real Cloud-Robotics frames at any of its resolutions (documented guess)."""
        return cls.from_fov(*REFERENCE_SIZE, ASSUMED_HFOV_DEG).scaled(width, height)

    def scaled(self, width: int, height: int) -> Camera:
        """The same camera for an image resized to ``width`` x ``height`` (per-axis, like the dataset's copies)."""
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy,
                       cx=self.cx * sx, cy=self.cy * sy)

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        fields = cls.__dataclass_fields__
        unknown = set(d) - set(fields)
        if unknown:
            raise ValueError(f"unknown camera keys {sorted(unknown)}; expected {sorted(fields)}")
        return cls(**d)

    # ---- geometry -----------------------------------------------------------------------------------
    @property
    def rotation(self) -> np.ndarray:
        """3x3 matrix whose columns are the camera axes expressed in the world frame (camera -> world)."""
        p = math.radians(self.pitch_deg)
        c, s = math.cos(p), math.sin(p)
        return np.array([[1.0, 0.0, 0.0],
                         [0.0, -c, -s],
                         [0.0, -s, c]])

    @property
    def position(self) -> np.ndarray:
        return np.array([0.0, self.mount_height, 0.0])

    def horizon_row(self) -> float:
        """Image row (may be fractional or outside the image) where the ground plane meets infinity."""
        return self.cy - self.fy * math.tan(math.radians(self.pitch_deg))

    def pixel_rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """World-frame ray directions (..., 3) for pixel centres, scaled so the camera-z component is 1."""
        dx = (np.asarray(u, dtype=np.float64) + 0.5 - self.cx) / self.fx
        dy = (np.asarray(v, dtype=np.float64) + 0.5 - self.cy) / self.fy
        cam = np.stack([dx, dy, np.ones_like(dx)], axis=-1)
        return cam @ self.rotation.T

    def grid_rays(self) -> np.ndarray:
        """(H, W, 3) world-frame ray directions for every pixel (camera-z component 1)."""
        v, u = np.mgrid[0:self.height, 0:self.width]
        return self.pixel_rays(u, v)

    def axis_rays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``grid_rays`` factored, as float32: (x of each column (W,), y of each row (H,), z of each row (H,)).

        The camera only pitches, so a pixel ray's lateral component depends on its column alone and the other
        two on its row alone: O(W + H) instead of O(W * H) per camera, and equal bit for bit to
        ``grid_rays().astype(float32)`` (a test checks)."""
        p = math.radians(self.pitch_deg)
        c, s = math.cos(p), math.sin(p)
        dx = (np.arange(self.width, dtype=np.float64) + 0.5 - self.cx) / self.fx
        dy = (np.arange(self.height, dtype=np.float64) + 0.5 - self.cy) / self.fy
        return dx.astype(np.float32), (dy * -c + -s).astype(np.float32), (dy * -s + c).astype(np.float32)

    def ground_points(self, u, v) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where pixel rays meet the ground: (lateral x, forward z, camera z-depth); NaN above the horizon."""
        rays = self.pixel_rays(u, v)
        down = -rays[..., 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(down > 1e-9, self.mount_height / down, np.nan)
        return rays[..., 0] * t, rays[..., 2] * t, t

    def backproject(self, u, v, depth) -> np.ndarray:
        """World points (..., 3) for pixels with camera z-depth ``depth`` (metres)."""
        rays = self.pixel_rays(u, v)
        return self.position + rays * np.asarray(depth, dtype=np.float64)[..., None]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points (..., 3) -> (u, v, camera z-depth); u, v are continuous pixel coordinates."""
        cam = (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation
        z = cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * cam[..., 0] / z + self.cx
            v = self.fy * cam[..., 1] / z + self.cy
        return u, v, z

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> camera-frame points (..., 3)."""
        return (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation
