"""Closed-set questions about a frame, with ground truth computed from the label mask (+ depth).

The task functions are the source of truth. The synthetic set's sidecar caches their answers, and on that
set the two agree. Because they need nothing but a class mask (and depth, or a stated camera for ground-
plane distance), they also score the real Cloud-Robotics set.

The robot walks straight ahead along a *corridor* ``corridor_half_width`` metres either side of its axis.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from cepr.data.camera import Camera
from cepr.data.classes import CLASSES, DYNAMIC_IDS, HUMAN_IDS
from cepr.data.cloud_robotics import Frame, load_sample, load_sidecar
from cepr.data.geometry import OBJECT_CLASS_IDS, BandProfile, SceneObject, extract_objects
from cepr.errors import unknown


@dataclass(frozen=True)
class TaskParams:
    """Distances (metres) that define the questions; they appear in the prompts too."""

    corridor_half_width: float = 0.6  # robot ~0.5 m wide plus a margin each side
    side_band_width: float = 1.2  # lateral room checked beside the corridor when avoiding
    hazard_distance: float = 6.0  # path_hazard and "slow"
    stop_distance: float = 2.5  # a person or vehicle this close in the corridor: stop
    avoid_distance: float = 4.0  # a static obstacle this close in the corridor: go around it
    near_side_distance: float = 3.0  # a person or vehicle beside the corridor this close: slow
    traversable_distance: float = 3.0
    obstacle_distance: float = 10.0  # nearest_obstacle looks this far
    people_distance: float = 20.0  # people_count counts people this close
    clearance: float = 1.2  # footprint: object parts below this height block the robot

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Task:
    name: str
    prompt: str  # str.format template over TaskParams fields
    answers: tuple[str, ...]
    fn: Callable[[list, TaskParams], str]  # objects (SceneObject or summary objects) -> answer
    description: str = ""

    def render_prompt(self, params: TaskParams | None = None) -> str:
        return self.prompt.format(**(params or TaskParams()).to_dict())


# ---- helpers over the object list -------------------------------------------------------------------
# Objects are anything with ``class_id``, ``area``, ``bbox``, ``distance`` and ``profile(half, side)`` returning a
# ``BandProfile``: footprint-based ``SceneObject``s for ground truth, or the edge scene summary's objects.

def _prof(o, p: TaskParams) -> BandProfile:
    return o.profile(p.corridor_half_width, p.side_band_width)


def _dynamic(objs):
    return [o for o in objs if o.class_id in DYNAMIC_IDS]


def _static(objs):
    return [o for o in objs if o.class_id not in DYNAMIC_IDS]


# ---- the five tasks ---------------------------------------------------------------------------------

def path_hazard(objs, p: TaskParams) -> str:
    return "yes" if any(_prof(o, p).centre <= p.hazard_distance for o in _dynamic(objs)) else "no"


def action(objs, p: TaskParams) -> str:
    """stop > avoid_left/avoid_right > slow > go, decided from footprints in and beside the corridor."""
    if any(_prof(o, p).centre <= p.stop_distance for o in _dynamic(objs)):
        return "stop"
    blocking = [o for o in _static(objs) if _prof(o, p).centre <= p.avoid_distance]
    if blocking:
        # the sides must be free up to a metre past the nearest blocking object, and at least avoid_distance
        reach = max(p.avoid_distance, min(_prof(o, p).centre for o in blocking) + 1.0)
        left_free = not any(_prof(o, p).left <= reach for o in objs)
        right_free = not any(_prof(o, p).right <= reach for o in objs)
        if left_free and right_free:
            centre_x = float(np.mean([_prof(o, p).centre_x for o in blocking]))
            return "avoid_left" if centre_x >= 0 else "avoid_right"
        if left_free:
            return "avoid_left"
        if right_free:
            return "avoid_right"
        return "stop"
    dyn = [_prof(o, p) for o in _dynamic(objs)]
    if any(b.centre <= p.hazard_distance or b.nearest <= p.near_side_distance for b in dyn):
        return "slow"
    return "go"


def people_count(objs, p: TaskParams) -> str:
    n = sum(1 for o in objs if o.class_id in HUMAN_IDS and o.distance <= p.people_distance)
    return "3+" if n >= 3 else str(n)


def nearest_obstacle(objs, p: TaskParams) -> str:
    """Class of the object entering the corridor first.

    Ties within 5 cm (objects stacked in the image share a ground contact: a rider on a bike, a sign on a pole)
    go to the object reaching lowest in the image, the one that really stands there, then to the larger one.
    """
    cands = [(round(_prof(o, p).centre / 0.05), -(o.bbox[1] + o.bbox[3]), -o.area, o.class_id, o)
             for o in objs if _prof(o, p).centre <= p.obstacle_distance]
    return min(cands, key=lambda c: c[:4])[4].name if cands else "none"


def traversable(objs, p: TaskParams) -> str:
    return "no" if any(_prof(o, p).centre <= p.traversable_distance for o in objs) else "yes"


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("path_hazard",
         "Is there a person, rider or vehicle in the robot's path (straight ahead, {corridor_half_width:g} m "
         "either side of its axis) within {hazard_distance:g} m? Answer yes or no.",
         ("yes", "no"), path_hazard, "a person, rider or vehicle stands in the corridor within hazard_distance"),
    Task("action",
         "The robot is walking straight ahead. What should it do now? Answer one of: stop, slow, go, "
         "avoid_left, avoid_right.",
         ("stop", "slow", "go", "avoid_left", "avoid_right"), action,
         "stop: person/vehicle in the corridor within stop_distance, or blocked with no free side; "
         "avoid_*: static obstacle within avoid_distance, go round on the free side (both free: away from the "
         "obstacles' mean lateral position in the corridor); slow: person/vehicle in "
         "the corridor within hazard_distance or beside it within near_side_distance; go: otherwise"),
    Task("people_count",
         "How many people (pedestrians or riders) are within {people_distance:g} m of the robot? "
         "Answer 0, 1, 2 or 3+.",
         ("0", "1", "2", "3+"), people_count, "person and rider components within people_distance"),
    Task("nearest_obstacle",
         "What is the nearest obstacle in the robot's path (straight ahead, {corridor_half_width:g} m either "
         "side of its axis) within {obstacle_distance:g} m? Answer with one class name, or none.",
         ("none",) + tuple(CLASSES[i].name for i in OBJECT_CLASS_IDS), nearest_obstacle,
         "class of the object whose footprint enters the corridor first, within obstacle_distance"),
    Task("traversable",
         "Can the robot walk straight ahead for the next {traversable_distance:g} m without meeting an "
         "obstacle? Answer yes or no.",
         ("yes", "no"), traversable, "no object footprint in the corridor within traversable_distance"),
)}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(unknown("task", name, TASK_NAMES, listing="tasks")) from None


def answer_tasks(objects: list[SceneObject], params: TaskParams | None = None,
                 tasks: tuple[str, ...] = TASK_NAMES) -> dict[str, str]:
    p = params or TaskParams()
    return {name: get_task(name).fn(objects, p) for name in tasks}


def compute_answers(label: np.ndarray, depth: np.ndarray | None, camera: Camera | None = None,
                    params: TaskParams | None = None, tasks: tuple[str, ...] = TASK_NAMES) -> dict[str, str]:
    """Ground-truth answers for one frame. ``camera`` defaults to the assumed Cloud-Robotics camera."""
    p = params or TaskParams()
    h, w = label.shape
    cam = camera or Camera.assumed(w, h)
    objects = extract_objects(label, depth, cam, clearance=p.clearance)
    return answer_tasks(objects, p, tasks)


def camera_for(sidecar: dict | None, width: int, height: int) -> Camera:
    """The frame's own camera when its sidecar records one, else the assumed Cloud-Robotics camera."""
    if sidecar and isinstance(sidecar.get("camera"), dict):
        return Camera.from_dict(sidecar["camera"]).scaled(width, height)
    return Camera.assumed(width, height)


