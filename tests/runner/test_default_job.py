"""The shipped job files and adapters, end to end through the real CLI, the shipped models and the real
reference cloud expert server (on a few tiny synthetic frames)."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cepr.errors import CeprError
from cepr.runner.config import parse_job
from cepr.runner.testcase import build_test_cases
from helpers import copy_default_job
from recorded_answers import check_recorded_answers

REPO = Path(__file__).resolve().parents[2]


def test_default_job_parses_into_the_policy_grid(monkeypatch):
    monkeypatch.chdir(REPO)
    job = parse_job(REPO / "benchmarkingjob.yaml")
    assert job.testenv.mining_mode == "inference-then-mining"
    cases = build_test_cases(job)
    policies = [(c.algorithm.name, c.modules["hard_example_mining"].name) for c in cases]
    assert sorted(set(policies)) == sorted({("edge-only", "EdgeOnly"), ("cloud-only", "CloudOnly"),
                                            ("random", "Random"), ("cross-entropy", "CrossEntropy"),
                                            ("threshold", "Threshold"),
                                            ("oracle", "Oracle (upper bound: uses labels)")})
    assert len(cases) == 9  # two values each for Random, CrossEntropy and Threshold
    assert all(c.modules["cloudmodel"].hyperparameters["link"] == "4g" for c in cases)
    assert all(c.modules["edgemodel"].hyperparameters["model"] == "auto" for c in cases)  # edge-int8 on depth


def test_full_split_job_is_the_default_job_on_all_300_test_frames(monkeypatch):
    """benchmarkingjob-full.yaml: the same cases, metrics and rank as the default, over the whole test split."""
    monkeypatch.chdir(REPO)
    full, default = parse_job(REPO / "benchmarkingjob-full.yaml"), parse_job(REPO / "benchmarkingjob.yaml")
    assert [c.id for c in build_test_cases(full)] != []
    assert [(c.algorithm.name, c.modules["hard_example_mining"].hyperparameters) for c in build_test_cases(full)] \
        == [(c.algorithm.name, c.modules["hard_example_mining"].hyperparameters) for c in build_test_cases(default)]
    assert full.rank == default.rank and full.name == "cepr-full"
    assert [m.name for m in full.testenv.metrics] == [m.name for m in default.testenv.metrics]
    env = yaml.safe_load((REPO / "testenv" / "testenv-full.yaml").read_text())["testenv"]["dataset"]
    assert env["synthetic"] == {"frames": 2000, "seed": 0, "splits": ["test"]}  # 15% of 2000: 300 test frames
    assert "cloud-robotics-synth-full" in env["test_index"]


def test_one_edit_swaps_the_cloud_or_edge_model_for_every_case(tmp_path, monkeypatch):
    """Every algorithm file reads the shared settings/{edge,cloud}.yaml through Ianvs's other_hyperparameters:
    one edit there reaches all nine cases of every job, while the rank columns still tell the cases apart."""
    shutil.copytree(REPO / "testalgorithms", tmp_path / "testalgorithms")
    shutil.copytree(REPO / "testenv", tmp_path / "testenv")
    for job in ("benchmarkingjob.yaml", "benchmarkingjob-full.yaml", "benchmarkingjob-real.yaml"):
        shutil.copy(REPO / job, tmp_path)
    (tmp_path / "datasets" / "Cloud-Robotics" / "640x480").mkdir(parents=True)
    (tmp_path / "datasets" / "Cloud-Robotics" / "640x480" / "test-index.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    settings = tmp_path / "testalgorithms" / "perception-reasoning" / "settings"
    cloud = yaml.safe_load((settings / "cloud.yaml").read_text())
    cloud.update(base_url="http://127.0.0.1:8000/v1", model="my-vlm")
    (settings / "cloud.yaml").write_text(yaml.safe_dump(cloud))
    (settings / "edge.yaml").write_text(yaml.safe_dump({"model": "edge-rgb-int8"}))
    for job in ("benchmarkingjob.yaml", "benchmarkingjob-full.yaml", "benchmarkingjob-real.yaml"):
        cases = build_test_cases(parse_job(job))
        assert len(cases) == 9
        assert {(c.modules["cloudmodel"].hyperparameters["model"], c.modules["cloudmodel"].hyperparameters[
            "base_url"], c.modules["edgemodel"].hyperparameters["model"]) for c in cases} == {
            ("my-vlm", "http://127.0.0.1:8000/v1", "edge-rgb-int8")}
        hem = [(c.algorithm.name, tuple(c.modules["hard_example_mining"].hyperparameters.items())) for c in cases]
        assert len(set(hem)) == 9  # the selected rank columns (algorithm + HEM hyperparameters) stay distinct
    # the algorithm files of these three jobs name no edge or cloud setting themselves (other jobs' files, e.g. the
    # payload policies', set their own cloud keys on purpose)
    used = {tmp_path / a["url"] for job in ("benchmarkingjob.yaml", "benchmarkingjob-full.yaml",
                                            "benchmarkingjob-real.yaml")
            for a in yaml.safe_load((tmp_path / job).read_text())["benchmarkingjob"]["test_object"]["algorithms"]}
    assert len(used) >= 6
    for f in sorted(used):
        mods = {m["type"]: m for m in yaml.safe_load(f.read_text())["algorithm"]["modules"]}
        for t in ("edgemodel", "cloudmodel"):
            assert [next(iter(h)) for h in mods[t]["hyperparameters"]] == ["other_hyperparameters"], f


def test_adapter_basenames_are_unique():
    files = list((REPO / "testalgorithms").rglob("*.py")) + list((REPO / "testenv").rglob("*.py"))
    names = [f.stem for f in files]
    assert len(names) == len(set(names)) >= 5
    assert all(n.startswith("cepr_") for n in names)  # never a generic name like "basemodel"


@pytest.fixture
def job_copy(tmp_path, tiny_data, monkeypatch):
    """The repository's job, testenv and algorithm files, pointed at the tiny synthetic set."""
    copy_default_job(tmp_path, tiny_data)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_default_job_end_to_end_through_the_cli(job_copy):
    pytest.importorskip("fastapi")
    proc = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml", "--limit", "3",
                           "--no-progress"], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "9 test case(s) ok, 0 degraded, 0 failed" in out
    assert "bounds, not ranked" in out  # the Oracle is printed apart from the ranked policies
    rank = job_copy / "workspace" / "cepr-default" / "rank"
    with open(rank / "all_rank.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9
    # the same header as real Ianvs wrote for this job (tests/runner/ianvs/README.md; metric order is Ianvs's set's)
    for name in ("all_rank", "selected_rank"):
        ianvs = (Path(__file__).parent / "ianvs" / f"default_{name}_header.csv").read_text().strip().split(",")
        ours = (rank / f"{name}.csv").read_text().splitlines()[0].split(",")
        cut_i, cut_o = ianvs.index("paradigm"), ours.index("paradigm")
        assert (ianvs[:2], set(ianvs[2:cut_i]), ianvs[cut_i:]) == (ours[:2], set(ours[2:cut_o]), ours[cut_o:]), (
            f"{name}.csv's header differs from Ianvs's for this job: if the job files changed, re-record it")
    by_policy = {}
    for r in rows:
        by_policy.setdefault(r["hard_example_mining"].split(" ")[0], []).append(r)
    assert float(by_policy["EdgeOnly"][0]["edge_ratio"]) == 1.0
    assert float(by_policy["CloudOnly"][0]["edge_ratio"]) == 0.0
    assert float(by_policy["EdgeOnly"][0]["uplink_bytes"]) == 0.0
    assert float(by_policy["CloudOnly"][0]["uplink_bytes"]) > 1000  # summary + JPEG really crossed the wire
    assert "upper bound" in by_policy["Oracle"][0]["hard_example_mining"]
    for r in rows:
        assert float(r["latency_p95"]) >= float(r["latency_p50"]) > 0
    # what each case answered on each sample, from the shipped models: exactly the recorded answers
    check_recorded_answers(job_copy / "workspace" / "cepr-default", "default_job_tiny_3")
    # every case saved its record and one JSONL line per sample; cloud answers came from the real server
    recs = [json.loads(p.read_text()) for p in (job_copy / "workspace").rglob("record.json")]
    assert len(recs) == 9 and all(r["status"] == "ok" and r["samples"] == 3 for r in recs)
    cloud_only = next(r for r in recs if r["algorithm"] == "cloud-only")
    lines = [json.loads(x) for x in Path(cloud_only["output_dir"], "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(x["cloud"]["status"] == "ok" for x in lines)
    assert all(x["cloud"]["model"] == "cepr-reference-expert-not-an-llm" for x in lines)
    assert all(r["git"] is not None and r["versions"]["cepr"] for r in recs)
    # resources per case: the runner's CPU per sample and peak memory, and the cloud server's
    res = cloud_only["resources"]
    runner = res["runner (edge, dispatch, metrics)"]
    assert runner["cpu_s_per_sample"] > 0 and runner["peak_rss_mb"] > 50
    server = [v for k, v in res.items() if k.startswith("cloud server pid")]
    assert len(server) == 1 and server[0]["cpu_s_per_sample"] > 0 and server[0]["peak_rss_mb"] > 20
    # resume: nothing runs again
    proc2 = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml", "--limit", "3",
                            "--no-progress", "--resume"], capture_output=True, text=True, timeout=600, check=False)
    assert proc2.returncode == 0 and "resumed: 9 finished test case(s) reused" in proc2.stdout


def test_edge_and_cloud_modules_accept_both_call_conventions(tiny_data):
    from cepr.cloud.module import CloudModule
    from cepr.edge.module import EdgeModule
    from cepr.runner.dataset import TaskDatasetProcessor, load_index

    ds = TaskDatasetProcessor(tasks=["path_hazard", "action"])(load_index(tiny_data / "160x120" / "test-index.txt"))
    assert [s["task"] for s in ds.x[:2]] == ["path_hazard", "action"]
    edge = EdgeModule(model="edge-int8")
    edge.load(model_url="/nonexistent")  # Sedna's non-TORCH call; the model comes from the hyperparameter
    a = edge.predict(data=ds.x[0])
    b = edge.predict(ds.x[0], mining_mode="inference-then-mining")
    assert a["answer"] == b["answer"] and abs(sum(a["distribution"].values()) - 1) < 1e-6
    assert a["mask"].shape == (120, 160) and a["summary_bytes"] > 0
    cloud = CloudModule(backend="inprocess", payload="summary", link="4g")
    r = cloud.inference(ds.x[0].tolist(), post_process=None, mining_mode="inference-then-mining")
    assert r["status"] == "ok" and r["bytes_up"] > 0 and r["transfer_ms"] > 0
    fresh = TaskDatasetProcessor()(load_index(tiny_data / "160x120" / "test-index.txt")).x[0]
    with pytest.raises(CeprError, match="mining-then-inference"):
        cloud.inference(fresh)  # a summary payload needs the edge to have run


@pytest.mark.parametrize("kwargs, message", [
    ({"modle": "edge-int8"}, "did you mean 'model'"),
    ({"model": "edge-int9"}, "did you mean the shipped model 'edge-int8'"),
])
def test_edge_module_bad_hyperparameters(kwargs, message):
    from cepr.edge.module import EdgeModule

    with pytest.raises(CeprError, match=message):
        EdgeModule(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "opena"}, "did you mean 'openai'"),
    ({"backend": "inprocess", "payload": "summary+imag"}, "payload"),
    ({"backend": "inprocess", "timeout": 3}, "did you mean 'timeout_s'"),
    ({"backend": "inprocess", "link": "4G-ish"}, "link"),
])
def test_cloud_module_bad_hyperparameters(kwargs, message):
    from cepr.cloud.module import CloudModule

    with pytest.raises(CeprError, match=message):
        CloudModule(**kwargs)


