"""Task ground truth on hand-built masks: objects painted where the camera geometry says they stand."""

import numpy as np
import pytest

from cepr.data.camera import Camera
from cepr.data.classes import class_id
from cepr.data.tasks import TASK_NAMES, TASKS, TaskParams, compute_answers, get_task

CAM = Camera.assumed(640, 480)
ROAD, SKY = 0, 10


def empty_scene(cam=CAM):
    """Road below the horizon, sky above; depth from the ground plane (0 for sky)."""
    h, w = cam.height, cam.width
    v, u = np.mgrid[0:h, 0:w]
    _, _, t = cam.ground_points(u, v)
    label = np.where(np.isfinite(t), ROAD, SKY).astype(np.uint8)
    depth = np.where(np.isfinite(t), t, 0).astype(np.float32)
    return label, depth


def paint(label, depth, cls, x, z, width=0.5, height=1.7, y0=0.0, cam=CAM):
    """A camera-facing rectangle standing at lateral x, forward z (metres), like a person or a bin."""
    corners = np.array([[x - width / 2, y0, z], [x + width / 2, y0 + height, z]])
    u, v, _ = cam.project(corners)
    u0, u1 = int(np.floor(min(u))), int(np.ceil(max(u)))
    v0, v1 = int(np.floor(min(v))), int(np.ceil(max(v)))
    u0, v0 = max(u0, 0), max(v0, 0)
    u1, v1 = min(u1, cam.width), min(v1, cam.height)
    assert u0 < u1 and v0 < v1, "painted object is outside the image"
    label[v0:v1, u0:u1] = cls
    # z-depth of a vertical plane at forward distance z seen by a pitched camera varies with the row
    vv, uu = np.mgrid[v0:v1, u0:u1]
    rays = cam.pixel_rays(uu, vv)
    depth[v0:v1, u0:u1] = (z / rays[..., 2]).astype(np.float32)
    return label, depth


def both(label, depth, **kw):
    """Answers with depth and with ground-plane distance; the hand-built scenes must agree."""
    a = compute_answers(label, depth, CAM, **kw)
    b = compute_answers(label, None, CAM, **kw)
    return a, b


def test_empty_scene_is_clear():
    label, depth = empty_scene()
    for ans in both(label, depth):
        assert ans == {"path_hazard": "no", "action": "go", "people_count": "0", "nearest_obstacle": "none",
                       "traversable": "yes"}


@pytest.mark.parametrize("z,expected_action,hazard", [(1.8, "stop", "yes"), (4.0, "slow", "yes"), (8.0, "go", "no")])
def test_person_in_path_by_distance(z, expected_action, hazard):
    label, depth = paint(*empty_scene(), class_id("person"), 0.1, z)
    for ans in both(label, depth):
        assert ans["action"] == expected_action
        assert ans["path_hazard"] == hazard
        assert ans["people_count"] == "1"
        assert ans["nearest_obstacle"] == "person"
        assert ans["traversable"] == ("no" if z <= 3.0 else "yes")


def test_person_beside_corridor_means_slow_but_no_hazard():
    label, depth = paint(*empty_scene(), class_id("person"), 1.3, 2.0, width=0.4)
    for ans in both(label, depth):
        assert ans["path_hazard"] == "no"
        assert ans["action"] == "slow"
        assert ans["nearest_obstacle"] == "none"


@pytest.mark.parametrize("x,expected", [(0.2, "avoid_left"), (-0.2, "avoid_right")])
def test_static_obstacle_is_avoided_on_the_far_side(x, expected):
    label, depth = paint(*empty_scene(), class_id("dustbin"), x, 2.5, width=0.6, height=0.9)
    for ans in both(label, depth):
        assert ans["action"] == expected
        assert ans["nearest_obstacle"] == "dustbin"
        assert ans["traversable"] == "no"
        assert ans["path_hazard"] == "no"


def test_static_obstacle_with_one_side_blocked_goes_round_the_other():
    label, depth = paint(*empty_scene(), class_id("dustbin"), 0.2, 2.5, width=0.6, height=0.9)
    label, depth = paint(label, depth, class_id("wall"), -1.3, 2.5, width=0.8, height=1.2)
    for ans in both(label, depth):
        assert ans["action"] == "avoid_right"


def test_blocked_on_both_sides_means_stop():
    label, depth = paint(*empty_scene(), class_id("dustbin"), 0.0, 2.5, width=0.6, height=0.9)
    label, depth = paint(label, depth, class_id("wall"), -1.3, 2.4, width=0.8, height=1.2)
    label, depth = paint(label, depth, class_id("flowerbed"), 1.3, 2.4, width=0.8, height=0.4)
    for ans in both(label, depth):
        assert ans["action"] == "stop"


def test_person_near_beats_static_obstacle():
    label, depth = paint(*empty_scene(), class_id("pole"), 0.0, 3.5, width=0.15, height=4.0)
    label, depth = paint(label, depth, class_id("person"), 0.0, 2.0)
    for ans in both(label, depth):
        assert ans["action"] == "stop"
        assert ans["nearest_obstacle"] == "person"


