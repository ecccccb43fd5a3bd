"""Payload policies and fusion rules end to end through the real CLI (`cepr run`), with the shipped models and the
reference cloud expert server, on tiny synthetic frames (with depth) and on the real Cloud-Robotics layout (none).

The server is started here, so that what it *received* can be read from its ``/metrics``: the image requests
that arrived must be exactly the samples whose recorded payload carries the image (PrivacyAware's redacted
frames never do), and the body bytes must be the bytes the samples report as sent.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cepr.dispatch.adaptive_payload import DEFAULT_RULES
from cepr.dispatch.fusion import Side, fuse
from helpers import copy_default_job
from real_layout import make_real_layout

REPO = Path(__file__).resolve().parents[2]
LIMIT = 8  # samples per case
POLICIES = [{"name": "PrivacyAware", "radius_m": 1000.0}, "AdaptivePayload"]  # 1000 m: every person is near
RULES = ["cloud_wins", "confidence", "safety_first"]
TASK_ANSWERS = {"path_hazard": ("yes", "no"), "traversable": ("yes", "no"),
                "action": ("stop", "slow", "go", "avoid_left", "avoid_right"),
                "people_count": ("0", "1", "2", "3+")}


def _cloud_only_job(cwd: Path, job_file: str, policies, rules, metric_file: str = "testenv.yaml") -> None:
    """The job reduced to its cloud-only algorithm, with payload_policy and fusion as cloud hyperparameters (so
    each (policy, rule) pair is a test case), and privacy_redacted_share listed in the testenv."""
    job_path = cwd / job_file
    j = yaml.safe_load(job_path.read_text())
    algos = j["benchmarkingjob"]["test_object"]["algorithms"]
    j["benchmarkingjob"]["test_object"]["algorithms"] = [a for a in algos if a["name"] == "cloud-only"]
    j["benchmarkingjob"]["rank"]["selected_dataitem"]["hyperparameters"] = ["cloudmodel-payload_policy",
                                                                           "cloudmodel-fusion"]
    job_path.write_text(yaml.safe_dump(j))
    algo = cwd / "testalgorithms" / "perception-reasoning" / "cloud-only.yaml"
    a = yaml.safe_load(algo.read_text())
    cloud = next(m for m in a["algorithm"]["modules"] if m["type"] == "cloudmodel")
    cloud["hyperparameters"] += [{"payload_policy": {"values": policies}}, {"fusion": {"values": rules}}]
    algo.write_text(yaml.safe_dump(a))
    te_path = cwd / "testenv" / metric_file
    te = yaml.safe_load(te_path.read_text())
    te["testenv"]["metrics"].append({"name": "privacy_redacted_share", "url": "./testenv/cepr_testenv_metrics.py"})
    te_path.write_text(yaml.safe_dump(te))


def _run(cwd: Path, job_file: str, limit: int) -> list[tuple[dict, list[dict]]]:
    p = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", job_file, "--limit", str(limit), "--no-progress"],
                       cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = []
    for rec_path in sorted((cwd / "workspace").rglob("record.json")):
        samples = [json.loads(x) for x in (rec_path.parent / "samples.jsonl").read_text().splitlines()]
        out.append((json.loads(rec_path.read_text()), samples))
    return out


@pytest.fixture(scope="module")
def synth_run(tiny_data, tmp_path_factory):
    """(cases, the server's /metrics) of one run of the cloud-only job with 2 payload policies x 3 fusion rules."""
    pytest.importorskip("fastapi")
    from cepr.cloud.expert import EXPERT_MODEL_NAME
    from cepr.servers.autoserve import ReferenceServer

    cwd = tmp_path_factory.mktemp("payload-fusion")
    te = copy_default_job(cwd, tiny_data)
    te["testenv"]["dataset"]["test_index"] = te["testenv"]["dataset"]["train_index"]  # more frames than test
    (cwd / "testenv" / "testenv.yaml").write_text(yaml.safe_dump(te))
    _cloud_only_job(cwd, "benchmarkingjob.yaml", POLICIES, RULES)
    settings = cwd / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml"
    server = ReferenceServer("cloud", threads=1, startup_s=60)
    try:
        cloud = yaml.safe_load(settings.read_text())
        cloud.update(base_url=server.url, model=EXPERT_MODEL_NAME, link="none")
        settings.write_text(yaml.safe_dump(cloud))
        cases = _run(cwd, "benchmarkingjob.yaml", LIMIT)
        from test_invariants import _metrics

        metrics = _metrics(server)
    finally:
        server.stop()
    assert len(cases) == len(POLICIES) * len(RULES)
    return cases, metrics


def _policy_of(samples) -> str:
    return samples[0]["cloud"]["payload_policy"][0]["name"]


def test_every_request_records_the_payload_it_sent_and_the_server_got_exactly_those_images(synth_run):
    cases, metrics = synth_run
    images = body = 0
    for rec, samples in cases:
        assert len(samples) == LIMIT
        for s in samples:
            c = s["cloud"]
            assert c["status"] == "ok" and c["payload"] and c["payload_rule"] and c["privacy_redacted"] is not None
            images += c["payload"]["mode"] != "summary"
            body += c["bytes_up"]
    assert metrics["cepr_image_requests_total"] == images
    assert metrics["cepr_request_body_bytes_total"] == body > 0


def test_privacy_aware_sends_no_image_of_a_frame_with_people_and_reports_the_share(synth_run):
    cases, _ = synth_run
    seen = set()
    for rec, samples in cases:
        if _policy_of(samples) != "PrivacyAware":
            continue
        for s in samples:
            c = s["cloud"]
            if c["privacy_redacted"]:
                assert c["payload"]["mode"] == "summary" and "person" in c["payload_rule"]
            else:  # no person anywhere in the edge summary: the module's own payload, with the image
                assert c["payload"]["mode"] == "summary+image"
            seen.add(c["privacy_redacted"])
        share = sum(s["cloud"]["privacy_redacted"] for s in samples) / len(samples)
        assert rec["metrics"]["privacy_redacted_share"] == pytest.approx(share)
    assert seen == {True, False}, "the tiny frames should hold frames with and without people"
    # a redacted request is smaller than one with the image: the bytes are what was sent
    privacy = next(samples for _, samples in cases if _policy_of(samples) == "PrivacyAware")
    red = [s["cloud"]["bytes_up"] for s in privacy if s["cloud"]["privacy_redacted"]]
    full = [s["cloud"]["bytes_up"] for s in privacy if not s["cloud"]["privacy_redacted"]]
    assert max(red) < min(full)


def test_adaptive_payload_follows_the_risk_table(synth_run):
    cases, _ = synth_run
    modes = set()
    for rec, samples in cases:
        if _policy_of(samples) != "AdaptivePayload":
            continue
        for s in samples:
            c = s["cloud"]
            risk = float(re.search(r"risk ([0-9.]+)", c["payload_rule"]).group(1))
            rule = next(r for r in DEFAULT_RULES if r.risk_below is None or risk < r.risk_below)
            assert c["payload"]["mode"] == rule.mode
            if rule.resolution:
                assert (c["payload"]["resolution"], c["payload"]["quality"]) == (rule.resolution, rule.quality)
            assert not c["privacy_redacted"]
            modes.add(c["payload"]["mode"])
        assert rec["metrics"]["privacy_redacted_share"] == 0.0
    assert "summary" in modes  # low-risk frames went without their image


def test_each_fusion_rule_makes_the_final_answer_as_defined(synth_run):
    cases, _ = synth_run
    kept_edge = {s["cloud"]["fusion"] for _, samples in cases for s in samples if s["cloud"]["fused_from"] == "edge"}
    assert kept_edge and "cloud_wins" not in kept_edge  # not vacuous: some rule kept an edge answer here
    for rec, samples in cases:
        rule = samples[0]["cloud"]["fusion"]
        assert rule in RULES
        for s in samples:
            e, c = s["edge"], s["cloud"]
            answers = tuple(e["distribution"])
            want, side = fuse(rule, s["task"], answers, Side(e["answer"], e["confidence"], e["distribution"]),
                              Side(c["cloud_answer"], c["confidence"]))
            assert (s["answer"], c["fused_from"]) == (want, side), (rule, s["index"])
            if rule == "cloud_wins":
                assert s["answer"] == c["cloud_answer"]
            if rule == "safety_first" and e["answer"] == "stop":
                assert s["answer"] == "stop"


@pytest.mark.parametrize("rule", ["safety_first"])
def test_payload_policy_and_fusion_on_the_real_layout(rule, tmp_path_factory):
    """The real set's job (no depth: ground-plane distances, the RGB-only edge model) with PrivacyAware after
    AdaptivePayload and a fusion rule, served by base_url: auto."""
    pytest.importorskip("fastapi")
    root = tmp_path_factory.mktemp("real-payload")
    make_real_layout(root / "datasets" / "Cloud-Robotics", n_test=5, n_train=2)
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, root / d)
    shutil.copy(REPO / "benchmarkingjob-real.yaml", root)
    _cloud_only_job(root, "benchmarkingjob-real.yaml", [["AdaptivePayload", "PrivacyAware"]], [rule],
                    metric_file="testenv-real.yaml")
    settings = root / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml"
    cloud = yaml.safe_load(settings.read_text())
    cloud["link"] = "none"
    settings.write_text(yaml.safe_dump(cloud))
    (rec, samples), = _run(root, "benchmarkingjob-real.yaml", 5)
    assert len(samples) == 5
    for s in samples:
        c = s["cloud"]
        assert s["edge"]["distances"] == "ground_plane"
        assert [p["name"] for p in c["payload_policy"]] == ["AdaptivePayload", "PrivacyAware"]
        assert c["fusion"] == rule and c["fused_from"] in ("edge", "cloud", "agree")
        assert c["privacy_redacted"] is (c["payload_rule"].startswith("PrivacyAware"))
        if c["privacy_redacted"]:
            assert c["payload"]["mode"] == "summary"
    share = sum(s["cloud"]["privacy_redacted"] for s in samples) / len(samples)
    assert rec["metrics"]["privacy_redacted_share"] == pytest.approx(share)


