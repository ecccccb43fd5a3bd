"""Test cases and shards of their samples as tasks on an existing Dask cluster (``cepr run --cluster``,
``cepr sweep --cluster``).

The driver (the ``cepr run`` / ``cepr sweep`` process) plans one task per (case, shard): a shard is a run of
consecutive sample positions of one case. Each task runs on a worker: it builds the case's edge, cloud and
hard-example-mining modules (kept for the next shard of the same case on that worker), runs the joint-inference
paradigm on its samples exactly as ``cepr run`` does locally (``run_samples``: per-sample latency measured there),
and returns the results. The driver is the only writer: it writes a shard's per-sample records when the shard's
future completes, once per (case, shard) key, so a shard the scheduler re-ran after losing its worker is never
written twice. Models and data reach the workers **by path**: every path the driver resolved (module files, the
test index, the frames, the driver's working directory) must be visible at the same path on each worker (shared
storage, or the same checkout and data on every host); a task that cannot see one fails naming the path and the
worker.

``distributed`` is imported only here, and only when a cluster is asked for (``import cepr`` stays light).
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cepr.compat.class_factory import ClassType, force_register, lookup
from cepr.dispatch import CloudOnly, policies
from cepr.errors import CeprError
from cepr.runner import resources as usage
from cepr.runner.paradigm import SampleFailure, build_job, run_samples
from cepr.servers.autoserve import shutdown_all

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 50  # samples per task when a case is split (a task loads the case's models once per worker)
DEFAULT_TIMEOUT_S = 10.0
NO_WORKER_S = 60.0  # a cluster without any worker this long stops the job (finished work kept)
DEFAULT_RETRIES = 2  # a task that raises is tried again this many times (a lost worker is handled by the scheduler)
SHARDS_DIR = "shards"  # per case: the finished shards' results (pickled), for --resume of an unfinished case

# hard-example-mining policies whose decision on a sample depends on that sample alone (no state carried from one
# sample to the next), so a case using one may be split into shards without changing a decision. Any other policy
# (Budget's window, a user's online policy) runs its whole case as one task, in dataset order. A policy class may
# declare ``order_independent = True`` in its own body to be split too (a subclass does not inherit it).
ORDER_INDEPENDENT = frozenset({"Threshold", "CrossEntropy", "Random", "RandomRouter", "EdgeOnly", "CloudOnly",
                               "Oracle", "OracleRouter"})


class ClusterError(CeprError):
    """The Dask cluster cannot be reached, was lost, or a worker cannot see a path."""


def _distributed():
    try:
        import distributed
    except ImportError:
        raise CeprError("--cluster needs Dask's `distributed` package: pip install "
                        "'cloud-edge-perception-reasoning[cluster]' (on the driver and on every worker)") from None
    return distributed


def normalise_address(address: str) -> str:
    a = address.strip()
    if not a:
        raise CeprError("--cluster needs an address such as tcp://HOST:8786")
    return a if "://" in a else f"tcp://{a}"


def connect(address: str, timeout_s: float = DEFAULT_TIMEOUT_S):
    """A ``distributed.Client`` on the scheduler at ``address``; a ClusterError naming it when it does not answer
    within ``timeout_s`` or has no worker."""
    distributed = _distributed()
    address = normalise_address(address)
    try:
        client = distributed.Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"no Dask scheduler answered at {address} within {timeout_s:g} s ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}). Start one with `dask scheduler` and "
                           "workers with `dask worker ADDRESS` (docs/cluster.md)") from None
    deadline = time.monotonic() + timeout_s
    while not client.scheduler_info().get("workers"):
        if time.monotonic() > deadline:
            client.close()
            raise ClusterError(f"the Dask scheduler at {address} has no worker (waited {timeout_s:g} s): start "
                               f"some with `dask worker {address}` (docs/cluster.md)")
        time.sleep(0.2)
    return client


RUN_KEPT = "the finished test cases and shards are kept on disk: start the cluster again and rerun with --resume"


def completed(client, futures, address: str, timeout_s: float, kept: str = RUN_KEPT):
    """The futures as they complete; a ClusterError when the scheduler is gone or has had no worker for
    ``NO_WORKER_S`` (a worker restarted by its nanny comes back well within that). ``kept``: what the error says
    is kept and what to do."""
    ac = _distributed().as_completed(futures, loop=client.loop)
    last_worker = time.monotonic()
    last_check = 0.0
    while not ac.is_empty():
        if ac.has_ready():
            yield from ac.next_batch(block=False)
            continue
        time.sleep(0.1)
        if client.status not in ("running", "connecting"):
            raise lost(address, f"the client is {client.status}", kept)
        now = time.monotonic()
        if now - last_check < 2.0:
            continue
        last_check = now
        try:
            n = len(client.nthreads())
        except Exception as e:  # noqa: BLE001 - any failure to ask the scheduler means it is gone
            raise lost(address, f"{type(e).__name__}: {e}", kept) from None
        if n:
            last_worker = now
        elif now - last_worker > max(NO_WORKER_S, timeout_s):
            raise ClusterError(f"the Dask scheduler at {address} has had no worker for "
                               f"{max(NO_WORKER_S, timeout_s):g} s (start some: `dask worker {address}`); {kept}")


def lost(address: str, why: str, kept: str = RUN_KEPT) -> ClusterError:
    return ClusterError(f"lost the Dask scheduler at {address} ({why}); {kept}")


def workers(client) -> list[str]:
    return sorted(client.scheduler_info().get("workers", {}))


def order_independent(hem_name: str) -> bool:
    """May a case with this hard-example-mining policy be split into shards (see :data:`ORDER_INDEPENDENT`)?
    Decided on the class the name is registered to (exactly cepr's class, not a subclass, which may keep state)."""
    try:
        cls = lookup(ClassType.HEM, hem_name)
    except Exception:  # noqa: BLE001 - an unknown policy is simply not split
        return False
    if any(cls is getattr(policies, n, None) for n in ORDER_INDEPENDENT):
        return True
    # declared on the class itself: a subclass of a stateless policy may add state, so it must say so again
    return vars(cls).get("order_independent", False) is True


def plan_shards(positions: list[int], size: int | None) -> list[list[int]]:
    """Consecutive runs of at most ``size`` positions (all in one shard when ``size`` is None)."""
    if not positions:
        return []
    if size is None:
        return [list(positions)]
    return [list(positions[k:k + size]) for k in range(0, len(positions), size)]


def shard_name(positions: list[int]) -> str:
    return f"{positions[0]:06d}-{positions[-1]:06d}-{len(positions)}"


# ---- on the worker ----------------------------------------------------------------------------------------------

@dataclass
class ShardTask:
    """What a worker needs to run one shard: the modules of the case, the samples and where the driver ran."""

    case_key: str  # which modules: the worker keeps them for the next shard of the same key (one key per case
    # and run: a new run builds them afresh, so no state carries over from an earlier run)
    modules: dict  # module type -> ModuleSpec (edgemodel, cloudmodel, hard_example_mining)
    mining_mode: str
    samples: list  # (position, sample) pairs
    paths: list[str]  # files the shard reads (frames, labels): checked visible on the worker first
    cwd: str  # the driver's working directory: relative paths in hyperparameters resolve against it
    concurrency: int = 1
    artifacts: bool = False  # call the policy's save_artifacts (once per case) and return the files


@dataclass
class ShardResult:
    results: list  # (position, [is_hard, final, edge, cloud] or SampleFailure)
    worker: str
    host: str
    pid: int
    seconds: float
    build_s: float = 0.0  # of ``seconds``: building the case's modules (0 when this worker had them loaded)
    finished: float = 0.0  # when the shard ended on the worker (epoch seconds, the worker's clock)
    resources: dict = field(default_factory=dict)
    cloud_server: dict | None = None
    upper_bound: bool = False
    artifacts: dict = field(default_factory=dict)  # file name -> bytes (the policy's save_artifacts)
    record: dict = field(default_factory=dict)  # what save_artifacts says the record should hold


# (worker thread, case key) -> (instances, JointInferenceJob), on a worker: each of a worker's threads keeps the
# modules of the case it ran last (a thread never releases what another thread is using)
_loaded: dict[tuple[int, str], tuple] = {}
_loaded_lock = threading.Lock()


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def _check_visible(task: ShardTask, where: str) -> None:
    if not Path(task.cwd).is_dir():
        raise ClusterError(f"worker {where}: the driver's working directory {task.cwd} does not exist here: "
                           "workers need the job's files at the same paths (shared storage; docs/cluster.md)")
    for spec in task.modules.values():
        if not Path(spec.url).is_file():
            raise ClusterError(f"worker {where}: module file {spec.url} does not exist here: workers need the "
                               "job's files at the same paths (shared storage; docs/cluster.md)")
    for p in task.paths:
        if p and not Path(p).exists():
            raise ClusterError(f"worker {where}: data file {p} does not exist here: workers need the data set at "
                               "the same paths (shared storage; docs/cluster.md)")


def _job_for(task: ShardTask):
    me = threading.get_ident()
    with _loaded_lock:
        hit = _loaded.get((me, task.case_key))
        if hit is not None:
            return hit
        for key in [k for k in _loaded if k[0] == me]:  # one case's modules at a time per worker thread
            _release_one(key)
        _fresh_imports(task.modules)
        instances, job = build_job({t: task.modules[t] for t in ("edgemodel", "cloudmodel", "hard_example_mining")},
                                   task.mining_mode)
        _loaded[(me, task.case_key)] = (instances, job)
        return instances, job


def _fresh_imports(modules: dict) -> None:
    """A worker outlives jobs: forget the module files (imported by basename, as Ianvs does) a case names, so
    they are imported again from this case's paths: another job's copy of the same adapter, or an edited file,
    is never run in its place."""
    for spec in modules.values():
        path = Path(spec.url).resolve()
        sys.modules.pop(path.stem, None)
        folder = str(path.parent)
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)


