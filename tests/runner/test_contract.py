"""The runner keeps Ianvs's jointinference contracts: test-case product, mining modes, call conventions,
y_pred layout, metric calls and rank files."""

import csv
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from cepr.errors import CeprError
from cepr.runner.config import parse_job
from cepr.runner.job import RunOptions, run_job
from cepr.runner.testcase import build_test_cases


def calls():
    return sys.modules["tiny_ji_modules"].CALLS


def read_lines(out_dir) -> list[dict]:
    return [json.loads(x) for x in Path(out_dir, "samples.jsonl").read_text().splitlines()]


def run(path, **kw):
    sys.modules.get("tiny_ji_modules") and calls().clear()
    return run_job(path, RunOptions(progress=False, check_frames=False, **kw))  # fake frames: no pre-flight


def test_hyperparameter_product_in_ianvs_order(tiny_job):
    job = parse_job(tiny_job(hem_hps={"threshold": [0.1, 0.2, 0.3]}, edge_hps={"quality": [1.0, 0.5],
                                                                                "crash_at": [-1, 99]}))
    cases = build_test_cases(job)
    assert len(cases) == 2 * 2 * 3
    combos = [(c.modules["edgemodel"].hyperparameters["quality"], c.modules["edgemodel"].hyperparameters["crash_at"],
               c.modules["hard_example_mining"].hyperparameters["threshold"]) for c in cases]
    # earlier modules vary slowest; within a module, the last hyperparameter varies fastest
    assert combos[:4] == [(1.0, -1, 0.1), (1.0, -1, 0.2), (1.0, -1, 0.3), (1.0, 99, 0.1)]
    assert combos[-1] == (0.5, 99, 0.3)
    assert len({c.id for c in cases}) == len(cases)
    assert build_test_cases(job)[5].id == cases[5].id  # stable ids: resume finds them again


def test_inference_then_mining_contract(tiny_job):
    r = run(tiny_job(hem_hps={"threshold": [0.5]}))
    assert not r.failed, r.failed
    rec = r.records[0]
    # the tiny edge is confident on even samples (1.0) and not on odd ones (0.25 < 0.5): odd ones go to the cloud
    assert rec["metrics"]["tiny_cloud_share"] == pytest.approx(3 / 6)
    assert rec["metrics"]["tiny_order_ok"] == 1.0
    c = calls()
    assert ("load", None) in c  # BACKEND_TYPE=TORCH: load() with no arguments
    edge = [x for x in c if x[0] == "edge"]
    assert [x[1] for x in edge] == list(range(6)) and {x[2] for x in edge} == {"inference-then-mining"}
    assert [x[1] for x in c if x[0] == "cloud"] == [1, 3, 5]
    assert all(x[1] == "edge" for x in c if x[0] == "hem")  # the filter sees the edge result
    lines = read_lines(rec["output_dir"])
    assert [x["index"] for x in lines] == list(range(6))
    assert [x["is_hard"] for x in lines] == [False, True] * 3
    assert [x["answer"] for x in lines] == ["e", "c"] * 3
    assert all(x["edge"] is not None for x in lines)  # edge result kept for hard samples too
    assert [x["cloud"] is not None for x in lines] == [False, True] * 3


def test_mining_then_inference_contract(tiny_job):
    r = run(tiny_job(hem_hps={"threshold": [0.5]}, mode="mining-then-inference"))
    assert not r.failed, r.failed
    c = calls()
    assert all(x[1] == "sample" for x in c if x[0] == "hem")  # the filter sees the raw sample
    assert [x[1] for x in c if x[0] == "cloud"] == [0, 3]  # index % 3 == 0 are hard
    assert [x[1] for x in c if x[0] == "edge"] == [1, 2, 4, 5]  # the edge runs only on the others
    lines = read_lines(r.records[0]["output_dir"])
    assert [x["edge"] is None for x in lines] == [True, False, False, True, False, False]


def test_self_design_requires_four_element_results(tiny_job):
    r = run(tiny_job(hem_hps={"threshold": [0.5]}, mode="self-design"))
    assert len(r.failed) == 1 and "[is_hard, final, edge, cloud]" in r.failed[0]["error"]


def test_non_torch_backend_convention(tiny_job, monkeypatch):
    monkeypatch.setenv("BACKEND_TYPE", "ONNX")
    r = run(tiny_job(hem_hps={"threshold": [0.5]}))
    assert not r.failed
    loads = [x for x in calls() if x[0] == "load"]
    assert loads and loads[0][1].endswith("tiny_ji_modules.py")  # load(model_url=$model_path)