def answers_for_sample(sample, params: TaskParams | None = None, use_depth: bool = True) -> dict[str, str]:
    """Ground truth for a loaded ``cepr.data.cloud_robotics.Sample`` (label, optional depth and sidecar)."""
    h, w = sample.label.shape
    depth = sample.depth if use_depth else None
    return compute_answers(sample.label, depth, camera_for(sample.sidecar, w, h), params)


@functools.lru_cache(maxsize=65536)
def _ground_truth_cached(label_path: str, params_key: tuple) -> tuple:
    params = TaskParams(**dict(params_key))
    frame = Frame(label_path, label_path)  # only the label path is known (Ianvs gives metrics nothing else)
    sp = frame.sidecar_path
    if sp is not None:
        side = load_sidecar(sp)
        cached = side.get("answers")
        if isinstance(cached, dict) and side.get("task_params") == params.to_dict() \
                and set(TASK_NAMES) <= set(cached):
            return tuple(sorted(cached.items()))
    sample = load_sample(frame, rgb=False)
    return tuple(sorted(answers_for_sample(sample, params).items()))


def ground_truth(label_path, params: TaskParams | None = None) -> dict[str, str]:
    """Every task's true answer for the frame whose TrainIds label is ``label_path``.

    The sidecar's cached answers when it has them for these task parameters (synthetic set), else computed from
    the label mask (and the depth next to it, if any) with the frame's or the assumed camera. Cached per path."""
    p = params or TaskParams()
    return dict(_ground_truth_cached(str(label_path), tuple(sorted(p.to_dict().items()))))
