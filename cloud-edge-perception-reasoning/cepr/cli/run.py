"""``cepr run -f benchmarkingjob.yaml``: run an Ianvs benchmarking job with cepr's own runner."""

from __future__ import annotations

import argparse


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
               "  cepr run -f benchmarkingjob.yaml --resume --concurrency 2")
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
    p.set_defaults(func=cmd_run)


def cmd_run(a) -> int:
    from cepr.runner.job import RunOptions, run_job

    r = run_job(a.file, RunOptions(resume=a.resume, concurrency=a.concurrency, limit=a.limit,
                                   progress=not a.no_progress, workspace=a.workspace,
                                   max_cloud_failures=a.max_cloud_failures))
    if r.table:
        print(r.table)
    if r.skipped:
        print(f"resumed: {r.skipped} finished test case(s) reused")
    for rec in r.failed:
        print(f"FAILED test case {rec['id']} ({rec['output_dir']}): {rec.get('error')}")
    for rec in r.degraded:
        print(f"DEGRADED test case {rec['id']} ({rec['algorithm']} {rec['hyperparameters']}): {rec['cloud']['why']}")
    if r.rank_dir is not None and r.records:
        print(f"leaderboard: {r.rank_dir / 'selected_rank.csv'} (all: {r.rank_dir / 'all_rank.csv'})")
    print(f"{len(r.records) - len(r.degraded)} test case(s) ok, {len(r.degraded)} degraded, {len(r.failed)} failed "
          f"in {r.seconds:.1f} s")
    return 1 if r.failed else 3 if r.degraded else 0
