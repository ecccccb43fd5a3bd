"""Object models for the synthetic scenes, built from planar patches (see ``render.Patch``).

Coordinates: world metres, x right, y up, z forward; every builder takes the object's ground position and
returns its patches. Billboards (people, poles, bikes, trees) face the camera or a given heading; solid
things (cars, buildings, bins, belts) are boxes.
"""

from __future__ import annotations

import math

import numpy as np

from cepr.data.synth.render import Material, Patch

UP = np.array([0.0, 1.0, 0.0])


def _rect(w: float, h: float, s0: float = 0.0, t0: float = 0.0) -> np.ndarray:
    return np.array([[s0, t0], [s0 + w, t0], [s0 + w, t0 + h], [s0, t0 + h]], float)


def _ellipse(cs: float, ct: float, rs: float, rt: float, n: int = 14, jitter=None) -> np.ndarray:
    a = np.linspace(0, 2 * math.pi, n, endpoint=False)
    r = 1.0 if jitter is None else jitter
    return np.stack([cs + rs * r * np.cos(a), ct + rt * r * np.sin(a)], axis=1)


def facing_axis(x: float, z: float) -> np.ndarray:
    """Horizontal unit vector, to the viewer's right, for a billboard at (x, z) facing the camera."""
    r = math.hypot(x, z) or 1.0
    return np.array([z / r, 0.0, -x / r])


def heading_axis(yaw: float) -> np.ndarray:
    """Horizontal unit vector at ``yaw`` radians from +x towards +z."""
    return np.array([math.cos(yaw), 0.0, math.sin(yaw)])


def billboard(x: float, z: float, parts, class_id: int, inst: int, e1=None, y0: float = 0.0) -> list[Patch]:
    """Vertical plane through (x, y0, z); ``parts`` = [(outline in (s, t), Material)], s centred on x."""
    e1 = facing_axis(x, z) if e1 is None else e1
    origin = np.array([x, y0, z])
    return [Patch(origin, e1, UP, o, class_id, inst, m) for o, m in parts]


