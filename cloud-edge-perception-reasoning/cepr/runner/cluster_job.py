"""``cepr run --cluster ADDRESS``: the job's test cases, split into shards of samples, as tasks on a Dask cluster.

What is written is what ``cepr run`` writes locally (record.json, samples.jsonl, the rank files), by this process
only: a shard's per-sample lines are written when its future completes (once per case and shard), and its results
saved in ``<case>/shards/`` until the case is scored, so ``--resume`` after a lost scheduler or Ctrl-C reruns only
the shards that had not finished. A worker lost mid-shard loses nothing that had finished: the scheduler runs the
shard again on another worker. See :mod:`cepr.runner.cluster` and docs/cluster.md.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from cepr.runner import case as J
from cepr.runner import cluster as cl
from cepr.runner.paradigm import SampleFailure, case_samples

log = logging.getLogger(__name__)


@dataclass
class _Case:
    tc: object  # TestCase
    index: int
    record: dict
    started: float
    samples: list
    results: list
    y: object = None
    x: object = None
    pending: set = field(default_factory=set)  # future keys not yet written
    shards: list = field(default_factory=list)  # what ran where
    t_submit: float = 0.0
    error: str | None = None
    done: bool = False
    cloud_server: dict | None = None


def _samples_of(tc, job, data) -> list:
    return case_samples(data.x, data.y, job.testenv.test_index, tc.modules.get("dataset_processor"))


def run_on_cluster(cases, job, opts, metrics, data, bad: dict, result) -> None:
    """Run ``cases`` on the cluster ``opts.cluster``, filling ``result`` as the local loop does (records in case
    order). A lost scheduler sets ``result.cluster_error``; Ctrl-C sets ``result.interrupted``."""
    address = cl.normalise_address(opts.cluster)
    client = cl.connect(address, opts.cluster_timeout)
    distributed = cl._distributed()
    try:
        names = cl.workers(client)
        size = opts.shard_size or cl.DEFAULT_SHARD_SIZE
        print(f"cepr run: Dask cluster {address}: {len(names)} worker(s); shards of at most {size} sample(s)",
              flush=True)
        finished: dict[int, dict] = {}
        states: dict[int, _Case] = {}
        futures, meta = [], {}
        nonce = uuid.uuid4().hex[:8]
        cwd = str(Path.cwd())
        total = 0
        for idx, tc in enumerate(cases, 1):
            rec = J.finished_record(tc) if opts.resume else None
            if rec is not None:
                result.skipped += 1
                log.info("resume: test case %s already finished", tc.id)
                finished[idx] = rec
                continue
            st = _prepare(tc, idx, job, opts, data, bad)
            states[idx] = st
            todo = [i for i, r in enumerate(st.results) if r is None]
            hem = tc.modules["hard_example_mining"]
            split = size if cl.order_independent(hem.name) else None
            st.record["cluster"] = {"address": address, "workers": len(names), "worker_addresses": names,
                                    "shard_size": split, "split": split is not None,
                                    "reused_samples": len(st.results) - len(todo) - len(bad), "shards": []}
            st.t_submit = time.perf_counter()
            mods = {t: m for t, m in tc.modules.items() if t != "dataset_processor"}  # applied here, in _prepare
            for k, positions in enumerate(cl.plan_shards(todo, split)):
                task = cl.ShardTask(
                    case_key=f"{tc.id}-{nonce}", modules=mods, mining_mode=job.testenv.mining_mode,
                    samples=[(i, st.samples[i]) for i in positions],
                    paths=[p for i in positions for p in (str(data.x[i]), str(data.y[i]))], cwd=cwd,
                    concurrency=opts.concurrency, artifacts=k == 0)
                key = f"cepr-run-{tc.id}-{cl.shard_name(positions)}-{nonce}"
                fut = client.submit(cl.run_shard, task, key=key, pure=False, retries=opts.cluster_retries)
                futures.append(fut)
                meta[key] = (idx, positions)
                st.pending.add(key)
                total += len(positions)
            if not st.pending:  # every sample came from finished shards on disk
                _finalize(st, job, opts, metrics, data, bad)
        _collect(client, distributed, futures, meta, states, job, opts, metrics, data, bad, total, address, result)
        for idx in range(1, len(cases) + 1):
            rec = finished.get(idx) or (states[idx].record if idx in states else None)
            if rec is None:
                continue
            if idx in states and not states[idx].done:
                continue  # unfinished (lost scheduler, Ctrl-C): recorded as such, kept out of the table
            (result.records if rec["status"] == "ok" else result.failed).append(rec)
            if rec.get("degraded"):
                result.degraded.append(rec)
            if idx in states:
                result.samples_failed += int(rec.get("n_failed") or 0)
        for idx, st in states.items():
            if not st.done:
                result.failed.append(st.record)
    finally:
        try:
            if client.status == "running":
                client.run(cl.release_worker)
        except Exception as e:  # noqa: BLE001 - the results are written; the workers clean up when they exit
            log.debug("releasing the workers failed: %s", e)
        try:
            client.close(timeout=5)
        except Exception as e:  # noqa: BLE001 - closing a client whose scheduler is gone may fail
            log.debug("closing the Dask client failed: %s", e)


def _prepare(tc, idx, job, opts, data, bad) -> _Case:
    out_dir = tc.output_dir
    started, record = J.begin_case(tc, job, opts)
    samples = _samples_of(tc, job, data)
    results: list = [None] * len(samples)
    previous = cl.load_shards(out_dir) if opts.resume else {}
    if not opts.resume:
        cl.drop_shards(out_dir)
    for i, r in previous.items():
        if i < len(results) and i not in bad:
            results[i] = r
    for i, why in bad.items():
        if 0 <= i < len(results):
            results[i] = SampleFailure(i, why)
    st = _Case(tc, idx, record, started, samples, results, data.y, data.x)
    # the lines of bad frames and of shards finished in an earlier run (a fresh samples.jsonl)
    _write_lines(st, [(i, r) for i, r in enumerate(results) if r is not None], mode="w")
    if previous:
        log.info("resume: test case %s: %d sample(s) from finished shards reused", tc.id, len(previous))
    return st


def _write_lines(st: _Case, results: list, mode: str = "a") -> None:
    """samples.jsonl lines for ``results`` [(position, result)], the file opened only for this (a job of many
    cases holds no file open per case)."""
    path = st.tc.output_dir / J.SAMPLES
    try:
        fh = path.open(mode)
    except OSError as e:
        raise J.WorkspaceError.of(path, e) from None
    with J.closing_samples(fh):
        write = J.sample_writer(fh, st.samples, st.y, st.x)
        for i, r in results:
            write(i, r)


def _collect(client, distributed, futures, meta, states, job, opts, metrics, data, bad, total, address,
             result) -> None:

    written: set[str] = set()
    counts = {"edge": 0, "cloud": 0, "failed": 0}
    bar = tqdm(total=total, desc=f"cluster {address}", unit="sample", disable=not opts.progress, leave=True,
               dynamic_ncols=True)
    try:
        for fut in cl.completed(client, futures, address, opts.cluster_timeout):
            key = fut.key
            if key in written or key not in meta:
                continue
            idx, positions = meta[key]
            st = states[idx]
            written.add(key)
            st.pending.discard(key)
            if st.done:
                continue
            if fut.status == "cancelled":
                raise cl.lost(address, "its task was cancelled")
            try:
                sr = fut.result()
            except (distributed.client.FutureCancelledError, OSError) as e:
                raise cl.lost(address, f"{type(e).__name__}: {e}") from None
            except Exception as e:  # noqa: BLE001 - a shard that failed after its retries fails its case
                st.error = f"{type(e).__name__}: {e}"
                for k in list(st.pending):  # the case's other shards are not needed any more
                    client.cancel([f for f in futures if f.key == k])
                st.pending.clear()
                _fail(st, f"shard {cl.shard_name(positions)} failed on the cluster: {st.error}")
                bar.update(len(positions))
                continue
            try:
                cl.save_shard(st.tc.output_dir, positions, sr.results)
            except OSError as e:
                raise J.WorkspaceError.of(st.tc.output_dir / cl.SHARDS_DIR, e) from None
            _write_lines(st, sr.results)
            for i, r in sr.results:
                st.results[i] = r
                counts["failed" if isinstance(r, SampleFailure) else "cloud" if r[0] else "edge"] += 1
            if sr.artifacts or sr.record:
                for name, blob in sr.artifacts.items():
                    (st.tc.output_dir / name).write_bytes(blob)
                st.record.update(sr.record)
            st.record["upper_bound"] = sr.upper_bound
            if sr.cloud_server is not None:
                st.cloud_server = sr.cloud_server
            st.record["cluster"]["shards"].append(
                {"shard": cl.shard_name(positions), "first": positions[0], "last": positions[-1],
                 "samples": len(positions), "worker": sr.worker, "host": sr.host, "pid": sr.pid,
                 "seconds": round(sr.seconds, 3), "build_s": round(sr.build_s, 3),
                 "finished": round(sr.finished, 3), "resources": sr.resources})
            bar.update(len(positions))
            bar.set_postfix(counts, refresh=False)
            if not st.pending:
                _finalize(st, job, opts, metrics, data, bad)
    except KeyboardInterrupt:
        result.interrupted = True
        client.cancel(futures)
        for st in states.values():
            if not st.done:
                _unfinished(st, "interrupted", "interrupted (Ctrl-C)")
    except cl.ClusterError as e:
        result.cluster_error = str(e)
        for st in states.values():
            if not st.done:
                _unfinished(st, "interrupted", str(e))
    finally:
        bar.close()


def _unfinished(st: _Case, status: str, error: str) -> None:
    got = [r for r in st.results if r is not None]
    st.record.update(status=status, error=error, samples=len(got),
                     n_ok=sum(not isinstance(r, SampleFailure) for r in got),
                     n_failed=sum(isinstance(r, SampleFailure) for r in got))
    J.finish_record(st.record, st.started, st.tc.output_dir, quiet=True)


def _fail(st: _Case, error: str) -> None:
    st.record.update(status="failed", error=error)
    log.error("test case %s failed: %s", st.tc.id, error)
    st.done = True
    J.finish_record(st.record, st.started, st.tc.output_dir)


def _finalize(st: _Case, job, opts, metrics, data, bad) -> None:
    """Score a case whose shards have all finished, as run_case does, and write its record."""
    tc, record = st.tc, st.record
    y_pred = st.results
    y_true, x = data.y, data.x
    wall = time.perf_counter() - st.t_submit
    try:
        record["resources"] = {f"{s['worker']} shard {s['shard']}: {name}": v
                               for s in record["cluster"]["shards"] for name, v in (s["resources"] or {}).items()}
        if st.cloud_server is not None:
            record["cloud_server"] = st.cloud_server
        J.score_case(record, metrics, y_pred, y_true, x, opts.max_cloud_failures, tc.id, wall)
    except Exception as e:  # noqa: BLE001 - fault isolation, as run_case
        record.update(status="failed", error=f"{type(e).__name__}: {e}")
        log.error("test case %s failed: %s", tc.id, record["error"])
    st.done = True
    J.finish_record(record, st.started, tc.output_dir)
    if record["status"] == "ok":
        cl.drop_shards(tc.output_dir)
