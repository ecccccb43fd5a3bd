"""A small z-buffered rasteriser for the synthetic set: planar patches over an analytic ground plane.

Every primitive is a planar polygon with a class, an instance id and a material. Its pixels are found with
``cv2.fillPoly`` on the projected outline, then each pixel's depth comes from the exact ray/plane
intersection, so the label, instance, depth and colour buffers are written from one and the same pixel
set: labels are pixel-exact with the RGB by construction. Post effects (fog, rain, blur, noise) touch only
the RGB, never the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from cepr.data.camera import Camera

NEAR = 0.05  # metres: polygons are clipped against this camera-z plane
_SHIFT = 4  # sub-pixel bits for cv2.fillPoly


def _noise_texture(size: int = 256, seed: int = 1234) -> np.ndarray:
    """Tileable smooth value noise in [-1, 1] (fixed seed: part of the renderer, not of a scene)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size), np.float32)
    for cells, amp in ((8, 0.5), (32, 0.3), (128, 0.2)):
        base = rng.standard_normal((cells, cells)).astype(np.float32)
        tiled = np.tile(base, (3, 3))
        big = cv2.resize(tiled, (size * 3, size * 3), interpolation=cv2.INTER_CUBIC)
        out += amp * big[size:2 * size, size:2 * size]
    return np.clip(out / (np.abs(out).max() + 1e-6), -1, 1)


NOISE = _noise_texture()


def texture(s: np.ndarray, t: np.ndarray, scale: float) -> np.ndarray:
    """Noise in [-1, 1] sampled at plane coordinates (metres) with ``scale`` texels per metre."""
    i = (s * scale).astype(np.int64) & 255
    j = (t * scale).astype(np.int64) & 255
    return NOISE[j, i]


@dataclass
class Material:
    """Albedo in [0, 1] RGB, procedural texture and an optional pattern; ``emissive`` ignores lighting."""

    color: tuple[float, float, float]
    tex_amp: float = 0.08
    tex_scale: float = 8.0
    pattern: str | None = None  # windows | stripes | rings | bricks
    pattern_color: tuple[float, float, float] = (0.1, 0.1, 0.1)
    pattern_args: tuple[float, ...] = ()
    emissive: bool = False


@dataclass
class Patch:
    """Planar polygon: world point = origin + s * e1 + t * e2 for each (s, t) of ``outline``."""

    origin: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    outline: np.ndarray | list  # (N, 2) plane coordinates (metres), or a list of contours (even-odd: rings)
    class_id: int
    instance: int
    material: Material
    holes: tuple[float, float, float, float] | None = None  # (period_s, bar_s, period_t, bar_t): a mesh
    two_sided: bool = True


@dataclass
class GroundBand:
    """A strip of ground between lateral offsets x0..x1 (measured from the curved path centre line)."""

    x0: float
    x1: float
    class_id: int
    material: Material


@dataclass
class GroundDisc:
    x: float
    z: float
    radius: float
    class_id: int
    material: Material
    instance: int = 0


@dataclass
class GroundRect:
    x0: float
    x1: float
    z0: float
    z1: float
    class_id: int
    material: Material
    instance: int = 0


@dataclass
class Lighting:
    sun_dir: np.ndarray = field(default_factory=lambda: np.array([0.4, 0.8, -0.45]))
    ambient: float = 0.55
    diffuse: float = 0.5
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sky_top: tuple[float, float, float] = (0.35, 0.55, 0.85)
    sky_horizon: tuple[float, float, float] = (0.75, 0.85, 0.95)
    lamps: list[tuple[float, float, float]] = field(default_factory=list)  # (x, z, strength) ground pools


