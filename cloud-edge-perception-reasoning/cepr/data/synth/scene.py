"""Sampling one synthetic frame: layout, objects, a scenario in the robot's path, lighting and weather.

A frame is a ``SceneSpec``: a pure description (seeded, no pixels) that ``render_spec`` turns into RGB,
TrainIds, depth and instance ids for any camera resolution. Scenarios put people, vehicles or static
obstacles in or beside the robot's corridor at chosen distances, weighted so that every task's answers are
spread over its answer set; the ground truth itself always comes from ``cepr.data.tasks``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from cepr.data.camera import Camera
from cepr.data.synth import objects as O
from cepr.data.synth.render import Frame, GroundBand, GroundDisc, GroundRect, Lighting, Material, Patch

SCENE_TYPES = ("park_road", "campus_walkway", "industrial_yard", "building_entrance")
SCENARIOS = {  # name: weight
    "clear": 0.1, "person_near": 0.11, "person_ahead": 0.11, "person_side": 0.08, "vehicle_ahead": 0.12,
    "static_ahead": 0.3, "static_far": 0.08, "crowd": 0.1,
}
STATIC_KINDS = ("dustbin", "pole", "hydrant", "flowerbed", "stairs", "belt", "bush", "fence", "wall", "tree",
                "traffic_sign", "traffic_light", "cctv")
REFERENCE_CAMERA = Camera.from_fov(2048, 1024, 90.0)


def M(rgb, **kw) -> Material:
    return O.mat(rgb, **kw)


GROUND_MATS = {
    0: lambda r: M(np.full(3, r.uniform(0.22, 0.38)), tex_amp=0.08),
    1: lambda r: M(np.array([0.62, 0.6, 0.57]) * r.uniform(0.85, 1.1), tex_amp=0.1),
    9: lambda r: M((0.3 + r.uniform(-0.05, 0.1), 0.45 + r.uniform(-0.1, 0.1), 0.18), tex_amp=0.25),
    20: lambda r: M(np.full(3, r.uniform(0.7, 0.8)), tex_amp=0.05),
    21: lambda r: M((0.55, 0.45, 0.35), tex_amp=0.06, pattern="stripes", pattern_color=(0.85, 0.7, 0.1),
                    pattern_args=(0.6,)),
    22: lambda r: M((0.65 + r.uniform(-0.05, 0.05), 0.3, 0.25), tex_amp=0.07),
    26: lambda r: M((0.25, 0.24, 0.22), tex_amp=0.15),
}


@dataclass
class Conditions:
    lighting: str = "day"  # day | dusk | night
    weather: str = "clear"  # clear | fog | rain
    fog_visibility_m: float = 0.0
    rain_intensity: float = 0.0
    motion_blur_px: float = 0.0  # at 2048 px width; scaled with resolution
    motion_blur_angle_deg: float = 0.0
    noise_sigma: float = 0.0  # in [0, 1] intensity units
    exposure: float = 1.0
    clouds: float = 0.0


@dataclass
class SceneSpec:
    index: int
    scene_type: str
    scenario: str
    camera: Camera  # at the reference resolution
    conditions: Conditions
    lighting: Lighting
    bands: list[GroundBand]
    default_ground: GroundBand
    curve: float
    rects: list[GroundRect]
    discs: list[GroundDisc]
    markings: list[tuple[float, float]]
    patches: list[Patch]
    instances: dict[int, dict] = field(default_factory=dict)  # id -> {class_id, x, z, kind}
    effect_seed: int = 0


class _Builder:
    """Accumulates patches and instances, with a coarse occupancy check so solid things do not overlap."""

    def __init__(self, rng: np.random.Generator, curve: float, mirror: int):
        self.rng = rng
        self.curve = curve
        self.mirror = mirror
        self.patches: list[Patch] = []
        self.instances: dict[int, dict] = {}
        self.occupied: list[tuple[float, float, float]] = []
        self._next = 1

    def new_id(self, class_id: int, x: float, z: float, kind: str) -> int:
        i = self._next
        self._next += 1
        self.instances[i] = {"class_id": class_id, "x": round(float(x), 3), "z": round(float(z), 3), "kind": kind}
        return i

    def world_x(self, xc: float, z: float) -> float:
        """Lateral offset measured from the (curving, possibly mirrored) layout centre line -> world x."""
        return self.mirror * xc + self.curve * z * z

    def free(self, x: float, z: float, r: float) -> bool:
        return all(math.hypot(x - a, z - b) >= r + c for a, b, c in self.occupied)

    def claim(self, x: float, z: float, r: float) -> None:
        self.occupied.append((x, z, r))

    def add(self, kind: str, x: float, z: float, force: bool = False, **kw) -> bool:
        """Place an object of ``kind`` standing at world (x, z); False if the spot is taken."""
        radius = _RADIUS.get(kind, 0.5)
        if not force and not self.free(x, z, radius):
            return False
        self.claim(x, z, radius)
        self.patches += _make(self, kind, x, z, **kw)
        return True


_RADIUS = {"person": 0.3, "dustbin": 0.45, "pole": 0.15, "hydrant": 0.25, "flowerbed": 1.2, "stairs": 1.5,
           "belt": 2.0, "bush": 1.2, "fence": 1.0, "wall": 1.0, "tree": 0.8, "traffic_sign": 0.2,
           "traffic_light": 0.2, "cctv": 0.2, "car": 2.2, "truck": 3.8, "bus": 5.5, "bicycle": 0.8,
           "motorcycle": 1.0, "rider_bicycle": 0.9, "rider_motorcycle": 1.1}


def _make(b: _Builder, kind: str, x: float, z: float, yaw: float | None = None, night: bool = False,
          **kw) -> list[Patch]:
    r = b.rng
    yaw = r.uniform(0, 2 * math.pi) if yaw is None else yaw
    if kind == "person":
        return O.person(r, x, z, b.new_id(11, x, z, kind), **kw)
    if kind in ("bicycle", "motorcycle", "rider_bicycle", "rider_motorcycle"):
        base = kind.replace("rider_", "")
        cls = 18 if base == "bicycle" else 17
        inst = b.new_id(cls, x, z, base)
        rider = b.new_id(12, x, z, "rider") if kind.startswith("rider_") else None
        return O.two_wheeler(r, x, z, yaw, base, inst, rider)
    if kind == "car":
        return O.car(r, x, z, yaw, b.new_id(13, x, z, kind))
    if kind == "truck":
        return O.truck(r, x, z, yaw, b.new_id(14, x, z, kind))
    if kind == "bus":
        return O.bus(r, x, z, yaw, b.new_id(15, x, z, kind))
    if kind == "train":
        return O.train(r, x, z, yaw, b.new_id(16, x, z, kind))
    if kind == "pole":
        return O.pole(r, x, z, b.new_id(5, x, z, kind), **kw)
    if kind == "traffic_light":
        return O.traffic_light(r, x, z, b.new_id(5, x, z, "pole"), b.new_id(6, x, z, kind), night=night)
    if kind == "traffic_sign":
        return O.traffic_sign(r, x, z, b.new_id(5, x, z, "pole"), b.new_id(7, x, z, kind))
    if kind == "cctv":
        return O.cctv(r, x, z, b.new_id(5, x, z, "pole"), b.new_id(25, x, z, kind))
    if kind == "hydrant":
        return O.hydrant(r, x, z, b.new_id(27, x, z, kind))
    if kind == "dustbin":
        return O.dustbin(r, x, z, b.new_id(29, x, z, kind))
    if kind == "belt":
        return O.belt(r, x, z, yaw, b.new_id(28, x, z, kind), **kw)
    if kind == "flowerbed":
        w, d = kw.get("w", r.uniform(1.0, 2.5)), kw.get("d", r.uniform(1.0, 3.0))
        return O.flowerbed(r, x, z, w, d, b.new_id(23, x, z, kind))
    if kind == "stairs":
        return O.stairs(r, x, z, kw.get("width", r.uniform(1.5, 3.5)), kw.get("steps", int(r.integers(3, 8))),
                        b.new_id(19, x, z, kind))
    if kind == "bush":
        return O.bush(r, x, z, b.new_id(8, x, z, kind), **kw)
    if kind == "tree":
        return O.tree(r, x, z, b.new_id(8, x, z, kind))
    if kind in ("fence", "wall"):
        length = kw.get("length", r.uniform(1.5, 4.0))
        ang = kw.get("angle", r.uniform(-0.3, 0.3))
        dx, dz = length / 2 * math.cos(ang), length / 2 * math.sin(ang)
        height = kw.get("height", r.uniform(1.0, 2.2))
        if kind == "fence":
            return O.fence(r, x - dx, z - dz, x + dx, z + dz, height, b.new_id(4, x, z, kind))
        return O.wall(r, x - dx, z - dz, x + dx, z + dz, height, b.new_id(3, x, z, kind))
    raise ValueError(f"unknown object kind {kind!r}")


# ---- conditions -----------------------------------------------------------------------------------------

def _conditions(rng: np.random.Generator) -> tuple[Conditions, Lighting]:
    c = Conditions()
    c.lighting = str(rng.choice(["day", "dusk", "night"], p=[0.6, 0.2, 0.2]))
    c.weather = str(rng.choice(["clear", "fog", "rain"], p=[0.65, 0.2, 0.15]))
    if c.weather == "fog":
        c.fog_visibility_m = float(rng.uniform(15, 80))
    if c.weather == "rain":
        c.rain_intensity = float(rng.uniform(0.3, 1.0))
    if rng.random() < 0.25:
        c.motion_blur_px = float(rng.uniform(4, 18))
        c.motion_blur_angle_deg = float(rng.normal(0, 20))
    c.clouds = float(rng.uniform(0, 0.8)) if c.weather == "clear" else 0.9
    yaw = rng.uniform(-math.pi, math.pi)
    if c.lighting == "day":
        elev = rng.uniform(0.5, 1.2)
        L = Lighting(ambient=rng.uniform(0.5, 0.65), diffuse=rng.uniform(0.35, 0.55), tint=(1.0, 1.0, 0.98))
        c.noise_sigma = float(rng.uniform(0.005, 0.02))
    elif c.lighting == "dusk":
        elev = rng.uniform(0.05, 0.3)
        L = Lighting(ambient=rng.uniform(0.35, 0.45), diffuse=0.35, tint=(1.0, 0.8, 0.62),
                     sky_top=(0.35, 0.35, 0.6), sky_horizon=(0.95, 0.6, 0.35))
        c.noise_sigma = float(rng.uniform(0.015, 0.035))
    else:
        elev = 0.8
        L = Lighting(ambient=rng.uniform(0.12, 0.2), diffuse=0.05, tint=(0.75, 0.8, 1.0),
                     sky_top=(0.02, 0.03, 0.08), sky_horizon=(0.08, 0.09, 0.15))
        c.noise_sigma = float(rng.uniform(0.03, 0.06))
        L.lamps = [(float(rng.uniform(-6, 6)), float(rng.uniform(2, 30)), float(rng.uniform(0.25, 0.6)))
                   for _ in range(int(rng.integers(1, 4)))]
    L.sun_dir = np.array([math.cos(yaw) * math.cos(elev), math.sin(elev), math.sin(yaw) * math.cos(elev)])
    if c.weather != "clear":
        L.sky_top = tuple(np.array(L.sky_top) * 0.5 + 0.5 * np.array(L.sky_horizon))
        L.ambient *= 0.9
    c.exposure = float(rng.uniform(0.9, 1.1))
    return c, L


# ---- layouts ------------------------------------------------------------------------------------------

def _band(cls: int, x0: float, x1: float, rng, mirror: int) -> GroundBand:
    lo, hi = sorted((mirror * x0, mirror * x1))
    return GroundBand(lo, hi, cls, GROUND_MATS[cls](rng))


def _layout(b: _Builder, scene_type: str, night: bool):
    """Ground bands and background objects for one scene type. Returns (bands, default, rects, discs, marks);
    discs start empty (:func:`_manholes` adds them once the people are placed)."""
    layout = _LAYOUTS.get(scene_type, _building_entrance)  # as before, any other name lays out an entrance
    bands, rects, marks = layout(b, night)
    return bands, _band(9, -100, 100, b.rng, 1), rects, [], marks


def _side_objects(b: _Builder, night: bool, kinds, xc_range, z_range, n: int) -> None:
    """``n`` objects of random ``kinds`` at random offsets from the layout centre line (those whose spot is
    taken are dropped): the street furniture lining each scene type's path."""
    r = b.rng
    for _ in range(n):
        xc, z = r.uniform(*xc_range), r.uniform(*z_range)
        b.add(str(r.choice(kinds)), b.world_x(xc, z), z, night=night)