def box(cx: float, cz: float, w: float, d: float, h: float, yaw: float, class_id: int, inst: int,
        side: Material, top: Material | None = None, y0: float = 0.0, front: Material | None = None,
        holes=None) -> list[Patch]:
    """Box of width w (along yaw), depth d, height h standing on y0. ``front`` is the face towards -z."""
    ax, az = heading_axis(yaw), heading_axis(yaw + math.pi / 2)
    c = np.array([cx, y0, cz])
    corners = [c + sx * w / 2 * ax + sz * d / 2 * az for sx, sz in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    patches = []
    for i in range(4):
        a, b = corners[i], corners[(i + 1) % 4]
        L = float(np.linalg.norm(b - a))
        mat = front if (front is not None and i == 0) else side
        patches.append(Patch(a, (b - a) / L, UP, _rect(L, h), class_id, inst, mat, holes=holes))
    patches.append(Patch(corners[0] + UP * h, ax, az, _rect(w, d), class_id, inst, top or side))
    return patches


def mat(rgb, **kw) -> Material:
    return Material(tuple(float(c) for c in rgb), **kw)


# ---- people and riders ----------------------------------------------------------------------------

SKIN = [(0.95, 0.8, 0.68), (0.85, 0.65, 0.5), (0.62, 0.45, 0.32), (0.45, 0.3, 0.2)]


def _body_parts(rng, height: float, seated: bool = False):
    k = height / 1.75
    skin = mat(SKIN[rng.integers(len(SKIN))], tex_amp=0.03)
    shirt = mat(rng.uniform(0.05, 0.95, 3), tex_amp=0.1)
    pants = mat(rng.uniform(0.05, 0.5, 3), tex_amp=0.08)
    hair = mat(rng.uniform(0.02, 0.3) * np.ones(3), tex_amp=0.05)
    stride = rng.uniform(-0.18, 0.18) * k
    parts = []
    hip = 0.47 * height
    if seated:
        parts.append((np.array([[-0.12 * k, hip], [0.05 * k, hip], [0.25 * k, 0.32 * height],
                                [0.2 * k, 0.05 * height], [0.1 * k, 0.05 * height], [0.12 * k, 0.3 * height]]), pants))
    else:
        for side in (-1, 1):
            foot = side * (0.09 * k + stride * side * 0.5 + side * abs(stride) * 0.5)
            parts.append((np.array([[side * 0.04 * k, hip], [side * 0.16 * k, hip],
                                    [foot + 0.06 * k * side, 0.0], [foot - 0.06 * k * side, 0.0]]), pants))
    parts.append((np.array([[-0.16 * k, hip - 0.02 * height], [0.16 * k, hip - 0.02 * height],
                            [0.2 * k, 0.8 * height], [-0.2 * k, 0.8 * height]]), shirt))
    swing = rng.uniform(-0.12, 0.12) * k
    for side in (-1, 1):
        parts.append((np.array([[side * 0.18 * k, 0.79 * height], [side * 0.25 * k, 0.78 * height],
                                [side * 0.25 * k + swing * side, 0.46 * height],
                                [side * 0.18 * k + swing * side, 0.46 * height]]), shirt))
    parts.append((_rect(0.08 * k, 0.06 * height, -0.04 * k, 0.79 * height), skin))
    parts.append((_ellipse(0.0, 0.905 * height, 0.1 * k, 0.125 * k), skin))
    parts.append((_ellipse(0.0, 0.94 * height, 0.105 * k, 0.07 * k), hair))
    return parts


def person(rng, x: float, z: float, inst: int, height: float | None = None) -> list[Patch]:
    h = height if height is not None else (rng.uniform(1.55, 1.9) if rng.random() > 0.12 else rng.uniform(1.05, 1.35))
    return billboard(x, z, _body_parts(rng, h), 11, inst)


def _wheel(cs: float, r: float, thick: float):
    return [_ellipse(cs, r, r, r, n=18), _ellipse(cs, r, r - thick, r - thick, n=18)]


def two_wheeler(rng, x: float, z: float, yaw: float, kind: str, inst: int, rider_inst: int | None) -> list[Patch]:
    """Bicycle (18) or motorcycle (17) seen along heading ``yaw``, optionally with a rider (12)."""
    e1 = heading_axis(yaw)
    cls = 18 if kind == "bicycle" else 17
    frame_col = mat(rng.uniform(0.1, 0.9, 3), tex_amp=0.05)
    tyre = mat((0.05, 0.05, 0.05), tex_amp=0.02)
    if kind == "bicycle":
        r, base = 0.34, 1.05
        parts = [(w, tyre) for w in (_wheel(-base / 2, r, 0.05), _wheel(base / 2, r, 0.05))]
        tube = 0.035
        for (s0, t0), (s1, t1) in (((-base / 2, r), (0.0, r)), ((0.0, r), (-0.1, 0.85)), ((-0.1, 0.85), (0.35, 0.85)),
                                   ((0.0, r), (0.35, 0.85)), ((0.35, 0.85), (base / 2, r)), ((0.35, 0.85), (0.38, 1.0))):
            dx, dy = s1 - s0, t1 - t0
            L = math.hypot(dx, dy) or 1.0
            nx, ny = -dy / L * tube, dx / L * tube
            parts.append((np.array([[s0 + nx, t0 + ny], [s1 + nx, t1 + ny], [s1 - nx, t1 - ny], [s0 - nx, t0 - ny]]),
                          frame_col))
        seat_h = 0.85
    else:
        r, base = 0.32, 1.4
        parts = [(w, tyre) for w in (_wheel(-base / 2, r, 0.11), _wheel(base / 2, r, 0.11))]
        parts.append((np.array([[-0.55, 0.45], [0.5, 0.45], [0.65, 0.8], [0.2, 0.95], [-0.35, 0.85], [-0.7, 0.7]]),
                      frame_col))
        parts.append((_rect(0.08, 0.5, 0.55, 0.55), mat((0.2, 0.2, 0.2))))
        seat_h = 0.8
    patches = billboard(x, z, parts, cls, inst, e1=e1)
    if rider_inst is not None:
        h = rng.uniform(1.6, 1.85)
        body = _body_parts(rng, h, seated=True)
        lift = seat_h - 0.47 * h
        rider = [(o + np.array([0.0, lift]), m) for o, m in body]
        # drawn after the bike in the same plane: the rider covers the frame where they overlap
        patches += billboard(x, z, rider, 12, rider_inst, e1=e1)
    return patches


# ---- vehicles -------------------------------------------------------------------------------------

def _wheels(cx, cz, yaw, length, width, r, inst, cls, axles=(-0.32, 0.32)):
    ax, az = heading_axis(yaw), heading_axis(yaw + math.pi / 2)
    tyre = mat((0.04, 0.04, 0.04), tex_amp=0.02)
    out = []
    for side in (-1, 1):
        for f in axles:
            c = np.array([cx, 0.0, cz]) + f * length * ax + side * (width / 2 + 0.01) * az
            out.append(Patch(c, ax, UP, _ellipse(0.0, r, r, r, n=16), cls, inst, tyre))
    return out


def car(rng, x, z, yaw, inst) -> list[Patch]:
    L, W = rng.uniform(3.8, 4.8), rng.uniform(1.7, 1.9)
    body = mat(rng.uniform(0.05, 0.9, 3), tex_amp=0.04)
    glass = mat((0.12, 0.15, 0.2), tex_amp=0.03)
    p = _wheels(x, z, yaw, L, W, 0.32, inst, 13)
    p += box(x, z, L, W, 0.65, yaw, 13, inst, body, y0=0.28)
    ax = heading_axis(yaw)
    cab = np.array([x, 0, z]) - 0.08 * L * ax
    p += box(cab[0], cab[2], L * 0.5, W * 0.88, 0.5, yaw, 13, inst, glass, top=body, y0=0.93)
    return p


def truck(rng, x, z, yaw, inst) -> list[Patch]:
    ax = heading_axis(yaw)
    cab_col = mat(rng.uniform(0.2, 0.9, 3), tex_amp=0.05)
    cargo = mat(rng.uniform(0.5, 0.95) * np.ones(3) * rng.uniform(0.8, 1.0, 3), tex_amp=0.06, pattern="stripes",
                pattern_color=(0.4, 0.4, 0.4), pattern_args=(1.2,))
    L = rng.uniform(6.5, 8.5)
    p = _wheels(x, z, yaw, L, 2.3, 0.48, inst, 14, axles=(-0.35, 0.0, 0.38))
    front = np.array([x, 0, z]) + 0.38 * L * ax
    p += box(front[0], front[2], 1.8, 2.3, 2.2, yaw, 14, inst, cab_col, y0=0.5)
    back = np.array([x, 0, z]) - 0.12 * L * ax
    p += box(back[0], back[2], L * 0.72, 2.4, 2.8, yaw, 14, inst, cargo, y0=0.9)
    return p


def bus(rng, x, z, yaw, inst) -> list[Patch]:
    L = rng.uniform(10, 12.5)
    col = mat(rng.uniform(0.3, 0.95, 3), tex_amp=0.04, pattern="windows", pattern_color=(0.1, 0.13, 0.18),
              pattern_args=(1.6, 1.0, 0.85, 0.55, 1.3))
    p = _wheels(x, z, yaw, L, 2.5, 0.5, inst, 15, axles=(-0.3, 0.3))
    p += box(x, z, L, 2.5, 2.7, yaw, 15, inst, col, top=mat((0.7, 0.7, 0.7)), y0=0.35)
    return p


def train(rng, x, z, yaw, inst, cars: int = 3) -> list[Patch]:
    col = mat(rng.uniform(0.4, 0.95, 3), tex_amp=0.04, pattern="windows", pattern_color=(0.12, 0.12, 0.16),
              pattern_args=(2.0, 1.2, 0.6, 0.5, 1.5))
    ax = heading_axis(yaw)
    p = []
    for i in range(cars):
        c = np.array([x, 0, z]) + (i - (cars - 1) / 2) * 21.0 * ax
        p += box(c[0], c[2], 20.0, 3.0, 3.4, yaw, 16, inst, col, top=mat((0.5, 0.5, 0.5)), y0=0.6)
    return p


# ---- street furniture --------------------------------------------------------------------------------

def pole(rng, x, z, inst, height=None, width=None, color=None) -> list[Patch]:
    h = height or rng.uniform(3.0, 7.0)
    w = width or rng.uniform(0.1, 0.18)
    m = mat(color or rng.uniform(0.35, 0.65) * np.ones(3), tex_amp=0.05)
    return billboard(x, z, [(_rect(w, h, -w / 2), m)], 5, inst)


def traffic_light(rng, x, z, pole_inst, inst, night=False) -> list[Patch]:
    h = rng.uniform(2.6, 3.5)
    p = pole(rng, x, z, pole_inst, height=h + 0.2, width=0.14)
    housing = mat((0.1, 0.1, 0.1), tex_amp=0.03)
    lit = rng.integers(3)
    parts = [(_rect(0.32, 0.9, -0.16, h), housing)]
    for i, col in enumerate(((0.9, 0.1, 0.05), (0.95, 0.7, 0.05), (0.1, 0.85, 0.3))):
        on = i == (2 - lit)
        c = np.array(col) * (1.2 if on else 0.25)
        parts.append((_ellipse(0.0, h + 0.75 - i * 0.3, 0.1, 0.1, n=10), mat(c, emissive=on or night, tex_amp=0.0)))
    return p + billboard(x, z, parts, 6, inst)


def traffic_sign(rng, x, z, pole_inst, inst) -> list[Patch]:
    h = rng.uniform(1.9, 2.6)
    p = pole(rng, x, z, pole_inst, height=h, width=0.07)
    shape = rng.integers(3)
    face = mat([(0.85, 0.1, 0.1), (0.1, 0.3, 0.8), (0.95, 0.85, 0.1)][rng.integers(3)], tex_amp=0.03)
    if shape == 0:
        outline = _ellipse(0.0, h + 0.3, 0.32, 0.32, n=16)
    elif shape == 1:
        outline = np.array([[-0.35, h], [0.35, h], [0.0, h + 0.6]])
    else:
        outline = _rect(0.6, 0.45, -0.3, h)
    return p + billboard(x, z, [(outline, face), (_ellipse(0.0, h + 0.25, 0.15, 0.08, n=8),
                                                   mat((0.95, 0.95, 0.95), tex_amp=0.02))], 7, inst)


def cctv(rng, x, z, pole_inst, inst, mount_height=None, on_wall=False) -> list[Patch]:
    h = mount_height or rng.uniform(2.8, 4.0)
    p = [] if on_wall else pole(rng, x, z, pole_inst, height=h + 0.15, width=0.1)
    body = mat((0.85, 0.85, 0.82), tex_amp=0.03)
    lens = mat((0.05, 0.05, 0.08), tex_amp=0.0)
    ax = heading_axis(rng.uniform(0, math.pi))
    cam_pos = np.array([x, 0, z]) + (0.0 if on_wall else 0.3) * ax
    p += box(cam_pos[0], cam_pos[2], 0.45, 0.2, 0.2, float(rng.uniform(0, math.pi)), 25, inst, body, y0=h - 0.1)
    p += billboard(cam_pos[0], cam_pos[2], [(_ellipse(0, h, 0.07, 0.07, n=8), lens)], 25, inst)
    return p


def hydrant(rng, x, z, inst) -> list[Patch]:
    col = mat([(0.85, 0.1, 0.08), (0.95, 0.8, 0.1)][rng.integers(2)], tex_amp=0.06)
    outline = np.array([[-0.13, 0.0], [0.13, 0.0], [0.12, 0.42], [0.22, 0.42], [0.22, 0.52], [0.12, 0.52],
                        [0.12, 0.6], [0.06, 0.72], [-0.06, 0.72], [-0.12, 0.6], [-0.12, 0.52], [-0.22, 0.52],
                        [-0.22, 0.42], [-0.12, 0.42]])
    return billboard(x, z, [(outline, col)], 27, inst)


def dustbin(rng, x, z, inst) -> list[Patch]:
    col = mat([(0.1, 0.45, 0.2), (0.25, 0.3, 0.35), (0.6, 0.45, 0.1), (0.1, 0.3, 0.6)][rng.integers(4)], tex_amp=0.05)
    w = rng.uniform(0.45, 0.7)
    return box(x, z, w, w * 0.9, rng.uniform(0.8, 1.1), rng.uniform(0, math.pi), 29, inst, col,
               top=mat((0.15, 0.15, 0.15)))


def belt(rng, x, z, yaw, inst, length=None) -> list[Patch]:
    L = length or rng.uniform(3.0, 8.0)
    frame = mat((0.55, 0.57, 0.6), tex_amp=0.05, pattern="hstripes", pattern_color=(0.35, 0.36, 0.4),
                pattern_args=(0.3,))
    top = mat((0.08, 0.08, 0.08), tex_amp=0.05, pattern="stripes", pattern_color=(0.2, 0.2, 0.2), pattern_args=(0.25,))
    return box(x, z, L, 0.9, 0.85, yaw, 28, inst, frame, top=top)


def flowerbed(rng, x, z, w, d, inst) -> list[Patch]:
    border = mat((0.6, 0.58, 0.55), tex_amp=0.06)
    top = mat((0.25 + rng.uniform(0, 0.3), 0.45, 0.15 + rng.uniform(0, 0.3)), tex_amp=0.45, tex_scale=30.0)
    return box(x, z, w, d, rng.uniform(0.25, 0.45), 0.0, 23, inst, border, top=top)


def stairs(rng, x, z, width, steps, inst, rise=0.16, run=0.32) -> list[Patch]:
    """Steps climbing away from the robot, starting at depth z."""
    stone = mat((0.62, 0.6, 0.57), tex_amp=0.06)
    tread = mat((0.7, 0.68, 0.65), tex_amp=0.05)
    e1 = np.array([1.0, 0.0, 0.0])
    out = []
    for i in range(steps):
        zz = z + i * run
        out.append(Patch(np.array([x - width / 2, i * rise, zz]), e1, UP, _rect(width, rise), 19, inst, stone))
        out.append(Patch(np.array([x - width / 2, (i + 1) * rise, zz]), e1, np.array([0, 0, 1.0]),
                         _rect(width, run), 19, inst, tread))
    return out


def wall(rng, x0, z0, x1, z1, height, inst, bricks=None) -> list[Patch]:
    bricks = rng.random() < 0.5 if bricks is None else bricks
    col = rng.uniform(0.45, 0.8) * np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.75, 1.0)])
    m = mat(col, tex_amp=0.07, pattern="bricks" if bricks else None, pattern_color=tuple(col * 0.7))
    cx, cz = (x0 + x1) / 2, (z0 + z1) / 2
    L = math.hypot(x1 - x0, z1 - z0)
    return box(cx, cz, L, 0.25, height, math.atan2(z1 - z0, x1 - x0), 3, inst, m)


