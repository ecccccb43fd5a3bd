"""Shipped model names, the `auto` rule (model by what the frame carries, calibration by model), and `cepr edge
eval` / `cepr edge calibrate` on a set without depth (the real release's layout, no val split)."""

import json
import shutil
from pathlib import Path

import pytest

from cepr.cli import main
from cepr.edge import models
from cepr.edge.models import auto_model, calibration_for, model_path
from cepr.errors import CeprError
from real_layout import make_real_layout


def test_shipped_rgb_model_names():
    assert {k: models.SHIPPED[k] for k in ("edge-rgb-int8", "edge-rgb-fp32", "edge-rgb-torch",
                                           "edge-rgb-calibration")} == {
        "edge-rgb-int8": "edge-rfnet-w16-rgb-int8.onnx", "edge-rgb-fp32": "edge-rfnet-w16-rgb-fp32.onnx",
        "edge-rgb-torch": "edge-rfnet-w16-rgb.pt", "edge-rgb-calibration": "edge-rfnet-w16-rgb-int8.calibration.json"}


def test_auto_rule():
    assert auto_model(has_depth=True) == "edge-int8"
    assert auto_model(has_depth=False) == "edge-rgb-int8"
    assert calibration_for("edge-int8") == calibration_for("edge-fp32") == model_path("edge-calibration")
    assert models.CALIBRATION_OF["edge-rgb-int8"] == models.CALIBRATION_OF["edge-rgb-fp32"] == "edge-rgb-calibration"


def test_calibration_for_a_model_path(tmp_path):
    onnx = tmp_path / "my-model.onnx"
    onnx.write_bytes(b"")
    assert calibration_for(onnx) is None
    (tmp_path / "my-model.calibration.json").write_text("{}")
    assert calibration_for(str(onnx)) == tmp_path / "my-model.calibration.json"


def test_missing_shipped_model_message(monkeypatch):
    monkeypatch.setitem(models.SHIPPED, "edge-rgb-int8", "not-built-yet.onnx")
    with pytest.raises(CeprError, match="shipped model 'edge-rgb-int8' .*missing"):
        model_path("edge-rgb-int8")


@pytest.fixture(scope="module")
def real_set(tmp_path_factory) -> Path:
    return make_real_layout(tmp_path_factory.mktemp("real") / "Cloud-Robotics", n_test=3, n_train=3,
                            resolutions=("640x480",))


def test_eval_on_a_set_without_depth(real_set, tiny_rgb_model, capsys, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["edge", "eval", "--data", str(real_set), "--fp32", str(tiny_rgb_model), "--no-progress",
                 "--json", str(out)]) == 0
    assert "3 test frame(s)" in capsys.readouterr().out
    assert json.loads(out.read_text())["models"][0]["name"] == "onnx-fp32"


@pytest.mark.parametrize("flag, name", [("--int8", "edge-int8"), ("--fp32", "edge-fp32"),
                                        ("--checkpoint", "edge-torch")])
def test_eval_with_an_rgbd_model_on_a_set_without_depth_names_the_rgb_model(real_set, capsys, flag, name):
    if flag == "--checkpoint":
        pytest.importorskip("torch")
    assert main(["edge", "eval", "--data", str(real_set), flag, name, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is an RGB-D model: this frame has no depth" in err and "edge-rgb-int8" in err
    assert "20220420_front" in err  # names the first frame without depth


def test_calibrate_on_a_set_without_depth_or_val_split(real_set, tiny_rgb_model, tmp_path, capsys):
    model = tmp_path / "rgb.onnx"
    shutil.copy(tiny_rgb_model, model)
    assert main(["edge", "calibrate", "--model", str(model), "--data", str(real_set), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no val index: fitting the confidence on the train split" in out
    doc = json.loads((tmp_path / "rgb.calibration.json").read_text())  # beside the model: what auto picks up
    assert (doc["fit_split"], doc["fit_frames"], doc["eval_split"], doc["eval_frames"]) == ("train", 3, "test", 3)
    assert calibration_for(model) == tmp_path / "rgb.calibration.json"


def test_calibrate_with_an_rgbd_model_on_a_set_without_depth(real_set, tmp_path, capsys):
    assert main(["edge", "calibrate", "--model", "edge-int8", "--data", str(real_set), "--out",
                 str(tmp_path / "c.json"), "--no-progress"]) == 2
    assert "`model: edge-rgb-int8`" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_calibrate_refuses_to_write_into_the_shipped_models(capsys):
    assert main(["edge", "calibrate", "--model", "edge-rgb-int8", "--no-progress"]) == 2
    assert "pass --out" in capsys.readouterr().err
