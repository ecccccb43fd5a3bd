"""One test case, run and saved: its folder and starting ``record.json``, the paradigm over its samples with every
``samples.jsonl`` line written as it finishes, its metrics, and the finished record. The local runner
(:mod:`cepr.runner.job`), the cluster driver (:mod:`cepr.runner.cluster_job`) and ``--resume`` share it."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import subprocess
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cepr import __version__
from cepr.data.tasks import ground_truth
from cepr.errors import CeprError
from cepr.records import SampleRecord, check_case_record, parse_case_record
from cepr.runner import resources
from cepr.runner.config import BenchmarkingJob
from cepr.runner.fingerprint import changed_parts
from cepr.runner.paradigm import Interrupted, SampleFailure, build_job, case_samples, release, run_samples
from cepr.runner.testcase import TestCase

log = logging.getLogger(__name__)
RECORD = "record.json"
SAMPLES = "samples.jsonl"


class WorkspaceError(CeprError):
    """The workspace cannot be written (read-only, full, a file where a folder should be): the job stops, what
    finished stays."""

    @classmethod
    def of(cls, path, e: OSError) -> WorkspaceError:
        return cls(f"cannot write the workspace: {path}: {e.strerror or type(e).__name__}"
                   f"{' (the disk is full)' if getattr(e, 'errno', None) == 28 else ''}")


@dataclass
class RunOptions:
    resume: bool = False
    concurrency: int = 1
    limit: int | None = None
    progress: bool = True
    workspace: str | None = None
    max_cloud_failures: float = 0.05  # a case whose cloud calls fail (fallback or error) more often is degraded
    check_data: bool = False  # only the pre-flight: list the bad frames, run no model
    check_frames: bool = True  # the pre-flight (read every frame first); off for a set whose files are no images
    cluster: str | None = None  # a Dask scheduler address: cases and shards run there (cepr.runner.cluster_job)
    cluster_timeout: float = 10.0  # seconds to reach the scheduler (and to find a worker)
    shard_size: int | None = None  # samples per cluster task (None: cepr.runner.cluster.DEFAULT_SHARD_SIZE)
    cluster_retries: int = 2  # a cluster task that raises is tried again this many times


def versions() -> dict:
    out = {"cepr": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for mod in ("numpy", "onnxruntime", "openai", "pydantic", "cv2"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def git_state(where: Path) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=False)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items() if not isinstance(x, np.ndarray)}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (np.str_, Path)):
        return str(v)
    return v


def _write_json(path: Path, doc: dict) -> None:
    """Atomically (a temporary file, then a rename): a full disk leaves the previous version, never half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = json.dumps(_jsonable(doc), indent=1, allow_nan=False)
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise WorkspaceError.of(path, e) from None


def write_record(out_dir: Path, record: dict) -> None:
    """The one way a case's record.json is written: checked against :class:`cepr.records.CaseRecord` (typed,
    versioned) and written atomically."""
    _write_json(out_dir / RECORD, check_case_record(record))


def read_record(path: Path) -> dict:
    """A record.json read back (``--resume``, the report): its version checked (:func:`parse_case_record`);
    OSError or a JSON error when the file cannot be read."""
    return parse_case_record(json.loads(path.read_text(encoding="utf-8")), str(path))


def _start_record(tc: TestCase, job: BenchmarkingJob, opts: RunOptions, started: float) -> dict:
    """The record written before the case runs: what it is and where, so even a crash leaves a trace."""
    return {"status": "running", **tc.describe(), "output_dir": str(tc.output_dir),
            "hyperparameters": tc.hyperparameters, "job": job.name, "job_file": str(job.file),
            "testenv": {"file": str(job.testenv.file), "test_index": str(job.testenv.test_index),
                        "mining_mode": job.testenv.mining_mode}, "limit": opts.limit,
            "concurrency": opts.concurrency, "versions": versions(), "git": git_state(Path.cwd()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))}


