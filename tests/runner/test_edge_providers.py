"""The edge module's ``providers`` setting: checked before any case runs (an unknown name gets a "did you mean",
a provider this onnxruntime build lacks is refused unless a fallback is listed), and every edge result and case
record says which execution provider ran."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cepr.edge.module import EdgeModule
from cepr.errors import CeprError
from cepr.runner.config import ModuleSpec
from cepr.runner.testcase import check_module
from helpers import copy_default_job

REPO = Path(__file__).resolve().parents[2]
ADAPTER = REPO / "testalgorithms" / "perception-reasoning" / "cepr_edge_model.py"
CPU = "CPUExecutionProvider"


def _cpu_build() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" not in ort.get_available_providers()


def _check(hps):
    check_module(ModuleSpec("edgemodel", "CeprEdgeModel", ADAPTER, hps))


def test_providers_default_and_valid_values():
    assert EdgeModule().providers == "cpu"
    for value in ("cpu", "CPUExecutionProvider", ["cuda", "cpu"], [{"cuda": {"device_id": 0}}, "cpu"]):
        _check({"providers": value})


def test_unknown_provider_gets_did_you_mean():
    with pytest.raises(CeprError, match="edgemodel: providers: unknown execution provider 'cdua'; did you mean "
                                        "'cuda'"):
        _check({"providers": "cdua"})


@pytest.mark.skipif(not _cpu_build(), reason="this onnxruntime build has CUDA")
def test_cuda_alone_on_a_cpu_build_is_refused_up_front():
    with pytest.raises(CeprError, match="edgemodel: providers: execution provider cuda requested.*onnxruntime-gpu"):
        _check({"providers": "cuda"})


@pytest.mark.skipif(not _cpu_build(), reason="this onnxruntime build has CUDA")
def test_listed_fallback_runs_on_cpu_and_the_result_says_so(tiny_data, monkeypatch):
    from cepr.runner.dataset import TaskDatasetProcessor, load_index

    monkeypatch.setenv("BACKEND_TYPE", "ONNX")
    sample = TaskDatasetProcessor()(load_index(tiny_data / "160x120" / "test-index.txt")).x[0]
    edge = EdgeModule(model="edge-int8", providers=["cuda", "cpu"]).load()
    assert edge.pipeline.model.provider == CPU
    assert edge.predict(sample)["provider"] == CPU
    assert EdgeModule(model="edge-int8").load().predict(sample)["provider"] == CPU  # the default


def _job(tmp_path, tiny_data, monkeypatch, providers):
    """The default job (edge-only, the in-process expert: no server) with ``providers`` in settings/edge.yaml."""
    copy_default_job(tmp_path, tiny_data)
    monkeypatch.chdir(tmp_path)
    job = yaml.safe_load((tmp_path / "benchmarkingjob.yaml").read_text())
    job["benchmarkingjob"]["test_object"]["algorithms"] = [a for a in job["benchmarkingjob"]["test_object"]
                                                           ["algorithms"] if a["name"] == "edge-only"]
    job["benchmarkingjob"]["rank"]["selected_dataitem"]["hyperparameters"] = []
    (tmp_path / "benchmarkingjob.yaml").write_text(yaml.safe_dump(job))
    settings = tmp_path / "testalgorithms" / "perception-reasoning" / "settings"
    edge = yaml.safe_load((settings / "edge.yaml").read_text())
    (settings / "edge.yaml").write_text(yaml.safe_dump({**edge, "providers": providers}))
    (settings / "cloud.yaml").write_text(yaml.safe_dump({"backend": "inprocess", "payload": "summary",
                                                         "link": "none"}))
    return subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml", "--limit", "2",
                           "--no-progress"], capture_output=True, text=True, timeout=600, check=False)


def test_cepr_run_refuses_an_unknown_provider_before_any_case(tmp_path, tiny_data, monkeypatch):
    proc = _job(tmp_path, tiny_data, monkeypatch, "cdua")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "did you mean 'cuda'" in proc.stderr and "before running any test case" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.rglob("record.json"))


@pytest.mark.skipif(not _cpu_build(), reason="this onnxruntime build has CUDA")
def test_cepr_run_with_a_listed_fallback_records_the_cpu(tmp_path, tiny_data, monkeypatch):
    proc = _job(tmp_path, tiny_data, monkeypatch, ["cuda", "cpu"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "falling back to cpu" in proc.stdout + proc.stderr
    (rec_path,) = tmp_path.rglob("record.json")
    rec = json.loads(rec_path.read_text())
    assert rec["edge_providers"] == [CPU]
    lines = [json.loads(x) for x in (rec_path.parent / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(x["edge"]["provider"] == CPU for x in lines)


def _gpu() -> bool:
    import shutil

    smi = shutil.which("nvidia-smi")
    return not _cpu_build() and bool(smi) and subprocess.run([smi, "-L"], capture_output=True,
                                                             check=False).returncode == 0


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu(), reason="not run: no CUDA provider in this onnxruntime build / no GPU")
def test_edge_module_on_cuda_records_it_and_answers_as_on_cpu(tiny_data, monkeypatch):
    from cepr.runner.dataset import TaskDatasetProcessor, load_index

    monkeypatch.setenv("BACKEND_TYPE", "ONNX")
    samples = TaskDatasetProcessor()(load_index(tiny_data / "160x120" / "test-index.txt")).x[:5]
    cpu = EdgeModule(model="edge-int8").load()
    gpu = EdgeModule(model="edge-int8", providers="cuda").load()
    a = [cpu.predict(s) for s in samples]
    b = [gpu.predict(s) for s in samples]
    assert all(r["provider"] == "CUDAExecutionProvider" for r in b)
    assert sum(x["answer"] == y["answer"] for x, y in zip(a, b)) >= len(samples) - 1