def fence(rng, x0, z0, x1, z1, height, inst) -> list[Patch]:
    col = mat(rng.uniform(0.2, 0.6) * np.ones(3) * rng.uniform(0.8, 1.0, 3), tex_amp=0.04)
    L = math.hypot(x1 - x0, z1 - z0)
    e1 = np.array([x1 - x0, 0.0, z1 - z0]) / L
    mesh = rng.choice([0.12, 0.2, 0.3])
    p = [Patch(np.array([x0, 0.0, z0]), e1, UP, _rect(L, height), 4, inst, col,
               holes=(mesh, mesh * 0.25, 1.0 if rng.random() < 0.5 else mesh, 0.06))]
    for k in range(int(L // 2.5) + 1):
        s = min(k * 2.5, L)
        p.append(Patch(np.array([x0, 0.0, z0]), e1, UP, _rect(0.08, height + 0.1, s - 0.04), 4, inst, col))
    return p


def tree(rng, x, z, inst) -> list[Patch]:
    trunk = mat((0.3, 0.22, 0.15), tex_amp=0.1)
    leaves = mat((0.15 + rng.uniform(0, 0.15), 0.35 + rng.uniform(0, 0.2), 0.1), tex_amp=0.35, tex_scale=12.0)
    h = rng.uniform(2.0, 4.0)
    r = rng.uniform(1.0, 2.2)
    parts = [(_rect(0.22, h + r * 0.5, -0.11), trunk)]
    for _ in range(3):
        parts.append((_ellipse(rng.uniform(-r, r) * 0.4, h + r * rng.uniform(0.6, 1.1), r * rng.uniform(0.6, 1.0),
                               r * rng.uniform(0.6, 0.9), n=16, jitter=rng.uniform(0.8, 1.15, 16)), leaves))
    return billboard(x, z, parts, 8, inst)


def bush(rng, x, z, inst, w=None, d=None, h=None) -> list[Patch]:
    leaves = mat((0.12 + rng.uniform(0, 0.12), 0.32 + rng.uniform(0, 0.2), 0.1), tex_amp=0.4, tex_scale=20.0)
    return box(x, z, w or rng.uniform(1.0, 4.0), d or rng.uniform(0.6, 1.2), h or rng.uniform(0.5, 1.3), 0.0, 8, inst,
               leaves)


def building(rng, x0, x1, z0, z1, height, inst, door_inst, cctv_inst, pole_inst, facade_axis="x",
             doors=1, cameras=1) -> list[Patch]:
    """Box building; its facade faces the robot (towards -x/+x for side buildings, -z for end buildings)."""
    base = rng.uniform(0.45, 0.85) * np.array([1.0, rng.uniform(0.9, 1.05), rng.uniform(0.85, 1.1)])
    m = mat(np.clip(base, 0, 1), tex_amp=0.05, pattern="windows", pattern_color=(0.15, 0.18, 0.24),
            pattern_args=(rng.uniform(2.5, 4.0), rng.uniform(3.0, 3.6), rng.uniform(0.4, 0.7), 0.5, 2.6))
    cx, cz = (x0 + x1) / 2, (z0 + z1) / 2
    p = box(cx, cz, x1 - x0, z1 - z0, height, 0.0, 2, inst, m, top=mat(base * 0.8))
    door_mat = mat([(0.45, 0.25, 0.12), (0.2, 0.25, 0.3), (0.6, 0.62, 0.65)][rng.integers(3)], tex_amp=0.05)
    for k in range(doors):
        dw, dh = rng.uniform(1.0, 2.2), rng.uniform(2.1, 2.6)
        if facade_axis == "z":  # facade is the plane z = z0
            s = rng.uniform(x0 + 0.5, max(x0 + 0.6, x1 - dw - 0.5))
            p.append(Patch(np.array([s, 0.0, z0 - 0.03]), np.array([1.0, 0, 0]), UP, _rect(dw, dh), 24,
                           door_inst + k, door_mat))
            if k < cameras:
                p += cctv(rng, s + dw / 2, z0 - 0.15, pole_inst, cctv_inst + k, mount_height=dh + 0.5, on_wall=True)
        else:  # side facade: plane x = x1 (building left of robot) or x0 (right of robot)
            fx = x1 + 0.03 if x1 < 0 else x0 - 0.03
            s = rng.uniform(z0 + 0.5, max(z0 + 0.6, z1 - dw - 0.5))
            p.append(Patch(np.array([fx, 0.0, s]), np.array([0, 0, 1.0]), UP, _rect(dw, dh), 24, door_inst + k,
                           door_mat))
            if k < cameras:
                p += cctv(rng, fx + (0.15 if x1 < 0 else -0.15), s + dw / 2, pole_inst, cctv_inst + k,
                          mount_height=dh + 0.5, on_wall=True)
    return p
