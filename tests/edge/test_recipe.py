"""The training recipe end to end on a tiny set: train, resume, export, quantise, run with onnxruntime."""

import json

import numpy as np
import pytest

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index

torch = pytest.importorskip("torch")


def test_train_writes_run_files_and_logs_validation(tiny_models):
    run = tiny_models["run"]
    for f in ("config.json", "train_log.jsonl", "last.pt", "best.pt"):
        assert (run / f).is_file()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    vals = [r for r in log if "val_miou" in r]
    assert [r["step"] for r in vals] == [6, 12]
    assert all(0.0 <= r["val_miou"] <= 1.0 for r in vals)
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]  # it learns something even in 12 steps
    assert tiny_models["result"]["parameters"] > 0


def test_resume_continues_from_last_checkpoint(tiny_data, tmp_path):
    from cepr.edge.train import TrainConfig, train

    cfg = TrainConfig(data=str(tiny_data), out=str(tmp_path), width=4, input_size=(160, 120), steps=4,
                      batch_size=2, val_every=2, val_frames=2, log_every=1, threads=1)
    train(cfg, progress=False)
    cfg.steps = 6
    train(cfg, progress=False)
    steps = [json.loads(line).get("step") for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert steps.count(1) == 1 and 5 in steps and 6 in steps  # steps 1-4 were not repeated


def test_onnx_fp32_matches_pytorch_and_int8_stays_close(tiny_models, tiny_data):
    from cepr.edge.export import load_checkpoint, read_meta
    from cepr.edge.preprocess import prepare_depth, prepare_rgb
    from cepr.edge.runtime import SegmentationModel

    model, _ = load_checkpoint(tiny_models["checkpoint"])
    fp32 = SegmentationModel(tiny_models["fp32"])
    int8 = SegmentationModel(tiny_models["int8"])
    assert fp32.precision == "fp32" and int8.precision == "int8"
    assert fp32.has_features and int8.has_features  # the encoder's map for the grounded VLM, declared by export
    s0 = CloudRoboticsDataset(find_index(tiny_data, split="test"))[0]
    logits, feats = int8.run_with_features(int8.prepare(s0.rgb, s0.depth))
    assert np.array_equal(logits, int8.logits(s0.rgb, s0.depth)) and feats.shape == (64, 4, 5)  # w8: 8 * 8 ch
    assert read_meta(tiny_models["int8"])["calibration"]["frames"] == 4
    s = CloudRoboticsDataset(find_index(tiny_data, split="test"))[0]
    with torch.inference_mode():
        ref = model(torch.from_numpy(prepare_rgb(s.rgb, (160, 120))[None]),
                    torch.from_numpy(prepare_depth(s.depth, (160, 120))[None]))[0].numpy()
    np.testing.assert_allclose(fp32.logits(s.rgb, s.depth), ref, atol=1e-3, rtol=1e-3)
    agree = (int8.logits(s.rgb, s.depth).argmax(0) == ref.argmax(0)).mean()
    assert agree > 0.8
    seg = int8(s.rgb, s.depth)
    assert seg.label.shape == s.label.shape and seg.label.dtype == np.uint8
    np.testing.assert_allclose(seg.probs.sum(0), 1.0, atol=1e-4)


def test_rgbd_model_refuses_a_frame_without_depth(tiny_models, tiny_data):
    from cepr.edge.runtime import SegmentationModel
    from cepr.errors import CeprError

    s = CloudRoboticsDataset(find_index(tiny_data, split="test"))[0]
    with pytest.raises(CeprError, match="RGB-D"):
        SegmentationModel(tiny_models["fp32"])(s.rgb, None)


def test_eval_reports_all_three_forms(tiny_models, tiny_data):
    from cepr.edge.evaluate import evaluate, format_reports

    ds = CloudRoboticsDataset(find_index(tiny_data, split="test"))
    reports = evaluate(list(ds)[:3], {"pytorch": ("torch", str(tiny_models["checkpoint"])),
                                     "onnx-fp32": ("onnx", str(tiny_models["fp32"])),
                                     "onnx-int8": ("onnx", str(tiny_models["int8"]))}, progress=False)
    by = {r.name: r for r in reports}
    assert abs(by["pytorch"].miou - by["onnx-fp32"].miou) < 1e-3
    assert all(len(r.infer_ms) == 3 and min(r.infer_ms) > 0 for r in reports)
    text = format_reports(reports, baseline="onnx-fp32")
    assert "speed-up" in text and "person" in text


def test_cli_export_quantize_eval(tiny_models, tiny_data, tmp_path):
    import subprocess
    import sys

    def cepr(*a):
        p = subprocess.run([sys.executable, "-m", "cepr", *map(str, a)], capture_output=True, text=True, check=False,
                           timeout=300)
        assert p.returncode == 0, p.stderr
        return p.stdout

    out = cepr("edge", "export", "--checkpoint", tiny_models["checkpoint"], "--out", tmp_path / "m.onnx")
    assert "exported" in out
    out = cepr("edge", "quantize", "--model", tmp_path / "m.onnx", "--data", tiny_data, "--out", tmp_path / "q.onnx",
               "--calib-frames", 3)
    assert "quantized" in out
    out = cepr("edge", "eval", "--data", tiny_data, "--fp32", tmp_path / "m.onnx", "--int8", tmp_path / "q.onnx",
               "--max-frames", 2, "--no-progress", "--json", tmp_path / "e.json")
    assert "onnx-int8" in out
    assert len(json.loads((tmp_path / "e.json").read_text())["models"]) == 2


@pytest.mark.parametrize("crop, use_depth", [(None, True), ((64, 48), True), ((64, 48), False)])
def test_device_batcher_matches_the_cpu_batch(crop, use_depth):
    """The GPU recipe assembles batches on the device; on the CPU device it must give the CPU recipe's batch
    exactly, draw for draw (frames, crops, flips, jitter), so the two recipes train on the same data."""
    from cepr.edge.train import DeviceBatcher, TrainConfig, _batch

    rng = np.random.default_rng(3)
    size = (160, 120)
    rgbs = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(5)]
    labels = [rng.integers(0, 30, (120, 160), dtype=np.uint8) for _ in range(5)]
    depths = [rng.uniform(0, 30, (120, 160)).astype(np.float16) if use_depth else None for _ in range(5)]
    cfg = TrainConfig(input_size=size, crop=crop, batch_size=6, use_depth=use_depth)
    x, d, y = _batch(np.random.default_rng(7), rgbs, depths, labels, cfg)
    tx, td, ty = DeviceBatcher(rgbs, depths, labels, cfg, "cpu")(np.random.default_rng(7))
    np.testing.assert_allclose(tx.numpy(), x, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ty.numpy(), y)
    assert (d is None) == (td is None) == (not use_depth)
    if use_depth:
        np.testing.assert_allclose(td.numpy(), d, rtol=0, atol=1e-6)
    assert ty.dtype == torch.int64 and tx.shape == x.shape


def test_device_choice():
    from cepr.edge.train import resolve_device
    from cepr.errors import CeprError

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CeprError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(CeprError, match="auto, cpu or cuda"):
        resolve_device("tpu")
