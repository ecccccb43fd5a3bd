"""The three worked examples of docs/architecture.md, run as a user would: a policy, a cloud backend and a metric,
each one file in docs/examples/, added to a copy of the repository's default job and run through the real CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import copy_default_job

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docs" / "examples"


@pytest.fixture
def job(tmp_path, tiny_data):
    te = copy_default_job(tmp_path, tiny_data)  # the default job on the tiny synthetic set
    te_path = tmp_path / "testenv" / "testenv.yaml"
    # example 3: the metric, one more testenv entry
    te["testenv"]["metrics"].append({"name": "cloud_changed", "url": str(EXAMPLES / "cepr_example_changed_metric.py")})
    te_path.write_text(yaml.safe_dump(te))
    # example 1: the policy, one more algorithm whose HEM url is the example file
    algos = tmp_path / "testalgorithms" / "perception-reasoning"
    algo = yaml.safe_load((algos / "threshold.yaml").read_text())
    algo["algorithm"]["modules"][-1] = {"type": "hard_example_mining", "name": "Margin",
                                        "url": str(EXAMPLES / "cepr_example_margin_policy.py"),
                                        "hyperparameters": [{"margin": {"values": [0.0, 1.0]}}]}
    (algos / "margin.yaml").write_text(yaml.safe_dump(algo, sort_keys=False))
    jobdoc = yaml.safe_load((tmp_path / "benchmarkingjob.yaml").read_text())
    jobdoc["benchmarkingjob"]["test_object"]["algorithms"].append(
        {"name": "margin", "url": "./testalgorithms/perception-reasoning/margin.yaml"})
    jobdoc["benchmarkingjob"]["rank"]["selected_dataitem"]["hyperparameters"].append("hard_example_mining-margin")
    (tmp_path / "benchmarkingjob.yaml").write_text(yaml.safe_dump(jobdoc, sort_keys=False))
    # example 2: the backend, one edit of the shared cloud settings
    (algos / "settings" / "cloud.yaml").write_text(yaml.safe_dump({
        "plugins": [str(EXAMPLES / "cepr_example_prior_backend.py")], "backend": "prior",
        "answers": {"path_hazard": "yes", "traversable": "no"}, "payload": "summary", "link": "4g"}))
    return tmp_path


def _records(ws: Path) -> dict:
    out = {}
    for rec in ws.glob("*/*/record.json"):
        r = json.loads(rec.read_text())
        out[(r["algorithm"], json.dumps(r["hyperparameters"], sort_keys=True))] = r
    return out


def test_the_three_worked_examples_run_in_the_default_job(job):
    proc = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml", "--limit", "6",
                           "--no-progress"], cwd=job, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "11 test case(s) ok, 0 degraded, 0 failed" in proc.stdout
    recs = _records(job / "workspace" / "cepr-default")
    margin = {r["hyperparameters"]["margin"]: r for (a, _), r in recs.items() if a == "margin"}
    assert set(margin) == {0.0, 1.0}
    # margin 0 never sends (no gap is below 0); margin 1 always does (every gap is below 1)
    assert margin[0.0]["metrics"]["edge_ratio"] == 1.0 and margin[1.0]["metrics"]["edge_ratio"] == 0.0
    # the prior backend answered every hard sample with its configured answer (else the first allowed one)
    lines = [json.loads(x) for x in (Path(margin[1.0]["output_dir"]) / "samples.jsonl").read_text().splitlines()]
    expect = {"path_hazard": "yes", "traversable": "no"}
    for x in lines:
        assert x["cloud"]["model"] == "prior" and x["cloud"]["bytes_up"] > 0
        assert x["answer"] == expect.get(x["task"], x["cloud"]["answer"])
    changed = sum(x["edge"]["answer"] != x["cloud"]["answer"] for x in lines) / len(lines)
    assert margin[1.0]["metrics"]["cloud_changed"] == pytest.approx(changed)
    # the rank column of the new hyperparameter is filled
    rank = (job / "workspace" / "cepr-default" / "rank" / "selected_rank.csv").read_text().splitlines()
    header = rank[0].split(",")
    col = header.index("hard_example_mining-margin")
    assert sorted(r.split(",")[col] for r in rank[1:] if r.split(",")[1] == "margin") == ["0.0", "1.0"]


def test_a_misspelt_backend_setting_is_refused_before_anything_runs(job):
    cloud = job / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml"
    doc = yaml.safe_load(cloud.read_text())
    doc["answer"] = doc.pop("answers")
    cloud.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml", "--limit", "2",
                           "--no-progress"], cwd=job, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode != 0
    assert "before running any test case" in proc.stderr and "did you mean 'answers'" in proc.stderr
    assert not (job / "workspace").exists()