def _park_road(b: _Builder, night: bool):
    """A sidewalk (sometimes the road itself) beside a kerbed road with traffic, buildings along both sides."""
    r, m = b.rng, b.mirror
    marks = []
    X = b.world_x
    a, c = r.uniform(1.9, 3.0), r.uniform(1.9, 3.0)
    road_w = r.uniform(6, 9)
    on_road = r.random() < 0.2
    walk = 0 if on_road else 1
    bands = [_band(walk, -a, c, r, m), _band(20, c, c + 0.2, r, m), _band(0, c + 0.2, c + 0.2 + road_w, r, m),
             _band(20, c + 0.2 + road_w, c + 0.4 + road_w, r, m), _band(1, c + 0.4 + road_w, c + 3.4 + road_w, r, m),
             _band(9, -a - r.uniform(0.5, 4), -a, r, m)]
    if on_road:
        marks.append((m * (c + 0.2 + road_w / 2) - 0.07, m * (c + 0.2 + road_w / 2) + 0.07))
    far = c + 3.6 + road_w
    x_left = -a - 4.5
    for z0 in np.arange(r.uniform(-5, 5), 80, r.uniform(15, 30)):  # building rows on both sides
        w = r.uniform(10, 25)
        if r.random() < 0.8:
            _side_building(b, x_left - r.uniform(5, 15), x_left, z0, z0 + w, night)
        if r.random() < 0.8:
            _side_building(b, far + 2, far + 2 + r.uniform(6, 15), z0, z0 + w, night)
    _side_objects(b, night, ("pole", "tree", "traffic_sign", "traffic_light", "hydrant", "dustbin", "cctv"),
                  (c - 0.5, c - 0.2), (4, 45), int(r.integers(3, 9)))
    _side_objects(b, night, ("tree", "bush", "dustbin", "bicycle", "pole"), (-a - 2.5, -a - 0.3), (3, 40),
                  int(r.integers(1, 6)))
    for _ in range(int(r.integers(0, 5))):  # traffic
        z = r.uniform(4, 60)
        kind = str(r.choice(["car", "car", "car", "truck", "bus", "bus", "rider_motorcycle", "motorcycle"]))
        lane = r.uniform(c + 1.3, c + road_w - 1.0)
        b.add(kind, X(lane, z), z, yaw=math.pi / 2 + r.normal(0, 0.05))
    if r.random() < 0.04:
        b.add("train", X(far + 8, 40), 40, force=True, yaw=math.pi / 2)
    return bands, [], marks