class Frame:
    """The render buffers for one camera."""

    def __init__(self, camera: Camera, lighting: Lighting, pose: tuple[float, float, float] | None = None):
        self.camera = camera
        self.lighting = lighting
        # (x, z, yaw) of the robot in a world frame (a walk): the ground, its texture and the lamps are laid out
        # in that frame; None = the robot's frame is the world (single frames)
        self.pose = pose
        h, w = camera.height, camera.width
        self.rays = camera.grid_rays().astype(np.float32)
        self.label = np.full((h, w), 10, np.uint8)  # sky unless something is drawn
        self.instance = np.zeros((h, w), np.int32)
        self.depth = np.full((h, w), np.inf, np.float32)
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.cam_pos = camera.position.astype(np.float32)
        self.drawn: dict[int, int] = {}  # instance -> pixels covered before occlusion (sum over patches)

    # ---- sky and ground --------------------------------------------------------------------------------
    def draw_sky(self, rng: np.random.Generator, clouds: float) -> None:
        up = np.clip(self.rays[..., 1] / np.linalg.norm(self.rays, axis=-1), 0, 1)[..., None]
        top = np.array(self.lighting.sky_top, np.float32)
        hor = np.array(self.lighting.sky_horizon, np.float32)
        sky = hor + (top - hor) * np.sqrt(up)
        if clouds > 0:
            yaw = np.arctan2(self.rays[..., 0], self.rays[..., 2])
            n = texture(yaw * 6.0 + rng.uniform(0, 50), up[..., 0] * 12.0 + rng.uniform(0, 50), 8.0)
            sky = sky + (clouds * np.clip(n, 0, 1))[..., None] * (0.95 - sky)
        self.rgb[:] = sky

    def draw_ground(self, bands: list[GroundBand], default: GroundBand, curve: float,
                    rects: list[GroundRect], discs: list[GroundDisc], markings: list[tuple[float, float]]) -> None:
        """Ground plane y = 0. Bands follow a centre line that bends as x = curve * z**2."""
        down = -self.rays[..., 1]
        rows = np.nonzero((down > 1e-6).any(axis=1))[0]
        if len(rows) == 0:
            return
        r0 = rows[0]
        rays = self.rays[r0:]
        down = -rays[..., 1]
        valid = down > 1e-6
        t = np.where(valid, self.camera.mount_height / np.maximum(down, 1e-6), np.inf).astype(np.float32)
        x, z = self.to_world(rays[..., 0] * t, rays[..., 2] * t)
        xc = x - curve * z * z
        cls = np.full(x.shape, default.class_id, np.uint8)
        inst = np.zeros(x.shape, np.int32)
        albedo = np.empty(x.shape + (3,), np.float32)
        albedo[:] = default.material.color
        amp = np.full(x.shape, default.material.tex_amp, np.float32)
        for b in bands:
            m = (xc >= b.x0) & (xc < b.x1)
            cls[m] = b.class_id
            albedo[m] = b.material.color
            amp[m] = b.material.tex_amp
        for r in rects:
            m = (xc >= r.x0) & (xc < r.x1) & (z >= r.z0) & (z < r.z1)
            cls[m] = r.class_id
            inst[m] = r.instance
            albedo[m] = r.material.color
            amp[m] = r.material.tex_amp
            if r.material.pattern == "stripes":
                period = r.material.pattern_args[0] if r.material.pattern_args else 0.5
                sm = m & (np.mod(z, period) < period * 0.5)
                albedo[sm] = r.material.pattern_color
        for d in discs:
            rr = np.hypot(x - d.x, z - d.z)
            m = rr < d.radius
            cls[m] = d.class_id
            inst[m] = d.instance
            albedo[m] = d.material.color
            amp[m] = d.material.tex_amp
            ring = m & (rr > d.radius * 0.8)
            albedo[ring] *= 0.6
        for x0, x1 in markings:  # painted lines: colour only, class unchanged
            m = (xc >= x0) & (xc < x1) & (np.mod(z, 6.0) < 3.0) & ((cls == 0) | (cls == 22))
            albedo[m] = (0.85, 0.85, 0.8)
        tex = texture(x, z, 10.0) * amp
        shade = self._shade(np.array([0.0, 1.0, 0.0]))
        col = albedo * (1.0 + tex)[..., None] * shade
        col = col + self._lamp_light(x, z, world=True)[..., None] * albedo
        sub_depth = self.depth[r0:]
        m = valid & (t < sub_depth)
        sub_depth[m] = t[m]
        self.label[r0:][m] = cls[m]
        self.instance[r0:][m] = inst[m]
        self.rgb[r0:][m] = col[m]

    def to_world(self, x, z):
        """Robot-frame ground coordinates -> the world frame of ``pose`` (identity without a pose)."""
        if self.pose is None:
            return x, z
        tx, tz, yaw = self.pose
        c, s = np.float32(np.cos(yaw)), np.float32(np.sin(yaw))
        return tx + x * c + z * s, tz - x * s + z * c

    def _lamp_light(self, x, z, world: bool = False):
        if not world:
            x, z = self.to_world(x, z)
        out = np.zeros(x.shape, np.float32)
        for lx, lz, strength in self.lighting.lamps:
            out += strength * np.exp(-((x - lx) ** 2 + (z - lz) ** 2) / 18.0)
        return out

    def _shade(self, normal: np.ndarray) -> np.ndarray:
        L = self.lighting
        sun = L.sun_dir / np.linalg.norm(L.sun_dir)
        lam = max(0.0, float(np.dot(normal, sun)))
        return (L.ambient + L.diffuse * lam) * np.array(L.tint, np.float32)

    # ---- patches -----------------------------------------------------------------------------------
    def draw_patch(self, p: Patch, track_instance: bool = False) -> None:
        cam = self.camera
        contours = p.outline if isinstance(p.outline, list) else [p.outline]
        projected = []
        for outline in contours:
            world = p.origin + outline[:, :1] * p.e1 + outline[:, 1:2] * p.e2
            pc = _clip_near(cam.to_camera(world), NEAR)
            if len(pc) >= 3:
                # fillPoly puts pixel centres on integer coordinates, ours sit at +0.5
                projected.append((cam.fx * pc[:, 0] / pc[:, 2] + cam.cx - 0.5,
                                  cam.fy * pc[:, 1] / pc[:, 2] + cam.cy - 0.5))
        if not projected:
            return
        u = np.concatenate([a for a, _ in projected])
        v = np.concatenate([b for _, b in projected])
        x0, x1 = int(np.floor(u.min())), int(np.ceil(u.max())) + 1
        y0, y1 = int(np.floor(v.min())), int(np.ceil(v.max())) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, cam.width), min(y1, cam.height)
        if x0 >= x1 or y0 >= y1:
            return
        normal = np.cross(p.e1, p.e2)
        normal = normal / np.linalg.norm(normal)
        to_cam = self.cam_pos - p.origin
        facing = float(np.dot(normal, to_cam))
        if facing < 0:
            if not p.two_sided:
                return
            normal = -normal
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        polys = [np.round(np.stack([(a - x0) * (1 << _SHIFT), (b - y0) * (1 << _SHIFT)], axis=1)).astype(np.int32)
                 for a, b in projected]
        cv2.fillPoly(mask, polys, 1, lineType=cv2.LINE_8, shift=_SHIFT)
        vs, us = np.nonzero(mask)
        if len(vs) == 0:
            return
        vs += y0
        us += x0
        r = self.rays[vs, us]
        denom = r @ normal.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            tdepth = float(np.dot(normal, p.origin - self.cam_pos)) / denom
        ok = np.isfinite(tdepth) & (tdepth > NEAR)
        P = self.cam_pos + r * tdepth[:, None]
        rel = P - p.origin
        s = rel @ p.e1.astype(np.float32)
        t = rel @ p.e2.astype(np.float32)
        if p.holes is not None:
            ps, bs, pt, bt = p.holes
            ok &= (np.mod(s, ps) < bs) | (np.mod(t, pt) < bt)
        if track_instance:
            self.drawn[p.instance] = self.drawn.get(p.instance, 0) + int(ok.sum())
        ok &= tdepth <= self.depth[vs, us] + 1e-5
        if not ok.any():
            return
        vs, us, s, t, tdepth, P = vs[ok], us[ok], s[ok], t[ok], tdepth[ok], P[ok]
        col = self._material_color(p.material, s, t, normal, P)
        self.depth[vs, us] = tdepth
        self.label[vs, us] = p.class_id
        self.instance[vs, us] = p.instance
        self.rgb[vs, us] = col

    def _material_color(self, m: Material, s, t, normal, P) -> np.ndarray:
        base = np.empty((len(s), 3), np.float32)
        base[:] = m.color
        if m.pattern == "windows":
            pw, ph, fw, fh, sill = (m.pattern_args + (3.0, 3.2, 0.55, 0.5, 1.0))[:5]
            win = (np.mod(s, pw) < pw * fw) & (np.mod(t, ph) > ph * (1 - fh)) & (t > sill)
            base[win] = m.pattern_color
        elif m.pattern == "stripes":
            period = m.pattern_args[0] if m.pattern_args else 0.4
            base[np.mod(s, period) < period * 0.5] = m.pattern_color
        elif m.pattern == "hstripes":
            period = m.pattern_args[0] if m.pattern_args else 0.4
            base[np.mod(t, period) < period * 0.5] = m.pattern_color
        elif m.pattern == "bricks":
            rows = np.floor(t / 0.25)
            off = np.mod(rows, 2) * 0.25
            mortar = (np.mod(t, 0.25) < 0.03) | (np.mod(s + off, 0.5) < 0.03)
            base[mortar] = m.pattern_color
        tex = texture(s, t, m.tex_scale) * m.tex_amp
        col = base * (1.0 + tex)[:, None]
        if m.emissive:
            return col
        shade = self._shade(normal)
        return col * shade + self._lamp_light(P[:, 0], P[:, 2])[:, None] * col * 0.35


def _clip_near(pc: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a camera-frame polygon against the plane z = near."""
    inside = pc[:, 2] >= near
    if inside.all():
        return pc
    if not inside.any():
        return pc[:0]
    out = []
    n = len(pc)
    for i in range(n):
        a, b = pc[i], pc[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            f = (near - a[2]) / (b[2] - a[2])
            out.append(a + f * (b - a))
    return np.array(out)
