"""Each routing policy of benchmarkingjob-policies.yaml end to end through the real CLI (`cepr run --limit`), on
the tiny synthetic set (with depth) and on a fixture in the real Cloud-Robotics layout (no depth: distances from
the ground plane). The job's hyperparameter lists are cut to their first value to keep it short."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cepr.edge.features import FEATURE_NAMES
from helpers import copy_default_job
from real_layout import make_real_layout

REPO = Path(__file__).resolve().parents[2]
NEW = {"risk-aware": "RiskAware", "complexity": "Complexity", "learned": "Learned", "budget": "Budget",
       "network-aware": "NetworkAware"}
LIMIT = 5  # one question per task


def _policies_job(dest: Path, testenv: str) -> None:
    """benchmarkingjob-policies.yaml in ``dest`` with only the new policies, each at its first values."""
    job = yaml.safe_load((REPO / "benchmarkingjob-policies.yaml").read_text())
    b = job["benchmarkingjob"]
    b["testenv"] = testenv
    b["test_object"]["algorithms"] = [a for a in b["test_object"]["algorithms"] if a["name"] in NEW]
    sel = b["rank"]["selected_dataitem"]
    sel["hyperparameters"] = [h for h in sel["hyperparameters"] if h != "hard_example_mining-ratio"]  # Random's
    assert [a["name"] for a in b["test_object"]["algorithms"]] == list(NEW)
    for a in b["test_object"]["algorithms"]:
        path = dest / a["url"]
        doc = yaml.safe_load(path.read_text())
        for m in doc["algorithm"]["modules"]:
            if m["type"] == "hard_example_mining":
                assert m["name"] == NEW[a["name"]]
                for hp in m["hyperparameters"]:
                    for k in hp:
                        hp[k]["values"] = hp[k]["values"][:1]
        path.write_text(yaml.safe_dump(doc))
    (dest / "benchmarkingjob-policies.yaml").write_text(yaml.safe_dump(job))


def _run(dest: Path) -> dict[str, list[dict]]:
    p = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob-policies.yaml", "--limit",
                        str(LIMIT), "--no-progress"], cwd=dest, capture_output=True, text=True, timeout=900,
                       check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    out = {}
    for rec_file in (dest / "workspace" / "cepr-policies").glob("*/*/record.json"):
        rec = json.loads(rec_file.read_text())
        assert rec["status"] == "ok", rec.get("error")
        lines = [json.loads(x) for x in (rec_file.parent / "samples.jsonl").read_text().splitlines()]
        out[rec_file.parent.parent.name] = (rec, lines)
    assert set(out) == set(NEW)
    return out


def _check(results: dict, distances: str) -> None:
    for name, (rec, lines) in results.items():
        assert len(lines) == rec["samples"] == rec["n_ok"] >= 3  # the tiny set's test split has 4 frames
        for line in lines:
            e = line["edge"]
            assert set(e["features"]) == set(FEATURE_NAMES)
            assert e["distances"] == distances
            # the cloud answered exactly the samples the policy called hard
            assert (line["cloud"] is not None) == line["is_hard"]
        if name == "learned":  # the model it used is saved with the run, and the record names it
            assert rec["router_model"] == "router-model.json" and rec["router_model_source"] == "learned-synth"


@pytest.mark.slow
def test_each_new_policy_runs_on_the_synthetic_set(tiny_data, tmp_path):
    copy_default_job(tmp_path, tiny_data)
    _policies_job(tmp_path, "./testenv/testenv.yaml")
    results = _run(tmp_path)
    _check(results, "depth")
    saved = list((tmp_path / "workspace" / "cepr-policies" / "learned").glob("*/router-model.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["format"] == "cepr-learned-router"


@pytest.mark.slow
def test_each_new_policy_runs_on_the_real_layout_without_depth(tmp_path):
    make_real_layout(tmp_path / "datasets" / "Cloud-Robotics", n_test=LIMIT, n_train=2)
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, tmp_path / d)
    _policies_job(tmp_path, "./testenv/testenv-real.yaml")
    _check(_run(tmp_path), "ground_plane")
