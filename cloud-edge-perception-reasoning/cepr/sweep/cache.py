"""The sweep cache: the edge AND the cloud run once on every test sample, both results kept, so that any number of
dispatch policies can then be evaluated without calling a model.

**Filling** runs as a test case runs: the test index through the dataset processor (``case_samples``), the edge
and cloud modules of one algorithm of a benchmarking job built with the paradigm (``build_job``, released with
``release``) and run by ``run_samples`` (progress bar, concurrency, a failing sample recorded, not fatal), all
from :mod:`cepr.runner.paradigm`, the code under ``cepr run``, in ``inference-then-mining`` mode with a filter that sends every sample to the cloud.
So the cached edge result is exactly the dict a policy receives at run time, and the cloud result is what the
cloud returns when that policy sends the sample (its ``edge_state``, the scene summary, is handed over as in
``cepr run``).

**Key**: a cache folder ``<cache root>/<key>/`` per (edge, cloud and dataset-processor module names and
hyperparameters, payload settings included; the sha256 of every model file they use,
``cepr.runner.fingerprint.models_fingerprint``; the test set's fingerprint; the concurrency, which changes
latencies). A changed model file, payload, link, data set or concurrency gives another key, so a stale result is
never reused. cepr's own source is recorded (``meta.json``: ``code``) but kept out of the key: a rerun after a code
change reuses the cache with a warning; ``--refresh`` rebuilds it.

**Layout**: ``meta.json`` (the key's parts, the data set, failed samples), ``samples.jsonl`` (one line per sample,
appended as it finishes: ``index, key, task, truth, edge, edge_state, cloud, mask``) and ``masks/<index>.png``
(the edge's predicted class map, lossless, where the edge module kept one). A rerun with a larger ``--limit`` runs
only the samples the cache lacks; an interrupted fill keeps what finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cepr.compat.class_factory import ClassType, force_register
from cepr.data.identity import data_fingerprint, dataset_identity
from cepr.data.tasks import ground_truth
from cepr.dispatch import CloudOnly
from cepr.errors import CeprError
from cepr.records import EDGE_STATE_KEY, MASK_KEY, CloudRecord, EdgeResult, EdgeState
from cepr.runner import cluster as cl
from cepr.runner import fingerprint as fpr
from cepr.runner.config import ModuleSpec, parse_job
from cepr.runner.dataset import load_index
from cepr.runner.job import ensure_dataset
from cepr.runner.paradigm import SampleFailure, build_job, case_samples, release, run_samples
from cepr.runner.resolve import choose_algorithm
from cepr.runner.testcase import build_test_cases
from cepr.servers.autoserve import shutdown_all

log = logging.getLogger(__name__)

FORMAT = 1
META = "meta.json"
SAMPLES = "samples.jsonl"
MASKS = "masks"
MINING_MODE = "inference-then-mining"  # the mode in which a policy receives the edge result
CACHED_MODULES = ("dataset_processor", "edgemodel", "cloudmodel")
PAYLOAD_KEYS = ("payload", "resolution", "scale", "codec", "quality", "link", "link_seed", "emulate_link")
_ALL_TO_CLOUD = "CloudOnly"


# ---- where the settings come from ---------------------------------------------------------------------------

@dataclass
class SweepSource:
    """One algorithm of a benchmarking job: the edge, cloud and dataset-processor modules the cache runs, and its
    hard-example-mining module (whose url registers the policies, and which ``--write-algorithm`` replaces)."""

    job: object  # cepr.runner.config.BenchmarkingJob
    algorithm: object  # cepr.runner.config.AlgorithmSpec
    modules: dict  # module type -> ModuleSpec (edgemodel, cloudmodel, dataset_processor when present)
    hem: object  # ModuleSpec of the algorithm's first hard_example_mining setting

    @property
    def test_index(self) -> Path:
        return self.job.testenv.test_index

    @property
    def payload(self) -> dict:
        hps = self.modules["cloudmodel"].hyperparameters
        return {k: hps[k] for k in PAYLOAD_KEYS if k in hps}


def resolve_source(job_file: str | Path, algorithm: str | None = None, workspace: str | None = None) -> SweepSource:
    """The algorithm ``algorithm`` of the job in ``job_file`` (default: the one :mod:`cepr.runner.resolve`'s rule
    picks); its edge, cloud and dataset-processor modules must have one setting each (the cache holds one
    configuration)."""
    job = parse_job(job_file, workspace)
    algo = choose_algorithm(job.algorithms, algorithm, job.file)
    cases = build_test_cases(dataclasses.replace(job, algorithms=[algo]), {})
    modules: dict = {}
    for mtype in CACHED_MODULES:
        seen = {json.dumps(c.modules[mtype].hyperparameters, sort_keys=True, default=str): c.modules[mtype]
                for c in cases if mtype in c.modules}
        if len(seen) > 1:
            raise CeprError(f"{algo.file}: the {mtype} module has {len(seen)} hyperparameter combinations; the "
                            "sweep cache holds one edge and cloud configuration: keep one value each (the swept "
                            "parameters belong in the sweep spec)")
        if seen:
            modules[mtype] = next(iter(seen.values()))
    return SweepSource(job, algo, modules, cases[0].modules["hard_example_mining"])


def cache_parts(source: SweepSource, concurrency: int = 1) -> dict:
    """What the cache key is made of (see the module doc)."""
    mods = {t: {"name": m.name, "hyperparameters": m.hyperparameters} for t, m in source.modules.items()}
    models = fpr.models_fingerprint({t: m for t, m in source.modules.items() if t != "dataset_processor"})
    data = data_fingerprint(source.test_index)
    return {"format": FORMAT, "mining_mode": MINING_MODE, "modules": mods, "payload": source.payload,
            "models": models, "data": {"fingerprint": data["fingerprint"], "name": data.get("name")},
            "concurrency": int(concurrency)}


def cache_key(parts: dict) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def default_cache_root(source: SweepSource) -> Path:
    return source.job.workspace / source.job.name / "sweep-cache"


# ---- edge results as a policy receives them -----------------------------------------------------------------

class _MaskRef:
    """The cache's PNG of one sample's predicted class map, decoded once while that sample is being decided."""

    __slots__ = ("path", "value")

    def __init__(self, path: Path):
        self.path, self.value = path, None

    def get(self) -> np.ndarray:
        if self.value is None:
            arr = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise CeprError(f"sweep cache: cannot read the edge mask {self.path} (delete the cache folder or "
                                "use --refresh)")
            self.value = arr
        return self.value

    def release(self) -> None:
        self.value = None


class CachedEdgeResult(dict):
    """An edge result read back from the cache, as the paradigm hands it to a policy: the edge model's dict, its
    ``edge_state`` (an :class:`~cepr.records.EdgeState`) and, where the edge module kept it, the
    predicted class map under ``mask``, decoded from the cache on first use (``x["mask"]``, ``x.get("mask")``
    and ``"mask" in x`` all see it)."""

    __slots__ = ("_mask",)

    def __init__(self, data=(), mask: _MaskRef | None = None):
        super().__init__(data)
        self._mask = mask

    def __missing__(self, key):
        if key == MASK_KEY and self._mask is not None:
            return self._mask.get()
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or (key == MASK_KEY and self._mask is not None)

    def copy(self) -> CachedEdgeResult:
        return CachedEdgeResult(self, self._mask)

    def release(self) -> None:
        """Forget the decoded mask (it is read again on the next use)."""
        if self._mask is not None:
            self._mask.release()


# ---- the loaded cache ---------------------------------------------------------------------------------------

@dataclass
class CachedSet:
    """The cached samples, in dataset order, as arrays (what vectorised policies and every metric read) and, on
    demand, as the edge result dicts generic policies are called with."""

    dir: Path | None
    meta: dict
    lines: list[dict]
    note: str = ""  # e.g. how a benchmark replicated the cache
    _edge: list | None = field(default=None, repr=False)

    def __post_init__(self):
        L = self.lines
        self.n = len(L)
        self.keys = [str(x["key"]) for x in L]
        self.tasks = np.array([str(x["task"]) for x in L])
        self.truth = np.array([str(x["truth"]) for x in L])
        self.edge_answer = np.array([str(x["edge"].get("answer")) for x in L])
        # the final answer when the sample is sent: the cloud record's answer (the edge's when the cloud fell back)
        self.cloud_answer = np.array([str(x["cloud"].get("answer")) for x in L])
        self.cloud_ok = np.array([x["cloud"].get("status", "ok") == "ok" for x in L], bool)
        self.edge_correct = self.edge_answer == self.truth
        self.cloud_correct = self.cloud_answer == self.truth
        self.edge_latency = self._num("edge", "latency_ms")
        self.cloud_latency = self._num("cloud", "latency_ms")
        self.bytes_up = self._num("cloud", "bytes_up")
        self.bytes_down = self._num("cloud", "bytes_down")
        self.hazard_task = np.isin(self.tasks, ("path_hazard", "action"))

    def _num(self, side: str, key: str) -> np.ndarray:
        out = np.empty(self.n, np.float64)
        for i, x in enumerate(self.lines):
            v = x[side].get(key)
            if v is None:
                raise CeprError(f"sweep cache: sample {x['index']} ({x['key']}): the {side} result has no {key!r} "
                                "(never counted as 0): the module must report it")
            out[i] = float(v)
        return out

    def edge_results(self) -> list[CachedEdgeResult]:
        """Per sample, the edge result as the paradigm hands it to a policy in inference-then-mining."""
        if self._edge is None:
            out = []
            for x in self.lines:
                d = dict(x["edge"])
                if x.get("edge_state") is not None:
                    d[EDGE_STATE_KEY] = EdgeState.model_construct(**x["edge_state"])
                mask = _MaskRef(self.dir / x["mask"]) if x.get("mask") and self.dir is not None else None
                out.append(CachedEdgeResult(d, mask))
            self._edge = out
        return self._edge

    def describe(self) -> dict:
        """For the sweep JSON: where the samples come from."""
        m = self.meta
        return {"dir": str(self.dir) if self.dir else None, "key": m.get("key"), "samples": self.n,
                "test_index": m.get("test_index"), "dataset": m.get("dataset"), "job": m.get("job"),
                "algorithm": m.get("algorithm"), "modules": (m.get("parts") or {}).get("modules"),
                "payload": (m.get("parts") or {}).get("payload"), "models": (m.get("parts") or {}).get("models"),
                "concurrency": (m.get("parts") or {}).get("concurrency"), "code": m.get("code"),
                "failed_samples": len(m.get("failed") or {}), "note": self.note or None}


def read_lines(cache_dir: Path) -> dict[int, dict]:
    """index -> the cached line (the last one of an index wins); a torn last line (a crash) is skipped."""
    out: dict[int, dict] = {}
    p = cache_dir / SAMPLES
    if not p.is_file():
        return out
    with p.open() as fh:
        for n, raw in enumerate(fh, 1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                x = json.loads(raw)
            except json.JSONDecodeError:
                log.warning("sweep cache: %s:%d is not a whole JSON line (an interrupted write?): skipped", p, n)
                continue
            out[int(x["index"])] = x
    return out


def read_meta(cache_dir: Path) -> dict:
    p = cache_dir / META
    if not p.is_file():
        raise CeprError(f"{cache_dir} is no sweep cache (no {META})")
    return json.loads(p.read_text())


def load_cache(cache_dir: str | Path, n: int | None = None) -> CachedSet:
    """The cache in ``cache_dir``: its first ``n`` samples (all when None), in dataset order."""
    cache_dir = Path(cache_dir)
    meta = read_meta(cache_dir)
    lines = read_lines(cache_dir)
    idx = sorted(lines) if n is None else [i for i in range(n) if i in lines]
    kept, no_truth = [], 0
    for i in idx:
        x = lines[i]
        if x.get("truth") is None:
            no_truth += 1
            continue
        kept.append(x)
    if no_truth:
        log.warning("sweep cache: %d sample(s) have no ground truth and are left out", no_truth)
    if not kept:
        raise CeprError(f"sweep cache {cache_dir} holds no sample with a ground truth to evaluate")
    return CachedSet(cache_dir, meta, kept)


# ---- filling ------------------------------------------------------------------------------------------------

def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)


def _line(i: int, sample: dict, result: list, label: str | None, cache_dir: Path) -> dict:
    _, _, edge, cloud = result
    if not isinstance(edge, dict) or not isinstance(cloud, dict):
        raise CeprError(f"sample {i}: the sweep cache needs the edge and the cloud result dicts, got "
                        f"{type(edge).__name__} and {type(cloud).__name__}")
    state = edge.get(EDGE_STATE_KEY)
    mask_rel = None
    mask = edge.get(MASK_KEY)
    if isinstance(mask, np.ndarray) and mask.ndim == 2:
        mask_rel = f"{MASKS}/{i:06d}.png"
        if mask.dtype not in (np.uint8, np.uint16):
            mask = mask.astype(np.uint16 if mask.max(initial=0) > 255 else np.uint8)
        if not cv2.imwrite(str(cache_dir / mask_rel), mask):
            raise CeprError(f"cannot write {cache_dir / mask_rel}")
    task = edge.get("task") or sample.get("task")
    truth = None
    if label:
        try:
            truth = ground_truth(label).get(task)
        except Exception as e:  # noqa: BLE001 - a sample without truth is kept and left out of the evaluation
            log.warning("sweep cache: no ground truth for sample %d (%s): %s", i, label, e)
    return {"index": i, "key": sample.get("key"), "task": task, "truth": truth,
            "edge": EdgeResult.check(edge, "the edge model").as_json(),
            # the vision tokens (binary) stay out: the cached cloud result already answered from them
            "edge_state": state.model_dump(exclude={"vision"}) if hasattr(state, "model_dump") else state,
            "cloud": CloudRecord.check(cloud, "the cloud model").as_json(), "mask": mask_rel}


@dataclass
class FillReport:
    dir: Path
    key: str
    reused: int
    ran: int
    failed: dict[int, str]
    seconds: float


def fill_modules(source: SweepSource) -> dict[str, ModuleSpec]:
    """The modules a fill runs: the algorithm's edge and cloud modules, and a filter that sends every sample to
    the cloud (so both results of every sample are kept)."""
    return {"edgemodel": source.modules["edgemodel"], "cloudmodel": source.modules["cloudmodel"],
            "hard_example_mining": ModuleSpec("hard_example_mining", _ALL_TO_CLOUD, source.hem.url, {})}


def fill_cache(source: SweepSource, cache_root: str | Path | None = None, limit: int | None = None,
               concurrency: int = 1, progress: bool = True, refresh: bool = False, cluster: str | None = None,
               cluster_timeout: float = 10.0, shard_size: int | None = None) -> FillReport:
    """Make sure the cache holds the first ``limit`` test samples (all when None): run the edge and the cloud
    on the samples it lacks, append them as they finish, and return where it is and what ran. ``cluster`` (a
    Dask scheduler address): the samples it lacks run there in shards of ``shard_size`` (this process writes
    the cache, as locally; :func:`fill_on_cluster`)."""

    t0 = time.perf_counter()
    if concurrency < 1:
        raise CeprError(f"--concurrency must be >= 1, got {concurrency}")
    ensure_dataset(source.job, progress)
    parts = cache_parts(source, concurrency)
    key = cache_key(parts)
    root = Path(cache_root) if cache_root is not None else default_cache_root(source)
    cache_dir = root / key
    if refresh and cache_dir.exists():
        shutil.rmtree(cache_dir)
    (cache_dir / MASKS).mkdir(parents=True, exist_ok=True)
    code = fpr.code_fingerprint([])
    meta_path = cache_dir / META
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta and meta.get("code", {}).get("source") != code["source"]:
        log.warning("sweep cache %s was made with other cepr code (source %s, now %s): reused; --refresh rebuilds "
                    "it", cache_dir, meta.get("code", {}).get("source"), code["source"])

    meta = {"format": FORMAT, "key": key, "parts": parts, "code": meta.get("code") or code,
            "created": meta.get("created") or time.strftime("%Y-%m-%d %H:%M:%S"),
            "test_index": str(source.test_index), "dataset": dataset_identity(source.test_index),
            "job": str(source.job.file), "algorithm": source.algorithm.name, "failed": {}}
    data = load_index(source.test_index, limit)
    samples = case_samples(data.x, data.y, source.test_index, source.modules.get("dataset_processor"))
    have = read_lines(cache_dir)
    for i, x in have.items():  # the same sample (frame and question) at that position, or the cache is wrong
        if i < len(samples) and isinstance(samples[i], dict) and (x.get("key"), x.get("task")) != (
                samples[i].get("key"), samples[i].get("task")):
            raise CeprError(f"sweep cache {cache_dir}: sample {i} is {x.get('key')}/{x.get('task')} there but "
                            f"{samples[i].get('key')}/{samples[i].get('task')} now: delete it or use --refresh")
    todo = [i for i in range(len(samples)) if i not in have]
    failed: dict[int, str] = {}
    _write_json(meta_path, meta)
    if todo and cluster:
        try:
            fill_on_cluster(source, cluster, cluster_timeout, shard_size, todo, samples, data, cache_dir,
                            concurrency, progress, failed)
        finally:
            meta["failed"] = {str(k): v for k, v in sorted(failed.items())}
            meta["cluster"] = cluster
            _write_json(meta_path, meta)
    elif todo:
        force_register(CloudOnly, ClassType.HEM, _ALL_TO_CLOUD)
        jobobj, instances = None, {}
        try:
            instances, jobobj = build_job(fill_modules(source), MINING_MODE, instances)
            with (cache_dir / SAMPLES).open("a") as fh:
                def write(j, r):
                    i = todo[j]
                    if isinstance(r, SampleFailure):
                        failed[i] = r.reason
                        return
                    line = _line(i, samples[i] if isinstance(samples[i], dict) else {"key": str(samples[i])}, r,
                                 str(data.y[i]), cache_dir)
                    fh.write(json.dumps(line, default=str) + "\n")
                    fh.flush()

                run_samples(jobobj, [samples[i] for i in todo], concurrency, progress,
                            f"sweep cache: edge + cloud on {len(todo)} sample(s)", on_result=write)
        finally:
            release(jobobj, instances, "the sweep cache's modules")
            shutdown_all()
            meta["failed"] = {str(k): v for k, v in sorted(failed.items())}
            _write_json(meta_path, meta)
    if failed:
        first = min(failed)
        log.warning("sweep cache: %d sample(s) failed and are left out (first: %d, %s); a rerun tries them again",
                    len(failed), first, failed[first])
    return FillReport(cache_dir, key, reused=len(samples) - len(todo), ran=len(todo) - len(failed), failed=failed,
                      seconds=time.perf_counter() - t0)


def fill_on_cluster(source: SweepSource, address: str, timeout_s: float, shard_size: int | None, todo: list[int],
                    samples: list, data, cache_dir: Path, concurrency: int, progress: bool, failed: dict) -> None:
    """The edge and the cloud on the samples ``todo``, in shards of consecutive samples, as tasks on the Dask
    cluster at ``address``; each shard's lines (and masks) are written here when it completes, once per shard.
    Only the cache's fill is partitioned: the evaluation of the settings reads the finished cache (in order, so
    online policies such as Budget see every sample in sequence) and gives what a local fill gives."""


    client = cl.connect(address, timeout_s)
    address = cl.normalise_address(address)
    distributed = cl._distributed()
    size = shard_size or cl.DEFAULT_SHARD_SIZE
    modules = fill_modules(source)
    nonce = uuid.uuid4().hex[:8]
    case_key = f"sweep-{cache_dir.name}-{nonce}"
    futures, meta = [], {}
    print(f"sweep cache: Dask cluster {address}: {len(cl.workers(client))} worker(s), {len(todo)} sample(s) in "
          f"shards of at most {size}", flush=True)
    try:
        for positions in cl.plan_shards(todo, size):
            task = cl.ShardTask(case_key=case_key, modules=modules, mining_mode=MINING_MODE,
                                samples=[(i, samples[i]) for i in positions],
                                paths=[p for i in positions for p in (str(data.x[i]), str(data.y[i]))],
                                cwd=str(Path.cwd()), concurrency=concurrency)
            key = f"cepr-sweep-{cache_dir.name}-{cl.shard_name(positions)}-{nonce}"
            futures.append(client.submit(cl.run_fill_shard, task, key=key, pure=False, retries=cl.DEFAULT_RETRIES))
            meta[key] = positions
        written: set[str] = set()
        bar = tqdm(total=len(todo), desc=f"sweep cache on {address}", unit="sample", disable=not progress)
        try:
            with (cache_dir / SAMPLES).open("a") as fh:
                kept = "the samples cached so far are kept: rerun to fill the rest"
                for fut in cl.completed(client, futures, address, timeout_s, kept):
                    if fut.key in written:
                        continue
                    written.add(fut.key)
                    if fut.status == "cancelled":
                        raise cl.lost(address, "its task was cancelled", kept)
                    try:
                        sr = fut.result()
                    except (distributed.client.FutureCancelledError, OSError) as e:
                        raise cl.lost(address, f"{type(e).__name__}: {e}", kept) from None
                    except Exception as e:  # noqa: BLE001 - after its retries: say which shard, where
                        raise CeprError(f"sweep cache: shard {cl.shard_name(meta[fut.key])} failed on the cluster "
                                        f"{address}: {type(e).__name__}: {e}; {kept}") from None
                    for i, r in sr.results:
                        if isinstance(r, SampleFailure):
                            failed[i] = r.reason
                            continue
                        line = _line(i, samples[i] if isinstance(samples[i], dict) else {"key": str(samples[i])},
                                     r, str(data.y[i]), cache_dir)
                        fh.write(json.dumps(line, default=str) + "\n")
                        fh.flush()
                    bar.update(len(meta[fut.key]))
        finally:
            bar.close()
    finally:
        try:
            if client.status == "running":
                client.cancel(futures)
                client.run(cl.release_worker)
        except Exception as e:  # noqa: BLE001 - the cache is written; the workers clean up when they exit
            log.debug("releasing the workers failed: %s", e)
        client.close(timeout=5)
