"""The synthetic set: determinism, layout, resume, multi-resolution and agreement with the task functions."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cepr.data.cloud_robotics import CloudRoboticsDataset
from cepr.data.synth import generate_dataset
from cepr.data.synth.generate import frame_split
from cepr.data.tasks import answers_for_sample
from cepr.errors import CeprError


def _files(root: Path):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".json") and p.name != "dataset.json"}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "set"
    rep = generate_dataset(out, 6, seed=3, workers=1, progress=False)
    return out, rep


def test_layout_and_index_files(small_set):
    out, rep = small_set
    assert rep.generated == 6 and sum(rep.split_counts.values()) == 6
    root = out / "640x480"
    for kind in ("rgb", "gtFine", "viz", "depth", "annotations"):
        assert (root / kind).is_dir()
    lines = [line for s in ("train", "val", "test") for line in (root / f"{s}-index.txt").read_text().splitlines()]
    assert len(lines) == 6
    for line in lines:
        rgb, label = line.split()
        assert (root / rgb).is_file() and (root / label).is_file() and label.endswith("_TrainIds.png")
    man = json.loads((out / "dataset.json").read_text())
    assert man["synthetic"] is True and man["seed"] == 3 and len(man["classes"]) == 30


def test_files_are_well_formed(small_set):
    out, _ = small_set
    for sc in (out / "640x480" / "annotations").rglob("*.json"):
        d = json.loads(sc.read_text())
        assert d["synthetic"] is True
        stem = sc.stem
        split, seq = d["split"], d["sequence"]
        label = cv2.imread(str(out / "640x480" / "gtFine" / split / seq / f"{stem}_TrainIds.png"), cv2.IMREAD_UNCHANGED)
        depth = cv2.imread(str(out / "640x480" / "depth" / split / seq / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        rgb = cv2.imread(str(out / "640x480" / "rgb" / split / seq / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.shape == (480, 640) and label.max() < 30
        assert depth.dtype == np.uint16 and depth.shape == (480, 640)
        assert rgb.shape == (480, 640, 3)
        # sky has no depth return, everything else does (within the 65.5 m range)
        assert np.all(depth[label == 10] == 0)
        for o in d["objects"]:
            x, y, w, h = o["bbox"]
            assert np.any(label[y:y + h, x:x + w] == o["class_id"])
        assert d["camera"]["width"] == 640 and 0.4 < d["camera"]["mount_height"] < 0.65


def test_sidecar_answers_agree_with_task_functions(small_set):
    out, _ = small_set
    n = 0
    for split in ("train", "val", "test"):
        idx = out / "640x480" / f"{split}-index.txt"
        if not idx.read_text().strip():
            continue
        for s in CloudRoboticsDataset(idx):
            assert s.depth is not None and s.sidecar is not None
            assert answers_for_sample(s) == s.sidecar["answers"]
            assert answers_for_sample(s, use_depth=False) == s.sidecar["answers_ground_plane"]
            n += 1
    assert n == 6


def test_deterministic_whatever_the_frame_and_worker_count(small_set, tmp_path):
    out, _ = small_set
    again = tmp_path / "again"
    generate_dataset(again, 7, seed=3, workers=2, progress=False)
    a, b = _files(out), _files(again)
    assert set(a) <= set(b)
    for k in a:
        assert a[k] == b[k], k
    other = tmp_path / "other"
    generate_dataset(other, 2, seed=4, workers=1, progress=False)
    assert not set(_files(other)) & set(a)  # frame names carry the seed
    assert [frame_split(3, i) for i in range(4)] == ["train", "test", "val", "train"]


def test_resume_regenerates_only_missing_frames(tmp_path):
    out = tmp_path / "set"
    generate_dataset(out, 3, seed=5, workers=1, progress=False)
    sc = sorted((out / "640x480" / "annotations").rglob("*.json"))
    before = sc[1].read_bytes()
    sc[1].unlink()
    rep = generate_dataset(out, 3, seed=5, workers=1, progress=False)
    assert (rep.generated, rep.skipped) == (1, 2)
    assert sc[1].read_bytes() == before
    rep = generate_dataset(out, 4, seed=5, workers=1, progress=False)
    assert (rep.generated, rep.skipped) == (1, 3)


def test_refuses_foreign_or_mismatched_directories(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CeprError, match="not empty"):
        generate_dataset(foreign, 1, progress=False)
    out = tmp_path / "set"
    generate_dataset(out, 1, seed=1, workers=1, progress=False)
    with pytest.raises(CeprError, match="seed=1"):
        generate_dataset(out, 1, seed=2, workers=1, progress=False)
    with pytest.raises(CeprError, match="positive"):
        generate_dataset(tmp_path / "x", 0, progress=False)


def test_resolutions_render_the_same_scene(tmp_path):
    out = tmp_path / "set"
    generate_dataset(out, 2, seed=9, resolutions=["1280x760", "640x480"], workers=1, progress=False)
    ds = CloudRoboticsDataset(next(p for p in (out / "1280x760").glob("*-index.txt") if p.read_text().strip()))
    frame = ds.frames[0]
    low = frame.at_resolution("640x480")
    big = cv2.imread(str(frame.label_path), cv2.IMREAD_UNCHANGED)
    small = cv2.imread(str(low.label_path), cv2.IMREAD_UNCHANGED)
    assert big.shape == (760, 1280) and small.shape == (480, 640)
    down = cv2.resize(big, (640, 480), interpolation=cv2.INTER_NEAREST)
    assert (down == small).mean() > 0.95
    sc_big = json.loads(frame.sidecar_path.read_text())
    sc_small = json.loads(low.sidecar_path.read_text())
    assert sc_big["scenario"] == sc_small["scenario"] and sc_big["camera"]["fx"] == 2 * sc_small["camera"]["fx"]


@pytest.mark.slow
def test_500_frames_cover_all_classes_and_balance_tasks(tmp_path):
    from collections import Counter

    out = tmp_path / "set"
    # at 160x120 (about a tenth of the time at 640x480); every class still shows in the labels at this size
    generate_dataset(out, 500, seed=0, progress=False, resolutions=("160x120",))
    present = np.zeros(30, bool)
    answers = {}
    for sc in (out / "160x120" / "annotations").rglob("*.json"):
        d = json.loads(sc.read_text())
        lab = cv2.imread(str(out / "160x120" / "gtFine" / d["split"] / d["sequence"] / f"{sc.stem}_TrainIds.png"),
                         cv2.IMREAD_UNCHANGED)
        present[np.unique(lab)] = True
        for t, a in d["answers"].items():
            answers.setdefault(t, Counter())[a] += 1
    assert present.all(), f"absent classes: {np.nonzero(~present)[0].tolist()}"
    for t, c in answers.items():
        assert max(c.values()) / 500 < 0.75, (t, c)
        assert len(c) >= 2


def test_splits_render_only_those_frames(tmp_path):
    out = tmp_path / "set"
    rep = generate_dataset(out, 40, seed=3, workers=1, progress=False, splits=("test",), resolutions=["80x60"])
    wanted = [i for i in range(40) if frame_split(3, i) == "test"]
    assert rep.generated == len(wanted) == 6  # 3 test frames per 20-frame block
    assert rep.split_counts == {"train": 0, "val": 0, "test": 6}
    assert len((out / "80x60" / "test-index.txt").read_text().splitlines()) == 6
    assert "--splits test" in json.loads((out / "dataset.json").read_text())["command"]
    with pytest.raises(CeprError, match="unknown split"):
        generate_dataset(out, 40, seed=3, progress=False, splits=("tset",), resolutions=["80x60"])
