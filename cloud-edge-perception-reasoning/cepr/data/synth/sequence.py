"""A continuous walk through one synthetic scene: a moving camera, moving people and vehicles, ground truth per frame.

The static world is one ``sample_scene`` layout (park road, campus walkway or industrial yard; its objects in the
robot's corridor removed so the robot never walks through them). The robot walks along the path's centre line at
``speed`` m/s with a slight periodic yaw; people cross the corridor a few metres ahead at intervals, others walk
towards the robot beside it, and vehicles drive along or across the scene. Every agent moves on a straight line
at constant speed, so an object's position changes by at most ``speed / fps`` metres between frames.

Each frame is written in the Cloud-Robotics layout exactly like ``generate_dataset`` writes single frames (rgb,
gtFine TrainIds, viz, 16-bit depth, a sidecar with camera and answers), all in the ``test`` split under the
sequence ``walk{seed}``, with ``test-index.txt`` in frame order; the same frames are also encoded as an mp4 video
at ``fps``. ``dataset.json`` records the sequence (fps, frames, video, index). Deterministic for a seed.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cepr import __version__
from cepr.data.classes import CLASSES, colorize
from cepr.data.geometry import extract_objects
from cepr.data.layout import LABEL_SUFFIX, format_resolution, parse_resolution
from cepr.data.synth.generate import _difficulty, _objects_record, _write_png
from cepr.data.synth.objects import facing_axis
from cepr.data.synth.scene import _Builder, _make, render_spec, sample_scene
from cepr.data.tasks import TaskParams, answer_tasks
from cepr.errors import CeprError

SEQUENCE_VERSION = 1
WALK_SCENES = ("park_road", "campus_walkway", "industrial_yard")  # the entrance's facade blocks a long walk
MAX_WALK_M = 28.0  # the industrial yard's end building stands 35 m ahead or more
FOURCC = "mp4v"  # encodes and decodes with the opencv-python wheel, no system codec needed
_DYNAMIC = (11, 12, 13, 14, 15, 16, 17, 18)
_BILLBOARD_CLASSES = (5, 6, 7, 8, 11, 12, 25, 27)


@dataclass(frozen=True)
class Agent:
    """A person or vehicle moving on a straight line: world position ``(x0, z0) + (vx, vz) * t``."""

    kind: str  # person | car | truck | rider_bicycle | rider_motorcycle | bicycle
    x0: float
    z0: float
    vx: float
    vz: float
    key: int  # appearance seed and instance-id block
    role: str  # crossing | oncoming | traffic

    def at(self, t: float) -> tuple[float, float]:
        return self.x0 + self.vx * t, self.z0 + self.vz * t

    @property
    def yaw(self) -> float:
        """Heading (radians from +x towards +z) of the motion."""
        return math.atan2(self.vz, self.vx)


@dataclass
class Walk:
    seed: int
    fps: float
    frames: int
    speed: float  # m/s along the path
    yaw_amp_deg: float
    yaw_period_s: float
    spec: object  # the static SceneSpec
    agents: list[Agent]

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    def centre_x(self, z: float) -> float:
        return self.spec.curve * z * z

    def pose(self, t: float) -> tuple[float, float, float]:
        """Robot (x, z, yaw): yaw in radians from +z towards +x."""
        z = self.speed * t
        yaw = math.atan(2 * self.spec.curve * z) + math.radians(self.yaw_amp_deg) * math.sin(
            2 * math.pi * t / self.yaw_period_s)
        return self.centre_x(z), z, yaw


def _to_robot(pose, x, z):
    tx, tz, yaw = pose
    c, s = math.cos(yaw), math.sin(yaw)
    dx, dz = x - tx, z - tz
    return dx * c - dz * s, dx * s + dz * c


def _rotate_vec(v: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([v[0] * c - v[2] * s, v[1], v[0] * s + v[2] * c])


def plan_walk(seed: int, frames: int, fps: float) -> Walk:
    """The static scene and the agents' trajectories for a walk of ``frames`` frames at ``fps``."""
    if frames < 2:
        raise CeprError(f"--frames must be at least 2 for a sequence, got {frames}")
    if not 0.5 <= fps <= 120:
        raise CeprError(f"--fps must be between 0.5 and 120, got {fps}")
    rng = np.random.default_rng([seed, 7_919])
    scene_type = str(rng.choice(WALK_SCENES))
    spec = sample_scene(seed, 0, scene_type=scene_type, scenario="clear")
    duration = frames / fps
    speed = min(float(rng.uniform(1.0, 1.4)), MAX_WALK_M / duration)
    walk = Walk(seed, fps, frames, speed, float(rng.uniform(2.0, 4.0)), float(rng.uniform(3.0, 6.0)), spec, [])
    # drop static objects near the path's centre line (the robot would walk through them) and static people
    # near it (they would never move out of the way)
    drop = set()
    for iid, meta in spec.instances.items():
        off = abs(meta["x"] - walk.centre_x(meta["z"]))
        if meta["class_id"] in (2, 24, 25) and meta.get("kind") in ("building", "door", "cctv"):
            continue
        if off < (2.2 if meta["class_id"] in _DYNAMIC else 1.0) and meta["z"] > -2:
            drop.add(iid)
    spec = replace(spec, patches=[p for p in spec.patches if p.instance not in drop],
                   instances={k: v for k, v in spec.instances.items() if k not in drop})
    walk.spec = spec
    key = 1
    # people crossing the corridor 3-6 m ahead, one every 2.5-5 s: path_hazard and action change over the walk
    t = float(rng.uniform(0.5, 2.0))
    while t < duration:
        ahead = float(rng.uniform(3.0, 6.0))
        z = speed * t + ahead
        v = float(rng.uniform(0.8, 1.5)) * float(rng.choice([-1, 1]))
        kind = "person" if rng.random() < 0.75 else str(rng.choice(["rider_bicycle", "bicycle"]))
        if kind != "person":
            v *= 2.5
        xc = walk.centre_x(z)
        walk.agents.append(Agent(kind, xc - v * t, z, v, 0.0, key, "crossing"))
        key += 1
        t += float(rng.uniform(2.5, 5.0))
    # people walking towards the robot beside the path
    for _ in range(int(rng.integers(1, 4))):
        side = float(rng.choice([-1, 1]))
        z0 = float(rng.uniform(8, 25))
        walk.agents.append(Agent("person", walk.centre_x(z0) + side * float(rng.uniform(1.4, 3.0)), z0, 0.0,
                                 -float(rng.uniform(0.6, 1.3)), key, "oncoming"))
        key += 1
    # vehicles along the scene, well off the path
    for _ in range(int(rng.integers(1, 3))):
        side = float(rng.choice([-1, 1]))
        kind = str(rng.choice(["car", "car", "truck", "rider_motorcycle"]))
        vz = float(rng.uniform(2.5, 6.0)) * float(rng.choice([-1, 1]))
        z0 = float(rng.uniform(5, 40))
        walk.agents.append(Agent(kind, side * float(rng.uniform(5.0, 8.0)), z0, 0.0, vz, key, "traffic"))
        key += 1
    return walk


