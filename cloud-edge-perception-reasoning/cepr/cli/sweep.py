"""``cepr sweep``: offline router analysis from cached edge and cloud results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cepr.errors import CeprError
from cepr.sweep import cache as sc
from cepr.sweep.report import format_tables, run_sweep, write_algorithm, write_outputs
from cepr.sweep.spec import load_spec

EXAMPLES = """\
Examples:
  # fill the cache (edge + cloud once per test sample), then sweep the built-in 50 settings
  cepr sweep -f benchmarkingjob.yaml
  # your own policies and grids; only the first 50 test samples
  cepr sweep -f benchmarkingjob.yaml --spec docs/examples/sweep.yaml --limit 50
  # the real Cloud-Robotics set, every setting printed
  cepr sweep -f benchmarkingjob-real.yaml --table all
  # write the best setting back as an Ianvs algorithm (and a job that runs it), then run it
  cepr sweep -f benchmarkingjob.yaml --pick best --write-algorithm sweep/best.yaml --write-job sweep/job.yaml
  cepr run -f sweep/job.yaml
  # every Pareto point as its own algorithm YAML
  cepr sweep -f benchmarkingjob.yaml --pick pareto --write-algorithm sweep/pareto.yaml
  # fill the cache on a Dask cluster (samples partitioned across its workers; docs/cluster.md)
  cepr sweep -f benchmarkingjob.yaml --cluster tcp://10.0.0.5:8786 --shard-size 25
  # evaluate a cache folder directly (no job needed; no model can run)
  cepr sweep --cache-dir workspace/cepr-default/sweep-cache/<key>

