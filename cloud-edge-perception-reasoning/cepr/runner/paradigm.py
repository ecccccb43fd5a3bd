"""Ianvs's jointinference paradigm, reproduced: module instances, mining modes and the per-sample call contract.

Per sample, with ``mining_mode``:

* ``inference-then-mining``: edge ``predict`` -> HEM filter on the edge result -> cloud ``inference`` if hard;
* ``mining-then-inference`` (Ianvs's default): HEM filter on the raw sample -> cloud if hard, else edge;
* ``self-design``: the edge model's ``predict`` does everything and returns ``[is_hard, final, edge, cloud]``.

The result is ``[is_hard, final, edge_result or None, cloud_result or None]`` in dataset order, as Ianvs gives
``metric(y_true, y_pred)``. Unlike the Sedna build in Ianvs, the raw sample (not an unbound variable) reaches
the filter in mining-then-inference, and a cloud exception propagates instead of being logged and lost.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy

from tqdm import tqdm

from cepr.compat.class_factory import ClassType, lookup
from cepr.dispatch import POLICY_REGISTRY
from cepr.errors import CeprError
from cepr.records import EDGE_STATE_KEY, CloudRecord, EdgeResult
from cepr.registry import import_module_file
from cepr.runner.config import ModuleSpec
from cepr.runner.dataset import IndexDataset

log = logging.getLogger(__name__)


def instantiate(spec: ModuleSpec):
    """GENERAL modules are instantiated with their hyperparameters; HEM becomes {method, param} (Sedna builds it)."""

    import_module_file(spec.url)
    if spec.type == "hard_example_mining":
        return {"method": spec.name, "param": dict(spec.hyperparameters)}
    cls = lookup(ClassType.GENERAL, spec.name)
    try:
        return cls(**spec.hyperparameters)
    except CeprError as e:
        raise CeprError(f"{spec.type} {spec.name!r}: {e}") from None


def _accepts_keyword(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class EdgeBackend:
    """Sedna's backend wrapper conventions: with BACKEND_TYPE=TORCH it calls ``load()`` and
    ``predict(data=..., **kwargs)``; otherwise ``load(model_url=...)`` and ``predict(data, **kwargs)``."""

    def __init__(self, estimator):
        self.estimator = estimator() if inspect.isclass(estimator) else estimator
        self.torch = os.environ.get("BACKEND_TYPE", "TORCH").upper() == "TORCH"

    def load(self):
        model_url = os.environ.get("model_path", "")
        if self.torch:
            return self.estimator.load()
        return self.estimator.load(model_url=model_url)

    def predict(self, data, **kwargs):
        if self.torch:
            return self.estimator.predict(data=data, **kwargs)
        return self.estimator.predict(data, **kwargs)


def policy_capabilities(hem_cls) -> dict:
    """What a filter class declared when it was registered as a dispatch policy (under any name: Sedna's
    ClassFactory hands over the class, e.g. the Oracle under "Oracle (upper bound: uses labels)"); a filter
    registered only with ClassFactory declares nothing (needs no labels, no edge result, not an upper bound)."""

    return POLICY_REGISTRY.capabilities_of(hem_cls)


def check_mining_mode(method: str, caps: dict, mining_mode: str) -> None:
    """A policy that decides from the edge result cannot run in mining-then-inference, where it sees the raw
    sample, unless it is handed the edge model (policies that need the labels are): say so before any sample
    runs, instead of failing on the first one."""
    if mining_mode == "mining-then-inference" and caps["needs_edge_result"] and not caps["needs_labels"]:
        raise CeprError(f"hard_example_mining {method!r} decides from the edge's result, but "
                        "hard_example_mining_mode mining-then-inference hands it the raw sample before the edge "
                        "runs: set `hard_example_mining_mode: inference-then-mining` in testenv.yaml")


class JointInferenceJob:
    def __init__(self, edge, cloud, hem: dict, mining_mode: str):
        self.edge = EdgeBackend(edge)
        model_file = os.environ.get("model_path")
        if not model_file or not os.path.exists(model_file):
            raise CeprError(f"env model_path={model_file!r} names no file: Sedna refuses to start without it (the "
                            "edge module sets it in its constructor)")
        self.edge.load()
        self.cloud = cloud
        self.cloud_takes_state = _accepts_keyword(getattr(cloud, "inference", None), EDGE_STATE_KEY)
        # an edge model that records what a sample would cost to send gets the cloud module's price explicitly
        # (Ianvs hands nothing: there the cloud module publishes it in cepr.records.PAYLOAD_PRICER)
        price = getattr(cloud, "price", None)
        self.edge_pricer = price if callable(price) and _accepts_keyword(
            getattr(self.edge.estimator, "predict", None), "pricer") else None
        self.mining_mode = mining_mode
        hem_cls = lookup(ClassType.HEM, hem["method"])
        caps = policy_capabilities(hem_cls)
        check_mining_mode(hem["method"], caps, mining_mode)
        param = dict(hem["param"])
        if caps["needs_labels"]:  # Ianvs hands both models to OracleRouter only; cepr run to any such policy
            param["edgemodel"] = edge
            param["cloudmodel"] = cloud
        try:
            self.hem = hem_cls(**param)
        except CeprError as e:
            raise CeprError(f"hard_example_mining {hem['method']!r}: {e}") from None
        self.upper_bound = bool(caps["upper_bound"])

    def _edge(self, data, post_process, **kw):
        if self.edge_pricer is not None:
            kw["pricer"] = self.edge_pricer
        edge_result = self.edge.predict(data, **kw)
        if isinstance(edge_result, dict):  # typed where it is handed on (other shapes are the module's business)
            EdgeResult.check(edge_result, "the edge model")
        res = deepcopy(edge_result)
        if post_process is not None:
            res = post_process(res)
        return res, edge_result

    def _cloud(self, data, post_process, edge_result=None, **kw):
        """The cloud model on a hard sample. A cloud model whose ``inference`` takes ``edge_state`` gets the edge
        result's state explicitly (Ianvs passes nothing: there the module reads cepr.records.EDGE_HANDOFF)."""
        if self.cloud_takes_state and isinstance(edge_result, dict) and EDGE_STATE_KEY in edge_result:
            kw[EDGE_STATE_KEY] = edge_result[EDGE_STATE_KEY]
        cloud_result = self.cloud.inference(data, post_process=post_process, **kw)
        if isinstance(cloud_result, dict):
            CloudRecord.check(cloud_result, "the cloud model")
        return deepcopy(cloud_result), cloud_result

    def inference(self, data, post_process=None) -> list:
        kw = {"mining_mode": self.mining_mode}
        edge_result = cloud_result = None
        is_hard = False
        if self.mining_mode == "inference-then-mining":
            res, edge_result = self._edge(data, post_process, **kw)
            is_hard = bool(self.hem(res))
            if is_hard:
                res, cloud_result = self._cloud(data, post_process, edge_result, **kw)
        elif self.mining_mode == "mining-then-inference":
            is_hard = bool(self.hem(data))
            if is_hard:
                res, cloud_result = self._cloud(data, post_process, **kw)
            else:
                res, edge_result = self._edge(data, post_process, **kw)
        elif self.mining_mode == "self-design":
            out = self.edge.predict(data, **kw)
            if not (isinstance(out, (list, tuple)) and len(out) == 4):
                raise CeprError("in self-design mode the edge model must return [is_hard, final, edge, cloud], got "
                                f"{type(out).__name__}")
            return list(out)
        else:
            raise CeprError(f"unknown mining mode {self.mining_mode!r}")
        return [is_hard, res, edge_result, cloud_result]

    def cleanup(self):
        for m in (self.edge.estimator, self.cloud, self.hem):
            if hasattr(m, "cleanup"):
                m.cleanup()