def _campus_walkway(b: _Builder, night: bool):
    """A runway or sidewalk path between flowerbeds and trees, with buildings set back on both sides."""
    r, m = b.rng, b.mirror
    marks = []
    X = b.world_x
    a, c = r.uniform(1.7, 2.6), r.uniform(1.7, 2.6)
    surface = int(r.choice([22, 1, 22]))
    bands = [_band(surface, -a, c, r, m)]
    if surface == 22:
        marks.append((m * (c - a) / 2 - 0.05, m * (c - a) / 2 + 0.05))
    for _ in range(int(r.integers(1, 4))):
        z = r.uniform(3, 25)
        s = r.choice([-1, 1])
        xc = s * (a if s < 0 else c) + s * r.uniform(1.5, 3.5)
        b.add("flowerbed", X(xc, z), z)
    _side_objects(b, night, ("tree", "tree", "bush", "pole", "dustbin", "bicycle"), (c + 0.6, c + 6), (3, 45),
                  int(r.integers(3, 9)))
    _side_objects(b, night, ("tree", "bush", "pole", "dustbin", "hydrant", "traffic_sign"), (-a - 6, -a - 0.6),
                  (3, 45), int(r.integers(3, 9)))
    for z0 in np.arange(r.uniform(0, 15), 90, r.uniform(20, 40)):
        if r.random() < 0.6:
            _side_building(b, -a - r.uniform(12, 25), -a - r.uniform(8, 11), z0, z0 + r.uniform(10, 20), night)
        if r.random() < 0.6:
            _side_building(b, c + r.uniform(8, 11), c + r.uniform(14, 25), z0, z0 + r.uniform(10, 20), night)
    if r.random() < 0.35:
        z = r.uniform(5, 30)
        b.add("fence", X(-a - r.uniform(2, 6), z), z, length=r.uniform(6, 12), angle=math.pi / 2 + r.normal(0, 0.1))
    return bands, [], marks


