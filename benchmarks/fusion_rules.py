"""Accuracy and safety recall of the three fusion rules (cloud_wins, confidence, safety_first) on the same frames.

Runs one job through ``cepr run`` (the real runner, the shipped edge model and the reference cloud expert that
``base_url: auto`` starts) in a scratch folder: the repository's Threshold algorithm with one threshold, and the
cloud module's ``fusion`` hyperparameter set to each rule, so each rule is one test case over the same samples and
the same routing (the rule only changes the final answer of samples both sides answered). The link is not waited
out (``emulate_link: false``): it changes latencies, not answers. Prints, per rule, the accuracy with its 95%
Wilson interval, safety recall (of the truly hazardous path_hazard/action samples, the share answered safely) with
its interval, the cloud share, and on how many samples the final answer was the edge's against a different cloud
answer.

    python benchmarks/fusion_rules.py --data datasets/cloud-robotics-synth-full/640x480/test-index.txt \\
        --threshold 0.8
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RULES = ("cloud_wins", "confidence", "safety_first")


METRICS = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "n", "safety_recall", "edge_ratio", "cloud_ok")


def make_job(dest: Path, index: Path, threshold: float, cloud_values: dict, metrics=METRICS,
             name: str = "fusion-rules") -> None:
    """The repository's job files copied into ``dest``: the Threshold algorithm alone at ``threshold``, the test
    index ``index``, the cloud module's hyperparameters ``cloud_values`` (name -> list of values: one case per
    combination), the link not waited out, ``metrics`` in the testenv."""
    import yaml

    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, dest / d)
    shutil.copy(REPO / "benchmarkingjob.yaml", dest)
    te_path = dest / "testenv" / "testenv.yaml"
    te = yaml.safe_load(te_path.read_text())
    te["testenv"]["dataset"] = {"train_index": str(index), "test_index": str(index)}
    te["testenv"]["metrics"] = [{"name": m, "url": "./testenv/cepr_testenv_metrics.py"}
                                for m in metrics]
    te_path.write_text(yaml.safe_dump(te))
    job_path = dest / "benchmarkingjob.yaml"
    job = yaml.safe_load(job_path.read_text())
    b = job["benchmarkingjob"]
    b["name"] = name
    b["test_object"]["algorithms"] = [a for a in b["test_object"]["algorithms"] if a["name"] == "threshold"]
    b["rank"]["sort_by"] = [{"accuracy": "descend"}]
    b["rank"]["selected_dataitem"]["hyperparameters"] = ["hard_example_mining-threshold"] + [
        f"cloudmodel-{k}" for k in cloud_values]
    b["rank"]["selected_dataitem"]["metrics"] = list(metrics)
    job_path.write_text(yaml.safe_dump(job))
    algo_path = dest / "testalgorithms" / "perception-reasoning" / "threshold.yaml"
    algo = yaml.safe_load(algo_path.read_text())
    for m in algo["algorithm"]["modules"]:
        if m["type"] == "hard_example_mining":
            m["hyperparameters"] = [{"threshold": {"values": [threshold]}}]
        if m["type"] == "cloudmodel":
            m["hyperparameters"] += [{k: {"values": list(v)}} for k, v in cloud_values.items()]
    algo_path.write_text(yaml.safe_dump(algo))
    cloud_path = dest / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml"
    cloud = yaml.safe_load(cloud_path.read_text())
    cloud["emulate_link"] = False
    cloud_path.write_text(yaml.safe_dump(cloud))


def run_job(work: Path, limit: int | None) -> int:
    """`cepr run` on the job ``make_job`` wrote in ``work``: 0, or its exit code when it failed (3, degraded, is
    kept: the records still hold every sample)."""
    cmd = [sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml"]
    if limit:
        cmd += ["--limit", str(limit)]
    proc = subprocess.run(cmd, cwd=work, check=False)
    if proc.returncode not in (0, 3):
        print(f"cepr run failed (exit {proc.returncode}); the job is in {work}", file=sys.stderr)
        return proc.returncode
    return 0


def finished_cases(work: Path):
    """(record, per-sample records) of every case the job in ``work`` ran, in path order."""
    for rec_path in sorted((work / "workspace").rglob("record.json")):
        rec = json.loads(rec_path.read_text())
        yield rec, [json.loads(x) for x in (rec_path.parent / "samples.jsonl").read_text().splitlines()]


def _hazard(task: str, answer) -> bool:
    return answer == "yes" if task == "path_hazard" else answer is not None and answer != "go"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default="datasets/cloud-robotics-synth-full/640x480/test-index.txt",
                    help="the test index (txt) to run on")
    ap.add_argument("--threshold", type=float, default=0.8, help="the Threshold policy's threshold")
    ap.add_argument("--limit", type=int, default=None, help="first K samples only")
    ap.add_argument("--rules", default=",".join(RULES), help="comma-separated fusion rules")
    ap.add_argument("--keep", help="run in this folder and keep it (default: a temporary folder)")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)

    from cepr.metrics.joint import wilson_interval

    index = Path(a.data).resolve()
    if not index.is_file():
        ap.error(f"--data {a.data}: no such index file (generate the set with `cepr datasets synth`)")
    rules = [r.strip() for r in a.rules.split(",") if r.strip()]
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="cepr-fusion-"))
    work.mkdir(parents=True, exist_ok=True)
    make_job(work, index, a.threshold, {"fusion": rules})
    rc = run_job(work, a.limit)
    if rc:
        return rc
    rows = []
    for rec, samples in finished_cases(work):
        rule = next((s["cloud"]["fusion"] for s in samples if s.get("cloud")), "?")
        right = sum(bool(s.get("correct")) for s in samples)
        haz = [s for s in samples if s["task"] in ("path_hazard", "action") and _hazard(s["task"], s.get("truth"))]
        safe = sum(_hazard(s["task"], s["answer"]) for s in haz)
        kept = sum(1 for s in samples if (s.get("cloud") or {}).get("fused_from") == "edge")
        sent = sum(1 for s in samples if s["is_hard"])
        rows.append({"rule": rule, "n": len(samples), "accuracy": right / len(samples),
                     "accuracy_ci": wilson_interval(right, len(samples)), "accuracy_metric": rec["metrics"]["accuracy"],
                     "hazardous": len(haz), "safety_recall": safe / len(haz) if haz else float("nan"),
                     "safety_ci": wilson_interval(safe, len(haz)) if haz else (float("nan"),) * 2,
                     "safety_recall_metric": rec["metrics"]["safety_recall"], "cloud_share": sent / len(samples),
                     "edge_kept": kept})
    rows.sort(key=lambda r: rules.index(r["rule"]) if r["rule"] in rules else 99)
    print(f"\nfusion rules on {index} ({rows[0]['n'] if rows else 0} samples), Threshold {a.threshold:g}; "
          f"job in {work}")
    print("| rule | accuracy [95% CI] | safety recall [95% CI] (n hazardous) | cloud share | edge answer kept |")
    print("|---|---|---|---|---|")
    for r in rows:
        assert abs(r["accuracy"] - r["accuracy_metric"]) < 1e-9, r  # the same figure the leaderboard shows
        lo, hi = r["accuracy_ci"]
        slo, shi = r["safety_ci"]
        print(f"| {r['rule']} | {100 * r['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] | "
              f"{100 * r['safety_recall']:.1f}% [{100 * slo:.1f}, {100 * shi:.1f}] ({r['hazardous']}) | "
              f"{100 * r['cloud_share']:.1f}% | {r['edge_kept']} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"data": str(index), "threshold": a.threshold, "rows": rows}, indent=1))
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
