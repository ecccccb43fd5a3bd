"""Invariants of the default job's leaderboard, on a real run through ``cepr run`` (the shipped job files, the
shipped models and the reference cloud expert server, on a few tiny synthetic frames).

The cloud server is started here rather than by ``base_url: auto``, so that what it *received* can be read from
its ``/metrics`` afterwards: the bytes the rows report as sent must be the bytes that arrived.
"""

import csv
import json
import subprocess
import sys

import pytest
import yaml

from helpers import copy_default_job

LIMIT = 8  # samples per case: enough for the policies to differ, few enough for two CPU cores


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """(rank rows, {case folder: (record, samples)}, the server's received body bytes) of one run of the job."""
    pytest.importorskip("fastapi")
    from cepr.cloud.expert import EXPERT_MODEL_NAME
    from cepr.servers.autoserve import ReferenceServer

    cwd = tmp_path_factory.mktemp("invariants")
    te = copy_default_job(cwd, tiny_data)
    # the train split has more frames than the tiny test split (whose 4 frames every policy gets wrong)
    te["testenv"]["dataset"]["test_index"] = te["testenv"]["dataset"]["train_index"]
    (cwd / "testenv" / "testenv.yaml").write_text(yaml.safe_dump(te))
    settings = cwd / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml"
    server = ReferenceServer("cloud", threads=1, startup_s=60)
    try:
        cloud = yaml.safe_load(settings.read_text())
        cloud.update(base_url=server.url, model=EXPERT_MODEL_NAME)
        settings.write_text(yaml.safe_dump(cloud))
        proc = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml", "--limit",
                               str(LIMIT), "--no-progress"], cwd=cwd, capture_output=True, text=True, timeout=600,
                              check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        received = next(v for k, v in _metrics(server).items() if k == "cepr_request_body_bytes_total")
    finally:
        server.stop()
    ws = cwd / "workspace" / "cepr-default"
    with open(ws / "rank" / "all_rank.csv") as f:
        rows = list(csv.DictReader(f))
    cases = {}
    for rec_path in ws.rglob("record.json"):
        rec = json.loads(rec_path.read_text())
        samples = [json.loads(x) for x in (rec_path.parent / "samples.jsonl").read_text().splitlines()]
        cases[rec_path.parent] = (rec, samples)
    assert len(rows) == len(cases) == 9
    return rows, cases, received


def _metrics(server) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


def _policy(row: dict) -> str:
    return row["hard_example_mining"].split(" ")[0]


def test_the_oracle_bounds_every_policy(run):
    rows, cases, _ = run
    oracle = [float(r["accuracy"]) for r in rows if _policy(r) == "Oracle"]
    others = {(_policy(r), r["hard_example_mining-ratio"], r["hard_example_mining-threshold"],
               r["hard_example_mining-threshold_cross_entropy"]): float(r["accuracy"])
              for r in rows if _policy(r) != "Oracle"}
    assert len(oracle) == 1 and len(others) == 8
    assert all(oracle[0] >= acc for acc in others.values()), (oracle, others)
    # per sample too: the Oracle is right wherever the edge alone or the cloud alone is right
    by_policy = {rec["algorithm"]: {s["index"]: s["correct"] for s in samples} for rec, samples in cases.values()
                 if rec["algorithm"] in ("oracle", "edge-only", "cloud-only")}
    for i, ok in by_policy["oracle"].items():
        assert ok >= max(by_policy["edge-only"][i], by_policy["cloud-only"][i]), i
    # not a vacuous bound: on these frames the edge and the cloud disagree somewhere
    assert by_policy["edge-only"] != by_policy["cloud-only"]


def test_uplink_bytes_are_the_request_bodies_that_arrived(run):
    rows, cases, received = run
    sent_total = 0
    for rec, samples in cases.values():
        sent = [(s.get("cloud") or {}).get("bytes_up", 0) for s in samples]
        assert all(s.get("cloud") is None or s["cloud"]["bytes_up"] > 0 for s in samples)
        assert rec["metrics"]["uplink_bytes"] == pytest.approx(sum(sent) / len(samples)), rec["algorithm"]
        sent_total += sum(sent)
    # every byte a row counts as sent reached the server, and nothing else did (no retries on a healthy server)
    assert sent_total == received > 0
    row = {_policy(r): r for r in rows}
    assert float(row["EdgeOnly"]["uplink_bytes"]) == 0.0


def test_throughput_is_at_most_concurrency_over_mean_latency(run):
    """The link time is waited out (CloudClient emulates it), so wall-clock throughput can never beat what the
    latency allows (it did while the link time was only added on paper)."""
    _, cases, _ = run
    for rec, _samples in cases.values():
        m = rec["metrics"]
        bound = rec["concurrency"] / (m["latency_mean"] / 1e3)
        assert m["throughput"] <= bound, (rec["algorithm"], m["throughput"], bound)
