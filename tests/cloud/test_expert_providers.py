"""The reference expert's execution providers: ``ReferenceExpert(providers=...)``, ``cepr serve cloud
--providers`` (reported by /health and /v1/models), the cloud module's ``expert_providers`` for the server it
starts (``base_url: auto``) or runs in process. CPU by default; the GPU tests (``pytest -m gpu``) run the expert on
CUDA and compare its answers with the CPU's, and are skipped as "not run" without a CUDA provider and a GPU."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from cepr.errors import CeprError

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
NOT_RUN = "not run: no CUDA provider in this onnxruntime build / no GPU"


def _cuda_build() -> bool:
    import onnxruntime as ort

    return CUDA in ort.get_available_providers()


def _gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return _cuda_build() and bool(smi) and subprocess.run([smi, "-L"], capture_output=True,
                                                          check=False).returncode == 0


cpu_build_only = pytest.mark.skipif(_cuda_build(), reason="this onnxruntime build has CUDA")


def test_expert_runs_on_cpu_by_default(cloud_model):
    from cepr.cloud.expert import ReferenceExpert

    e = ReferenceExpert(cloud_model, sessions=1)
    assert e.provider == CPU and e.model.providers == [CPU]


@cpu_build_only
def test_expert_on_cuda_in_a_cpu_build_is_a_clear_error_and_a_listed_fallback_runs(cloud_model, caplog):
    from cepr.cloud.expert import ReferenceExpert

    with pytest.raises(CeprError, match="execution provider cuda requested.*onnxruntime-gpu"):
        ReferenceExpert(cloud_model, sessions=1, providers="cuda")
    with caplog.at_level(logging.WARNING, logger="cepr.edge.providers"):
        e = ReferenceExpert(cloud_model, sessions=2, providers=["cuda", "cpu"])
    assert all(m.provider == CPU for m in e.models) and e.provider == CPU
    assert "falling back to cpu" in caplog.text


def test_health_and_models_report_the_provider(cloud_model):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cepr.serve.cloud_server import create_app

    client = TestClient(create_app(cloud_model, sessions=1, providers="cpu"))
    assert client.get("/health").json()["provider"] == CPU
    assert client.get("/v1/models").json()["data"][0]["provider"] == CPU


def test_serve_cloud_refuses_a_bad_provider_in_one_line():
    pytest.importorskip("fastapi")
    p = subprocess.run([sys.executable, "-m", "cepr", "serve", "cloud", "--providers", "cdua", "--port", "9"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "--providers: unknown execution provider 'cdua'; did you mean 'cuda'?" in p.stderr
    p = subprocess.run([sys.executable, "-m", "cepr", "serve", "cloud", "--providers", "[cuda", "--port", "9"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode != 0 and "--providers: not valid JSON" in p.stderr


@cpu_build_only
def test_serve_cloud_on_cuda_in_a_cpu_build_is_refused_at_start_up(cloud_model):
    from cepr.servers.autoserve import ReferenceServer

    pytest.importorskip("fastapi")
    with pytest.raises(CeprError, match="(?s)exited at start-up.*execution provider cuda requested"):
        ReferenceServer(cloud_model, startup_s=60, extra_args=("--sessions", "1"), providers="cuda")


def test_auto_started_server_with_a_fallback_list_reports_what_ran(cloud_model):
    """What ``base_url: auto`` does with ``expert_providers: [cuda, cpu]``; options travel as JSON."""
    from cepr.servers.autoserve import ReferenceServer, providers_arg

    pytest.importorskip("fastapi")
    assert providers_arg("cpu") == "cpu" and providers_arg(["cuda", "cpu"]) == "cuda,cpu"
    assert json.loads(providers_arg([{"cuda": {"device_id": 0}}, "cpu"])) == [{"cuda": {"device_id": 0}}, "cpu"]
    srv = ReferenceServer(cloud_model, startup_s=60, extra_args=("--sessions", "1"),
                          providers=[{"cuda": {"device_id": 0}}, "cpu"])
    try:
        assert "--providers" in srv.proc.args
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/health", timeout=5).read())
        assert health["provider"] == (CUDA if _gpu() else CPU)
    finally:
        srv.stop()


def test_cloud_module_checks_expert_providers_up_front():
    from cepr.cloud.module import CloudModule

    CloudModule.check_hyperparameters(expert_providers=["cuda", "cpu"])
    with pytest.raises(CeprError, match="cloudmodel: expert_providers: unknown execution provider 'cdua'; did you "
                                        "mean 'cuda'"):
        CloudModule.check_hyperparameters(expert_providers="cdua")
    if not _cuda_build():
        with pytest.raises(CeprError, match="cloudmodel: expert_providers: execution provider cuda requested"):
            CloudModule.check_hyperparameters(expert_providers="cuda")


def test_cloud_module_expert_providers_reach_the_auto_started_server(monkeypatch):
    from cepr.cloud.module import CloudModule
    from cepr.servers import autoserve

    started = []

    class FakeServer:
        def __init__(self, model, threads, sessions=None, providers="cpu"):
            started.append(providers)
            self.url, self.proc = f"http://127.0.0.1:{9000 + len(started)}/v1", self

        def poll(self):
            return None

        def stop(self):
            pass

    monkeypatch.setattr(autoserve, "ReferenceServer", FakeServer)
    monkeypatch.setattr(autoserve, "_servers", {})
    mods = [CloudModule(link="none"), CloudModule(link="none", expert_providers=["cuda", "cpu"]),
            CloudModule(link="none", expert_providers="cuda,cpu")]  # the same setting: the same server
    assert started == ["cpu", ["cuda", "cpu"]]
    for m in mods:
        m.cleanup()


def test_cloud_module_in_process_expert_gets_the_providers():
    from cepr.cloud.module import CloudModule

    m = CloudModule(backend="inprocess", payload="summary", link="none", server_sessions=1,
                    expert_providers=["cuda", "cpu"])
    try:
        assert m.client.backend.expert.provider == (CUDA if _gpu() else CPU)
    finally:
        m.cleanup()


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu(), reason=NOT_RUN)
def test_expert_on_cuda_answers_as_on_cpu(cloud_model):
    """The expert's segmentation on CUDA against the CPU's, on random and on synthetic frames."""
    from cepr.cloud.expert import ReferenceExpert

    cpu = ReferenceExpert(cloud_model, sessions=1, providers="cpu")
    gpu = ReferenceExpert(cloud_model, sessions=1, providers="cuda")
    assert gpu.provider == CUDA
    rng = np.random.default_rng(0)
    for _ in range(3):
        img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        a, b = cpu.model(img, None), gpu.model(img, None)
        assert np.abs(a.probs - b.probs).mean() < 0.01  # FP32: summation order and TF32 convolutions only
        assert (a.label == b.label).mean() > 0.98