def _release_one(key: tuple[int, str]) -> None:
    _, job = _loaded.pop(key)
    try:
        job.cleanup()
    except Exception as e:  # noqa: BLE001 - a failed cleanup must not fail the next case
        log.warning("cleanup of a case's modules failed on the worker: %s", e)


def executing(dask_worker) -> list[str]:
    """On a worker (``client.run(executing)``): the keys of the tasks it is executing now (diagnostics, tests)."""
    return [str(ts.key) for ts in dask_worker.state.executing]


def release_worker() -> int:
    """On each worker at the end of a job (``client.run``): drop the loaded modules and stop auto-started
    servers (the reference cloud expert). Returns how many cases were released."""
    with _loaded_lock:
        n = len(_loaded)
        for key in list(_loaded):
            _release_one(key)
    shutdown_all()
    return n


def run_shard(task: ShardTask) -> ShardResult:
    """Run one shard on this worker (the Dask task). Exceptions of single samples are SampleFailures in the
    results, as locally; a module that cannot be built raises (the task is retried, then the case fails)."""
    where = _worker_address()
    _check_visible(task, where)
    if os.getcwd() != task.cwd:
        os.chdir(task.cwd)
    t0 = time.perf_counter()
    instances, job = _job_for(task)
    out = ShardResult([], where, socket.gethostname(), os.getpid(), 0.0, build_s=time.perf_counter() - t0,
                      upper_bound=bool(job.upper_bound))
    if task.artifacts:
        save = getattr(job.hem, "save_artifacts", None)
        if callable(save):
            with tempfile.TemporaryDirectory() as tmp:
                out.record = dict(save(tmp) or {})
                out.artifacts = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    usage0 = usage.snapshot()
    positions = [i for i, _ in task.samples]
    res = run_samples(job, [s for _, s in task.samples], task.concurrency, False, "")
    for j, r in enumerate(res):
        if isinstance(r, SampleFailure):
            r = SampleFailure(positions[j], r.reason)
        out.results.append((positions[j], r))
    out.resources = usage.per_case(usage0, usage.snapshot(), len(res))
    stats = getattr(instances["cloudmodel"], "server_stats", None)
    if callable(stats):
        out.cloud_server = stats()
    out.seconds = time.perf_counter() - t0
    out.finished = time.time()
    return out