def test_rank_files_have_ianvs_columns(tiny_job):
    path = tiny_job(hem_hps={"threshold": [0.5, 1.5]})  # 0.5 sends the odd samples (0.25), 1.5 sends all
    r = run(path)
    assert len(r.records) == 2
    rank = r.rank_dir
    with open(rank / "all_rank.csv") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    assert header[:4] == ["rank", "algorithm", "tiny_cloud_share", "tiny_order_ok"]
    assert header[4:9] == ["paradigm", "dataset_processor", "edgemodel", "cloudmodel", "hard_example_mining"]
    assert header[9:] == ["edgemodel-quality", "hard_example_mining-threshold", "time", "url"]
    body = [dict(zip(header, r)) for r in rows[1:]]
    assert {b["hard_example_mining-threshold"] for b in body} == {"0.5", "1.5"}
    assert all(b["url"].startswith("./ws/tiny/tinyalgo/") for b in body)  # relative, as the YAML spells it
    assert [b["rank"] for b in body] == ["1", "2"]
    # sorted by tiny_cloud_share descending: the second case (threshold 1.5, every sample) comes first
    assert [(b["hard_example_mining-threshold"], float(b["tiny_cloud_share"])) for b in body] == [("1.5", 1.0),
                                                                                                ("0.5", 0.5)]
    assert body[0]["edgemodel"] == "TinyEdge" and body[0]["paradigm"] == "jointinference"
    assert (rank / "selected_rank.csv").is_file()
    # a second run replaces its rows instead of piling up duplicates (an Ianvs quirk we do not copy)
    run(path)
    with open(rank / "all_rank.csv") as f:
        assert len(list(csv.reader(f))) == 3
    assert "tiny_cloud_share" in r.table and "TinyThreshold" in r.table


def test_selected_dataitem_filters_columns(tiny_job):
    rank = {"sort_by": [{"tiny_cloud_share": "ascend"}],
            "visualization": {"mode": "selected_only", "method": "print_table"},
            "selected_dataitem": {"paradigms": ["all"], "modules": ["hard_example_mining"],
                                  "hyperparameters": ["hard_example_mining-threshold"],
                                  "metrics": ["tiny_cloud_share"]},
            "save_mode": "selected_only"}
    # case order: 1.5 (sends all 6), 0.5 (sends 3), 0.9 (sends 3); ascending: 0.5 and 0.9 (a tie keeps the
    # cases' order), then 1.5. An unsorted table would keep 1.5 first, a reversed one would put it first too.
    r = run(tiny_job(hem_hps={"threshold": [1.5, 0.5, 0.9]}, rank=rank))
    with open(r.rank_dir / "selected_rank.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["rank", "algorithm", "tiny_cloud_share", "paradigm", "hard_example_mining",
                       "hard_example_mining-threshold", "time", "url"]
    assert [(x[5], float(x[2])) for x in rows[1:]] == [("0.5", 0.5), ("0.9", 0.5), ("1.5", 1.0)]
    assert not (r.rank_dir / "all_rank.csv").exists()


IANVS = Path(__file__).parent / "ianvs"  # rank files written by real Ianvs 0.1.0; how: ianvs/README.md


def _split(header: list[str]) -> tuple[list[str], set[str], list[str]]:
    """(rank, algorithm), the metric columns (a set: Ianvs's order comes from a Python set), the rest."""
    i = header.index("paradigm")
    return header[:2], set(header[2:i]), header[i:]


@pytest.mark.parametrize("name", ["all_rank.csv", "selected_rank.csv"])
def test_rank_csv_is_what_ianvs_writes_for_the_same_job(tiny_job, name):
    """The tiny job (conftest's defaults) was run under real Ianvs; cepr run must write the same CSV: separator,
    header names and order, hyperparameter column names and values, relative url, time format."""
    with open(IANVS / f"tiny_{name}", newline="") as f:
        ianvs = list(csv.reader(f))
    r = run(tiny_job())
    with open(r.rank_dir / name, newline="") as f:
        text = f.read()
    assert "\r" not in text and text.endswith("\n")
    ours = list(csv.reader(text.splitlines()))
    assert _split(ours[0]) == _split(ianvs[0])
    assert len(ours) == len(ianvs) == 3

    def by_threshold(rows):
        h = rows[0]
        return {d["hard_example_mining-threshold"]: d for d in (dict(zip(h, x)) for x in rows[1:])}

    mine, theirs = by_threshold(ours), by_threshold(ianvs)
    assert set(mine) == set(theirs) == {"0.5", "0.9"}
    for k in mine:
        same = [c for c in ianvs[0] if c not in ("rank", "time", "url")]
        assert {c: mine[k][c] for c in same} == {c: theirs[k][c] for c in same}
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", mine[k]["time"])
        # ./ws/tiny/tinyalgo/<case>: Ianvs's case is a uuid, cepr's a stable hash
        assert mine[k]["url"].rsplit("/", 1)[0] == theirs[k]["url"].rsplit("/", 1)[0] == "./ws/tiny/tinyalgo"
    assert [x[0] for x in ours[1:]] == ["1", "2"]


