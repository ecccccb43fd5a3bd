"""The INT8 recipe options of ``quantize_int8`` / ``cepr edge quantize`` on the tiny model."""

import numpy as np
import pytest

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.errors import CeprError

pytest.importorskip("onnx")


def _logits(path, s):
    from cepr.edge.runtime import SegmentationModel

    return SegmentationModel(path).logits(s.rgb, s.depth)


@pytest.mark.parametrize("opts", [
    {"quant_format": "qoperator", "activation_type": "u8", "per_channel": True, "keep_fp32": ("stem", "head")},
    {"quant_format": "qdq", "activation_type": "s8", "per_channel": False, "keep_fp32": ()},
    {"quant_format": "qdq", "activation_type": "u8", "per_channel": True, "keep_fp32": ("stem", "fuse0")},
])
def test_quantize_options_are_recorded_and_stay_close_to_fp32(tiny_models, tiny_data, tmp_path, opts):
    from cepr.edge.export import quantize_int8, read_meta

    out = quantize_int8(tiny_models["fp32"], tmp_path / "q.onnx", str(tiny_data), frames=4, **opts)
    cal = read_meta(out)["calibration"]
    assert read_meta(out)["precision"] == "int8"
    assert cal["quant_format"] == opts["quant_format"] and cal["activation_type"] == opts["activation_type"]
    assert cal["per_channel"] is opts["per_channel"] and cal["keep_fp32"] == list(opts["keep_fp32"])
    assert cal["weight_type"] == "s8" and cal["frames"] == 4
    s = CloudRoboticsDataset(find_index(tiny_data, split="test"))[0]
    ref, q = _logits(tiny_models["fp32"], s), _logits(out, s)
    assert q.shape == ref.shape
    assert (q.argmax(0) == ref.argmax(0)).mean() > 0.8
    assert np.abs(q - ref).mean() < 0.1 * np.abs(ref).mean() + 0.05
    # every recipe declares the encoder's map (a QOperator graph through a DequantizeLinear of its quantised map)
    from cepr.edge.runtime import SegmentationModel

    fq, fr = SegmentationModel(out), SegmentationModel(tiny_models["fp32"])
    _, feats = fq.run_with_features(fq.prepare(s.rgb, s.depth))
    _, want = fr.run_with_features(fr.prepare(s.rgb, s.depth))
    assert feats.shape == want.shape and np.corrcoef(feats.ravel(), want.ravel())[0, 1] > 0.9


def test_default_recipe_is_the_one_measured_best(tiny_models):
    from cepr.edge.export import read_meta

    cal = read_meta(tiny_models["int8"])["calibration"]
    assert cal["keep_fp32"] == ["stem"]  # benchmarks/quant_recipe.py on a VNNI CPU; the shipped edge-int8's
    assert (cal["quant_format"], cal["activation_type"], cal["per_channel"]) == ("qdq", "u8", True)


def test_unknown_options_are_refused(tiny_models, tiny_data, tmp_path):
    from cepr.edge.export import quantize_int8

    with pytest.raises(CeprError, match="quant format"):
        quantize_int8(tiny_models["fp32"], tmp_path / "q.onnx", str(tiny_data), frames=2, quant_format="qop")
    with pytest.raises(CeprError, match="activation type"):
        quantize_int8(tiny_models["fp32"], tmp_path / "q.onnx", str(tiny_data), frames=2, activation_type="s16")


def test_cli_passes_the_recipe(tiny_models, tiny_data, tmp_path):
    from cepr.cli import main
    from cepr.edge.export import read_meta

    out = tmp_path / "q.onnx"
    rc = main(["edge", "quantize", "--model", str(tiny_models["fp32"]), "--data", str(tiny_data), "--out", str(out),
               "--calib-frames", "2", "--keep-fp32", "stem", "--quant-format", "qoperator", "--activation-type", "s8",
               "--per-tensor"])
    assert rc in (0, None)
    cal = read_meta(out)["calibration"]
    assert (cal["keep_fp32"], cal["quant_format"], cal["activation_type"], cal["per_channel"]) == (
        ["stem"], "qoperator", "s8", False)
