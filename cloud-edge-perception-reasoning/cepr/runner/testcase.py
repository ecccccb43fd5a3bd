"""Test cases: the Cartesian product of every module's hyperparameter values, in Ianvs's order.

Within a module the hyperparameters vary like nested loops in the order they are listed (the last one fastest);
across modules, the first module listed varies slowest. Each case gets a stable id (a hash of everything that
determines its results: modules, hyperparameters, run settings, and the fingerprints of its model files, data set,
code and concurrency, see :mod:`cepr.runner.fingerprint`), so a rerun of the same thing finds the cases it already
finished and a changed input gets a new case folder. The id is computed on first use, so a synthetic set that the
job generates after building its cases is fingerprinted as generated.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from cepr.compat.class_factory import ClassType, lookup
from cepr.data.identity import data_fingerprint
from cepr.errors import CeprError
from cepr.registry import import_module_file
from cepr.runner import fingerprint as fpr
from cepr.runner.config import AlgorithmSpec, BenchmarkingJob, ModuleSpec
from cepr.runner.paradigm import check_mining_mode, policy_capabilities


class JobInputs:
    """What every case of one job shares and fingerprints once: the data set and the code (job files)."""

    def __init__(self, job: BenchmarkingJob | None, context: dict):
        self.job = job
        self.context = context
        self._data: dict | None = None
        self._code: dict | None = None

    @property
    def data(self) -> dict:
        if self._data is None:
            index = self.job.testenv.test_index if self.job is not None else self.context.get("test_index")
            self._data = data_fingerprint(index) if index else {"fingerprint": "missing", "files": 0}
        return self._data

    @property
    def code(self) -> dict:
        if self._code is None:
            files = []
            if self.job is not None:
                files = [m.url for a in self.job.algorithms for m in a.modules]
                files += [m.url for m in self.job.testenv.metrics if m.url is not None]
            self._code = {**fpr.code_fingerprint(files), "git_commit": fpr.git_commit()}
        return self._code


@dataclass
class TestCase:
    __test__ = False  # not a pytest class

    algorithm: AlgorithmSpec
    modules: dict[str, ModuleSpec]  # by module type, in the algorithm's order
    root: Path = field(default_factory=Path)  # <workspace>/<job>: the case folder is root/<algorithm>/<id>
    context: dict = field(default_factory=dict)  # run settings that change results (index, mining mode, limit...)
    inputs: JobInputs | None = None
    _id: str | None = field(default=None, repr=False)
    _fingerprints: dict | None = field(default=None, repr=False)

    @property
    def fingerprints(self) -> dict:
        """models / data / code / concurrency (see :mod:`cepr.runner.fingerprint`), computed on first use."""
        if self._fingerprints is None:
            inputs = self.inputs or JobInputs(None, self.context)
            self._fingerprints = {"models": fpr.models_fingerprint(self.modules), "data": inputs.data,
                                  "code": inputs.code, "concurrency": self.context.get("concurrency")}
        return self._fingerprints

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = case_id(self._describe(), {**self.context, "inputs": fpr.in_id(self.fingerprints)})
        return self._id

    @property
    def output_dir(self) -> Path:
        return self.root / self.algorithm.name / self.id

    @property
    def hyperparameters(self) -> dict:
        """All modules' hyperparameters in one dict, as Ianvs's leaderboard shows them (later modules win)."""
        out = {}
        for m in self.modules.values():
            out.update(m.hyperparameters)
        return out

    def _describe(self) -> dict:
        return {"algorithm": self.algorithm.name, "paradigm": self.algorithm.paradigm_type,
                "algorithm_file": str(self.algorithm.file),
                "modules": {t: m.describe() for t, m in self.modules.items()}}

    def describe(self) -> dict:
        return {"id": self.id, **self._describe(), "fingerprints": self.fingerprints}


def _combinations(pairs: list[tuple[str, list]], base: dict) -> list[dict]:
    if not pairs:
        return [dict(base)]
    names = [n for n, _ in pairs]
    return [{**base, **dict(zip(names, combo))} for combo in itertools.product(*(v for _, v in pairs))]


def case_id(description: dict, context: dict) -> str:
    blob = json.dumps({"case": description, "context": context}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def build_test_cases(job: BenchmarkingJob, context: dict | None = None) -> list[TestCase]:
    """``context``: run settings that change results (dataset, mining mode, limit, concurrency) and so belong in
    the id, with the fingerprints of the case's models, data set and code."""
    context = context or {}
    inputs = JobInputs(job, context)
    cases = []
    for algo in job.algorithms:
        per_module = []
        for m in algo.modules:
            per_module.append([ModuleSpec(m.type, m.name, m.url, hps) for hps in _combinations(m.grid, m.base)])
        for combo in itertools.product(*per_module):
            cases.append(TestCase(algo, {m.type: m for m in combo}, job.workspace / job.name, context, inputs))
    return cases


def check_module(spec: ModuleSpec, mining_mode: str = "inference-then-mining") -> None:
    """Raise a CeprError if this module cannot be built with these hyperparameters: its file imports, its class
    is registered, and its hyperparameters are accepted (the class's ``check_hyperparameters`` when it has one,
    else its constructor's signature). Filters (HEM) are built, as they are cheap and hold no resources, and
    must suit the mining mode."""

    import_module_file(spec.url)
    hps = dict(spec.hyperparameters)
    if spec.type == "hard_example_mining":
        cls = lookup(ClassType.HEM, spec.name)
        check_mining_mode(spec.name, policy_capabilities(cls), mining_mode)
        cls(**hps)
        return
    cls = lookup(ClassType.GENERAL, spec.name)
    check = getattr(cls, "check_hyperparameters", None)
    if callable(check):
        check(**hps)
        return
    try:
        inspect.signature(cls).bind(**hps)
    except TypeError as e:
        raise CeprError(f"hyperparameters {sorted(hps)} do not fit {cls.__name__}: {e}") from None


def check_test_cases(cases: list[TestCase], mining_mode: str = "inference-then-mining") -> None:
    """Validate every case before the first one runs, so a bad value in the last case is not found after the
    others have run for an hour. One error lists every problem, case by case."""
    problems, seen = [], {}
    for tc in cases:
        for spec in tc.modules.values():
            key = (spec.type, spec.name, str(spec.url), json.dumps(spec.hyperparameters, sort_keys=True, default=str))
            if key not in seen:
                try:
                    check_module(spec, mining_mode)
                    seen[key] = None
                except Exception as e:  # noqa: BLE001 - a user's module may raise anything: a problem of this case
                    seen[key] = f"{type(e).__name__}: {e}" if not isinstance(e, CeprError) else str(e)
            if seen[key]:
                problems.append(f"  {tc.algorithm.name} ({tc.algorithm.file.name}), {spec.type} {spec.name!r} "
                                f"{spec.hyperparameters}: {seen[key]}")
    if problems:
        raise CeprError(f"{len(problems)} problem(s) found before running any test case:\n" + "\n".join(problems))
