"""The edge module's hyperparameters, each doing what docs/runner.md says: model (auto picks by what the frame
carries), calibration (auto follows the model), reasoner, threads, use_depth, depth_for_distance, keep_mask."""

import shutil
from pathlib import Path

import pytest

from cepr.data.tasks import TaskParams, get_task
from cepr.edge import models
from cepr.edge.models import model_path
from cepr.edge.module import EdgeModule
from cepr.errors import CeprError
from cepr.records import EDGE_STATE_KEY, SampleRef
from helpers import make_tiny_dataset

RGBD_FILE = models.SHIPPED["edge-int8"]
RGBD_CALIBRATION = models.SHIPPED["edge-calibration"]


def _sample(index_file: Path, task="path_hazard") -> SampleRef:
    rgb, label = index_file.read_text().splitlines()[0].split()[:2]
    base = index_file.parent
    return SampleRef(key="k", rgb=str(base / rgb), label=str(base / label), task=task, index=0)


@pytest.fixture
def with_depth(tiny_data) -> SampleRef:
    return _sample(tiny_data / "160x120" / "test-index.txt")


@pytest.fixture(scope="module")
def no_depth_set(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("nodepth") / "ds", resolutions=("160x120",), n=2,
                             depth=False, sidecar=False, splits=("test",))


@pytest.fixture
def without_depth(no_depth_set) -> SampleRef:
    return _sample(no_depth_set / "160x120" / "test-index.txt")


@pytest.fixture
def shipped_rgb(tiny_rgb_model, tmp_path, monkeypatch):
    """Stand in for the shipped RGB-only model and its calibration (the tiny RGB model; the RGB-D model's fitted
    coefficients, which have the same format) until the real files are in the package."""
    cal = tmp_path / "stand-in-rgb.calibration.json"
    shutil.copy(model_path("edge-calibration"), cal)
    monkeypatch.setitem(models.SHIPPED, "edge-rgb-int8", str(tiny_rgb_model))  # an absolute path wins over ASSETS
    monkeypatch.setitem(models.SHIPPED, "edge-rgb-calibration", str(cal))
    return Path(tiny_rgb_model).name, cal.name


def test_auto_runs_the_rgbd_model_with_its_calibration_on_frames_with_depth(with_depth):
    edge = EdgeModule()  # model: auto, calibration: auto
    r = edge.predict(with_depth)
    assert (r["model"], r["calibration"], r["distances"]) == (RGBD_FILE, RGBD_CALIBRATION, "depth")
    assert edge.pipelines["edge-int8"].planner.calibrated


def test_auto_runs_the_rgb_model_with_its_calibration_on_frames_without_depth(without_depth, with_depth,
                                                                               shipped_rgb):
    edge = EdgeModule(model="auto")
    r = edge.predict(without_depth)
    assert (r["model"], r["calibration"], r["distances"]) == (*shipped_rgb, "ground_plane")
    assert r["mask"].shape == (120, 160)
    # the choice is per frame: a frame with depth in the same run gets the RGB-D model
    assert edge.predict(with_depth)["model"] == RGBD_FILE
    assert sorted(edge.pipelines) == ["edge-int8", "edge-rgb-int8"]


def test_auto_without_the_shipped_rgb_model_says_what_is_missing(without_depth, monkeypatch):
    monkeypatch.setitem(models.SHIPPED, "edge-rgb-int8", "not-there.onnx")
    with pytest.raises(CeprError, match="shipped model 'edge-rgb-int8'.*missing"):
        EdgeModule().predict(without_depth)


def test_an_rgbd_model_on_a_frame_without_depth_names_the_rgb_model_and_the_key(without_depth):
    edge = EdgeModule(model="edge-int8")
    edge.load()
    with pytest.raises(CeprError) as e:
        edge.predict(without_depth)
    msg = str(e.value)
    assert f"{RGBD_FILE} is an RGB-D model: this frame has no depth" in msg
    assert "'edge-rgb-int8'" in msg and "`model: edge-rgb-int8`" in msg and "`model: auto`" in msg


def test_a_named_model_and_calibration_are_used_for_every_frame(with_depth, without_depth, tiny_rgb_model, tmp_path):
    cal = tmp_path / "mine.json"
    shutil.copy(model_path("edge-calibration"), cal)
    edge = EdgeModule(model=str(tiny_rgb_model), calibration=str(cal))
    for s in (with_depth, without_depth):
        r = edge.predict(s)
        assert (r["model"], r["calibration"]) == (Path(tiny_rgb_model).name, "mine.json")
    # an RGB-only model still measures distances with the depth a frame has (depth_for_distance: true)
    assert edge.predict(with_depth)["distances"] == "depth"


