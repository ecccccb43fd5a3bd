"""Dataset checker and class statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cepr.data.check import CheckReport, check_dataset, class_pixel_frequencies, class_statistics
from cepr.data.classes import NUM_CLASSES
from cepr.data.cloud_robotics import CloudRoboticsDataset, read_index
from cepr.errors import DatasetError
from helpers import PERSON, SKY, frame_rel, make_label, make_rgb, make_tiny_dataset, write_gray, write_rgb


def _has(lines: list[str], *parts: str) -> bool:
    return any(all(p in line for p in parts) for line in lines)


# ---- check_dataset -----------------------------------------------------------------------------------


def test_clean_dataset_passes(tiny: Path):
    report = check_dataset(tiny, progress=False)
    assert isinstance(report, CheckReport)
    assert report.ok, report.summary()
    assert report.problems == [] and report.warnings == []
    assert report.frames_checked == 2 * 3 * 3  # resolutions x splits x frames
    assert report.resolutions == ["64x48", "32x24"]
    assert report.summary().startswith("OK:")


def test_clean_dataset_real_size_and_no_depth(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", n=1, depth=False, sidecar=False)  # 640x480, like the real set
    report = check_dataset(root, progress=False)
    assert report.ok, report.summary()
    assert report.frames_checked == 3


def test_resolution_dir_and_index_file_targets(tiny: Path):
    r = check_dataset(tiny / "32x24", progress=False)
    assert r.ok and r.frames_checked == 9 and r.resolutions == ["32x24"]
    r = check_dataset(tiny / "32x24" / "val-index.txt", progress=False)
    assert r.ok and r.frames_checked == 3


def test_many_problems_reported_at_once(tiny: Path):
    hi, lo = tiny / "64x48", tiny / "32x24"
    # 1 corrupt rgb
    (hi / frame_rel("test", "test000")).write_bytes(np.random.default_rng(1).bytes(500))
    # 2 missing label
    (hi / frame_rel("test", "test001", "gtFine")).unlink()
    # 3 colour label
    write_rgb(hi / frame_rel("test", "test002", "gtFine"), make_rgb(64, 48, 2))
    # 4 rgb and label both at the wrong size for the directory (consistent with each other)
    write_rgb(hi / frame_rel("train", "train000"), make_rgb(32, 24, 0))
    write_gray(hi / frame_rel("train", "train000", "gtFine"), make_label(32, 24, 0))
    write_gray(hi / frame_rel("train", "train000", "depth"), np.ones((24, 32), np.uint16))
    # 5 label with an unknown id
    bad = make_label(64, 48, 1)
    bad[0, :7] = 77
    write_gray(hi / frame_rel("train", "train001", "gtFine"), bad)
    # 6 bad sidecar JSON
    (hi / frame_rel("train", "train002", "annotations")).write_text("{not json")
    # 7 uint8 depth
    write_gray(hi / frame_rel("val", "val000", "depth"), np.ones((48, 64), np.uint8))
    # 8 rgb / label size mismatch
    write_gray(hi / frame_rel("val", "val001", "gtFine"), make_label(32, 24, 1))
    # 9 missing test index in the other resolution (problem), missing val index (warning)
    (lo / "test-index.txt").unlink()
    (lo / "val-index.txt").unlink()
    # 10 a malformed line in an index
    with open(lo / "train-index.txt", "a") as f:
        f.write("just-one-column.png\n")

    report = check_dataset(tiny, progress=False)
    assert not report.ok
    p = report.problems
    assert _has(p, "test-index.txt:1", "cannot decode rgb file", "test000.png")
    assert _has(p, "test-index.txt:2", "missing label", "test001_TrainIds.png")
    assert _has(p, "test-index.txt:3", "colour viz")
    assert _has(p, "train-index.txt:1", "rgb 32x24", "label 32x24", "depth 32x24", "64x48")
    assert _has(p, "train-index.txt:2", "77 (7 px)")
    assert _has(p, "train-index.txt:3", "train002.json", "not valid JSON")
    assert _has(p, "val-index.txt:1", "val000.png", "uint8", "uint16")
    assert _has(p, "val-index.txt:2", "size mismatch: rgb 64x48 vs label 32x24")
    assert _has(p, str(lo), "missing test-index.txt")
    assert _has(p, "train-index.txt:4", "one column")
    assert _has(report.warnings, str(lo), "no val-index.txt", "3 frame(s) sit under rgb/val/")
    # frames whose index went away are on disk but listed nowhere
    assert _has(report.warnings, "test000.png", "listed in no index")
    assert not _has(p, "val-index.txt:3")  # the untouched frame is fine
    assert report.summary().startswith("FAILED:")
    assert report.frames_checked == 9 + 3  # 64x48 all splits + 32x24 train


def test_problem_lists_capped_per_kind(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", resolutions=("16x12",), n=30, depth=False, sidecar=False,
                             splits=("test",))
    for k in range(30):
        (root / "16x12" / frame_rel("test", f"test{k:03d}", "gtFine")).unlink()
    write_gray(root / "16x12" / frame_rel("test", "test000", "gtFine"), np.full((12, 16), 99, np.uint8))
    report = check_dataset(root, progress=False)
    assert report.problem_counts["missing-file"] == 29
    missing_lines = [x for x in report.problems if "missing label" in x]
    assert len(missing_lines) == 20
    assert "... and 9 more (missing-file)" in report.problems
    assert _has(report.problems, "99 (192 px)")  # other kinds are still listed
    assert _has(report.warnings, "no train-index.txt")
    assert not _has(report.warnings, "val-index.txt")  # no val split at all (as in the real release): no warning


def test_max_frames_subsamples_but_still_finds_missing_files(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", resolutions=("16x12",), n=6, depth=False, sidecar=False)
    (root / "16x12" / frame_rel("test", "test003")).unlink()
    report = check_dataset(root, max_frames=2, progress=False)
    assert report.frames_checked == 3 * 2
    assert _has(report.problems, "test-index.txt:4", "missing rgb")
    corrupt = root / "16x12" / frame_rel("val", "val005")  # the last frame is always in the subset
    corrupt.write_bytes(b"junk")
    assert _has(check_dataset(root, max_frames=2, progress=False).problems, "val005.png")


def test_unindexed_duplicate_and_overlap_warnings(tiny: Path):
    hi = tiny / "64x48"
    write_rgb(hi / "rgb/test/seq0/stray.png", make_rgb(64, 48, 0))
    lines = (hi / "train-index.txt").read_text().splitlines()
    test_first = (hi / "test-index.txt").read_text().splitlines()[0]
    (hi / "train-index.txt").write_text("\n".join([*lines, lines[0], test_first]) + "\n")
    report = check_dataset(tiny, progress=False)
    assert report.ok, report.summary()  # warnings only
    w = report.warnings
    assert _has(w, "stray.png", "listed in no index")
    assert _has(w, "train-index.txt:4", "listed more than once")
    assert _has(w, "test000.png", "in both the train and the test index")


def test_partial_depth_warning(tiny: Path):
    (tiny / "32x24" / frame_rel("val", "val001", "depth")).unlink()
    report = check_dataset(tiny / "32x24", progress=False)
    assert report.ok
    assert _has(report.warnings, "depth present for only 8 of 9")


def test_bad_paths(tmp_path: Path):
    r = check_dataset(tmp_path / "nope", progress=False)
    assert not r.ok and _has(r.problems, "not found")
    (tmp_path / "empty").mkdir()
    r = check_dataset(tmp_path / "empty", progress=False)
    assert not r.ok and _has(r.problems, "no <W>x<H> resolution directories")
    (tmp_path / "r" / "64x48").mkdir(parents=True)
    r = check_dataset(tmp_path / "r", progress=False)
    assert _has(r.problems, "missing test-index.txt")


def test_empty_index_is_a_problem(tiny: Path):
    (tiny / "32x24" / "test-index.txt").write_text("# nothing\n")
    r = check_dataset(tiny / "32x24", progress=False)
    assert _has(r.problems, "test-index.txt has no entries")
    assert _has(r.warnings, "listed in no index")


def test_uint16_labels_accepted(tiny: Path):
    p = tiny / "32x24" / frame_rel("test", "test000", "gtFine")
    write_gray(p, make_label(32, 24, 0).astype(np.uint16))
    assert check_dataset(tiny / "32x24", progress=False).ok


def test_progress_enabled_does_not_break(tiny: Path):
    assert check_dataset(tiny / "32x24", progress=True).ok


# ---- class statistics --------------------------------------------------------------------------------


def _expected_counts(w: int, h: int, ks: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
    pix = np.zeros(NUM_CLASSES, np.int64)
    pres = np.zeros(NUM_CLASSES, np.int64)
    ign = 0
    for k in ks:
        lab = make_label(w, h, k)
        c = np.bincount(lab.ravel(), minlength=256)
        pix += c[:NUM_CLASSES]
        pres += c[:NUM_CLASSES] > 0
        ign += int(c[255])
    return pix, pres, ign


def test_class_statistics_counts(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", resolutions=("64x48",), n=5, depth=False, sidecar=False,
                             splits=("test",))
    ds = CloudRoboticsDataset(root / "64x48" / "test-index.txt")
    stats = class_statistics(ds, progress=False)
    pix, pres, ign = _expected_counts(64, 48, list(range(5)))
    assert stats.frames == 5
    np.testing.assert_array_equal(stats.pixel_counts, pix)
    np.testing.assert_array_equal(stats.frame_counts, pres)
    assert stats.ignore_pixels == ign > 0
    assert stats.frame_counts[PERSON] == 3 and stats.frame_counts[SKY] == 5  # person in frames 0, 2, 4
    freq = class_pixel_frequencies(ds, progress=False)
    assert freq.shape == (NUM_CLASSES,)
    np.testing.assert_allclose(freq, pix / pix.sum())
    assert freq.sum() == pytest.approx(1.0)
    rows = stats.rows()
    assert rows[PERSON]["name"] == "person" and rows[PERSON]["frames"] == 3


def test_class_statistics_inputs_and_subsampling(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", resolutions=("32x24",), n=5, depth=False, sidecar=False,
                             splits=("test",))
    frames = read_index(root / "32x24" / "test-index.txt")
    by_path = class_statistics(root, progress=False)
    by_frames = class_statistics(frames, progress=False)
    np.testing.assert_array_equal(by_path.pixel_counts, by_frames.pixel_counts)
    sub = class_statistics(frames, max_frames=2, progress=False)  # evenly spaced: frames 0 and 4
    assert sub.frames == 2
    np.testing.assert_array_equal(sub.pixel_counts, _expected_counts(32, 24, [0, 4])[0])


def test_class_statistics_all_ignore_is_nan_with_warning(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", resolutions=("16x12",), n=1, depth=False, sidecar=False,
                             splits=("test",))
    write_gray(root / "16x12" / frame_rel("test", "test000", "gtFine"), np.full((12, 16), 255, np.uint8))
    with pytest.warns(RuntimeWarning, match="no labelled pixels"):
        freq = class_pixel_frequencies(root, progress=False)
    assert np.isnan(freq).all()


def test_class_statistics_bad_label_raises_naming_file(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", resolutions=("16x12",), n=1, depth=False, sidecar=False,
                             splits=("test",))
    p = root / "16x12" / frame_rel("test", "test000", "gtFine")
    write_gray(p, np.full((12, 16), 31, np.uint8))
    with pytest.raises(DatasetError, match=str(p.name)):
        class_statistics(root, progress=False)


def test_sidecar_json_is_parsed_in_check(tiny: Path):
    p = tiny / "32x24" / frame_rel("test", "test001", "annotations")
    p.write_text(json.dumps([1, 2]))
    r = check_dataset(tiny / "32x24", progress=False)
    assert _has(r.problems, "test001.json", "expected an object")


# ---- the real release's layout (2048x1024 + 640x480, uint16 labels, scene folders, no depth, no val, CRLF) -------


@pytest.fixture
def real_set(tmp_path: Path) -> Path:
    from real_layout import make_real_layout

    return make_real_layout(tmp_path / "Cloud-Robotics", n_test=3, n_train=2)


def test_real_layout_checks_clean_without_a_val_index(real_set: Path):
    report = check_dataset(real_set, progress=False)
    assert report.ok, report.summary()
    assert report.warnings == [], report.warnings  # no val index in the release: nothing to warn about
    assert report.resolutions == ["2048x1024", "640x480"]
    assert report.frames_checked == 2 * (3 + 2)
    assert (real_set / "640x480" / "test-index.txt").read_bytes().count(b"\r\n") == 3  # the CRLF index parsed


def test_real_layout_still_reports_real_problems(real_set: Path):
    hi, lo = real_set / "2048x1024", real_set / "640x480"
    (hi / "gtFine/test/20220420_garden/20220420_garden_000001_TrainIds.png").unlink()
    bad = make_label(640, 480, 0).astype(np.uint16)
    bad[0, :5] = 300  # an id a uint16 label can hold but no class has
    write_gray(lo / "gtFine/test/20220420_front/20220420_front_000000_TrainIds.png", bad)
    (hi / "train-index.txt").unlink()
    write_rgb(lo / "rgb/val/20220420_front/x.png", make_rgb(640, 480, 0))  # val frames without a val index
    report = check_dataset(real_set, progress=False)
    assert not report.ok
    assert _has(report.problems, "2048x1024", "test-index.txt:2", "missing label", "20220420_garden_000001")
    assert _has(report.problems, "640x480", "test-index.txt:1", "300 (5 px)")
    assert _has(report.warnings, str(hi), "no train-index.txt")
    assert _has(report.warnings, str(lo), "no val-index.txt", "1 frame(s) sit under rgb/val/")
    assert not _has(report.warnings, str(hi), "val-index.txt")


def test_real_layout_check_and_stats_through_the_cli(real_set: Path, capsys):
    from cepr.cli import main

    assert main(["datasets", "check", str(real_set), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "10 frame(s) checked, 0 warning(s): OK" in out and "warning:" not in out
    assert main(["datasets", "check", str(real_set / "640x480" / "test-index.txt"), "--no-progress"]) == 0
    capsys.readouterr()
    stats = real_set.parent / "stats.json"
    assert main(["datasets", "stats", str(real_set), "--split", "all", "--no-progress", "--json", str(stats)]) == 0
    out = capsys.readouterr().out
    assert "5 frame(s) from" in out and "640x480" in out  # the working size is picked at the root; no val split
    doc = json.loads(stats.read_text())
    assert doc["frames"] == 5 and doc["class_frames"]["person"] == 3  # even-numbered frames hold a person
    assert "sidecar cache" not in out and "ground-plane (no depth) vs depth" not in out  # no sidecar, no depth
