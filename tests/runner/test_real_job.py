"""The real-set job (benchmarkingjob-real.yaml + testenv/testenv-real.yaml) end to end through the real CLI, on a
tiny fixture in exactly the real Cloud-Robotics release's layout (tests/real_layout.py): both 2048x1024 and
640x480 copies, uint16 labels, scene folders, no depth, no val index, a CRLF index."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cepr.edge.models import SHIPPED
from cepr.runner.config import parse_job
from cepr.runner.testcase import build_test_cases
from real_layout import make_real_layout
from recorded_answers import check_recorded_answers

REPO = Path(__file__).resolve().parents[2]
N_TEST = 5  # one question per task (round-robin over the five tasks)
RGB_MODEL = SHIPPED["edge-rgb-int8"]
RGB_CALIBRATION = SHIPPED["edge-rgb-calibration"]


@pytest.fixture(scope="module")
def real_root(tmp_path_factory) -> Path:
    """A working directory laid out like the repository root with the real set in datasets/Cloud-Robotics/."""
    root = tmp_path_factory.mktemp("real-job")
    make_real_layout(root / "datasets" / "Cloud-Robotics", n_test=N_TEST, n_train=2)
    return root


def _job_copy(real_root: Path, dest: Path, edge_model: str | None = None) -> Path:
    """The repository's real-set job files, unchanged, in a folder whose datasets/ is the fixture (only
    ``edge_model``, when given, replaces the edge module's `model` in the shared settings/edge.yaml: one edit
    for every algorithm)."""
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, dest / d)
    shutil.copy(REPO / "benchmarkingjob-real.yaml", dest)
    (dest / "datasets").symlink_to(real_root / "datasets")
    if edge_model is not None:
        settings = dest / "testalgorithms" / "perception-reasoning" / "settings" / "edge.yaml"
        settings.write_text(yaml.safe_dump({"model": edge_model}))
    return dest


def test_real_job_parses_into_the_default_policy_grid(real_root, tmp_path, monkeypatch):
    monkeypatch.chdir(_job_copy(real_root, tmp_path))
    job = parse_job("benchmarkingjob-real.yaml")
    default = yaml.safe_load((REPO / "benchmarkingjob.yaml").read_text())["benchmarkingjob"]
    real = yaml.safe_load((REPO / "benchmarkingjob-real.yaml").read_text())["benchmarkingjob"]
    assert job.name == "cepr-real" != default["name"]
    assert real["test_object"] == default["test_object"]  # the same policies, the same algorithm files
    # the resolution is one key: test_index; train_index is its alias (Ianvs needs the key, nothing reads it)
    assert job.testenv.test_index.parts[-3:] == ("Cloud-Robotics", "640x480", "test-index.txt")
    assert job.testenv.train_index == job.testenv.test_index
    assert job.testenv.mining_mode == "inference-then-mining"
    te_real = yaml.safe_load((REPO / "testenv" / "testenv-real.yaml").read_text())["testenv"]
    te_default = yaml.safe_load((REPO / "testenv" / "testenv.yaml").read_text())["testenv"]
    assert te_real["metrics"] == te_default["metrics"]
    assert "synthetic" not in te_real["dataset"]  # never generates anything in place of the real set
    cases = build_test_cases(job)
    assert len(cases) == 9
    assert all(c.modules["edgemodel"].hyperparameters["model"] == "auto" for c in cases)
    # rank columns in Ianvs's format: {module type}-{hyperparameter}
    assert all(h.startswith("hard_example_mining-") for h in real["rank"]["selected_dataitem"]["hyperparameters"])


def _run(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob-real.yaml", "--limit",
                           str(N_TEST), "--no-progress"], cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False)


def _check_results(cwd: Path, proc: subprocess.CompletedProcess, model_file: str, calibration: str | None) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "9 test case(s) ok, 0 degraded, 0 failed" in proc.stdout
    rank = cwd / "workspace" / "cepr-real" / "rank"
    assert (rank / "selected_rank.csv").is_file()
    with open(rank / "all_rank.csv", newline="") as f:
        text = f.read()
    rows = list(csv.DictReader(text.splitlines(), delimiter="," if text.startswith("rank,") else " "))
    assert len(rows) == 9
    recs = [json.loads(p.read_text()) for p in (cwd / "workspace" / "cepr-real").rglob("record.json")]
    assert len(recs) == 9 and all(r["status"] == "ok" and r["samples"] == N_TEST for r in recs)
    assert all(r["testenv"]["test_index"].endswith("640x480/test-index.txt") for r in recs)
    lines = [json.loads(x) for r in recs for x in Path(r["output_dir"], "samples.jsonl").read_text().splitlines()]
    edges = [x["edge"] for x in lines if x["edge"] is not None]
    assert edges and all(e["model"] == model_file for e in edges)  # the RGB-only model ran on every frame
    assert all(e["calibration"] == calibration for e in edges)
    assert all(e["distances"] == "ground_plane" for e in edges)  # no depth: distances from the ground plane
    assert {x["task"] for x in lines} == {"path_hazard", "action", "people_count", "nearest_obstacle", "traversable"}
    cloud = [x["cloud"] for x in lines if x["cloud"] is not None]
    assert cloud and all(c["status"] == "ok" and c["bytes_up"] > 0 for c in cloud)
    # what each sample would cost to send is recorded as it runs: priced on the edge result, carried in the cloud
    # result, and a request's parts never outweigh the request (an upper bound the metric relies on)
    assert all(set(e["send_bytes"]) == {"image", "summary"} and e["send_bytes"]["image"] > 0 for e in edges)
    assert all(0 < sum(c["payload_bytes"].values()) < c["bytes_up"] for c in cloud)
    sent_pairs = [(x["edge"]["send_bytes"], x["cloud"]["payload_bytes"]) for x in lines if x["cloud"] and x["edge"]]
    assert sent_pairs and all(a == b for a, b in sent_pairs)  # priced as sent: the same payload, the same bytes
    saving = {r["algorithm"]: r["metrics"]["bandwidth_saving"] for r in recs}
    assert saving["edge-only"] == 1.0 and saving["cloud-only"] == 0.0  # against sending every sample
    vs_png = {r["algorithm"]: r["metrics"]["bandwidth_saving_vs_png"] for r in recs}
    assert vs_png["edge-only"] == 1.0 and 0.9 < vs_png["cloud-only"] < 1.0  # against the 2048x1024 copies
    print(proc.stdout)


def test_real_job_end_to_end_through_the_cli(real_root, tmp_path):
    """The shipped files as they are: `model: auto` must pick the shipped RGB-only model on frames without depth."""
    pytest.importorskip("fastapi")
    cwd = _job_copy(real_root, tmp_path)
    _check_results(cwd, _run(cwd), RGB_MODEL, RGB_CALIBRATION)
    check_recorded_answers(cwd / "workspace" / "cepr-real", "real_job_layout")


def test_real_job_end_to_end_with_an_rgb_model_by_path(real_root, tmp_path, tiny_rgb_model):
    """The same job with a tiny RGB-only model named by path (runs before the shipped model exists); with no
    calibration file beside it, `calibration: auto` leaves the planner uncalibrated."""
    pytest.importorskip("fastapi")
    cwd = _job_copy(real_root, tmp_path, edge_model=str(tiny_rgb_model))
    _check_results(cwd, _run(cwd), Path(tiny_rgb_model).name, None)


def test_real_job_with_the_rgbd_model_fails_naming_the_rgb_model(real_root, tmp_path):
    cwd = _job_copy(real_root, tmp_path, edge_model="edge-int8")
    proc = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob-real.yaml", "--limit", "1",
                           "--no-progress"], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 1
    assert "0 test case(s) ok, 0 degraded, 9 failed" in proc.stdout
    out = proc.stdout + proc.stderr
    assert "is an RGB-D model: this frame has no depth" in out and "model: edge-rgb-int8" in out