def test_the_shipped_payload_job_runs_every_case(tiny_data, tmp_path):
    """benchmarkingjob-payload.yaml (4 payload policies + 3 fusion rules, Threshold 0.8) through `cepr run` on the
    tiny set: every case ok, the rank file has the policy, rule and privacy columns; its testenv is the default
    one plus privacy_redacted_share."""
    pytest.importorskip("fastapi")
    import csv

    te_default = yaml.safe_load((REPO / "testenv" / "testenv.yaml").read_text())["testenv"]
    te_payload = yaml.safe_load((REPO / "testenv" / "testenv-payload.yaml").read_text())["testenv"]
    assert te_payload["metrics"] == te_default["metrics"] + [
        {"name": "privacy_redacted_share", "url": "./testenv/cepr_testenv_metrics.py"}]
    copy_default_job(tmp_path, tiny_data)
    shutil.copy(REPO / "benchmarkingjob-payload.yaml", tmp_path)
    te = yaml.safe_load((tmp_path / "testenv" / "testenv-payload.yaml").read_text())
    res = tiny_data / "160x120"
    te["testenv"]["dataset"] = {"train_index": str(res / "train-index.txt"), "test_index": str(res / "train-index.txt")}
    (tmp_path / "testenv" / "testenv-payload.yaml").write_text(yaml.safe_dump(te))
    cases = _run(tmp_path, "benchmarkingjob-payload.yaml", 4)
    assert len(cases) == 7 and all(rec["status"] == "ok" for rec, _ in cases), [r.get("status") for r, _ in cases]
    with open(tmp_path / "workspace" / "cepr-payload" / "rank" / "selected_rank.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7
    assert {r["cloudmodel-fusion"] for r in rows} >= {"cloud_wins", "confidence", "safety_first"}
    assert "['AdaptivePayload', 'PrivacyAware']" in {r["cloudmodel-payload_policy"] for r in rows}
    assert all(r["privacy_redacted_share"] != "" for r in rows if float(r["edge_ratio"]) < 1)
