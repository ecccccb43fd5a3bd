"""`cepr datasets synth --sequence`: a continuous walk in the Cloud-Robotics layout plus an mp4 video."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from cepr.data.cloud_robotics import CloudRoboticsDataset
from cepr.data.synth.sequence import frame_spec, generate_sequence, load_sequence_info, plan_walk
from cepr.errors import CeprError

FRAMES, FPS = 60, 5.0


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    out = tmp_path_factory.mktemp("walk") / "walk0"
    subprocess.run([sys.executable, "-m", "cepr", "datasets", "synth", "--sequence", "--out", str(out), "--frames",
                    str(FRAMES), "--fps", str(FPS), "--seed", "0", "--resolution", "160x120", "--no-progress"],
                   check=True, capture_output=True, text=True, timeout=300)
    return out


def _sidecars(walk):
    ds = CloudRoboticsDataset(walk / "160x120" / "test-index.txt")
    return ds, [s.sidecar for s in ds]


def test_index_loads_in_frame_order_with_ground_truth(walk):
    ds, sidecars = _sidecars(walk)
    assert len(ds) == FRAMES
    assert [sc["index"] for sc in sidecars] == list(range(FRAMES))
    assert [sc["time_s"] for sc in sidecars] == pytest.approx([i / FPS for i in range(FRAMES)])
    s = ds[0]
    assert s.rgb.shape == (120, 160, 3) and s.label.shape == (120, 160) and s.depth is not None
    assert set(sidecars[0]["answers"]) >= {"path_hazard", "action", "people_count"}
    info = load_sequence_info(walk)
    assert info["frames"] == FRAMES and info["fps"] == FPS and info["fourcc"] == "mp4v"


def test_ground_truth_changes_over_the_walk(walk):
    _, sidecars = _sidecars(walk)
    hazard = [sc["answers"]["path_hazard"] for sc in sidecars]
    assert sum(a != b for a, b in itertools.pairwise(hazard)) >= 1, hazard
    assert len({sc["answers"]["action"] for sc in sidecars}) >= 2


def test_camera_and_agents_move_smoothly(walk):
    _, sidecars = _sidecars(walk)
    poses = [sc["robot_pose"] for sc in sidecars]
    steps = [math.hypot(b["x"] - a["x"], b["z"] - a["z"]) for a, b in itertools.pairwise(poses)]
    assert all(0 < d <= 1.5 / FPS for d in steps), steps  # walking, at most 1.5 m/s
    yaw = [p["yaw_deg"] for p in poses]
    assert max(yaw) - min(yaw) > 1.0  # the slight yaw is there
    assert max(abs(b - a) for a, b in itertools.pairwise(yaw)) < 5.0
    moved = 0
    for a, b in itertools.pairwise(sidecars):
        pa = {g["key"]: g for g in a["agents"]}
        for g in b["agents"]:
            d = math.hypot(g["world_x"] - pa[g["key"]]["world_x"], g["world_z"] - pa[g["key"]]["world_z"])
            assert d <= 6.0 / FPS + 1e-6, (g, d)  # the fastest vehicle drives 6 m/s
            moved += d > 0
    assert moved > 0


def test_consecutive_frames_similar_not_identical(walk):
    ds, _ = _sidecars(walk)
    imgs = [ds[i].rgb.astype(np.float32) for i in range(12)]
    cons = [np.abs(b - a).mean() for a, b in itertools.pairwise(imgs)]
    far = np.abs(ds[FRAMES - 1].rgb.astype(np.float32) - imgs[0]).mean()
    assert all(c > 0.5 for c in cons), cons  # not identical
    assert np.mean(cons) < far, (cons, far)  # closer to the next frame than to the end of the walk
    labels = [ds[i].label for i in range(12)]
    same = [np.mean(a == b) for a, b in itertools.pairwise(labels)]
    assert all(0.6 < s < 1.0 for s in same), same


def test_video_decodes_to_the_same_frames(walk):
    info = load_sequence_info(walk)
    cap = cv2.VideoCapture(str(walk / info["video"]))
    assert cap.isOpened()
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    ds, _ = _sidecars(walk)
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (120, 160, 3)
        if n in (0, FRAMES // 2):  # lossy, but the same picture
            png = cv2.cvtColor(ds[n].rgb, cv2.COLOR_RGB2BGR).astype(np.float32)
            assert np.abs(frame.astype(np.float32) - png).mean() < 12
        n += 1
    cap.release()
    assert n == FRAMES


def test_deterministic_by_seed(tmp_path):
    a = generate_sequence(tmp_path / "a", frames=3, fps=2, seed=5, resolution="64x48", progress=False)
    b = generate_sequence(tmp_path / "b", frames=3, fps=2, seed=5, resolution="64x48", progress=False)
    for i in range(3):
        pa = f"rgb/test/walk5/walk5_{i:06d}.png"
        assert (a.out / "64x48" / pa).read_bytes() == (b.out / "64x48" / pa).read_bytes()
    c = plan_walk(6, 3, 2)
    assert frame_spec(c, 0)[0].scene_type != "" and json.loads((a.out / "dataset.json").read_text())["seed"] == 5


def test_refuses_a_non_empty_folder_and_bad_options(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    with pytest.raises(CeprError, match="not empty"):
        generate_sequence(tmp_path / "x", frames=3, fps=2, resolution="64x48", progress=False)
    with pytest.raises(CeprError, match="at least 2"):
        generate_sequence(tmp_path / "y", frames=1, fps=2, resolution="64x48", progress=False)