def test_nearest_obstacle_picks_the_closest_in_the_corridor():
    label, depth = paint(*empty_scene(), class_id("car"), -0.5, 8.0, width=1.0, height=1.4)
    label, depth = paint(label, depth, class_id("hydrant"), 0.5, 5.0, width=0.3, height=0.7)
    label, depth = paint(label, depth, class_id("pole"), 2.5, 3.0, width=0.15, height=4.0)  # outside the corridor
    for ans in both(label, depth):
        assert ans["nearest_obstacle"] == "hydrant"
        assert ans["action"] == "go"
        assert ans["path_hazard"] == "no"


@pytest.mark.parametrize("n,expected", [(0, "0"), (1, "1"), (2, "2"), (3, "3+"), (5, "3+")])
def test_people_count(n, expected):
    label, depth = empty_scene()
    for k in range(n):
        label, depth = paint(label, depth, class_id("person"), -4.0 + 2.0 * k, 9.0 + k, width=0.5)
    # a person beyond people_distance is not counted
    label, depth = paint(label, depth, class_id("person"), 3.0, 30.0, width=0.6, height=1.8)
    for ans in both(label, depth):
        assert ans["people_count"] == expected


def test_riders_count_as_people_and_vehicles_as_hazards():
    label, depth = paint(*empty_scene(), class_id("bicycle"), 0.0, 4.0, width=1.0, height=1.0)
    label, depth = paint(label, depth, class_id("rider"), 0.0, 4.0, width=0.5, height=1.0, y0=0.8)
    for ans in both(label, depth):
        assert ans["path_hazard"] == "yes"
        assert ans["people_count"] == "1"
        assert ans["nearest_obstacle"] == "bicycle"


def test_overhanging_object_is_no_obstacle_with_depth():
    # a sign plate 1.6 m up, straight ahead: with depth we know it hangs above the robot
    label, depth = paint(*empty_scene(), class_id("traffic sign"), 0.0, 4.0, width=0.6, height=0.4, y0=1.6)
    ans = compute_answers(label, depth, CAM)
    assert ans["traversable"] == "yes" and ans["nearest_obstacle"] == "none"
    # the same plate on its pole: the pole blocks, and without depth the plate is placed at the pole's foot
    label, depth = paint(label, depth, class_id("pole"), 0.0, 4.0, width=0.1, height=1.6)
    for ans in both(label, depth):
        assert ans["nearest_obstacle"] == "pole"
    from cepr.data.geometry import extract_objects
    sign = [o for o in extract_objects(label, None, CAM) if o.name == "traffic sign"]
    assert len(sign) == 1 and abs(sign[0].distance - 4.0) < 0.2


def test_specks_below_min_area_are_ignored():
    label, depth = empty_scene()
    label[400:402, 318:321] = class_id("person")  # 6 pixels
    for ans in both(label, depth):
        assert ans["people_count"] == "0" and ans["action"] == "go"


def test_params_change_the_answer():
    label, depth = paint(*empty_scene(), class_id("person"), 0.0, 4.0)
    assert compute_answers(label, depth, CAM)["path_hazard"] == "yes"
    assert compute_answers(label, depth, CAM, params=TaskParams(hazard_distance=3.0))["path_hazard"] == "no"


def test_answers_are_always_in_the_answer_set():
    rng = np.random.default_rng(0)
    for _ in range(20):
        label, depth = empty_scene()
        for _k in range(int(rng.integers(0, 6))):
            label, depth = paint(label, depth, int(rng.integers(2, 30)), rng.uniform(-3, 3), rng.uniform(1, 15),
                                 width=rng.uniform(0.2, 2), height=rng.uniform(0.3, 3))
        for ans in both(label, depth):
            for t, a in ans.items():
                assert a in TASKS[t].answers, (t, a)


def test_task_registry_prompts_and_hints():
    assert set(TASK_NAMES) == {"path_hazard", "action", "people_count", "nearest_obstacle", "traversable"}
    for t in TASKS.values():
        text = t.render_prompt()
        assert "{" not in text and len(t.answers) >= 2
    assert "6 m" in TASKS["path_hazard"].render_prompt()
    with pytest.raises(KeyError, match="did you mean 'path_hazard'"):
        get_task("path_hazrd")


def test_label_without_camera_uses_assumed_camera_at_any_resolution():
    big = Camera.assumed(2048, 1024)
    label, _ = paint(*empty_scene(big), class_id("person"), 0.0, 2.0, cam=big)
    assert compute_answers(label, None)["action"] == "stop"


def test_ground_plane_mode_places_an_occluded_object_at_the_occluders_foot():
    # a car at 8 m seen above a hydrant at 5 m: depth knows the car is far; the ground plane cannot and
    # conservatively puts it at the hydrant's contact row, so without depth the robot slows down
    label, depth = paint(*empty_scene(), class_id("car"), 0.0, 8.0, width=1.8, height=1.4)
    label, depth = paint(label, depth, class_id("hydrant"), 0.3, 5.0, width=0.3, height=0.7)
    with_depth, ground_plane = both(label, depth)
    assert with_depth["action"] == "go" and ground_plane["action"] == "slow"
    assert with_depth["nearest_obstacle"] == ground_plane["nearest_obstacle"] == "hydrant"