def test_a_dead_cloud_shows_on_the_leaderboard(job_copy):
    """Drill: the cloud is unreachable. Every sample still gets an answer (the edge's), but the rows say so:
    fallback counts, an edge ratio from where answers came from, DEGRADED cases and exit code 3."""
    from helpers import free_port

    cloud = job_copy / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml"
    doc = yaml.safe_load(cloud.read_text())
    doc.update(base_url=f"http://127.0.0.1:{free_port()}/v1", model="nobody-home", timeout_s=0.5, retries=0)
    cloud.write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml", "--limit", "3",
                           "--no-progress"], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "DEGRADED test case" in proc.stdout and " degraded, 0 failed" in proc.stdout
    rows = list(csv.DictReader((job_copy / "workspace" / "cepr-default" / "rank" / "all_rank.csv").open()))
    cloud_only = next(r for r in rows if r["algorithm"] == "cloud-only")
    assert float(cloud_only["cloud_fallback"]) == 3.0 and float(cloud_only["cloud_ok"]) == 0.0
    assert float(cloud_only["edge_ratio"]) == 1.0  # every answer came from the edge
    recs = [json.loads(p.read_text()) for p in (job_copy / "workspace").rglob("record.json")]
    co = next(r for r in recs if r["algorithm"] == "cloud-only")
    assert co["degraded"] and co["cloud"]["fallback"] == 3 and "failed on 3 of 3" in co["cloud"]["why"]
    assert not next(r for r in recs if r["algorithm"] == "edge-only")["degraded"]  # nothing sent, nothing failed
    lines = [json.loads(x) for x in Path(co["output_dir"], "samples.jsonl").read_text().splitlines()]
    assert all(x["source"] == "edge" and x["cloud"]["status"] == "fallback" for x in lines)