# ---- the sweep cache's fill: edge + cloud on a shard of samples --------------------------------------------------

def run_fill_shard(task: ShardTask) -> ShardResult:
    """The sweep cache's task: the edge and the cloud on every sample of the shard (hard example mining is
    CloudOnly, so both results come back), as ``fill_cache`` runs them locally."""
    force_register(CloudOnly, ClassType.HEM, "CloudOnly")
    return run_shard(task)


# ---- on the driver: shard files for --resume ---------------------------------------------------------------------

def save_shard(case_dir: Path, positions: list[int], results: list) -> Path:
    """The shard's results, pickled atomically into ``<case>/shards/`` (what --resume of an unfinished case reads
    back: the metrics need every sample's full result, masks included)."""
    d = case_dir / SHARDS_DIR
    d.mkdir(exist_ok=True)
    p = d / f"{shard_name(positions)}.pkl"
    tmp = p.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(p)
    return p


def load_shards(case_dir: Path) -> dict[int, object]:
    """position -> result of every finished shard saved in ``<case>/shards/`` (an unreadable file is skipped)."""
    out: dict[int, object] = {}
    d = case_dir / SHARDS_DIR
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.pkl")):
        try:
            for i, r in pickle.loads(p.read_bytes()):
                out[int(i)] = r
        except Exception as e:  # noqa: BLE001 - a torn file: that shard runs again
            log.warning("resume: %s is unreadable (%s): its samples run again", p, e)
    return out


def drop_shards(case_dir: Path) -> None:
    shutil.rmtree(case_dir / SHARDS_DIR, ignore_errors=True)