The cache lives in <workspace>/<job>/sweep-cache/<key>/ (key: model file hashes, the edge/cloud settings including
the payload, the data set, the concurrency); reruns reuse it and run only the samples it lacks. Outputs:
<out>/sweep.json (self-describing), settings.csv, curves.csv. Definitions of APGR / CPT: docs/sweep.md.
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="offline router analysis: cache edge+cloud results once, evaluate many dispatch policies (APGR, CPT, "
             "Pareto)",
        description="Run the edge and the cloud of one algorithm of a benchmarking job once per test sample (cached, "
                    "keyed by model hashes and payload settings), then evaluate every setting of a sweep spec from "
                    "the cache without calling a model: per setting cloud share, accuracy, p95 latency, uplink "
                    "bytes; per policy the call-performance curve with APGR and CPT(50%)/CPT(80%) as RouteLLM "
                    "defines them, beside the Random and Oracle references; the Pareto front over accuracy, p95 "
                    "latency and uplink bytes. Any registered dispatch policy works: it is called on each cached "
                    "edge result as the paradigm calls it in inference-then-mining.",
        epilog=EXAMPLES)
    p.add_argument("-f", "--file", metavar="YAML", help="the benchmarkingjob.yaml whose testenv, edge and cloud "
                   "settings the cache runs")
    p.add_argument("--algorithm", metavar="NAME", action="append", help="which algorithm of the job supplies the "
                   "edge and cloud settings (default: the first using Threshold, else the first mixed deployable one, "
                   "else the first; docs/runner.md). Repeat it to compare algorithms whose edge or cloud settings "
                   "differ (another payload, another cloud model): one cache and sweep each, then one Pareto front "
                   "over all their settings (front.json and front.csv in --out, default <workspace>/<job>/sweep-front)")
    p.add_argument("--spec", metavar="YAML", help="the sweep spec: policies and parameter grids (default: the "
                   "built-in 50 settings of Threshold, CrossEntropy, Random, EdgeOnly, CloudOnly, Oracle)")
    p.add_argument("--cache", metavar="DIR", help="cache root (default: <workspace>/<job>/sweep-cache)")
    p.add_argument("--cache-dir", metavar="DIR", help="evaluate this existing cache folder (no job, no model run)")
    p.add_argument("--out", metavar="DIR", help="where sweep.json, settings.csv, curves.csv go (default: "
                   "<cache folder>/sweep, or <cache-dir>/sweep)")
    p.add_argument("--limit", type=int, metavar="K", help="only the first K test samples (as cepr run --limit)")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="samples in flight while filling the "
                   "cache (part of the cache key: it changes latencies)")
    p.add_argument("--workspace", help="override the job's workspace folder")
    p.add_argument("--refresh", action="store_true", help="rebuild the cache from scratch")
    p.add_argument("--per-sample", action="store_true", help="call every policy per sample, even those with a "
                   "vectorised form (as the spec's vectorize: false)")
    p.add_argument("--table", choices=("pareto", "all"), default="pareto", help="which settings to print")
    p.add_argument("--pick", metavar="WHICH", help="settings to write back: best (highest accuracy; see "
                   "--max-cloud-share), pareto, a setting id such as 'Threshold(threshold=0.65)', or its row "
                   "number; several separated by ';'")
    p.add_argument("--max-cloud-share", type=float, metavar="S", help="--pick best only among settings sending at "
                   "most this share to the cloud")
    p.add_argument("--write-algorithm", metavar="YAML", help="write the picked setting(s) as Ianvs algorithm YAML "
                   "(several: <stem>-<setting>.yaml beside it)")
    p.add_argument("--write-job", metavar="YAML", help="also write a benchmarkingjob.yaml that runs them (the "
                   "source job's testenv and rank)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--cluster", metavar="ADDRESS", help="fill the cache on the Dask cluster whose scheduler is at "
                   "ADDRESS (tcp://HOST:PORT; the cluster extra): the samples are partitioned across its workers, "
                   "which must see the job's files and data at the same paths; the output is the same as a local "
                   "fill's (docs/cluster.md)")
    p.add_argument("--cluster-timeout", type=float, default=10.0, metavar="S",
                   help="--cluster: seconds to reach the scheduler and find a worker")
    p.add_argument("--shard-size", type=int, default=None, metavar="K", help="--cluster: samples per task "
                   "(default 50)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(a) -> int:
    if (a.file is None) == (a.cache_dir is None):
        raise CeprError("cepr sweep needs exactly one of -f benchmarkingjob.yaml (fill or reuse its cache) and "
                        "--cache-dir DIR (an existing cache)")
    if (a.write_algorithm or a.write_job) and not a.pick:
        raise CeprError("--write-algorithm / --write-job need --pick (best, pareto, a setting id or row number)")
    if a.write_job and not a.write_algorithm:
        raise CeprError("--write-job needs --write-algorithm (the algorithm files the job lists)")
    if a.pick and a.write_algorithm and a.file is None:
        raise CeprError("--write-algorithm needs -f: the algorithm YAML is the job's algorithm with the picked policy")
    if a.limit is not None and a.limit < 1:
        raise CeprError(f"--limit must be >= 1, got {a.limit}")
    spec = load_spec(a.spec)
    if a.per_sample:
        spec = spec.model_copy(update={"vectorize": False})
    if a.algorithm and len(a.algorithm) > 1:
        return _several(a, spec)
    source = None
    if a.file is not None:
        source = sc.resolve_source(a.file, a.algorithm[0] if a.algorithm else None, a.workspace)
        if a.shard_size is not None and a.shard_size < 1:
            raise CeprError(f"--shard-size must be >= 1, got {a.shard_size}")
        rep = sc.fill_cache(source, a.cache, a.limit, a.concurrency, not a.no_progress, a.refresh,
                            cluster=a.cluster, cluster_timeout=a.cluster_timeout, shard_size=a.shard_size)
        print(f"sweep cache {rep.dir}: {rep.reused} sample(s) reused, {rep.ran} run now"
              + (f", {len(rep.failed)} failed (left out)" if rep.failed else "") + f" ({rep.seconds:.1f} s)",
              flush=True)
        cache_dir = rep.dir
    else:
        cache_dir = Path(a.cache_dir)
    data = sc.load_cache(cache_dir, a.limit)
    res = run_sweep(data, spec, progress=not a.no_progress)
    out = Path(a.out) if a.out else cache_dir / "sweep"
    paths = write_outputs(res, out)
    print(format_tables(res, all_settings=a.table == "all"))
    print(f"results: {paths['json']} (settings: {paths['settings']}, curves: {paths['curves']})")
    if a.pick:
        rows = []
        for part in [p.strip() for p in a.pick.split(";") if p.strip()]:
            if part == "best":
                rows.append(res.best(a.max_cloud_share))
            elif part == "pareto":
                rows += [r for r in res.rows if r["pareto"]]
            else:
                rows.append(res.row(part))
        rows = list({r["id"]: r for r in rows}.values())
        print("picked: " + "; ".join(f"{r['id']} (accuracy {r['accuracy']:.4f}, cloud share {r['cloud_share']:.3f})"
                                     for r in rows))
        if a.write_algorithm:
            for p in write_algorithm(res, source, rows, a.write_algorithm, a.write_job):
                print(f"wrote {p}")
    failed = [r for r in res.rows if r["error"] is not None]
    if failed:
        print(f"{len(failed)} setting(s) failed (see above)", file=sys.stderr)
        return 1
    return 0


def _several(a, spec) -> int:
    """--algorithm given more than once: a cache and a sweep per algorithm, then one Pareto front over them all."""
    from cepr.sweep.report import format_front, joint_front, write_front

    if a.file is None:
        raise CeprError("several --algorithm need -f (the job that lists them)")
    if a.pick or a.write_algorithm or a.write_job:
        raise CeprError("--pick / --write-algorithm take one --algorithm (pick from that algorithm's sweep)")
    if len(set(a.algorithm)) != len(a.algorithm):
        raise CeprError(f"--algorithm lists one twice: {a.algorithm}")
    sources = {name: sc.resolve_source(a.file, name, a.workspace) for name in a.algorithm}  # all checked first
    results = {}
    for name, source in sources.items():
        rep = sc.fill_cache(source, a.cache, a.limit, a.concurrency, not a.no_progress, a.refresh,
                            cluster=a.cluster, cluster_timeout=a.cluster_timeout, shard_size=a.shard_size)
        res = run_sweep(sc.load_cache(rep.dir, a.limit), spec, progress=not a.no_progress)
        paths = write_outputs(res, rep.dir / "sweep")
        ref = res.references
        print(f"{name}: cache {rep.dir} ({rep.reused} reused, {rep.ran} run, {rep.seconds:.1f} s); edge-only "
              f"{ref['edge_only']['accuracy']:.3f}, cloud-only {ref['cloud_only']['accuracy']:.3f}; "
              f"sweep: {paths['json']}", flush=True)
        results[name] = res
    job = next(iter(sources.values())).job
    out = Path(a.out) if a.out else Path(job.workspace) / job.name / "sweep-front"
    rows = joint_front(results)
    paths = write_front(rows, results, out)
    print(format_front(rows))
    print(f"front: {paths['json']} ({paths['csv']})")
    failed = [n for n, r in results.items() if any(x["error"] is not None for x in r.rows)]
    if failed:
        print(f"setting(s) failed in {', '.join(failed)} (see their sweep.json)", file=sys.stderr)
        return 1
    return 0
