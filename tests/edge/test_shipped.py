"""The models shipped in the package: present, self-describing, consistent, and small enough."""

import json

import numpy as np
import pytest

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.edge.models import ASSETS, SHIPPED, model_path
from cepr.errors import CeprError


def test_shipped_files_exist_and_fit_the_budget():
    total = 0
    for name in SHIPPED:
        try:
            p = model_path(name)
        except CeprError:
            if name == "cloud":
                pytest.skip("cloud reference model not built yet")
            raise
        total += p.stat().st_size
    assert total <= 40 * 1024 * 1024
    assert sum(f.stat().st_size for f in ASSETS.iterdir()) <= 40 * 1024 * 1024


def test_edge_model_metadata_records_its_recipe():
    from cepr.edge.export import read_meta

    meta = read_meta(model_path("edge-int8"))
    assert meta["precision"] == "int8"
    assert meta["model_config"]["use_depth"] is True and meta["model_config"]["input_size"] == [320, 240]
    assert meta["train_config"]["seed"] == 0 and meta["train_config"]["steps"] > 0
    assert meta["calibration"]["keep_fp32"] == ["stem", "attention", "head"]


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