def frame_spec(walk: Walk, i: int):
    """(SceneSpec in the robot's frame for frame ``i``, pose, agent positions)."""
    spec = walk.spec
    t = i / walk.fps
    pose = walk.pose(t)
    yaw = pose[2]
    anchors = {iid: (m["x"], m["z"]) for iid, m in spec.instances.items()}
    patches = []
    for p in spec.patches:
        q = replace(p)
        ox, oz = _to_robot(pose, float(p.origin[0]), float(p.origin[2]))
        q.origin = np.array([ox, float(p.origin[1]), oz])
        q.e1, q.e2 = _rotate_vec(p.e1, yaw), _rotate_vec(p.e2, yaw)
        a = anchors.get(p.instance)
        if (p.class_id in _BILLBOARD_CLASSES and a is not None and abs(p.origin[0] - a[0]) < 2e-3
                and abs(p.origin[2] - a[1]) < 2e-3 and abs(p.e2[1] - 1.0) < 1e-9):
            q.e1 = facing_axis(ox, oz)  # billboards keep facing the camera, as in single frames
        patches.append(q)
    instances = {}
    for iid, m in spec.instances.items():
        x, z = _to_robot(pose, m["x"], m["z"])
        instances[iid] = {**m, "x": round(x, 3), "z": round(z, 3)}
    first_free = max(spec.instances, default=0) + 1
    agents = []
    for ag in walk.agents:
        wx, wz = ag.at(t)
        x, z = _to_robot(pose, wx, wz)
        agents.append({"key": ag.key, "kind": ag.kind, "role": ag.role, "world_x": round(wx, 3),
                       "world_z": round(wz, 3), "x": round(x, 3), "z": round(z, 3)})
        if z < -1.0 or math.hypot(x, z) > 70:
            continue
        b = _Builder(np.random.default_rng([walk.seed, 31, ag.key]), 0.0, 1)
        b._next = first_free + 4 * ag.key  # stable instance ids across frames
        b.patches = []
        kw = {} if ag.kind == "person" else {"yaw": ag.yaw + yaw}
        patches += _make(b, ag.kind, x, z, **kw)
        instances.update(b.instances)
    L = spec.lighting
    lighting = replace(L, sun_dir=_rotate_vec(np.asarray(L.sun_dir, float), yaw))
    framed = replace(spec, index=i, patches=patches, instances=instances, lighting=lighting,
                     effect_seed=int(spec.effect_seed) + i)
    return framed, pose, agents