def _industrial_yard(b: _Builder, night: bool):
    """A wide asphalt yard walled or fenced on both sides, with belts, trucks and a building across the end."""
    r, m = b.rng, b.mirror
    rects, marks = [], []
    X = b.world_x
    a, c = r.uniform(4, 7), r.uniform(4, 8)
    bands = [_band(0, -a, c, r, m)]
    if r.random() < 0.5:
        marks.append((m * r.uniform(-1, 1) - 0.06, m * r.uniform(-1, 1) + 0.06))
    wall_kind = str(r.choice(["wall", "fence"]))
    for s, edge in ((-1, -a - 0.5), (1, c + 0.5)):
        for z0 in np.arange(r.uniform(2, 6), 60, 8.0):
            if r.random() < 0.7:
                b.add(wall_kind, X(edge, z0 + 4), z0 + 4, length=8.0, angle=math.pi / 2, height=r.uniform(1.8, 3),
                      force=True)
    for _ in range(int(r.integers(1, 4))):
        z = r.uniform(5, 40)
        xc = r.choice([-a + r.uniform(0.8, 2), c - r.uniform(0.8, 2)])
        b.add("belt", X(xc, z), z, yaw=math.pi / 2 + r.normal(0, 0.1))
    for _ in range(int(r.integers(0, 3))):
        z = r.uniform(8, 45)
        b.add(str(r.choice(["truck", "truck", "car"])), X(r.choice([-a + 1.8, c - 1.8]), z), z,
              yaw=math.pi / 2 + r.normal(0, 0.08))
    _side_objects(b, night, ("dustbin", "pole", "cctv", "hydrant", "traffic_sign", "dustbin"), (c - 1.2, c - 0.3),
                  (3, 40), int(r.integers(2, 6)))
    _side_objects(b, night, ("dustbin", "pole", "bush", "traffic_light"), (-a + 0.3, -a + 1.2), (3, 40),
                  int(r.integers(1, 5)))
    z_end = r.uniform(35, 70)
    _end_building(b, -30, 30, z_end, z_end + 20, night, doors=int(r.integers(1, 3)))
    if r.random() < 0.3:
        zt = r.uniform(18, z_end - 6)
        rects.append(GroundRect(-100, 100, zt - 1.8, zt + 1.8, 9, GROUND_MATS[9](r)))
        b.add("train", r.uniform(-20, 20), zt, force=True, yaw=0.0)
    return bands, rects, marks


