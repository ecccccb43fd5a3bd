"""``cepr run -f benchmarkingjob.yaml``: run an Ianvs benchmarking job with cepr's own runner."""

from __future__ import annotations

import argparse
import sys

from cepr.report.html import write_report
from cepr.runner.job import RunOptions, run_job


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="run an Ianvs benchmarking job (jointinference) and print the leaderboard",
        description="Run the same benchmarkingjob.yaml / testenv.yaml / algorithm yaml that `ianvs -f` runs: "
                    "every hyperparameter combination is a test case; each is saved as soon as it finishes "
                    "(record.json + samples.jsonl under workspace/<job name>/<algorithm>/<case id>/), then "
                    "rank/all_rank.csv and rank/selected_rank.csv are written and the selected leaderboard "
                    "printed.",
        epilog="Examples:\n  cepr run -f benchmarkingjob.yaml\n  cepr run -f benchmarkingjob.yaml --limit 20\n"
               "  cepr run -f benchmarkingjob.yaml --resume --concurrency 2\n"
               "  cepr run -f benchmarkingjob.yaml --no-report   # skip the HTML report (cepr report WORKSPACE)\n"
               "  cepr run -f benchmarkingjob.yaml --cluster tcp://10.0.0.5:8786   # on a Dask cluster "
               "(docs/cluster.md)\n"
               "  cepr run -f benchmarkingjob.yaml --cluster tcp://10.0.0.5:8786 --shard-size 20 --resume")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("-f", "--file", required=True, metavar="YAML", help="the benchmarkingjob.yaml to run")
    p.add_argument("--resume", action="store_true", help="skip test cases that already finished (same id)")
    p.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="samples in flight per test case (default 1, Ianvs's sequential semantics)")
    p.add_argument("--limit", type=int, default=None, metavar="K", help="run only the first K test samples")
    p.add_argument("--workspace", default=None, help="override the job's workspace folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--max-cloud-failures", type=float, default=0.05, metavar="SHARE",
                   help="a case whose cloud calls fall back or fail on more than this share of the samples sent "
                        "is marked DEGRADED (record, table, exit code 3)")
    p.add_argument("--check-data", action="store_true",
                   help="only the pre-flight: read every test frame and list those a case could not score (missing "
                        "or corrupt RGB or label, label ids outside the class set, size mismatch); run no model. "
                        "Exit code 0 when every frame is good, 4 otherwise. (cepr run always does this check first "
                        "and records the bad frames as failed samples.)")
    p.add_argument("--no-report", action="store_true",
                   help="do not write the HTML/markdown report (cepr report) at the end of the job")
    p.add_argument("--cluster", metavar="ADDRESS", default=None,
                   help="run the test cases, split into shards of samples, as tasks on the Dask cluster whose "
                        "scheduler is at ADDRESS (tcp://HOST:PORT; needs the cluster extra). Workers must see the "
                        "job's files and data at the same paths (docs/cluster.md). Results are written here, as "
                        "without --cluster")
    p.add_argument("--cluster-timeout", type=float, default=10.0, metavar="S",
                   help="--cluster: seconds to reach the scheduler and find a worker")
    p.add_argument("--shard-size", type=int, default=None, metavar="K",
                   help="--cluster: samples per task (default 50); cases whose policy carries state from sample "
                        "to sample (e.g. Budget) always run as one task")
    p.set_defaults(func=cmd_run)


def cmd_run(a) -> int:
    """Exit codes: 0 all good; 1 a test case failed; 3 a case is degraded; 4 samples failed (bad frames, or
    samples that raised) while every case finished; 2 a configuration error or an unwritable workspace; 130
    Ctrl-C (finished cases kept)."""
    r = run_job(a.file, RunOptions(resume=a.resume, concurrency=a.concurrency, limit=a.limit,
                                   progress=not a.no_progress, workspace=a.workspace,
                                   max_cloud_failures=a.max_cloud_failures, check_data=a.check_data,
                                   cluster=a.cluster, cluster_timeout=a.cluster_timeout, shard_size=a.shard_size))
    if a.check_data:
        n = len(r.data) if r.data is not None else 0
        print(f"check-data: {n - len(r.bad_frames)} of {n} frame(s) good, {len(r.bad_frames)} bad")
        return 4 if r.bad_frames else 0
    if r.table:
        print(r.table)
    if r.skipped:
        print(f"resumed: {r.skipped} finished test case(s) reused")
    for rec in r.failed:
        if rec.get("status") == "interrupted":
            print(f"INTERRUPTED test case {rec['id']} ({rec['output_dir']}): {rec.get('n_ok', 0)} sample(s) "
                  "finished and saved in samples.jsonl")
        else:
            print(f"FAILED test case {rec['id']} ({rec['output_dir']}): {rec.get('error')}")
    for rec in r.degraded:
        hem = (rec.get("modules") or {}).get("hard_example_mining") or {}
        policy = f"{hem.get('name', '')} {hem.get('hyperparameters') or ''}".strip()
        print(f"DEGRADED test case {rec['id']} ({rec['algorithm']}: {policy}): {rec['cloud']['why']}")
    for rec in r.records:
        if rec.get("n_failed"):
            print(f"SAMPLES FAILED in test case {rec['id']}: {rec['n_failed']} of {rec['n_failed'] + rec['n_ok']} "
                  f"not scored (see failed_samples in {rec['output_dir']}/record.json)")
    if r.rank_dir is not None and r.records:
        print(f"leaderboard: {r.rank_dir / 'selected_rank.csv'} (all: {r.rank_dir / 'all_rank.csv'})")
        if not (a.no_report or r.interrupted or r.aborted or r.cluster_error):  # Ctrl-C, a full disk: out
            _report(r.rank_dir.parent)
    failed = [rec for rec in r.failed if rec.get("status") != "interrupted"]
    print(f"{len(r.records) - len(r.degraded)} test case(s) ok, {len(r.degraded)} degraded, {len(failed)} failed; "
          f"{r.samples_failed} sample(s) failed in {r.seconds:.1f} s")
    if r.aborted or r.rank_error:  # one line: what could not be written, what is kept, what to do
        kept = f"the {len(r.records)} finished test case(s) are kept"
        kept += "" if r.rank_dir is not None else ", but not ranked"
        print(f"cepr run: error: {r.aborted or r.rank_error}; {kept}: make room (or fix the permissions) and run "
              "again with --resume", file=sys.stderr)
        return 2
    if r.cluster_error:
        print(f"cepr run: error: {r.cluster_error} ({len(r.records)} test case(s) finished)", file=sys.stderr)
        return 2
    if r.interrupted:
        print(f"cepr run: interrupted; the {len(r.records)} finished test case(s) are kept", file=sys.stderr)
        return 130
    return 1 if failed else 3 if r.degraded else 4 if r.samples_failed else 0


def _report(job_dir) -> None:
    """The job's report (cepr report); a failure to render it is a warning: the results are already saved."""
    try:
        rep = write_report(job_dir)
    except Exception as e:  # noqa: BLE001 - the report must never fail or lose the job's results
        print(f"cepr run: warning: the report could not be written ({type(e).__name__}: {e}); the results are "
              f"saved; retry with: cepr report {job_dir}", file=sys.stderr)
        return
    print(f"report: {rep.html} (summary: {rep.markdown})")