def build_job(modules: dict[str, ModuleSpec], mining_mode: str,
              instances: dict | None = None) -> tuple[dict, JointInferenceJob]:
    """A case's modules, instantiated (``instances`` is filled as they are, so a caller sees what was built even
    when a later one fails), and the joint-inference paradigm over them. A module that cannot be built releases
    the ones already built and re-raises. The dataset processor, when ``modules`` has one, is instantiated too."""
    instances = {} if instances is None else instances
    try:
        for mtype, spec in modules.items():
            instances[mtype] = instantiate(spec)
        return instances, JointInferenceJob(instances["edgemodel"], instances["cloudmodel"],
                                            instances["hard_example_mining"], mining_mode)
    except BaseException:
        release(None, instances, "a case being built")
        instances.clear()  # released: nobody cleans them up twice
        raise


def release(job: JointInferenceJob | None, instances: dict, what: str) -> None:
    """Clean up a case's modules (servers, sessions): the paradigm's cleanup when it was built, else each module
    that has one. A failed cleanup is logged, never raised: it must not lose a result or hide an error."""
    targets = [job] if job is not None else [i for i in instances.values() if hasattr(i, "cleanup")]
    for t in targets:
        try:
            t.cleanup()
        except Exception as e:  # noqa: BLE001 - a failed cleanup must not lose the record
            log.warning("cleanup of %s (%s) failed: %s", what, type(t).__name__, e)


