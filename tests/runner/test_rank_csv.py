"""The rank CSVs in Ianvs's format (comma-separated, `{module type}-{hyperparameter}` columns, relative url), and
how earlier runs' files are merged."""

import csv
import logging

import pytest

from cepr.errors import CeprError
from cepr.runner.config import RankSpec
from cepr.runner.rank import build_rank, case_hyperparameters, case_url, read_rank_csv


def record(threshold, acc, algorithm="threshold", extra_hps=None, case="c1"):
    return {"algorithm": algorithm, "paradigm": "jointinference", "id": case, "finished": "2026-01-02 03:04:05",
            "output_dir": f"/abs/ws/job/{algorithm}/{case}", "url": case_url("./ws", "job", algorithm, case),
            "metrics": {"accuracy": acc, "latency_p95": float("nan")},
            "modules": {"edgemodel": {"name": "CeprEdgeModel", "hyperparameters": {"model": "edge-int8"}},
                        "cloudmodel": {"name": "CeprCloudModel", "hyperparameters": extra_hps or {}},
                        "hard_example_mining": {"name": "Threshold",
                                                "hyperparameters": {"threshold": threshold}}}}


RANK = RankSpec([("accuracy", "descend")], hyperparameters=["hard_example_mining-threshold"],
                metrics=["accuracy"], modules=["hard_example_mining"])


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_hyperparameter_columns_and_values_are_ianvs_names_and_strings():
    hps = case_hyperparameters(record(0.6, 0.5, extra_hps={"extra_body": {"top_k": 1}, "quality": 85})["modules"])
    assert hps == {"edgemodel-model": "edge-int8", "cloudmodel-extra_body": "{'top_k': 1}",
                   "cloudmodel-quality": "85", "hard_example_mining-threshold": "0.6"}


def test_csvs_are_comma_separated_with_quoting_and_empty_nan(tmp_path):
    recs = [record(0.6, 0.7, extra_hps={"extra_body": {"top_k": 1, "seed": 2}}, case="a"),
            record(0.8, 0.9, case="b")]
    sel = build_rank(recs, RANK, tmp_path, ["accuracy", "latency_p95"])
    all_rows = rows(tmp_path / "all_rank.csv")
    assert all_rows[0] == ["rank", "algorithm", "accuracy", "latency_p95", "paradigm", "edgemodel", "cloudmodel",
                           "hard_example_mining", "edgemodel-model", "cloudmodel-extra_body",
                           "hard_example_mining-threshold", "time", "url"]
    by_rank = {r[0]: dict(zip(all_rows[0], r)) for r in all_rows[1:]}
    assert by_rank["1"]["accuracy"] == "0.9" and by_rank["1"]["url"] == "./ws/job/threshold/b"
    assert by_rank["2"]["cloudmodel-extra_body"] == "{'top_k': 1, 'seed': 2}"  # quoted: one cell
    assert by_rank["1"]["latency_p95"] == "" and by_rank["1"]["cloudmodel-extra_body"] == ""
    assert rows(tmp_path / "selected_rank.csv")[0] == ["rank", *sel["header"]] == [
        "rank", "algorithm", "accuracy", "paradigm", "hard_example_mining", "hard_example_mining-threshold",
        "time", "url"]


def test_a_listed_column_no_case_fills_stays_empty_as_in_ianvs(tmp_path):
    rank = RankSpec([("accuracy", "descend")], hyperparameters=["hard_example_mining-ratio"], metrics=["accuracy"],
                    modules=["hard_example_mining"])
    build_rank([record(0.6, 0.7)], rank, tmp_path, ["accuracy"])
    head, body = rows(tmp_path / "selected_rank.csv")
    assert "hard_example_mining-ratio" in head and body[head.index("hard_example_mining-ratio")] == ""