def _building_entrance(b: _Builder, night: bool):
    """A path ending at a facade, with stairs up to the door, a ramp beside them and flowerbeds."""
    r, m = b.rng, b.mirror
    X = b.world_x
    a, c = r.uniform(1.8, 3.5), r.uniform(1.8, 3.5)
    zf = r.uniform(7, 22)
    bands = [_band(1, -a, c, r, m)]
    _end_building(b, -25, 25, zf, zf + 15, night, doors=int(r.integers(1, 4)), door_at=0.0)
    steps = int(r.integers(3, 7))
    sx = r.uniform(-1.5, 1.5)
    b.add("stairs", sx, zf - steps * 0.32, force=True, width=r.uniform(2, 4), steps=steps)
    ramp_side = r.choice([-1, 1])
    ramp_x = sx + ramp_side * r.uniform(3.0, 4.5)
    rects = [GroundRect(ramp_x - 0.9, ramp_x + 0.9, zf - 6, zf, 21, GROUND_MATS[21](r))]
    for _ in range(int(r.integers(1, 3))):
        s = r.choice([-1, 1])
        z = r.uniform(zf - 8, zf - 1.5)
        b.add("flowerbed", sx + s * r.uniform(2.5, 6), z, w=r.uniform(1.0, 2.0), d=r.uniform(1.0, 2.5))
    _side_objects(b, night, ("pole", "hydrant", "dustbin", "cctv", "traffic_sign", "tree", "bush"), (c + 0.3, c + 3),
                  (2, zf - 1), int(r.integers(2, 5)))
    _side_objects(b, night, ("pole", "hydrant", "dustbin", "cctv", "tree", "bicycle"), (-a - 3, -a - 0.3),
                  (2, zf - 1), int(r.integers(2, 5)))
    if r.random() < 0.4:
        z = r.uniform(2, zf - 2)
        b.add("fence", X(-a - r.uniform(1, 3), z), z, length=r.uniform(4, 8), angle=math.pi / 2)
    return bands, rects, []


