"""The 30-class Cloud-Robotics label set: ids (TrainIds), names, viz colours and groups.

Ids and names follow the Ianvs Cloud-Robotics dataset; the seven groups are the dataset's own partition
(flat, human, vehicle, construction, object, nature, sky). Colours 0-18 are the Cityscapes palette the
dataset's ``viz`` maps use for those classes; 19-29 are our own distinct choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_ID = 255


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: tuple[int, int, int]  # RGB
    group: str


CLASSES: tuple[ClassInfo, ...] = (
    ClassInfo(0, "road", (128, 64, 128), "flat"),
    ClassInfo(1, "sidewalk", (244, 35, 232), "flat"),
    ClassInfo(2, "building", (70, 70, 70), "construction"),
    ClassInfo(3, "wall", (102, 102, 156), "construction"),
    ClassInfo(4, "fence", (190, 153, 153), "construction"),
    ClassInfo(5, "pole", (153, 153, 153), "object"),
    ClassInfo(6, "traffic light", (250, 170, 30), "object"),
    ClassInfo(7, "traffic sign", (220, 220, 0), "object"),
    ClassInfo(8, "vegetation", (107, 142, 35), "nature"),
    ClassInfo(9, "terrain", (152, 251, 152), "nature"),
    ClassInfo(10, "sky", (70, 130, 180), "sky"),
    ClassInfo(11, "person", (220, 20, 60), "human"),
    ClassInfo(12, "rider", (255, 0, 0), "human"),
    ClassInfo(13, "car", (0, 0, 142), "vehicle"),
    ClassInfo(14, "truck", (0, 0, 70), "vehicle"),
    ClassInfo(15, "bus", (0, 60, 100), "vehicle"),
    ClassInfo(16, "train", (0, 80, 100), "vehicle"),
    ClassInfo(17, "motorcycle", (0, 0, 230), "vehicle"),
    ClassInfo(18, "bicycle", (119, 11, 32), "vehicle"),
    ClassInfo(19, "stair", (255, 170, 255), "construction"),
    ClassInfo(20, "curb", (170, 110, 40), "construction"),
    ClassInfo(21, "ramp", (255, 120, 0), "flat"),
    ClassInfo(22, "runway", (80, 200, 200), "flat"),
    ClassInfo(23, "flowerbed", (220, 120, 200), "construction"),
    ClassInfo(24, "door", (120, 60, 30), "construction"),
    ClassInfo(25, "CCTV camera", (0, 255, 255), "object"),
    ClassInfo(26, "manhole", (90, 90, 30), "object"),
    ClassInfo(27, "hydrant", (255, 255, 128), "object"),
    ClassInfo(28, "belt", (40, 40, 200), "object"),
    ClassInfo(29, "dustbin", (0, 130, 60), "object"),
)

NUM_CLASSES = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
GROUPS: tuple[str, ...] = ("flat", "human", "vehicle", "construction", "object", "nature", "sky")

_BY_NAME = {c.name.lower(): c for c in CLASSES}


def class_id(name: str) -> int:
    """Id for a class name (case-insensitive); raises KeyError with the valid names."""
    try:
        return _BY_NAME[name.lower()].id
    except KeyError:
        raise KeyError(f"unknown class name {name!r}; valid names: {', '.join(CLASS_NAMES)}") from None


def ids_in_group(*groups: str) -> tuple[int, ...]:
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise KeyError(f"unknown group(s) {sorted(unknown)}; valid groups: {', '.join(GROUPS)}")
    return tuple(c.id for c in CLASSES if c.group in groups)


# Semantic sets the tasks and the planner share. "Walkable" is ground a quadruped walks over in its normal
# gait: a curb is a step it takes in stride; stairs (a climbing gait) and flowerbeds are not walkable.
HUMAN_IDS = ids_in_group("human")
VEHICLE_IDS = ids_in_group("vehicle")
DYNAMIC_IDS = HUMAN_IDS + VEHICLE_IDS  # person, rider, car, truck, bus, train, motorcycle, bicycle
WALKABLE_IDS = (0, 1, 9, 20, 21, 22, 26)  # road, sidewalk, terrain, curb, ramp, runway, manhole
NON_OBSTACLE_IDS = WALKABLE_IDS + (10,)  # + sky
OBSTACLE_IDS = tuple(c.id for c in CLASSES if c.id not in NON_OBSTACLE_IDS)


def palette() -> np.ndarray:
    """(256, 3) uint8 RGB lookup table: class colours, black for ignore and unused ids."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for c in CLASSES:
        lut[c.id] = c.color
    return lut


def colorize(label: np.ndarray) -> np.ndarray:
    """Label map (H, W) of TrainIds -> RGB viz image (H, W, 3) uint8."""
    return palette()[np.minimum(label, 255).astype(np.intp, copy=False)]