def case_samples(x, y, test_index, processor=None) -> list:
    """The samples a case runs: the test index's frames, through the dataset processor (an instance, or a
    ModuleSpec to instantiate) when there is one, as Ianvs hands them to the paradigm."""
    dataset = IndexDataset(x.copy(), y.copy(), test_index)
    if isinstance(processor, ModuleSpec):
        processor = instantiate(processor)
    if callable(processor):
        dataset = processor(dataset)
    return list(dataset.x)


class SampleFailure:
    """A sample that produced no result: its position and why (a bad frame found before it ran, or the exception
    it raised). It stands in the results where ``[is_hard, final, edge, cloud]`` would, and is never scored."""

    __slots__ = ("index", "reason")

    def __init__(self, index: int, reason: str):
        self.index, self.reason = index, reason

    def __repr__(self) -> str:
        return f"SampleFailure({self.index}, {self.reason!r})"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_samples`: ``results`` holds what finished (None where nothing ran)."""

    def __init__(self, results: list, finished: int):
        super().__init__(f"interrupted after {finished} of {len(results)} samples")
        self.results, self.finished = results, finished


def run_samples(job: JointInferenceJob, samples: list, concurrency: int = 1, progress: bool = True,
                desc: str = "", on_result=None, skip: dict | None = None) -> list:
    """Run every sample, ``concurrency`` in flight, results in dataset order. ``on_result(i, result)`` is called
    as each finishes (from one thread at a time).

    A sample whose inference raises becomes a :class:`SampleFailure` with the exception as its reason (the other
    samples go on); ``skip`` maps positions not to run (bad frames) to the reason. Ctrl-C (KeyboardInterrupt)
    cancels every sample not yet started, lets the ones in flight end (each bounded by its own timeouts) and
    raises :class:`Interrupted` with what finished."""
    skip = skip or {}
    results: list = [None] * len(samples)
    lock = threading.Lock()
    stop = threading.Event()
    counts = {"edge": 0, "cloud": 0, "failed": 0}
    bar = tqdm(total=len(samples), desc=desc, unit="sample", disable=not progress, leave=True, dynamic_ncols=True)

    def one(i, s):
        if stop.is_set():  # cancelled before it started
            return None
        try:
            return job.inference(s)
        except Exception as e:  # noqa: BLE001 - one bad sample must not lose the others
            log.warning("sample %d failed: %s: %s", i, type(e).__name__, e)
            return SampleFailure(i, f"{type(e).__name__}: {e}")

    def done(i, r):
        if r is None:
            return
        with lock:
            results[i] = r
            counts["failed" if isinstance(r, SampleFailure) else "cloud" if r[0] else "edge"] += 1
            bar.update()
            bar.set_postfix(counts, refresh=False)
            if on_result is not None:
                on_result(i, r)

    todo = [(i, s) for i, s in enumerate(samples) if i not in skip]
    try:
        for i, why in sorted(skip.items()):
            if 0 <= i < len(samples):
                done(i, SampleFailure(i, why))
        if concurrency <= 1:
            for i, s in todo:
                done(i, one(i, s))
        else:
            ex = ThreadPoolExecutor(max_workers=concurrency)
            try:
                futures = [(i, ex.submit(one, i, s)) for i, s in todo]
                for i, f in futures:
                    done(i, f.result())
            except BaseException:
                stop.set()  # queued samples return at once; cancel_futures drops those not yet picked up
                ex.shutdown(wait=False, cancel_futures=True)
                raise
            ex.shutdown(wait=True)
    except KeyboardInterrupt:
        stop.set()
        raise Interrupted(results, sum(r is not None for r in results)) from None
    finally:
        bar.close()
    return results