# one layout per scene type, each returning (bands, rects, marks); _layout adds the default ground
_LAYOUTS = {"park_road": _park_road, "campus_walkway": _campus_walkway, "industrial_yard": _industrial_yard,
            "building_entrance": _building_entrance}


def _side_building(b: _Builder, x0, x1, z0, z1, night):
    r = b.rng
    if b.mirror < 0:
        x0, x1 = -x1, -x0
    inst = b.new_id(2, (x0 + x1) / 2, (z0 + z1) / 2, "building")
    doors = int(r.integers(0, 3))
    d0 = b._next
    b._next += 3
    c0 = b._next
    b._next += 3
    for k in range(doors):
        b.instances[d0 + k] = {"class_id": 24, "x": x1 if x1 < 0 else x0, "z": z0, "kind": "door"}
        if k < 1:
            b.instances[c0 + k] = {"class_id": 25, "x": x1 if x1 < 0 else x0, "z": z0, "kind": "cctv"}
    b.patches += O.building(r, x0, x1, z0, z1, r.uniform(6, 25), inst, d0, c0, 0, facade_axis="x",
                            doors=doors, cameras=min(doors, 1))
    b.claim((x0 + x1) / 2, (z0 + z1) / 2, max(x1 - x0, z1 - z0) / 2)


def _end_building(b: _Builder, x0, x1, z0, z1, night, doors=1, door_at=None):
    r = b.rng
    inst = b.new_id(2, 0.0, z0, "building")
    d0 = b._next
    b._next += doors
    c0 = b._next
    b._next += doors
    for k in range(doors):
        b.instances[d0 + k] = {"class_id": 24, "x": 0.0, "z": z0, "kind": "door"}
        b.instances[c0 + k] = {"class_id": 25, "x": 0.0, "z": z0, "kind": "cctv"}
    sub = O.building(r, x0, x1, z0, z1, r.uniform(8, 20), inst, d0, c0, 0, facade_axis="z", doors=doors,
                     cameras=doors)
    if door_at is not None:  # put the first door where the path meets the facade
        for p in sub:
            if p.class_id == 24 and p.instance == d0:
                p.origin = np.array([door_at - 0.8, 0.0, z0 - 0.03])
            if p.class_id == 25 and p.instance == c0:
                p.origin = p.origin + np.array([door_at - p.origin[0], 0.0, 0.0])
    b.patches += sub


# ---- scenarios: what stands in the robot's path -------------------------------------------------------------