def test_selected_hyperparameters_take_ianvs_column_names(tiny_job):
    path = tiny_job()
    doc = yaml.safe_load(path.read_text())
    sel = doc["benchmarkingjob"]["rank"]["selected_dataitem"]
    sel["hyperparameters"] = ["threshold"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CeprError, match=r"\{module type\}-\{hyperparameter\}; did you mean "
                                        r"'hard_example_mining-threshold'"):
        parse_job(path)
    sel["hyperparameters"] = ["hard_example_mining-threshold"]
    sel["metrics"] = ["tiny_cloud_shar"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CeprError, match="metric 'tiny_cloud_shar' names no column.*did you mean 'tiny_cloud_share'"):
        parse_job(path)
    sel["metrics"] = ["all"]
    sel["modules"] = ["hard_example_minning"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CeprError, match="did you mean 'hard_example_mining'"):
        parse_job(path)


def test_a_failing_sample_is_recorded_and_the_case_scored_on_the_others(tiny_job):
    """A sample whose inference raises is a failed sample (file and reason in samples.jsonl and record.json),
    not a failed case: the other samples are run and scored (the whole case failed before)."""
    r = run(tiny_job(hem_hps={"threshold": [0.5]}, edge_hps={"quality": [1.0], "crash_at": [2, -1]}))
    assert len(r.records) == 2 and not r.failed
    bad = next(rec for rec in r.records if rec["n_failed"])
    assert bad["n_ok"] == 5 and bad["n_failed"] == 1 and r.samples_failed == 1
    assert bad["failed_samples"][0]["index"] == 2 and "edge exploded on purpose" in bad["failed_samples"][0]["reason"]
    assert bad["failed_samples"][0]["rgb"].endswith("img2.png")
    rec = json.loads(Path(bad["output_dir"], "record.json").read_text())
    assert rec["status"] == "ok" and rec["n_failed"] == 1 and rec["failed_samples"] == bad["failed_samples"]
    lines = read_lines(bad["output_dir"])
    assert [x["index"] for x in lines] == [0, 1, 2, 3, 4, 5]  # every sample ran: the failure stopped nothing
    assert lines[2]["status"] == "failed" and "edge exploded" in lines[2]["error"]


def test_resume_skips_finished_cases_after_a_crash(tiny_job):
    """A case where every sample failed is a failed case; --resume runs only it again."""
    path = tiny_job(hem_hps={"threshold": [0.5]}, edge_hps={"quality": [1.0], "crash_at": [-1, 0]})
    r1 = run(path, limit=1)
    assert len(r1.records) == 1 and len(r1.failed) == 1
    assert "every sample failed" in r1.failed[0]["error"] and "edge exploded" in r1.failed[0]["error"]
    r2 = run(path, resume=True, limit=1)
    assert r2.skipped == 1  # the finished case is reused ...
    assert [x[1] for x in calls() if x[0] == "edge"] == [0]  # ... only the failed one ran again
    assert r2.records[0]["id"] == r1.records[0]["id"]
    assert r2.records[0]["metrics"] == r1.records[0]["metrics"]


def test_limit_and_concurrency_keep_dataset_order(tiny_job):
    r = run(tiny_job(hem_hps={"threshold": [0.5]}), limit=4, concurrency=3)
    assert not r.failed
    rec = r.records[0]
    assert rec["samples"] == 4 and rec["metrics"]["tiny_order_ok"] == 1.0


def test_case_ids_depend_on_limit(tiny_job):
    path = tiny_job(hem_hps={"threshold": [0.5]})
    a = run(path, limit=3).records[0]["id"]
    b = run(path, limit=4).records[0]["id"]
    assert a != b


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["benchmarkingjob"].update(rnak=d["benchmarkingjob"].pop("rank")), "did you mean 'rank'"),
    (lambda d: d["benchmarkingjob"].update(hard_example_mining_mode="inference-then-mining"),
     "belongs in testenv.yaml"),
    (lambda d: d["benchmarkingjob"]["rank"]["selected_dataitem"].pop("hyperparameters"), "hyperparameters"),
    (lambda d: d["benchmarkingjob"]["rank"].update(sort_by=[{"acc": "down"}]), "ascend|descend"),
])
def test_job_yaml_errors_are_clear(tiny_job, edit, message):
    path = tiny_job()
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CeprError, match=message):
        parse_job(path)