def sample_writer(fh, samples: list, y_true, x=None):
    """``on_result(i, result)`` for the paradigm: one samples.jsonl line per finished sample, flushed at once."""

    def write(i, r):
        label = y_true[i] if i < len(y_true) else None
        if isinstance(r, SampleFailure):
            line = {"index": i, "key": str(samples[i].get("key") if isinstance(samples[i], dict) else samples[i]),
                    "status": "failed", "rgb": _at(x, i), "label": label, "error": r.reason}
            _write_line(fh, line)
            return
        try:
            truth = ground_truth(label) if label is not None else None
        except Exception:  # noqa: BLE001 - truth in samples.jsonl is a convenience; metrics decide
            truth = None
        _write_line(fh, SampleRecord.build(i, samples[i], r, truth).to_line())
    return write


@contextlib.contextmanager
def closing_samples(fh):
    """Close samples.jsonl; a close that fails (a full disk refuses the buffered rest) is a WorkspaceError, and
    never hides the error that is already on its way out."""
    try:
        yield fh
    except BaseException:
        try:
            fh.close()
        except OSError:
            pass
        raise
    try:
        fh.close()
    except OSError as e:
        raise WorkspaceError.of(fh.name, e) from None


def _at(arr, i: int):
    return str(arr[i]) if arr is not None and i < len(arr) else None


def _write_line(fh, line: dict) -> None:
    """One whole samples.jsonl line, flushed at once (a full disk is a WorkspaceError, not half a line)."""
    try:
        fh.write(json.dumps(_jsonable(line), allow_nan=False) + "\n")
        fh.flush()
    except OSError as e:
        raise WorkspaceError.of(fh.name, e) from None


def _score(metrics: dict, y_true, y_pred, case_id: str) -> tuple[dict, dict]:
    """(values, errors) of every metric; a failing metric becomes NaN with its error, the others still count."""
    values, errors = {}, {}
    for name, fn in metrics.items():
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                v = fn(y_true[:len(y_pred)], y_pred)
            values[name] = v if isinstance(v, str) else (float(v) if v is not None else float("nan"))
        except Exception as e:  # noqa: BLE001 - one broken metric must not lose the case's results
            values[name] = float("nan")
            errors[name] = f"{type(e).__name__}: {e}"
            log.error("metric %s failed on test case %s: %s", name, case_id, errors[name])
            continue
        for w in caught:
            log.warning("metric %s: %s", name, w.message)
    return values, errors


def cloud_health(y_pred: list, max_failures: float) -> dict:
    """How the cloud calls of a case ended, and whether the case is degraded: more than ``max_failures`` of the
    samples sent to the cloud fell back or got an unusable reply, so its row measures the edge more than the
    policy (it is still scored, and marked)."""
    statuses = [c.get("status", "ok") for _, _, _, c in y_pred if isinstance(c, dict)]
    counts = {k: statuses.count(k) for k in ("ok", "fallback", "error")}
    sent = len(statuses)
    failed = counts["fallback"] + counts["error"]
    degraded = sent > 0 and failed / sent > max_failures
    why = (f"the cloud failed on {failed} of {sent} samples sent ({counts['fallback']} fallback, {counts['error']} "
           f"error; more than {max_failures:.0%})") if degraded else ""
    return {"sent": sent, **counts, "degraded": bool(degraded), "why": why}


def _split_failures(y_pred: list, y_true, x) -> tuple[list[int], list[dict]]:
    """(positions with a result, failed samples with their files and reasons) of a finished run."""
    ok, failed = [], []
    for i, r in enumerate(y_pred):
        if isinstance(r, SampleFailure):
            failed.append({"index": i, "rgb": _at(x, i), "label": _at(y_true, i), "reason": r.reason})
        elif r is not None:
            ok.append(i)
    return ok, failed


def begin_case(tc: TestCase, job: BenchmarkingJob, opts: RunOptions) -> tuple[float, dict]:
    """Create the case's folder and write its starting record.json (so a crash leaves a trace); returns the start
    time and the record. Shared by a local case and a case run on a cluster."""
    out_dir = tc.output_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkspaceError.of(out_dir, e) from None
    started = time.time()
    record = _start_record(tc, job, opts, started)
    write_record(out_dir, record)
    return started, record