def _scenario(b: _Builder, name: str, night: bool) -> None:
    r = b.rng
    if name == "person_near":
        b.add("person", r.uniform(-0.45, 0.45), r.uniform(1.2, 2.4), force=True)
    elif name == "person_ahead":
        b.add("person", r.uniform(-0.5, 0.5), r.uniform(2.7, 5.8), force=True)
        if r.random() < 0.3:
            b.add("person", r.uniform(-3, 3), r.uniform(4, 15))
    elif name == "person_side":
        s = r.choice([-1, 1])
        b.add("person", s * r.uniform(0.95, 1.6), r.uniform(1.5, 2.8), force=True)
    elif name == "vehicle_ahead":
        kind = str(r.choice(["car", "rider_bicycle", "rider_motorcycle", "bicycle", "motorcycle", "truck", "car"]))
        z = r.uniform(1.5, 7.0) + (1.5 if kind in ("car", "truck") else 0.0)
        yaw = r.choice([0.0, math.pi]) + r.normal(0, 0.15) if r.random() < 0.7 else math.pi / 2
        b.add(kind, r.uniform(-0.3, 0.3), z, yaw=yaw, force=True)
    elif name in ("static_ahead", "static_far"):
        kind = str(r.choice(STATIC_KINDS))
        z = r.uniform(1.3, 3.8) if name == "static_ahead" else r.uniform(4.5, 9.5)
        x = r.uniform(-0.45, 0.45)
        kw = {}
        if kind in ("fence", "wall"):
            kw = {"length": r.uniform(0.8, 2.0), "angle": r.normal(0, 0.2), "height": r.uniform(0.9, 1.8)}
        elif kind == "belt":
            kw = {"yaw": r.normal(0, 0.15), "length": r.uniform(1.5, 3.0)}
        elif kind == "stairs":
            kw = {"width": r.uniform(1.0, 1.6), "steps": int(r.integers(2, 5))}
        elif kind == "flowerbed":
            kw = {"w": r.uniform(0.6, 1.4), "d": r.uniform(0.6, 1.5)}
        elif kind == "bush":
            kw = {"w": r.uniform(0.6, 1.4), "d": r.uniform(0.5, 1.0)}
        b.add(kind, x, z, force=True, night=night, **kw)
        if name == "static_ahead" and r.random() < 0.35:  # hem in one side, sometimes both
            sides = [r.choice([-1, 1])] if r.random() < 0.7 else [-1, 1]
            for s in sides:
                b.add(str(r.choice(["dustbin", "bush", "wall", "hydrant", "flowerbed"])), s * r.uniform(1.1, 1.6),
                      z + r.uniform(-0.3, 0.8), force=True)
    elif name == "crowd":
        for _ in range(int(r.integers(3, 7))):
            for _try in range(10):
                if b.add("person", r.uniform(-4, 4), r.uniform(3.2, 17)):
                    break


def _background_people(b: _Builder) -> None:
    r = b.rng
    n = int(r.choice([0, 1, 2, 3, 4], p=[0.35, 0.25, 0.25, 0.1, 0.05]))
    for _ in range(n):
        for _try in range(10):
            z = r.uniform(3, 35)
            x = r.uniform(-8, 8)
            if abs(x) < 2.2 and z < 12:
                continue
            if b.add("person", x, z):
                break


def _manholes(b: _Builder, discs: list[GroundDisc]) -> None:
    r = b.rng
    for _ in range(int(r.choice([0, 1, 2], p=[0.4, 0.45, 0.15]))):
        z = r.uniform(1.5, 15)
        x = b.world_x(r.uniform(-1.5, 1.5), z)
        discs.append(GroundDisc(x, z, r.uniform(0.3, 0.45), 26, GROUND_MATS[26](r), b.new_id(26, x, z, "manhole")))