def test_calibration_auto_finds_the_file_beside_a_model_path_and_none_disables_it(with_depth, tmp_path):
    onnx = tmp_path / "m.onnx"
    shutil.copy(model_path("edge-int8"), onnx)
    shutil.copy(model_path("edge-calibration"), tmp_path / "m.calibration.json")  # what `cepr edge calibrate` writes
    edge = EdgeModule(model=str(onnx))
    assert edge.predict(with_depth)["calibration"] == "m.calibration.json"
    assert edge.pipeline.planner.calibrated
    (tmp_path / "m.calibration.json").unlink()
    bare = EdgeModule(model=str(onnx))
    assert bare.predict(with_depth)["calibration"] is None and not bare.pipeline.planner.calibrated
    off = EdgeModule(model="edge-int8", calibration="none")
    r = off.predict(with_depth)
    assert r["calibration"] is None and not off.pipeline.planner.calibrated
    on = EdgeModule(model="edge-int8").predict(with_depth)
    assert on["answer"] == r["answer"] and on["confidence"] != r["confidence"]  # only the confidence changes


def test_use_depth_false_ignores_the_depth_camera(with_depth, shipped_rgb):
    r = EdgeModule(use_depth=False).predict(with_depth)  # auto: as if the frame had no depth
    assert (r["model"], r["distances"]) == (shipped_rgb[0], "ground_plane")
    with pytest.raises(CeprError, match="use_depth is false.*RGB-D model.*edge-rgb-int8"):
        EdgeModule(model="edge-int8", use_depth=False).load()


def test_depth_for_distance_false_measures_on_the_ground_plane(with_depth):
    from cepr.data.cloud_robotics import Frame, load_depth, load_rgb, load_sidecar
    from cepr.data.tasks import camera_for
    from cepr.edge.pipeline import EdgePipeline
    from cepr.edge.planner import Planner

    r = EdgeModule(model="edge-int8", depth_for_distance=False).predict(with_depth)
    assert r["distances"] == "ground_plane" and r["model"] == RGBD_FILE  # the RGB-D network still gets depth
    frame = Frame(with_depth["rgb"], with_depth["label"])
    rgb, depth, sidecar = load_rgb(frame.rgb_path), load_depth(frame.depth_path), load_sidecar(frame.sidecar_path)
    pipe = EdgePipeline(model_path("edge-int8"), Planner.from_file(model_path("edge-calibration")),
                        depth_for_distance=False)
    expect = pipe(rgb, depth, camera_for(sidecar, 160, 120))
    assert r[EDGE_STATE_KEY].summary == expect.summary.to_dict()
    with_depth_distances = EdgeModule(model="edge-int8").predict(with_depth)
    assert with_depth_distances["distances"] == "depth"
    assert with_depth_distances[EDGE_STATE_KEY].summary != expect.summary.to_dict()  # the flag changed them


def test_reasoner_answers_from_the_summary_with_the_models_calibration(with_depth):
    from cepr.edge.planner import LocalAnswer
    from cepr.edge.reasoners import REASONER_REGISTRY, register_reasoner

    got = []

    class AlwaysStop:  # what a one-file reasoner looks like: params and answer(summary, tasks)
        def __init__(self, calibration):
            got.append(calibration)
            self.params = TaskParams()

        def answer(self, summary, tasks):
            got.append(type(summary).__name__)
            return {t: LocalAnswer(t, "stop" if t == "action" else get_task(t).answers[0], 0.9, {}) for t in tasks}

    register_reasoner("always-stop")(AlwaysStop)
    try:
        r = EdgeModule(model="edge-int8", reasoner="always-stop").predict(SampleRef(with_depth, task="action"))
    finally:
        REASONER_REGISTRY.unregister("always-stop")
    assert (r["answer"], r["confidence"]) == ("stop", 0.9)
    assert got == [model_path("edge-calibration"), "SceneSummary"]
    default = EdgeModule(model="edge-int8").predict(with_depth)  # reasoner: planner
    assert default["calibration"] == RGBD_CALIBRATION


def test_keep_mask_and_threads(with_depth):
    assert "mask" not in EdgeModule(keep_mask=False).predict(with_depth)
    edge = EdgeModule(model="edge-int8", threads=2).load()
    assert edge.pipeline.model.session.get_session_options().intra_op_num_threads == 2
    assert "mask" in edge.predict(with_depth)


@pytest.mark.parametrize("kwargs, message", [
    ({"use_depth": "maybe"}, "use_depth must be true or false"),
    ({"keep_mask": 2}, "keep_mask must be true or false"),
    ({"threads": 0}, "threads must be >= 1"),
    ({"threads": "two"}, "threads must be an integer"),
    ({"calibration": "edge-calibratoin"}, "did you mean the shipped model 'edge-calibration'"),
    ({"model": "edge-rgb-int9"}, "did you mean the shipped model 'edge-rgb-int8'"),
    ({"reasoner": "planer"}, "edgemodel: unknown edge reasoner 'planer'; did you mean 'planner'"),
])
def test_bad_edge_hyperparameters(kwargs, message):
    with pytest.raises(CeprError, match=message):
        EdgeModule(**kwargs)


def test_yaml_string_flags_are_read_as_booleans(with_depth):
    assert EdgeModule(model="edge-int8", use_depth="false", depth_for_distance="true").use_depth is False
