"""One rule picks the algorithm (and hyperparameter point) that a single deployment runs: the edge service, the
stream worker, the sweep and the deploy entrypoint all get the same answer from the same job file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cepr.errors import CeprError
from cepr.runner.resolve import resolve_algorithm

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def job_dir(tmp_path, monkeypatch):
    """A copy of the repository's job and algorithm files (paths resolve against the current directory)."""
    for name in ("benchmarkingjob.yaml", "testenv", "testalgorithms"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _job_with(job_dir: Path, names: list[str]) -> Path:
    doc = yaml.safe_load((job_dir / "benchmarkingjob.yaml").read_text())
    algos = doc["benchmarkingjob"]["test_object"]["algorithms"]
    doc["benchmarkingjob"]["test_object"]["algorithms"] = [a for n in names for a in algos if a["name"] == n]
    path = job_dir / f"job-{'-'.join(names)}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_default_job_deploys_threshold_at_its_first_value(job_dir):
    r = resolve_algorithm("benchmarkingjob.yaml")
    assert (r.name, r.policy, r.policy_hyperparameters) == ("threshold", "Threshold", {"threshold": 0.6})
    assert r.hyperparameters("edgemodel")["model"] == "auto"
    assert r.hyperparameters("cloudmodel")["base_url"] == "auto"


def test_a_point_picks_another_listed_value(job_dir):
    r = resolve_algorithm("benchmarkingjob.yaml", point={"hard_example_mining-threshold": 0.8})
    assert r.policy_hyperparameters == {"threshold": 0.8}
    with pytest.raises(CeprError, match="no hyperparameter 'hard_example_mining-treshold'; did you mean "
                                        "'hard_example_mining-threshold'"):
        resolve_algorithm("benchmarkingjob.yaml", point={"hard_example_mining-treshold": 0.8})


@pytest.mark.parametrize("names, picked", [
    (["edge-only", "cloud-only", "random", "cross-entropy"], "random"),  # no Threshold: the first mixed one
    (["oracle", "cloud-only", "cross-entropy"], "cross-entropy"),  # the Oracle reads labels: not deployable
    (["edge-only", "oracle"], "edge-only"),  # nothing deployable and mixed: the first
    (["cross-entropy", "threshold"], "threshold"),  # Threshold first, wherever it is
])
def test_the_rule(job_dir, names, picked):
    assert resolve_algorithm(_job_with(job_dir, names)).name == picked


def test_a_named_algorithm_and_a_misspelt_one(job_dir):
    assert resolve_algorithm("benchmarkingjob.yaml", "cloud-only").policy == "CloudOnly"
    with pytest.raises(CeprError, match="no algorithm named 'clud-only'; did you mean 'cloud-only'"):
        resolve_algorithm("benchmarkingjob.yaml", "clud-only")


def test_an_algorithm_file_is_its_one_algorithm(job_dir):
    r = resolve_algorithm("testalgorithms/perception-reasoning/cross-entropy.yaml")
    assert (r.name, r.policy) == ("cross-entropy", "CrossEntropy")
    with pytest.raises(CeprError, match="not found"):
        resolve_algorithm("nope.yaml")


def test_every_single_deployment_takes_the_same_algorithm(job_dir):
    from cepr.serve.edge_service import load_deployment
    from cepr.stream.backend import module_hyperparameters
    from cepr.sweep.cache import resolve_source

    r = resolve_algorithm("benchmarkingjob.yaml")
    d = load_deployment("benchmarkingjob.yaml")
    assert (d.algorithm, d.policy, d.policy_hps, d.cloud_hps) == (r.name, r.policy, r.policy_hyperparameters,
                                                                  r.hyperparameters("cloudmodel"))
    assert module_hyperparameters("benchmarkingjob.yaml", "cloudmodel") == r.hyperparameters("cloudmodel")
    assert resolve_source("benchmarkingjob.yaml").algorithm.name == r.name
    with pytest.raises(CeprError, match="reads the labels"):
        load_deployment("benchmarkingjob.yaml", "oracle")
