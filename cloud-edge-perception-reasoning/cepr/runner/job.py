"""``cepr run``: a benchmarking job end to end, with Ianvs's semantics and what Ianvs lacks.

For every test case: instantiate the modules, run the jointinference paradigm over the test set, call each
testenv metric as ``metric(y_true, y_pred)``, and save at once ``record.json`` (config, versions, git hash,
metrics, timings) and ``samples.jsonl`` (one line per sample, written as it finishes). A failing case is recorded
with its error and the job goes on; ``resume`` skips cases whose record says they finished. Then the rank CSVs
are written and the selected leaderboard printed.
"""

from __future__ import annotations

import contextlib
import logging
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from cepr.compat.class_factory import ClassType, lookup
from cepr.data.synth import generate_dataset
from cepr.errors import CeprError
from cepr.metrics.joint import get_metric
from cepr.registry import import_module_file
from cepr.runner.case import RunOptions, WorkspaceError, finished_record, run_case
from cepr.runner.cluster_job import run_on_cluster
from cepr.runner.config import BenchmarkingJob, parse_job
from cepr.runner.dataset import IndexDataset, frame_problems, load_index
from cepr.runner.rank import TABLE_WIDTH, build_rank, case_url, constant_columns, leaderboard
from cepr.runner.testcase import build_test_cases, check_test_cases
from cepr.servers.autoserve import shutdown_all

log = logging.getLogger(__name__)
MAX_LISTED = 20  # bad frames / failed samples listed on the terminal (all of them are in the record)


@dataclass
class JobResult:
    job: BenchmarkingJob
    records: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    degraded: list[dict] = field(default_factory=list)  # finished, but the cloud failed too often: see record
    skipped: int = 0
    table: str = ""
    rank_dir: Path | None = None
    seconds: float = 0.0
    bad_frames: dict[int, str] = field(default_factory=dict)  # position -> reason, from the pre-flight
    samples_failed: int = 0  # over every case run: samples that produced no result (bad frames included)
    interrupted: bool = False  # Ctrl-C: the case in flight is recorded "interrupted", finished ones kept
    aborted: str = ""  # the workspace could not be written: the one-line reason
    rank_error: str = ""  # the rank files could not be written: the one-line reason
    cluster_error: str = ""  # --cluster: the scheduler was lost mid-job (finished cases kept): the reason
    data: IndexDataset | None = None


def ensure_dataset(job: BenchmarkingJob, progress: bool) -> None:
    """Generate the synthetic set when the testenv asks for it and its index is missing (cepr extension)."""
    te = job.testenv
    if te.test_index.is_file() or te.synthetic is None:
        if not te.test_index.is_file():
            raise CeprError(f"{te.file}: test_index {te.test_index} does not exist. For the synthetic set run "
                            "`cepr datasets synth`; for the real Cloud-Robotics set see datasets/README.md")
        return

    s = te.synthetic
    res_dir = te.test_index.parent
    out = Path(s.out) if s.out else res_dir.parent
    print(f"cepr: {te.test_index} is missing: generating the synthetic set ({s.frames}-frame layout, splits "
          f"{', '.join(s.splits)}, seed {s.seed}) into {out}", flush=True)
    generate_dataset(out, s.frames, seed=s.seed, resolutions=s.resolutions, splits=s.splits, progress=progress)
    if not te.test_index.is_file():
        raise CeprError(f"generated the synthetic set into {out}, but {te.test_index} is still missing: check "
                        "that test_index points into that folder")


def load_metrics(job: BenchmarkingJob) -> dict:
    """Metric functions by name: from each metric's url file (ClassFactory GENERAL), else cepr's own."""
    out = {}
    for m in job.testenv.metrics:
        if m.url is not None:
            import_module_file(m.url)
            out[m.name] = lookup(ClassType.GENERAL, m.name)
        else:
            out[m.name] = get_metric(m.name)
    return out


def ranked_table(header: list[str], rows: list[dict], records: list[dict], sort_by=()) -> str:
    """The printed leaderboard, 120 columns wide at most: the deployable policies ranked, a DEGRADED case marked
    in its row, and below them, apart and not ranked, the bounds (policies that read the labels, such as the
    Oracle), in the same columns. The rank CSVs keep every row and column, as Ianvs writes them."""
    bound_urls = {rec.get("url") for rec in records if rec.get("upper_bound")}
    degraded = {rec.get("url") for rec in records if rec.get("degraded")}
    module_types = list(dict.fromkeys(t for rec in records for t in rec.get("modules", {})))

    def is_bound(r):
        return r.get("url") in bound_urls or "upper bound" in str(r.get("hard_example_mining", ""))

    ranked, bounds = [r for r in rows if not is_bound(r)], [r for r in rows if is_bound(r)]
    marks = {id(r): "DEGRADED" for r in rows if r.get("url") in degraded}
    constants = constant_columns(header, rows)
    tables, left_out = leaderboard(header, [ranked, bounds] if bounds else [ranked], module_types, sort_by,
                                   marks=marks, constants=constants)
    out = [", ".join(f"{k}: {v}" for k, v in constants.items())] if constants else []
    out.append(tables[0])
    if bounds:
        out += ["bounds, not ranked (they read the labels: what a perfect dispatcher could reach):", tables[1]]
    if left_out:
        out += textwrap.wrap(f"not shown (120 columns): {', '.join(left_out)}; every column is in "
                             "selected_rank.csv", TABLE_WIDTH)
    return "\n".join(out)


