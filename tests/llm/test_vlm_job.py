"""benchmarkingjob-vlm.yaml: our own VLMs in the loop (the grounded VLM at the edge, the ungrounded baselines),
unchanged but for its data set, through the CLI; on the synthetic layout and on the real one (no depth)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recorded_answers import check_recorded_answers

REPO = Path(__file__).resolve().parents[2]
CASES = {"edge-planner", "edge-grounded-q8_0", "edge-grounded-q4_0", "cloud-reference", "threshold-planner-reference",
         "threshold-grounded-reference", "crossentropy-grounded-reference", "cloud-grounded-features-fp16",
         "cloud-grounded-features-int8", "cloud-grounded-vllm", "edge-vlm-small-q8_0", "cloud-vlm-base"}


def _job(tmp_path: Path, index_dir: Path, engine: str | None = None) -> Path:
    """The job on ``index_dir``; ``engine``: the grounded cloud VLM's engine instead of the shipped vllm."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, tmp_path / d)
    shutil.copy(REPO / "benchmarkingjob-vlm.yaml", tmp_path)
    te_path = tmp_path / "testenv" / "testenv-llm.yaml"
    te = yaml.safe_load(te_path.read_text())
    te["testenv"]["dataset"] = {"train_index": str(index_dir / "train-index.txt"),
                                "test_index": str(index_dir / "test-index.txt")}
    te_path.write_text(yaml.safe_dump(te))
    if engine is not None:
        f = tmp_path / "testalgorithms" / "perception-reasoning" / "vlm" / "cloud-grounded-vllm.yaml"
        text = f.read_text()
        assert text.count('values: ["vllm"]') == 1, f
        f.write_text(text.replace('values: ["vllm"]', f'values: ["{engine}"]'))
    return tmp_path


def test_vlm_job_files_are_checked_and_parse(tiny_data, tmp_path, monkeypatch):
    from cepr.runner.config import parse_job
    from cepr.runner.testcase import build_test_cases

    monkeypatch.chdir(_job(tmp_path, tiny_data / "160x120"))
    job = parse_job("benchmarkingjob-vlm.yaml")
    assert job.name == "cepr-vlm"
    cases = build_test_cases(job)
    assert {c.algorithm.name for c in cases} == CASES and len(cases) == len(CASES)


def test_shipped_vlm_files_resolve():
    from cepr.llm.llamacpp import llm_path
    from cepr.llm.mtmd import mmproj_path
    from cepr.llm.vlm import SHIPPED_VLMS

    for name, (_, kind) in SHIPPED_VLMS.items():
        p = llm_path(name) if kind == "decoder" else mmproj_path(name)
        assert p.is_file() and p.stat().st_size > 0, name


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["synthetic", "real"])
def test_vlm_job_end_to_end(tiny_data, tmp_path, layout):
    """Every case on 2 samples: the shipped grounded VLM in llama.cpp at the edge (Q8_0, Q4_0; the RGB-only one
    on the real layout), the ungrounded small VLM, the base VLM behind llama.cpp's server (sent the frame at
    128x128), the planner and the reference expert, under EdgeOnly, CloudOnly, Threshold and CrossEntropy; on the
    real set's layout too (no depth, no val index)."""
    for m in ("llama_cpp", "sse_starlette", "gguf"):
        pytest.importorskip(m, reason="needs the llm extra (pip install -e '.[serve,llm]')")
    pytest.importorskip("llama_cpp.mtmd_cpp", reason="needs llama-cpp-python built with libmtmd")
    if layout == "synthetic":
        index_dir = tiny_data / "160x120"
    else:  # the real set's layout, written by the fixture (the datasets/ folder is not in the repository)
        from real_layout import make_real_layout

        index_dir = make_real_layout(tmp_path / "real", n_test=2, resolutions=("640x480",)) / "640x480"
    # the cloud's grounded VLM behind `cepr serve cloud --vlm` with its decoder in llama.cpp instead of vLLM (one
    # vLLM start per layout would cost a minute of the suite's budget): the same service, encoder and projection;
    # vLLM fed the same prompt embeddings is tested to give llama.cpp's answers (tests/llm/test_grounded_vllm.py)
    root = _job(tmp_path / "job", index_dir, engine="llamacpp")
    p = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob-vlm.yaml", "--limit", "2",
                        "--no-progress"], cwd=root, capture_output=True, text=True, timeout=900, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = list(csv.DictReader((root / "workspace" / "cepr-vlm" / "rank" / "all_rank.csv").open()))
    assert {r["algorithm"] for r in rows} == CASES
    by = {r["algorithm"]: r for r in rows}
    assert by["edge-grounded-q4_0"]["edgemodel-vlm_quant"] == "q4_0"
    for edge in ("edge-vlm-small-q8_0", "edge-grounded-q8_0", "edge-grounded-q4_0"):
        assert float(by[edge]["edge_ratio"]) == 1.0
    # the grounded VLM's records name the model that answered: the RGB-only one where the frame has no depth
    want = "grounded-edge-rgb-q8_0" if layout == "real" else "grounded-edge-q8_0"
    case = next(p for p in (root / "workspace" / "cepr-vlm").rglob("record.json")
                if '"edge-grounded-q8_0"' in p.read_text())
    lines = [json.loads(x) for x in (case.parent / "samples.jsonl").read_text().splitlines() if x.strip()]
    assert lines and all(x["edge"]["reasoner"] == want for x in lines), lines[0]
    # split computing: the projected tokens travel (fewer bytes in INT8), the cloud's decoder answers
    fp16, int8 = by["cloud-grounded-features-fp16"], by["cloud-grounded-features-int8"]
    for r in (fp16, int8):
        assert float(r["edge_ratio"]) == 0.0 and float(r["cloud_error"]) == 0 and r["cloudmodel-payload"] == "features"
    assert 0 < float(int8["uplink_bytes"]) < float(fp16["uplink_bytes"]) < float(by["cloud-reference"]["uplink_bytes"])
    g = by["cloud-grounded-vllm"]  # the w32 encoder on the JPEG the service received, then the decoder
    assert g["cloudmodel-server"] == "grounded" and g["cloudmodel-payload"] == "image", g
    assert float(g["edge_ratio"]) == 0.0 and float(g["cloud_error"]) == 0, g
    r = by["cloud-vlm-base"]
    assert r["cloudmodel-server_model"] == "cepr-vlm-base-q4_0"
    assert float(r["edge_ratio"]) == 0.0 and float(r["ttft_mean"]) > 0 and float(r["cloud_error"]) == 0, r
    # the frame at 128x128 PNG, not the 640x480 JPEG of the reference's payload
    assert 0 < float(r["uplink_bytes"]) < float(by["cloud-reference"]["uplink_bytes"]), r
    check_recorded_answers(root / "workspace" / "cepr-vlm", f"vlm_job_{layout}_2")