def test_earlier_rows_merge_by_url_including_ianvs_written_ones(tmp_path):
    build_rank([record(0.6, 0.7, case="a")], RANK, tmp_path, ["accuracy", "latency_p95"])
    # a row Ianvs appended to the same file (its own case folder): kept, in the same format
    with open(tmp_path / "all_rank.csv", "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow(
            ["2", "threshold", "0.8", "", "jointinference", "CeprEdgeModel", "CeprCloudModel", "Threshold",
             "edge-int8", "0.9", "2026-01-01 00:00:00", "./ws/job/threshold/6606df86-ec48-11f1-a6ad-02fc00000001"])
    build_rank([record(0.6, 0.75, case="a"), record(0.8, 0.6, case="b")], RANK, tmp_path,
               ["accuracy", "latency_p95"])
    _, body = read_rank_csv(tmp_path / "all_rank.csv")
    assert [(r["url"].rsplit("/", 1)[1], r["accuracy"]) for r in body] == [
        ("6606df86-ec48-11f1-a6ad-02fc00000001", "0.8"), ("a", "0.75"), ("b", "0.6")]  # a re-run replaces its row
    assert [r["rank"] for r in body] == ["1", "2", "3"]
    assert [r["hard_example_mining-threshold"] for r in body] == ["0.9", "0.6", "0.8"]


def test_a_file_in_another_format_is_replaced_not_misread(tmp_path, caplog):
    (tmp_path / "all_rank.csv").write_text("rank algorithm accuracy paradigm time url\n1 old 0.1 ji t u\n")
    with caplog.at_level(logging.WARNING):
        build_rank([record(0.6, 0.7)], RANK, tmp_path, ["accuracy"])
    assert "not an Ianvs-format rank file" in caplog.text
    assert len(rows(tmp_path / "all_rank.csv")) == 2


def test_case_url_keeps_the_workspace_as_written():
    assert case_url("./workspace", "cepr-default", "oracle", "abc") == "./workspace/cepr-default/oracle/abc"
    assert case_url("/tmp/w", "j", "a", "c") == "/tmp/w/j/a/c"


def test_dataset_columns_are_written_and_printed_like_any_metric(tmp_path):
    """``dataset`` (a string) and ``synthetic`` (1.0/0.0) are testenv metrics, so both runners put them in every
    row; a string metric is a plain cell in the CSV and the table, and never breaks the sort."""
    from cepr.runner.job import ranked_table

    recs = [record(0.6, 0.7, case="a"), record(0.8, 0.9, case="b")]
    for r, name in zip(recs, ("synth-bench/640x480", "Cloud-Robotics/640x480")):
        r["metrics"].update(dataset=name, synthetic=1.0 if "synth" in name else 0.0)
    rank = RankSpec([("accuracy", "descend")], hyperparameters=["all"], metrics=["all"], modules=["all"])
    sel = build_rank(recs, rank, tmp_path, ["accuracy", "dataset", "synthetic"])
    head, *body = rows(tmp_path / "all_rank.csv")
    got = [dict(zip(head, b)) for b in body]
    assert [(g["dataset"], g["synthetic"]) for g in got] == [("Cloud-Robotics/640x480", "0.0"),
                                                             ("synth-bench/640x480", "1.0")]
    table = ranked_table(sel["header"], sel["rows"], recs, rank.sort_by)
    assert "Cloud-Robotics/640x480" in table and "synth-bench/640x480" in table


def _job_like(n_cases: int = 9):
    """Records shaped like the default job's: every selected metric, CI columns, constant data-set columns."""
    metrics = ["accuracy", "accuracy_ci_low", "accuracy_ci_high", "n", "safety_recall", "edge_ratio", "latency_p50",
               "latency_p95", "throughput", "uplink_bytes", "bandwidth_saving", "cloud_tokens", "cloud_fallback",
               "cloud_error", "dataset", "synthetic"]
    recs = []
    for i in range(n_cases):
        r = record(round(0.5 + 0.05 * i, 2), 0.7 + 0.02 * i, algorithm=f"algorithm-with-a-long-name-{i}", case=f"c{i}")
        r["metrics"] = {"accuracy": 0.7 + 0.02 * i, "accuracy_ci_low": 0.61 + 0.02 * i,
                        "accuracy_ci_high": 0.79 + 0.02 * i, "n": 150.0, "safety_recall": 0.969, "edge_ratio": 0.5,
                        "latency_p50": 12.5, "latency_p95": 230.0 - i, "throughput": 9.2, "uplink_bytes": 35777.0,
                        "bandwidth_saving": 0.484, "cloud_tokens": 642.0, "cloud_fallback": 0.0, "cloud_error": 0.0,
                        "dataset": "cloud-robotics-synth-bench/640x480", "synthetic": 1.0}
        recs.append(r)
    rank = RankSpec([("accuracy", "descend"), ("latency_p95", "ascend")], hyperparameters=["all"], metrics=metrics,
                    modules=["hard_example_mining"])
    return recs, rank, metrics