@dataclass
class SequenceReport:
    out: Path
    frames: int
    fps: float
    seconds: float
    video: Path
    index: Path
    scene_type: str
    hazard_flips: int


def sequence_name(seed: int) -> str:
    return f"walk{seed}"


def generate_sequence(out: str | Path, frames: int = 100, fps: float = 10.0, seed: int = 0,
                      resolution: str = "640x480", progress: bool = True, overwrite: bool = False,
                      params: TaskParams | None = None) -> SequenceReport:
    """Render the walk for ``seed`` under ``out`` (see the module docstring)."""
    try:
        w, h = parse_resolution(resolution)
    except ValueError as e:
        raise CeprError(str(e)) from None
    res = format_resolution(w, h)
    out = Path(out)
    man = out / "dataset.json"
    if out.exists() and any(out.iterdir()) and not overwrite:
        old = json.loads(man.read_text()) if man.exists() else {}
        raise CeprError(f"{out} exists and is not empty" + (f" (a {old.get('name', 'dataset')})" if old else "")
                        + ": pick another --out, or pass --overwrite")
    params = params or TaskParams()
    walk = plan_walk(seed, frames, fps)
    seq = sequence_name(seed)
    root = out / res
    root.mkdir(parents=True, exist_ok=True)
    video = root / f"{seq}.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*FOURCC), float(fps), (w, h))
    if not writer.isOpened():
        raise CeprError(f"OpenCV could not open a {FOURCC} video writer for {video} (codec missing in this build?)")
    bar = None
    if progress:
        bar = tqdm(total=frames, unit="frame", desc=f"walk {res}")
    t0 = time.perf_counter()
    hazards = []
    try:
        for i in range(frames):
            spec, pose, agents = frame_spec(walk, i)
            r = render_spec(spec, w, h, pose=pose)
            stem = f"{seq}_{i:06d}"
            bgr = cv2.cvtColor(r.rgb, cv2.COLOR_RGB2BGR)
            _write_png(root / f"rgb/test/{seq}/{stem}.png", bgr)
            _write_png(root / f"gtFine/test/{seq}/{stem}{LABEL_SUFFIX}.png", r.label)
            _write_png(root / f"viz/test/{seq}/{stem}.png", cv2.cvtColor(colorize(r.label), cv2.COLOR_RGB2BGR))
            depth_mm = np.clip(np.round(r.depth * 1000.0), 0, 65535).astype(np.uint16)
            _write_png(root / f"depth/test/{seq}/{stem}.png", depth_mm)
            depth_m = depth_mm.astype(np.float32) / 1000.0
            answers = answer_tasks(extract_objects(r.label, depth_m, r.camera, clearance=params.clearance), params)
            answers_gp = answer_tasks(extract_objects(r.label, None, r.camera, clearance=params.clearance), params)
            hazards.append(answers["path_hazard"])
            objects = _objects_record(r, spec)
            sidecar = {
                "synthetic": True, "generator": "cepr.data.synth.sequence", "sequence_version": SEQUENCE_VERSION,
                "cepr_version": __version__, "seed": seed, "index": i, "frame": stem, "split": "test",
                "sequence": seq, "resolution": res, "scene_type": spec.scene_type, "scenario": "walk",
                "time_s": round(i / fps, 6), "fps": fps,
                "robot_pose": {"x": round(pose[0], 4), "z": round(pose[1], 4),
                               "yaw_deg": round(math.degrees(pose[2]), 3)},
                "agents": agents,
                "camera": r.camera.to_dict(),
                "depth": {"unit": "mm", "kind": "z-depth along the optical axis", "no_return": 0, "max_m": 65.535},
                "conditions": {k: (round(v, 4) if isinstance(v, float) else v)
                               for k, v in vars(spec.conditions).items()},
                "difficulty": _difficulty(spec, objects, w, h),
                "objects": objects,
                "task_params": params.to_dict(),
                "answers": answers,
                "answers_ground_plane": answers_gp,
            }
            sc = root / f"annotations/test/{seq}/{stem}.json"
            sc.parent.mkdir(parents=True, exist_ok=True)
            sc.write_text(json.dumps(sidecar, indent=1))
            writer.write(bgr)
            if bar:
                bar.update()
    finally:
        writer.release()
        if bar:
            bar.close()
    seconds = time.perf_counter() - t0
    # only the test index: empty train/val indexes would read as broken to `cepr datasets check`
    lines = [f"rgb/test/{seq}/{seq}_{i:06d}.png gtFine/test/{seq}/{seq}_{i:06d}{LABEL_SUFFIX}.png"
             for i in range(frames)]
    (root / "test-index.txt").write_text("\n".join(lines) + "\n")
    counts = {"test": frames}
    flips = sum(a != b for a, b in itertools.pairwise(hazards))
    manifest = {
        "name": "cloud-robotics-synth-sequence", "synthetic": True,
        "description": "A continuous synthetic walk (moving camera, people and vehicles) in the Cloud-Robotics "
                       "layout, generated by cepr (not real camera data).",
        "sequence_version": SEQUENCE_VERSION, "cepr_version": __version__, "seed": seed, "frames": frames,
        "resolutions": [res], "split_counts": counts,
        "sequence": {"name": seq, "fps": fps, "frames": frames, "duration_s": round(frames / fps, 6),
                     "video": f"{res}/{video.name}", "fourcc": FOURCC, "index": f"{res}/test-index.txt",
                     "scene_type": spec.scene_type, "speed_m_s": round(walk.speed, 3),
                     "agents": len(walk.agents), "path_hazard_flips": flips},
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color), "group": c.group} for c in CLASSES],
        "task_params": params.to_dict(),
        "command": f"cepr datasets synth --sequence --out {out} --frames {frames} --fps {fps:g} --seed {seed} "
                   f"--resolution {res}",
    }
    man.write_text(json.dumps(manifest, indent=1))
    return SequenceReport(out, frames, fps, seconds, video, root / "test-index.txt", spec.scene_type, flips)


def load_sequence_info(path: str | Path) -> dict | None:
    """The ``sequence`` block of a sequence's dataset.json (``path``: its root or a resolution directory), or None."""
    p = Path(path)
    for cand in (p / "dataset.json", p.parent / "dataset.json"):
        if cand.is_file():
            doc = json.loads(cand.read_text())
            if "sequence" in doc:
                return {**doc["sequence"], "root": str(cand.parent)}
    return None
