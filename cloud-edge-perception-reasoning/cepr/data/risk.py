"""Risk summaries: one sentence on what is in or beside the robot's path, how far, and what to do; built from the
labels for training, and read back for scoring.

The truth (``risk_objects``) comes from the same objects the tasks use (``cepr.data.geometry``: the label mask's
components with depth or ground-plane footprints): an object counts when its footprint enters the corridor
within ``hazard_distance`` or a side band within ``near_side_distance``, the distances that make the ``action``
task slow down. Per class, the nearest such object's distance.

``risk_sentence`` writes varied sentences from those objects and the true action (the training targets);
``parse_reason`` reads any sentence back into the classes it names (each with the distance stated after it, if
any) and the action it states. It reads the reference expert's ``reason`` field as well as the VLM's sentences.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from cepr.data.classes import CLASSES
from cepr.data.geometry import OBJECT_CLASS_IDS, extract_objects
from cepr.data.tasks import TaskParams, camera_for

NAMES = tuple(CLASSES[i].name for i in OBJECT_CLASS_IDS)
ACTION_WORDS = {"stop": "stop", "slow": "slow down", "go": "go ahead", "avoid_left": "go round on the left",
                "avoid_right": "go round on the right"}
MAX_NAMED = 3  # a sentence names at most this many objects, the nearest first


@dataclass(frozen=True)
class RiskObject:
    name: str
    distance: float  # metres to where its footprint enters the corridor or a side band
    where: str  # "path", "left" or "right"


def risk_objects(objects, params: TaskParams | None = None) -> list[RiskObject]:
    """The objects in or beside the path (``cepr.data.geometry.SceneObject`` or the summary's objects), nearest
    first, one per class (its nearest)."""
    p = params or TaskParams()
    best: dict[str, RiskObject] = {}
    for o in objects:
        if o.class_id not in OBJECT_CLASS_IDS:
            continue
        b = o.profile(p.corridor_half_width, p.side_band_width)
        cands = [(b.centre, "path")] if b.centre <= p.hazard_distance else []
        cands += [(d, w) for d, w in ((b.left, "left"), (b.right, "right")) if d <= p.near_side_distance]
        if not cands:
            continue
        d, where = min(cands)
        name = CLASSES[o.class_id].name
        if name not in best or d < best[name].distance:
            best[name] = RiskObject(name, round(float(d), 2), where)
    return sorted(best.values(), key=lambda r: (r.distance, r.name))


@functools.lru_cache(maxsize=16384)
def _risk_truth_cached(label_path: str, params_key: tuple) -> tuple[RiskObject, ...]:
    from cepr.data.cloud_robotics import Frame, load_sample

    p = TaskParams(**dict(params_key))
    s = load_sample(Frame(label_path, label_path), rgb=False)
    h, w = s.label.shape
    objs = extract_objects(s.label, s.depth, camera_for(s.sidecar, w, h), clearance=p.clearance)
    return tuple(risk_objects(objs, p))


def risk_truth(label_path, params: TaskParams | None = None) -> list[RiskObject]:
    """The risk objects of the frame whose TrainIds label is ``label_path`` (its depth if present, else the ground
    plane with the frame's or the assumed camera). Cached per path."""
    p = params or TaskParams()
    return list(_risk_truth_cached(str(label_path), tuple(sorted(p.to_dict().items()))))


# ---- writing -------------------------------------------------------------------------------------------------

_WHERE = {"path": ("in the path", "ahead", "straight ahead"), "left": ("on the left", "to the left"),
          "right": ("on the right", "to the right")}


def _article(name: str) -> str:
    return "an" if name[0].lower() in "aeiou" else "a"


def risk_sentence(objs: list[RiskObject], action: str, variant: int = 0) -> str:
    """A one-sentence risk summary naming up to ``MAX_NAMED`` objects with their distances and the action;
    ``variant`` picks the wording (any int; training draws it at random)."""
    act = ACTION_WORDS[action]
    parts = []
    for k, o in enumerate(objs[:MAX_NAMED]):
        where = _WHERE[o.where][(variant + k) % len(_WHERE[o.where])]
        parts.append(f"{_article(o.name)} {o.name} {where} at {o.distance:.1f} m")
    if not parts:
        clear = ("Nothing in or beside the path", "The path is clear", "No obstacle near the path")
        return f"{clear[variant % 3]}; {act}."
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    form = variant % 3
    if form == 0:
        return f"{listed[0].upper()}{listed[1:]}; {act}."
    if form == 1:
        return f"{act[0].upper()}{act[1:]}: {listed}."
    return f"Near the path: {listed}. Best to {act}."


# ---- reading -------------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"\b(" + "|".join(re.escape(n).replace(r"\ ", r"[ _]") for n in
                                         sorted(NAMES, key=len, reverse=True)) + r")s?\b", re.IGNORECASE)
_DIST_RE = re.compile(r"(\d+(?:\.\d+)?)\s*m\b")
_ACTION_RES = (  # most specific first
    ("avoid_left", re.compile(r"avoid[_ ]left|(?:go|pass|steer) (?:round |around )?(?:on |to )?the left", re.IGNORECASE)),
    ("avoid_right", re.compile(r"avoid[_ ]right|(?:go|pass|steer) (?:round |around )?(?:on |to )?the right", re.IGNORECASE)),
    ("stop", re.compile(r"\bstop\b", re.IGNORECASE)),
    ("slow", re.compile(r"\bslow\b", re.IGNORECASE)),
    ("go", re.compile(r"\bgo ahead\b|\bkeep going\b|\bcarry on\b|\baction\s*=\s*go\b|\bgo\b", re.IGNORECASE)),
)


@dataclass(frozen=True)
class ParsedReason:
    mentions: dict[str, float | None]  # class name -> the distance stated after its first mention (or None)
    action: str | None


def parse_reason(text: str | None) -> ParsedReason:
    """The classes a sentence names (with the first distance stated before the next name) and its action."""
    text = text or ""
    hits = list(_NAME_RE.finditer(text))
    mentions: dict[str, float | None] = {}
    for k, m in enumerate(hits):
        name = next(n for n in NAMES if n.lower() == m.group(1).lower().replace("_", " "))
        end = hits[k + 1].start() if k + 1 < len(hits) else len(text)
        d = _DIST_RE.search(text, m.end(), end)
        if name not in mentions:
            mentions[name] = float(d.group(1)) if d else None
    action = next((a for a, rx in _ACTION_RES if rx.search(text)), None)
    return ParsedReason(mentions, action)