def run_case(tc: TestCase, job: BenchmarkingJob, opts: RunOptions, metrics: dict, y_true: np.ndarray,
             x: np.ndarray, index: int, total: int, bad: dict | None = None) -> dict:
    """One test case: build the modules, run every sample (each line saved as it finishes), score, and save
    record.json; a failure is recorded with its traceback and returned, never raised.

    ``bad`` (position -> reason, from the pre-flight) are not run; they and any sample that raises are recorded
    with file and reason (samples.jsonl, record.json ``failed_samples``), the metrics come from the others
    (``n_ok``, ``n_failed``). Ctrl-C records the case "interrupted" with what finished and re-raises; a workspace
    that cannot be written raises :class:`WorkspaceError`."""

    out_dir = tc.output_dir
    started, record = begin_case(tc, job, opts)
    instances = {}
    jobobj = None
    try:
        instances, jobobj = build_job(tc.modules, job.testenv.mining_mode, instances)
        samples = case_samples(x, y_true, job.testenv.test_index, instances.get("dataset_processor"))
        record["upper_bound"] = jobobj.upper_bound
        save = getattr(jobobj.hem, "save_artifacts", None)  # e.g. the Learned router's model, kept with the run
        if callable(save):
            record.update(save(out_dir) or {})
        if jobobj.upper_bound:
            log.warning("test case %s uses %s, which reads the labels: an upper bound, not a deployable policy",
                        tc.id, tc.modules["hard_example_mining"].name)
        try:
            fh = (out_dir / SAMPLES).open("w")
        except OSError as e:
            raise WorkspaceError.of(out_dir / SAMPLES, e) from None
        with closing_samples(fh):
            hem = tc.modules["hard_example_mining"]
            desc = f"[{index}/{total}] {tc.algorithm.name} {hem.name} {_short(hem.hyperparameters)}"
            t0 = time.perf_counter()
            usage0 = resources.snapshot()
            try:
                y_pred = run_samples(jobobj, samples, opts.concurrency, opts.progress, desc,
                                     sample_writer(fh, samples, y_true, x), skip=bad)
            except Interrupted as e:
                ok, failed = _split_failures(e.results, y_true, x)
                record.update(status="interrupted", error="interrupted (Ctrl-C)", samples=e.finished,
                              n_ok=len(ok), n_failed=len(failed), failed_samples=failed)
                raise
            wall = time.perf_counter() - t0
            record["resources"] = resources.per_case(usage0, resources.snapshot(), len(y_pred))
            stats = getattr(instances["cloudmodel"], "server_stats", None)  # server: vllm's speculative counters
            if callable(stats) and (server := stats()) is not None:
                record["cloud_server"] = server
        score_case(record, metrics, y_pred, y_true, x, opts.max_cloud_failures, tc.id, wall)
    except WorkspaceError:
        record.update(status="failed", error="the workspace could not be written")
        finish_record(record, started, out_dir, quiet=True)
        raise
    except KeyboardInterrupt:
        if record["status"] != "interrupted":
            record.update(status="interrupted", error="interrupted (Ctrl-C)")
        finish_record(record, started, out_dir, quiet=True)
        raise
    except Exception as e:  # noqa: BLE001 - fault isolation: record the failure, keep the job going
        record.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        log.error("test case %s failed: %s", tc.id, record["error"])
    finally:
        release(jobobj, instances, f"test case {tc.id}")
    finish_record(record, started, out_dir)
    return record


