"""Cloud-Robotics reader: index parsing, loaders, frames across resolutions, index discovery."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cepr.data.cloud_robotics import (
    CloudRoboticsDataset,
    Frame,
    find_index,
    load_depth,
    load_label,
    load_rgb,
    load_sample,
    load_sidecar,
    read_index,
)
from cepr.errors import DatasetError
from helpers import (
    PERSON,
    frame_rel,
    make_depth,
    make_label,
    make_rgb,
    make_tiny_dataset,
    palette_png,
    write_gray,
    write_rgb,
)

# ---- read_index --------------------------------------------------------------------------------------


def test_read_index_relative_paths_resolve_against_index_dir(tiny_res: Path):
    frames = read_index(tiny_res / "test-index.txt")
    assert len(frames) == 3
    assert frames[0].rgb_path == (tiny_res / frame_rel("test", "test000")).absolute()
    assert frames[0].label_path == (tiny_res / frame_rel("test", "test000", "gtFine")).absolute()
    assert frames[2].stem == "test002"
    assert all(f.extra == () for f in frames)


def test_read_index_relative_paths_independent_of_cwd(tiny_res: Path, tmp_path: Path, monkeypatch):
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    frames = read_index(tiny_res / "val-index.txt")
    assert frames[1].rgb_path == (tiny_res / frame_rel("val", "val001")).absolute()
    assert frames[1].rgb_path.is_file()


def test_read_index_absolute_paths_kept(tiny_res: Path, tmp_path: Path):
    rgb = tiny_res / frame_rel("test", "test001")
    label = tiny_res / frame_rel("test", "test001", "gtFine")
    index = tmp_path / "other" / "my-index.txt"
    index.parent.mkdir()
    index.write_text(f"{rgb.absolute()} {label.absolute()}\n")
    (frame,) = read_index(index)
    assert frame.rgb_path == rgb.absolute()
    assert frame.label_path == label.absolute()


def test_read_index_extra_columns_comments_blank_lines_and_bom(tiny_res: Path):
    rgb0, lab0 = frame_rel("test", "test000"), frame_rel("test", "test000", "gtFine")
    rgb1, lab1 = frame_rel("test", "test001"), frame_rel("test", "test001", "gtFine")
    index = tiny_res / "custom-index.txt"
    index.write_text(f"\ufeff# header comment\n\n   \n{rgb0}\t{lab0}  yes 0.7\n  # indented comment\n"
                     f"{rgb1} {lab1}\n\n", encoding="utf-8")
    frames = read_index(index)
    assert [f.stem for f in frames] == ["test000", "test001"]
    assert frames[0].extra == ("yes", "0.7")
    assert frames[1].extra == ()


def test_read_index_missing_index(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"index file not found.*nope-index\.txt"):
        read_index(tmp_path / "nope-index.txt")


def test_read_index_empty(tmp_path: Path):
    index = tmp_path / "test-index.txt"
    index.write_text("# only a comment\n\n")
    with pytest.raises(DatasetError, match="no entries"):
        read_index(index)


def test_read_index_single_column_names_line(tiny_res: Path):
    index = tiny_res / "bad-index.txt"
    good = f"{frame_rel('test', 'test000')} {frame_rel('test', 'test000', 'gtFine')}"
    index.write_text(f"# c\n{good}\n{frame_rel('test', 'test001')}\n{good}\n")
    with pytest.raises(DatasetError) as ei:
        read_index(index)
    msg = str(ei.value)
    assert "bad-index.txt:3:" in msg and "one column" in msg and "test001.png" in msg


def test_read_index_missing_files_listed_with_lines_and_count(tiny_res: Path):
    (tiny_res / frame_rel("test", "test001")).unlink()
    (tiny_res / frame_rel("test", "test002", "gtFine")).unlink()
    with pytest.raises(DatasetError) as ei:
        read_index(tiny_res / "test-index.txt")
    msg = str(ei.value)
    assert "2 referenced file(s) missing" in msg
    assert "line 2:" in msg and "test001.png" in msg
    assert "line 3:" in msg and "test002_TrainIds.png" in msg
    assert "line 1:" not in msg
    # the check is optional
    assert len(read_index(tiny_res / "test-index.txt", check_files=False)) == 3


def test_read_index_many_missing_files_capped(tmp_path: Path):
    index = tmp_path / "test-index.txt"
    index.write_text("".join(f"rgb/test/a/{i}.png gtFine/test/a/{i}_TrainIds.png\n" for i in range(15)))
    with pytest.raises(DatasetError) as ei:
        read_index(index)
    msg = str(ei.value)
    assert "30 referenced file(s) missing" in msg
    assert "... and 20 more" in msg
    assert msg.count("line ") == 10


# ---- load_rgb ----------------------------------------------------------------------------------------


def test_load_rgb_returns_rgb_order(tmp_path: Path):
    bgr = np.zeros((6, 8, 3), np.uint8)
    bgr[:] = (10, 20, 30)  # B, G, R as cv2 stores them
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), bgr)
    rgb = load_rgb(path)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (30, 20, 10)


def test_load_rgb_round_trips_written_image(tmp_path: Path):
    img = make_rgb(40, 30, 1)
    write_rgb(tmp_path / "a.png", img)
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), img)


def test_load_rgb_jpeg(tmp_path: Path):
    img = np.zeros((32, 48, 3), np.uint8)
    img[:] = (200, 40, 90)  # RGB
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = load_rgb(path)
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 6


def test_load_rgb_grayscale_expanded(tmp_path: Path):
    gray = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8) * 5
    write_gray(tmp_path / "g.png", gray)
    out = load_rgb(tmp_path / "g.png")
    assert out.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_load_rgb_rgba_drops_alpha(tmp_path: Path):
    bgra = np.zeros((5, 7, 4), np.uint8)
    bgra[..., :3] = (1, 2, 3)
    bgra[..., 3] = 0  # fully transparent: must not blank the colour
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    out = load_rgb(tmp_path / "a.png")
    assert out.shape == (5, 7, 3)
    assert tuple(out[0, 0]) == (3, 2, 1)


def test_load_rgb_corrupt_names_file(tmp_path: Path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(DatasetError, match=r"cannot decode rgb file .*corrupt\.png"):
        load_rgb(path)


def test_load_rgb_truncated_png(tmp_path: Path):
    path = tmp_path / "t.png"
    write_rgb(path, make_rgb(64, 48, 0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"t\.png"):
        load_rgb(path)


def test_load_rgb_missing_and_empty(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"rgb file not found: .*nothere\.png"):
        load_rgb(tmp_path / "nothere.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty.*empty\.png"):
        load_rgb(tmp_path / "empty.png")


def test_load_rgb_directory_is_an_error(tmp_path: Path):
    d = tmp_path / "dir.png"
    d.mkdir()
    with pytest.raises(DatasetError, match=r"dir\.png"):
        load_rgb(d)


# ---- load_label --------------------------------------------------------------------------------------


def test_load_label_uint8_with_ignore(tmp_path: Path):
    lab = make_label(32, 24, 0)
    assert (lab == 255).any() and (lab == PERSON).any()
    write_gray(tmp_path / "l.png", lab)
    out = load_label(tmp_path / "l.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, lab)


def test_load_label_uint16_valid_narrowed(tmp_path: Path):
    lab = make_label(32, 24, 0).astype(np.uint16)
    lab[0, -1] = 29
    write_gray(tmp_path / "l16.png", lab)
    assert cv2.imread(str(tmp_path / "l16.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = load_label(tmp_path / "l16.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, lab.astype(np.uint8))


def test_load_label_uint16_bad_ids(tmp_path: Path):
    lab = np.zeros((10, 10), np.uint16)
    lab[0, :3] = 300  # cannot be narrowed to uint8 at all
    lab[1, :2] = 40
    write_gray(tmp_path / "l16.png", lab)
    with pytest.raises(DatasetError) as ei:
        load_label(tmp_path / "l16.png")
    msg = str(ei.value)
    assert "l16.png" in msg and "40 (2 px)" in msg and "300 (3 px)" in msg
    with pytest.raises(DatasetError, match="300"):  # even without validation: 300 would wrap to 44
        load_label(tmp_path / "l16.png", validate=False)


def test_load_label_uint16_unknown_id_below_256_only_with_validate(tmp_path: Path):
    lab = np.zeros((10, 10), np.uint16)
    lab[0, 0] = 40
    write_gray(tmp_path / "l16.png", lab)
    with pytest.raises(DatasetError, match=r"40 \(1 px\)"):
        load_label(tmp_path / "l16.png")
    assert load_label(tmp_path / "l16.png", validate=False)[0, 0] == 40


def test_load_label_uint8_bad_ids_listed_with_counts(tmp_path: Path):
    lab = np.full((10, 10), 255, np.uint8)
    lab[0, :4] = 30
    lab[1, :1] = 200
    lab[2, :5] = 29  # highest valid id
    write_gray(tmp_path / "bad_TrainIds.png", lab)
    with pytest.raises(DatasetError) as ei:
        load_label(tmp_path / "bad_TrainIds.png")
    msg = str(ei.value)
    assert "bad_TrainIds.png" in msg and "30 (4 px)" in msg and "200 (1 px)" in msg
    assert "29 (" not in msg and "255 (" not in msg
    np.testing.assert_array_equal(load_label(tmp_path / "bad_TrainIds.png", validate=False), lab)


def test_load_label_colour_image_rejected(tmp_path: Path):
    write_rgb(tmp_path / "viz.png", make_rgb(16, 12, 0))
    with pytest.raises(DatasetError, match=r"viz\.png has 3 channels.*colour viz image, expected TrainIds"):
        load_label(tmp_path / "viz.png")


def test_load_label_palette_png_gets_a_specific_hint(tmp_path: Path):
    (tmp_path / "pal.png").write_bytes(palette_png(make_label(16, 12, 0)))
    with pytest.raises(DatasetError, match="palette PNG"):
        load_label(tmp_path / "pal.png")


def test_load_label_corrupt(tmp_path: Path):
    (tmp_path / "x_TrainIds.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(DatasetError, match=r"cannot decode label file .*x_TrainIds\.png"):
        load_label(tmp_path / "x_TrainIds.png")


# ---- load_depth / load_sidecar -----------------------------------------------------------------------


def test_load_depth_millimetres_to_metres(tmp_path: Path):
    d = make_depth(16, 12, 0)
    d[-1, -1] = 1234
    write_gray(tmp_path / "d.png", d)
    out = load_depth(tmp_path / "d.png")
    assert out.dtype == np.float32 and out.shape == (12, 16)
    assert out[-1, -1] == pytest.approx(1.234)
    assert (out[d == 0] == 0).all() and (d == 0).any()
    np.testing.assert_allclose(out, d / 1000.0, rtol=1e-6)


def test_load_depth_rejects_uint8_and_colour(tmp_path: Path):
    write_gray(tmp_path / "d8.png", np.ones((4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"d8\.png is uint8.*uint16"):
        load_depth(tmp_path / "d8.png")
    cv2.imwrite(str(tmp_path / "d3.png"), np.ones((4, 4, 3), np.uint16))
    with pytest.raises(DatasetError, match=r"d3\.png.*3 channel"):
        load_depth(tmp_path / "d3.png")


def test_load_sidecar(tmp_path: Path):
    (tmp_path / "a.json").write_text(json.dumps({"objects": [1, 2]}))
    assert load_sidecar(tmp_path / "a.json") == {"objects": [1, 2]}
    (tmp_path / "bad.json").write_text('{"objects": [1, 2}\n')
    with pytest.raises(DatasetError, match=r"bad\.json is not valid JSON.*line 1"):
        load_sidecar(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(DatasetError, match=r"list\.json holds a JSON list"):
        load_sidecar(tmp_path / "list.json")
    with pytest.raises(DatasetError, match=r"not found.*none\.json"):
        load_sidecar(tmp_path / "none.json")


# ---- load_sample -------------------------------------------------------------------------------------


def test_load_sample_full(tiny_res: Path):
    frame = read_index(tiny_res / "test-index.txt")[0]
    s = load_sample(frame)
    np.testing.assert_array_equal(s.rgb, make_rgb(64, 48, 0))
    np.testing.assert_array_equal(s.label, make_label(64, 48, 0))
    np.testing.assert_allclose(s.depth, make_depth(64, 48, 0) / 1000.0, rtol=1e-6)
    assert s.sidecar["stem"] == "test000"
    assert s.frame is frame
    s2 = load_sample(frame, depth=False, sidecar=False)
    assert s2.depth is None and s2.sidecar is None


def test_load_sample_without_depth_or_sidecar(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", resolutions=("32x24",), n=1, depth=False, sidecar=False)
    frame = read_index(root / "32x24" / "test-index.txt")[0]
    assert frame.depth_path is None and frame.sidecar_path is None
    s = load_sample(frame)
    assert s.depth is None and s.sidecar is None
    assert s.rgb.shape == (24, 32, 3)


def test_load_sample_size_mismatch_names_both_files(tiny_res: Path):
    frame = read_index(tiny_res / "test-index.txt")[1]
    write_gray(frame.label_path, make_label(32, 24, 1))
    with pytest.raises(DatasetError) as ei:
        load_sample(frame)
    msg = str(ei.value)
    assert "size mismatch: rgb 64x48 vs label 32x24" in msg
    assert str(frame.rgb_path) in msg and str(frame.label_path) in msg


def test_load_sample_depth_size_mismatch(tiny_res: Path):
    frame = read_index(tiny_res / "test-index.txt")[0]
    write_gray(frame.depth_path, make_depth(32, 24, 0))
    with pytest.raises(DatasetError, match=r"size mismatch: rgb 64x48 vs depth 32x24"):
        load_sample(frame)
    assert load_sample(frame, depth=False).depth is None


# ---- Frame -------------------------------------------------------------------------------------------


def test_frame_properties(tiny_res: Path):
    frame = read_index(tiny_res / "val-index.txt")[2]
    assert frame.stem == "val002"
    assert frame.resolution == "64x48"
    assert frame.split == "val"
    assert frame.sequence == "seq0"
    assert frame.depth_path == (tiny_res / frame_rel("val", "val002", "depth")).absolute()
    assert frame.sidecar_path == (tiny_res / frame_rel("val", "val002", "annotations")).absolute()
    frame.depth_path.unlink()
    assert frame.depth_path is None


def test_frame_outside_layout(tmp_path: Path):
    write_rgb(tmp_path / "a.png", make_rgb(8, 6, 0))
    write_gray(tmp_path / "a_TrainIds.png", make_label(8, 6, 0))
    f = Frame(str(tmp_path / "a.png"), str(tmp_path / "a_TrainIds.png"))
    assert isinstance(f.rgb_path, Path)
    assert f.stem == "a"
    assert f.resolution is None and f.split is None and f.sequence is None
    assert f.depth_path is None and f.sidecar_path is None
    assert f.available_resolutions() == []
    assert load_sample(f).label.shape == (6, 8)


def test_frame_split_without_sequence(tmp_path: Path):
    f = Frame(tmp_path / "640x480/rgb/train/x.png", tmp_path / "640x480/gtFine/train/x_TrainIds.png")
    assert f.split == "train" and f.sequence is None
    g = Frame(tmp_path / "640x480/rgb/other/x.png", tmp_path / "640x480/gtFine/other/x_TrainIds.png")
    assert g.split is None


def test_frame_at_resolution(tiny: Path):
    frame = read_index(tiny / "64x48" / "test-index.txt")[1]
    low = frame.at_resolution("32x24")
    assert low.rgb_path == (tiny / "32x24" / frame_rel("test", "test001")).absolute()
    assert low.label_path == (tiny / "32x24" / frame_rel("test", "test001", "gtFine")).absolute()
    assert low.resolution == "32x24" and low.stem == frame.stem
    assert load_sample(low).rgb.shape == (24, 32, 3)
    assert low.at_resolution("64x48") == frame


def test_frame_at_resolution_missing_names_which(tiny: Path):
    frame = read_index(tiny / "64x48" / "test-index.txt")[1]
    with pytest.raises(DatasetError, match=r"not available at 2048x1024: missing rgb .* and label "):
        frame.at_resolution("2048x1024")
    (tiny / "32x24" / frame_rel("test", "test001", "gtFine")).unlink()
    with pytest.raises(DatasetError) as ei:
        frame.at_resolution("32x24")
    assert "missing label" in str(ei.value) and "missing rgb" not in str(ei.value)
    with pytest.raises(DatasetError, match="bad resolution"):
        frame.at_resolution("big")


def test_frame_available_resolutions(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", resolutions=("640x480", "64x48", "32x24"), n=1,
                             depth=False, sidecar=False, splits=("test",))
    frame = read_index(root / "32x24" / "test-index.txt")[0]
    assert frame.available_resolutions() == ["640x480", "64x48", "32x24"]  # largest first
    (root / "64x48" / frame_rel("test", "test000")).unlink()
    assert frame.available_resolutions() == ["640x480", "32x24"]
    (root / "extra").mkdir()  # not a resolution directory: ignored
    assert frame.available_resolutions() == ["640x480", "32x24"]


def test_frame_real_resolution_640x480(tmp_path: Path):
    root = make_tiny_dataset(tmp_path / "ds", n=1, splits=("test",))
    ds = CloudRoboticsDataset(root / "640x480" / "test-index.txt")
    s = ds[0]
    assert s.rgb.shape == (480, 640, 3) and s.label.shape == (480, 640) and s.depth.shape == (480, 640)
    assert ds.resolution == "640x480"


# ---- find_index --------------------------------------------------------------------------------------


def _touch_index(root: Path, *resolutions: str, split: str = "test") -> None:
    for r in resolutions:
        (root / r).mkdir(parents=True, exist_ok=True)
        (root / r / f"{split}-index.txt").write_text("")


def test_find_index_file_and_resolution_dir(tiny_res: Path):
    assert find_index(tiny_res / "train-index.txt") == tiny_res / "train-index.txt"
    assert find_index(tiny_res) == tiny_res / "test-index.txt"
    assert find_index(tiny_res, split="val") == tiny_res / "val-index.txt"


def test_find_index_root_prefers_640x480(tmp_path: Path):
    _touch_index(tmp_path, "2048x1024", "1280x760", "640x480", "320x240")
    assert find_index(tmp_path) == tmp_path / "640x480" / "test-index.txt"


def test_find_index_root_then_standard_resolutions_in_order(tmp_path: Path):
    _touch_index(tmp_path, "1280x760", "2048x1024", "320x240")
    assert find_index(tmp_path) == tmp_path / "2048x1024" / "test-index.txt"


def test_find_index_root_any_resolution_dir(tiny: Path):
    assert find_index(tiny) == tiny / "64x48" / "test-index.txt"  # largest non-standard one


def test_find_index_skips_resolution_without_that_split(tmp_path: Path):
    _touch_index(tmp_path, "640x480", split="train")
    _touch_index(tmp_path, "1280x760", split="test")
    assert find_index(tmp_path) == tmp_path / "1280x760" / "test-index.txt"
    assert find_index(tmp_path, split="train") == tmp_path / "640x480" / "train-index.txt"


def test_find_index_errors(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as ei:
        find_index(tmp_path / "empty")
    msg = str(ei.value)
    assert "test-index.txt" in msg and "640x480" in msg and "no <W>x<H> resolution directories" in msg
    _touch_index(tmp_path / "r", "64x48", split="train")
    with pytest.raises(DatasetError, match="resolution directories present: 64x48"):
        find_index(tmp_path / "r")
    with pytest.raises(DatasetError, match="not found"):
        find_index(tmp_path / "missing")
    with pytest.raises(DatasetError, match="unknown split 'tset'"):
        find_index(tmp_path, split="tset")


# ---- CloudRoboticsDataset ----------------------------------------------------------------------------


def test_dataset_access(tiny_res: Path):
    ds = CloudRoboticsDataset(tiny_res / "test-index.txt")
    assert len(ds) == 3
    assert ds.root == tiny_res.absolute()
    assert ds.resolution == "64x48"
    assert [f.stem for f in ds.frames] == ["test000", "test001", "test002"]
    assert ds[-1].frame.stem == "test002"
    assert ds[np.int64(1)].frame.stem == "test001"
    samples = list(ds)
    assert len(samples) == 3
    np.testing.assert_array_equal(samples[1].label, make_label(64, 48, 1))
    with pytest.raises(IndexError):
        ds[3]


def test_dataset_from_path_and_check_files(tiny: Path):
    ds = CloudRoboticsDataset.from_path(tiny, split="train")
    assert ds.index_path == tiny / "64x48" / "train-index.txt"
    (tiny / "64x48" / frame_rel("train", "train000")).unlink()
    with pytest.raises(DatasetError, match="missing"):
        CloudRoboticsDataset(tiny / "64x48" / "train-index.txt")
    ds = CloudRoboticsDataset(tiny / "64x48" / "train-index.txt", check_files=False)
    with pytest.raises(DatasetError, match="rgb file not found"):
        ds[0]
