"""Execution providers chosen by name: CPU by default, a clear error for one this onnxruntime build lacks, a
logged fallback when a list opts into it. The GPU tests (``pytest -m gpu``) run the shipped models on CUDA and
compare them with the CPU; without a CUDA provider and a GPU they are skipped as "not run"."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cepr.edge.providers import CPU, check_session, parse_providers, resolve_providers
from cepr.errors import CeprError

CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
CPU_BUILD = ["AzureExecutionProvider", CPU]
GPU_BUILD = [TRT, CUDA, CPU]


def _cuda_available() -> bool:
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True, check=False).returncode == 0


NOT_RUN = "not run: no CUDA provider in this onnxruntime build / no GPU"


# ---- names and lists ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, want", [
    ("cpu", [CPU]), ("CPU", [CPU]), ("CPUExecutionProvider", [CPU]), ("cpuexecutionprovider", [CPU]),
    ("cuda", [CUDA]), ("gpu", [CUDA]), ("tensorrt", [TRT]), ("trt", [TRT]), ("cuda,cpu", [CUDA, CPU]),
    (["cuda", "cpu"], [CUDA, CPU]), (["cuda", "cuda", "cpu"], [CUDA, CPU]), (None, [CPU]),
])
def test_names_map_to_onnxruntime_names(spec, want):
    assert [n for n, _ in parse_providers(spec)] == want


def test_provider_options_are_kept():
    assert parse_providers([{"cuda": {"device_id": 1}}, "cpu"]) == [(CUDA, {"device_id": 1}), (CPU, {})]
    assert parse_providers({"cuda": {"device_id": 0}}) == [(CUDA, {"device_id": 0})]
    assert parse_providers([("tensorrt", {"trt_fp16_enable": True})]) == [(TRT, {"trt_fp16_enable": True})]
    plan = resolve_providers([{"cuda": {"device_id": 1}}, "cpu"], available=GPU_BUILD)
    assert plan.session_kwargs() == {"providers": [CUDA, CPU], "provider_options": [{"device_id": 1}, {}]}


@pytest.mark.parametrize("spec, hint", [("cdua", "did you mean 'cuda'?"), ("tensorrtt", "did you mean 'tensorrt'?"),
                                        ("CUDAExecutionProvidr", "did you mean 'CUDAExecutionProvider'?"),
                                        (["cuda", "cpux"], "did you mean 'cpu'?")])
def test_unknown_name_gets_did_you_mean(spec, hint):
    with pytest.raises(CeprError, match="unknown execution provider") as e:
        parse_providers(spec)
    assert hint in str(e.value)


@pytest.mark.parametrize("spec", [[], "", " , ", 3, [{"cuda": {}, "cpu": {}}], [{"cuda": 5}], [None]])
def test_malformed_settings_are_clear_errors(spec):
    with pytest.raises(CeprError, match="provider"):
        parse_providers(spec)


# ---- what this build has ------------------------------------------------------------------------------------

def test_default_is_cpu_alone():
    plan = resolve_providers()
    assert plan.providers == [CPU] and plan.requested == [CPU] and not plan.fallback


def test_gpu_request_gets_cpu_appended_for_the_operators_the_gpu_does_not_take():
    plan = resolve_providers("cuda", available=GPU_BUILD)
    assert plan.providers == [CUDA, CPU] and plan.first == CUDA and not plan.fallback
    assert resolve_providers(["tensorrt", "cuda"], available=GPU_BUILD).providers == [TRT, CUDA, CPU]
    assert resolve_providers("tensorrt", available=GPU_BUILD).providers == [TRT, CUDA, CPU]  # CUDA after TensorRT
    assert resolve_providers("tensorrt", available=[TRT, CPU]).providers == [TRT, CPU]


@pytest.mark.parametrize("spec", ["cuda", "tensorrt", ["cuda", "tensorrt"]])
def test_missing_provider_without_fallback_is_a_clear_error(spec):
    with pytest.raises(CeprError) as e:
        resolve_providers(spec, available=CPU_BUILD)
    msg = str(e.value)
    assert "requested" in msg and "AzureExecutionProvider, CPUExecutionProvider" in msg  # what the build has
    assert "onnxruntime-gpu" in msg  # what to install
    assert "cpu]" in msg  # how to opt into the fallback


def test_a_listed_fallback_is_used_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="cepr.edge.providers"):
        plan = resolve_providers(["cuda", "cpu"], available=CPU_BUILD)
    assert plan.providers == [CPU] and plan.fallback
    assert "cuda not in this onnxruntime build" in caplog.text and "falling back to cpu" in caplog.text
    # a CUDA build without TensorRT: [tensorrt, cuda] falls back to CUDA (CPU still last)
    assert resolve_providers(["tensorrt", "cuda"], available=[CUDA, CPU]).providers == [CUDA, CPU]
    # nothing listed is available: still an error
    with pytest.raises(CeprError, match="tensorrt, cuda requested"):
        resolve_providers(["tensorrt", "cuda"], available=CPU_BUILD)


def test_session_that_could_not_create_the_gpu_provider(caplog):
    """A CUDA build on a machine without a GPU: ONNX Runtime falls back to the CPU by itself; we refuse that
    unless a fallback was listed."""
    plan = resolve_providers("cuda", available=GPU_BUILD)
    with pytest.raises(CeprError, match="could not create execution provider cuda"):
        check_session(plan, [CPU])
    assert check_session(plan, [CUDA, CPU]) == CUDA
    plan = resolve_providers(["cuda", "cpu"], available=GPU_BUILD)
    with caplog.at_level(logging.WARNING, logger="cepr.edge.providers"):
        assert check_session(plan, [CPU]) == CPU
    assert "falling back to cpu" in caplog.text


# ---- the model ----------------------------------------------------------------------------------------------

def _model(providers=None):
    from cepr.edge.models import model_path
    from cepr.edge.runtime import SegmentationModel

    path = model_path("edge-int8")
    return SegmentationModel(path) if providers is None else SegmentationModel(path, threads=1, providers=providers)


def test_model_runs_on_cpu_by_default_and_says_so():
    m = _model()
    assert m.provider == CPU and m.providers == [CPU]
    assert _model("cpu").provider == CPU


def test_model_on_cuda_in_a_cpu_build_is_a_clear_error():
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    with pytest.raises(CeprError, match="execution provider cuda requested.*onnxruntime-gpu"):
        _model("cuda")


def test_model_falls_back_to_cpu_when_listed(caplog):
    with caplog.at_level(logging.WARNING, logger="cepr.edge.providers"):
        m = _model(["cuda", "cpu"])
    if _cuda_available():
        assert m.provider == CUDA
    else:
        assert m.provider == CPU and "falling back to cpu" in caplog.text


def _frame(w=640, h=480):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 10.0, (h, w)).astype(np.float32)
    return rgb, depth


@pytest.mark.parametrize("name", ["edge-fp32", "edge-int8"])
@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason=NOT_RUN)
def test_edge_model_on_cuda_matches_cpu(name):
    from cepr.edge.models import model_path
    from cepr.edge.runtime import SegmentationModel

    cpu = SegmentationModel(model_path(name), providers="cpu")
    gpu = SegmentationModel(model_path(name), providers="cuda")
    assert gpu.provider == CUDA
    rgb, depth = _frame()
    a, b = cpu(rgb, depth), gpu(rgb, depth)
    # FP32: only summation order (and TF32 convolutions) differ; INT8: CUDA may run the QDQ graph in float
    mean_tol = 0.01 if name == "edge-fp32" else 0.03
    assert np.abs(a.probs - b.probs).mean() < mean_tol
    assert (a.label == b.label).mean() > 0.98


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason=NOT_RUN)
def test_edge_model_on_tensorrt_matches_cpu():
    import onnxruntime as ort

    if TRT not in ort.get_available_providers():
        pytest.skip("not run: no TensorRT provider in this onnxruntime build")
    from cepr.edge.models import model_path
    from cepr.edge.runtime import SegmentationModel

    cpu = SegmentationModel(model_path("edge-fp32"), providers="cpu")
    trt = SegmentationModel(model_path("edge-fp32"), providers=["tensorrt", "cuda"])
    rgb, depth = _frame()
    a, b = cpu(rgb, depth), trt(rgb, depth)
    assert (a.label == b.label).mean() > 0.99