def sample_scene(seed: int, index: int, scene_type: str | None = None, scenario: str | None = None) -> SceneSpec:
    """Deterministic scene for (seed, index): the same pair always gives the same frame."""
    rng = np.random.default_rng([seed, index])
    scene_type = scene_type or str(rng.choice(SCENE_TYPES))
    names, w = list(SCENARIOS), np.array(list(SCENARIOS.values()))
    scenario = scenario or str(rng.choice(names, p=w / w.sum()))
    cond, lighting = _conditions(rng)
    camera = Camera.from_fov(2048, 1024, float(rng.uniform(84, 96)), mount_height=float(rng.uniform(0.42, 0.6)),
                             pitch_deg=float(rng.uniform(2.0, 9.0)))
    curve = float(rng.normal(0, 0.004)) if rng.random() < 0.5 else 0.0
    mirror = int(rng.choice([-1, 1]))
    b = _Builder(rng, curve, mirror)
    night = cond.lighting == "night"
    # the scenario goes first so that background objects keep clear of it
    _scenario(b, scenario, night)
    for z in np.arange(1.0, 12.0, 1.0):  # background stays out of the near corridor and its sides
        b.claim(0.0, float(z), 1.5)
    bands, default, rects, discs, marks = _layout(b, scene_type, night)
    _background_people(b)
    _manholes(b, discs)
    return SceneSpec(index, scene_type, scenario, camera, cond, lighting, bands, default, curve, rects, discs, marks,
                     b.patches, b.instances, effect_seed=int(rng.integers(2 ** 31)))


# ---- rendering ----------------------------------------------------------------------------------------------

@dataclass
class Rendered:
    rgb: np.ndarray  # uint8 RGB
    label: np.ndarray  # uint8 TrainIds
    depth: np.ndarray  # float32 metres, 0 = no return
    instance: np.ndarray  # int32, 0 = stuff
    camera: Camera
    drawn: dict[int, int]


def render_spec(spec: SceneSpec, width: int, height: int, max_depth: float = 65.535,
                pose: tuple[float, float, float] | None = None) -> Rendered:
    """``pose``: the robot's (x, z, yaw) in the ground's frame, for a walk (see ``cepr.data.synth.sequence``);
    the patches must then already be in the robot's frame."""
    cam = spec.camera.scaled(width, height)
    f = Frame(cam, spec.lighting, pose)
    rng = np.random.default_rng([spec.effect_seed, width, height])
    f.draw_sky(rng, spec.conditions.clouds)
    f.draw_ground(spec.bands, spec.default_ground, spec.curve, spec.rects, spec.discs, spec.markings)
    dynamic = {i for i, v in spec.instances.items() if v["class_id"] in (11, 12, 13, 14, 15, 16, 17, 18)}
    for p in spec.patches:
        f.draw_patch(p, track_instance=p.instance in dynamic)
    rgb = _effects(f, spec.conditions, rng, width)
    depth = f.depth.copy()
    depth[~np.isfinite(depth) | (depth > max_depth)] = 0.0
    return Rendered(rgb, f.label, depth, f.instance, cam, f.drawn)


def _effects(f: Frame, c: Conditions, rng: np.random.Generator, width: int) -> np.ndarray:
    img = f.rgb * c.exposure
    h, w = f.label.shape
    if c.fog_visibility_m > 0:
        d = np.where(np.isfinite(f.depth), f.depth, 1e4)
        k = np.exp(-3.0 * d / c.fog_visibility_m)[..., None]
        fog = np.array([0.72, 0.74, 0.76], np.float32) * (0.35 if c.lighting == "night" else 1.0)
        img = img * k + fog * (1 - k)
    if c.rain_intensity > 0:
        img = img * (1 - 0.15 * c.rain_intensity) + 0.08 * c.rain_intensity
        streaks = np.zeros((h, w), np.float32)
        n = int(c.rain_intensity * 0.0012 * h * w / max(1.0, width / 640))
        L = max(4, int(0.04 * h))
        xs = rng.integers(0, w, n)
        ys = rng.integers(0, h, n)
        dx = int(L * 0.2)
        for x0, y0 in zip(xs.tolist(), ys.tolist()):
            cv2.line(streaks, (x0, y0), (x0 + dx, y0 + L), 1.0, 1)
        img = img + (0.25 * streaks)[..., None]
    if c.motion_blur_px > 0:
        k = max(2, round(c.motion_blur_px * width / 2048))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), c.motion_blur_angle_deg, 1.0)
        kern = cv2.warpAffine(kern, rot, (k, k))
        kern /= max(kern.sum(), 1e-6)
        img = cv2.filter2D(img, -1, kern, borderType=cv2.BORDER_REFLECT)
    if c.noise_sigma > 0:
        img = img + rng.normal(0, c.noise_sigma, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