def score_case(record: dict, metrics, y_pred: list, y_true, x, max_cloud_failures, case_id: str,
               wall: float) -> None:
    """Score a finished case's predictions into its record (failed samples set apart, the edge providers, the
    metrics, cloud health): one code path for a local case and a case whose shards ran on a cluster."""
    ok, failed = _split_failures(y_pred, y_true, x)
    record.update(n_ok=len(ok), n_failed=len(failed), failed_samples=failed)
    if failed:
        log.warning("test case %s: %d of %d samples failed and are not scored (first: sample %d, %s)", case_id,
                    len(failed), len(y_pred), failed[0]["index"], failed[0]["reason"])
    if not ok:
        raise CeprError(f"every sample failed (first: sample {failed[0]['index']}: {failed[0]['reason']})")
    good_pred = [y_pred[i] for i in ok]
    # which ONNX Runtime execution provider ran the edge model (each sample's edge result says it too)
    record["edge_providers"] = sorted({str(r[2]["provider"]) for r in good_pred
                                       if isinstance(r[2], dict) and r[2].get("provider")})
    values, errors = _score(metrics, np.asarray(y_true)[ok], good_pred, case_id)
    record.update(status="ok", metrics=values, samples=len(y_pred), wall_s=round(wall, 3),
                  cloud=cloud_health(good_pred, max_cloud_failures))
    record["degraded"] = record["cloud"]["degraded"]
    if record["degraded"]:
        log.warning("test case %s is DEGRADED: %s", case_id, record["cloud"]["why"])
    if errors:
        record["metric_errors"] = errors


def finish_record(record: dict, started: float, out_dir: Path, quiet: bool = False) -> None:
    """Stamp the end time and save record.json (``quiet``: on the way out of an error, a failed write is let go)."""
    finished = time.time()
    record.update(finished=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finished)),
                  seconds=round(finished - started, 3))
    try:
        write_record(out_dir, record)
    except WorkspaceError:
        if not quiet:
            raise


def _short(hps: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in hps.items())


def _earlier_results(tc: TestCase) -> list[tuple[str, list[str]]]:
    """Finished results of this same case (algorithm, modules, hyperparameters, mining mode, limit) in other case
    folders, made with other models / data / code / concurrency: ``[(case id, what changed)]``."""
    out = []
    mine = tc.describe()
    for p in sorted(tc.output_dir.parent.glob(f"*/{RECORD}")):
        if p.parent.name == tc.id:
            continue
        try:
            rec = read_record(p)
        except (OSError, json.JSONDecodeError, CeprError):
            continue
        te = rec.get("testenv") or {}
        if (rec.get("status") != "ok" or rec.get("modules") != mine["modules"]
                or te.get("mining_mode", tc.context.get("mining_mode")) != tc.context.get("mining_mode")
                or rec.get("limit") != tc.context.get("limit")):
            continue
        out.append((p.parent.name, changed_parts(rec.get("fingerprints"), tc.fingerprints)))
    return out


def finished_record(tc: TestCase) -> dict | None:
    """The record ``--resume`` may reuse: finished ("ok"), not degraded, with this id and these fingerprints.
    A failed, unfinished or degraded case is run again (logged with the reason); a record in this case's folder
    made with other fingerprints stops the job (CeprError saying what changed); earlier results of the same case
    made with other models / data / code / concurrency live in other folders and are named in a warning."""
    p = tc.output_dir / RECORD
    if not p.is_file():
        earlier = _earlier_results(tc)
        if earlier:
            what = sorted({w for _, ws in earlier for w in ws})
            log.warning("resume: found %d earlier result(s) of test case %s made with other %s (%s): not reused; "
                        "running it now", len(earlier), tc.id, "/".join(what), ", ".join(i for i, _ in earlier))
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("resume: %s is unreadable (%s): running test case %s again", p, e, tc.id)
        return None
    rec = parse_case_record(rec, str(p))  # a record of another version: a clear error, not a guess
    if rec.get("id") != tc.id:
        return None
    if rec.get("status") != "ok":
        log.info("resume: test case %s ended %r earlier%s: running it again", tc.id, rec.get("status"),
                 f" ({rec['error']})" if rec.get("error") else "")
        return None
    changed = changed_parts(rec.get("fingerprints"), tc.fingerprints)
    if changed:
        raise CeprError(f"--resume: {p} was made with other {', '.join(changed)} than this run (its fingerprints "
                        "differ), so its results cannot be reused. Run into a new workspace (--workspace DIR), or "
                        f"delete {tc.output_dir} to run this case again")
    if rec.get("degraded"):
        why = (rec.get("cloud") or {}).get("why") or "its cloud calls failed too often"
        log.warning("resume: test case %s finished degraded earlier (%s): running it again", tc.id, why)
        return None
    rec["metrics"] = {k: (float("nan") if v is None else v) for k, v in rec["metrics"].items()}
    return rec
