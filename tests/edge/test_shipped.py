"""The models shipped in the package: present, self-describing, consistent, and small enough."""

import json

import numpy as np
import pytest

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.edge.models import ASSETS, SHIPPED, model_path
from cepr.errors import CeprError


def test_shipped_files_exist_and_fit_the_budget():
    total = 0
    assert (ASSETS / SHIPPED["cloud"]).is_file(), "the cloud reference model ships in the package"
    for name in SHIPPED:  # every shipped model, the cloud reference included: none may be missing
        total += model_path(name).stat().st_size
    assert total <= 40 * 1024 * 1024
    assert sum(f.stat().st_size for f in ASSETS.iterdir()) <= 40 * 1024 * 1024


def test_edge_model_metadata_records_its_recipe():
    from cepr.edge.export import read_meta

    meta = read_meta(model_path("edge-int8"))
    assert meta["precision"] == "int8"
    assert meta["model_config"]["use_depth"] is True and meta["model_config"]["input_size"] == [320, 240]
    assert meta["train_config"]["seed"] == 0 and meta["train_config"]["steps"] > 0
    # the recipe chosen by benchmarks/quant_recipe.py on a VNNI CPU (docs/edge.md): only the stems stay FP32
    assert meta["calibration"]["keep_fp32"] == ["stem"]
    assert meta["calibration"]["method"] == "minmax" and meta["calibration"]["frames"] == 64


def test_rgb_only_edge_model_is_the_same_recipe_without_depth():
    from cepr.edge.export import read_meta

    rgbd, rgb = read_meta(model_path("edge-int8")), read_meta(model_path("edge-rgb-int8"))
    assert rgb["precision"] == "int8" and rgb["model_config"]["use_depth"] is False
    same = ("width", "blocks", "input_size", "num_classes")
    assert {k: rgb["model_config"][k] for k in same} == {k: rgbd["model_config"][k] for k in same}
    skip = ("use_depth", "out", "notes", "threads", "device", "data")
    assert ({k: v for k, v in rgb["train_config"].items() if k not in skip}
            == {k: v for k, v in rgbd["train_config"].items() if k not in skip})
    cal = json.loads(model_path("edge-rgb-calibration").read_text())
    assert cal["depth_for_distance"] is False  # fitted with ground-plane distances, as on data without depth
    assert set(cal["coefficients"]) == {"path_hazard", "action", "people_count", "nearest_obstacle", "traversable"}


def test_cloud_model_is_the_gpu_trained_reference():
    from cepr.edge.export import read_meta

    meta = read_meta(model_path("cloud"))
    assert meta["model_config"]["use_depth"] is False and meta["model_config"]["input_size"] == [640, 480]
    assert meta["step"] == 26578 and meta["source"].endswith("cloud-rfnet-w32-rgb-gpu.pt")
    assert meta["best_val_miou"] > 0.8


def test_int8_agrees_with_fp32_and_pipeline_uses_the_calibration(tiny_data):
    from cepr.edge.pipeline import EdgePipeline
    from cepr.edge.planner import Planner
    from cepr.edge.runtime import SegmentationModel

    fp32, int8 = SegmentationModel(model_path("edge-fp32")), SegmentationModel(model_path("edge-int8"))
    samples = list(CloudRoboticsDataset(find_index(tiny_data, split="test")))[:2]
    for s in samples:
        a, b = fp32.logits(s.rgb, s.depth).argmax(0), int8.logits(s.rgb, s.depth).argmax(0)
        assert (a == b).mean() > 0.9
    planner = Planner.from_file(model_path("edge-calibration"))
    assert planner.calibrated
    doc = json.loads(model_path("edge-calibration").read_text())
    assert doc["eval_frames"] >= 100 and 0 <= doc["calibrated"]["ece"] < doc["uncalibrated"]["ece"]
    res = EdgePipeline(model_path("edge-int8"), planner=planner).run_sample(samples[0])
    assert np.isfinite(res.total_ms) and len(res.summary_bytes) > 0


def test_unknown_model_name_gets_a_hint():
    with pytest.raises(CeprError, match="did you mean the shipped model 'edge-int8'"):
        model_path("edge-int")


def test_checkpoints_load_as_weights_only():
    """Every ``torch.load`` in cepr refuses pickled code (``weights_only=True``), and the shipped weights load so."""
    import re
    from pathlib import Path

    import cepr

    calls = [(f.name, line.strip()) for f in Path(cepr.__file__).parent.rglob("*.py")
             for line in f.read_text().splitlines() if re.search(r"\btorch\.load\(", line)]
    assert calls and all("weights_only=True" in c for _, c in calls), calls
    pytest.importorskip("torch")
    from cepr.edge.export import load_checkpoint

    for name in ("edge-torch", "edge-rgb-torch"):
        _model, ck = load_checkpoint(model_path(name))
        assert ck["step"] > 0 and ck["model_config"]["width"] == 16