def run_job(path: str | Path, opts: RunOptions | None = None) -> JobResult:

    opts = opts or RunOptions()
    if opts.concurrency < 1:
        raise CeprError(f"--concurrency must be >= 1, got {opts.concurrency}")
    if opts.limit is not None and opts.limit < 1:
        raise CeprError(f"--limit must be >= 1, got {opts.limit}")
    t_start = time.perf_counter()
    job = parse_job(path, opts.workspace)
    context = {"test_index": str(job.testenv.test_index), "mining_mode": job.testenv.mining_mode,
               "limit": opts.limit, "concurrency": opts.concurrency}
    cases = build_test_cases(job, context)
    check_test_cases(cases, job.testenv.mining_mode)  # every case's modules, before any data is made or read
    ensure_dataset(job, opts.progress)
    data = load_index(job.testenv.test_index, opts.limit)
    result = JobResult(job, data=data)
    result.bad_frames = bad = frame_problems(data, opts.progress) if opts.check_frames or opts.check_data else {}
    _list_bad_frames(data, bad)
    if opts.check_data:
        result.seconds = time.perf_counter() - t_start
        return result
    metrics = load_metrics(job)
    print(f"cepr run: {job.name}: {len(cases)} test case(s), {len(data)} sample(s) each, mining mode "
          f"{job.testenv.mining_mode}, concurrency {opts.concurrency}; results in {job.workspace / job.name}",
          flush=True)
    if opts.shard_size is not None and opts.shard_size < 1:
        raise CeprError(f"--shard-size must be >= 1, got {opts.shard_size}")
    try:
        if opts.cluster:
            run_on_cluster(cases, job, opts, metrics, data, bad, result)
        for i, tc in enumerate(cases if not opts.cluster else [], 1):
            rec = finished_record(tc) if opts.resume else None
            if rec is not None:
                result.skipped += 1
                log.info("resume: test case %s already finished", tc.id)
            else:
                rec = run_case(tc, job, opts, metrics, data.y, data.x, i, len(cases), bad)
                result.samples_failed += int(rec.get("n_failed") or 0)
            (result.records if rec["status"] == "ok" else result.failed).append(rec)
            if rec.get("degraded"):
                result.degraded.append(rec)
    except KeyboardInterrupt:
        result.interrupted = True
    except WorkspaceError as e:
        result.aborted = str(e)
    finally:
        shutdown_all()
    rank_dir = job.workspace / job.name / "rank"
    result.rank_dir = rank_dir
    if result.records:
        for rec in result.records:  # Ianvs's url: the case folder under the workspace as the YAML spells it
            rec["url"] = case_url(job.workspace_text, job.name, rec["algorithm"], rec["id"])
        try:
            sel = build_rank(result.records, job.rank, rank_dir, [m.name for m in job.testenv.metrics])
        except OSError as e:
            result.rank_dir = None
            result.rank_error = str(WorkspaceError.of(getattr(e, "filename", None) or rank_dir, e))
            for tmp in rank_dir.glob("*.tmp"):  # a half-written rank file (build_rank writes, then renames)
                with contextlib.suppress(OSError):
                    tmp.unlink()
        else:
            result.table = ranked_table(sel["header"], sel["rows"], result.records, job.rank.sort_by)
    result.seconds = time.perf_counter() - t_start
    return result


def _list_bad_frames(data: IndexDataset, bad: dict[int, str]) -> None:
    """The pre-flight's findings, before any model runs (all of them go into each case's record)."""
    if not bad:
        return
    print(f"cepr run: {len(bad)} of {len(data)} frame(s) in {data.index_file} cannot be scored; they are recorded "
          "as failed samples and the metrics come from the others:", flush=True)
    for i, why in sorted(bad.items())[:MAX_LISTED]:
        print(f"  bad frame {i}: {data.x[i]}: {why}", flush=True)
    if len(bad) > MAX_LISTED:
        print(f"  ... and {len(bad) - MAX_LISTED} more (cepr datasets check {data.index_file.parent} lists all)",
              flush=True)