def test_testenv_and_algorithm_errors_are_clear(tiny_job, tmp_path):
    path = tiny_job()
    te = yaml.safe_load((tmp_path / "testenv.yaml").read_text())
    te["testenv"]["hard_example_mining_mode"] = "inference_then_mining"
    (tmp_path / "testenv.yaml").write_text(yaml.safe_dump(te))
    with pytest.raises(CeprError, match="did you mean 'inference-then-mining'"):
        parse_job(path)
    path = tiny_job()
    algo = yaml.safe_load((tmp_path / "algo.yaml").read_text())
    algo["algorithm"]["modules"][1]["type"] = "edge_model"
    (tmp_path / "algo.yaml").write_text(yaml.safe_dump(algo))
    with pytest.raises(CeprError, match="did you mean 'edgemodel'"):
        parse_job(path)
    path = tiny_job(hem_name="TinyTreshold")
    with pytest.raises(CeprError, match="(?s)before running any test case.*did you mean 'TinyThreshold'"):
        run(path)


def test_every_case_is_validated_before_the_first_runs(tiny_job, tmp_path):
    """A bad value in the last case stops the job before any case runs (nothing is called, nothing written),
    and one error lists every bad case with its module and values."""
    path = tiny_job(hem_hps={"threshold": [0.5, 0.9, "high"]}, edge_hps={"quality": [1.0, 0.5]})
    with pytest.raises(CeprError) as e:
        run(path)
    msg = str(e.value)
    assert "2 problem(s) found before running any test case" in msg  # the bad threshold, with each edge value
    assert msg.count("hard_example_mining 'TinyThreshold' {'threshold': 'high'}: ValueError: could not convert") == 2
    assert calls() == [] and not (tmp_path / "ws").exists()


@pytest.mark.parametrize("mtype, name, hps, message", [
    ("edgemodel", "CeprEdgeModel", {"threads": "two"}, "threads must be an integer"),
    ("edgemodel", "CeprEdgeModel", {"model": "edge-in8"}, "did you mean the shipped model 'edge-int8'"),
    ("cloudmodel", "CeprCloudModel", {"link": "5h"}, "bad link"),
    ("cloudmodel", "CeprCloudModel", {"quality": 500}, "bad payload settings"),
    ("cloudmodel", "CeprCloudModel", {"emulate_link": "maybe"}, "emulate_link must be true or false"),
    ("cloudmodel", "CeprCloudModel", {"base_url": "http://127.0.0.1:9/v1"}, "needs `model`"),
    ("hard_example_mining", "Threshold", {"threshold": "high"}, "threshold"),
])
def test_cepr_modules_check_values_without_starting_anything(mtype, name, hps, message):
    """cepr's modules check their values up front (the cloud module starts no server to do it)."""
    from cepr.runner.config import ModuleSpec
    from cepr.runner.testcase import check_module
    from cepr.servers import autoserve

    adapters = Path(__file__).resolve().parents[2] / "testalgorithms" / "perception-reasoning"
    url = adapters / {"edgemodel": "cepr_edge_model.py", "cloudmodel": "cepr_cloud_model.py",
                      "hard_example_mining": "cepr_hard_example_mining.py"}[mtype]
    with pytest.raises(CeprError, match=message):
        check_module(ModuleSpec(mtype, name, url, hps))
    check_module(ModuleSpec(mtype, name, url, {}))  # the defaults are valid
    assert not autoserve._servers  # base_url: auto (the default) was checked, not started


def test_unknown_hyperparameter_is_found_from_the_signature(tiny_job):
    path = tiny_job(edge_hps={"qualty": [1.0]})
    with pytest.raises(CeprError, match=r"(?s)edgemodel 'TinyEdge' \{'qualty': 1.0\}.*unexpected keyword argument "
                                        r"'qualty'"):
        run(path)


def test_missing_index_is_a_clear_error(tiny_job, tmp_path):
    path = tiny_job()
    (tmp_path / "data" / "test-index.txt").unlink()
    with pytest.raises(CeprError, match="test_index"):
        run(path)


def test_resume_reads_records_of_the_earlier_version_and_refuses_newer_ones(tiny_job):
    """record.json is versioned (cepr.records.CaseRecord): a record written before the version field existed is
    reused as it was; one written by a newer cepr stops the job with what to do."""
    import json as _json

    path = tiny_job(hem_hps={"threshold": [0.5]})
    r1 = run(path, limit=1)
    rec_file = Path(r1.records[0]["output_dir"]) / "record.json"
    doc = _json.loads(rec_file.read_text())
    assert doc["schema_version"] == 2
    del doc["schema_version"]  # as version 1 wrote it
    rec_file.write_text(_json.dumps(doc))
    r2 = run(path, resume=True, limit=1)
    assert r2.skipped == 1 and r2.records[0]["metrics"] == r1.records[0]["metrics"]
    rec_file.write_text(_json.dumps({**doc, "schema_version": 9}))
    with pytest.raises(CeprError, match="record version 9.*written by a newer cepr"):
        run(path, resume=True, limit=1)