def test_the_printed_leaderboard_fits_120_columns_and_keeps_what_ranks(tmp_path):
    from cepr.runner.job import ranked_table

    recs, rank, metrics = _job_like()
    sel = build_rank(recs, rank, tmp_path, metrics)
    table = ranked_table(sel["header"], sel["rows"], recs, rank.sort_by)
    lines = table.splitlines()
    assert max(len(x) for x in lines) <= 120, table
    assert lines[0] == "dataset: cloud-robotics-synth-bench/640x480, n: 150.0, synthetic: 1.0" or \
        lines[0].startswith("dataset: cloud-robotics-synth-bench/640x480")  # said once, not per row
    head = lines[2]
    assert "accuracy [95% CI]" in head and "p95 ms" in head  # the sort_by columns are always shown
    assert "0.86 [0.77, 0.95]" in table  # the accuracy of the best case with its interval, in one cell
    assert lines[4].split("|")[1].strip() == "1" and "threshold 0.9 " in lines[4]  # best first
    assert "edge-int8" not in table  # a hyperparameter the same in every row tells no row apart
    assert "not shown (120 columns):" in table and "cloud_error" in table.split("not shown")[1]  # the CSV has them
    assert "DEGRADED" not in table


def test_a_degraded_case_is_marked_in_its_row(tmp_path):
    from cepr.runner.job import ranked_table

    recs, rank, metrics = _job_like(3)
    recs[1]["degraded"] = True
    sel = build_rank(recs, rank, tmp_path, metrics)
    table = ranked_table(sel["header"], sel["rows"], recs, rank.sort_by)
    marked = [x for x in table.splitlines() if "DEGRADED" in x]
    assert len(marked) == 1 and "algorithm-with-a-long-name-1" in marked[0], table
    assert max(len(x) for x in table.splitlines()) <= 120


def test_dataset_metrics_read_the_set_from_the_label_paths(tmp_path):
    import json
    import math

    from cepr.metrics.dataset_info import dataset, synthetic

    res = tmp_path / "my-synth" / "640x480" / "gtFine" / "test"
    res.mkdir(parents=True)
    labels = [str(res / f"l{i}.png") for i in range(3)]
    preds = [None] * 3
    assert dataset(labels, preds) == "my-synth/640x480" and synthetic(labels, preds) == 0.0  # no manifest
    (tmp_path / "my-synth" / "dataset.json").write_text(json.dumps({"synthetic": True}))
    assert synthetic(labels, preds) == 1.0
    with pytest.warns(RuntimeWarning):
        assert math.isnan(dataset([], [])) and math.isnan(synthetic([], []))
    with pytest.raises(CeprError, match="y_true has 3 entries but y_pred has 1"):
        dataset(labels, [None])


def test_long_settings_give_way_to_the_columns_that_rank(tmp_path):
    """Cases that differ in many long hyperparameters (the VLM job): the setting cell is cut ("~"), the sort_by
    columns still show, and the table still fits."""
    from cepr.runner.job import ranked_table

    recs, rank, metrics = _job_like(4)
    for i, r in enumerate(recs):
        r["modules"]["cloudmodel"]["hyperparameters"] = {"server_model": f"a-very-long-model-name-number-{i}",
                                                         "server": "llamacpp", "server_speculative": "none" * i}
    sel = build_rank(recs, rank, tmp_path, metrics)
    table = ranked_table(sel["header"], sel["rows"], recs, rank.sort_by)
    assert max(len(x) for x in table.splitlines()) <= 120, table
    head = table.splitlines()[2]
    assert "accuracy [95% CI]" in head and "p95 ms" in head, table
    assert "~ |" in table  # a cut setting says so
