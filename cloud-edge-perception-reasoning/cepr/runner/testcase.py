"""Test cases: the Cartesian product of every module's hyperparameter values, in Ianvs's order.

Within a module the hyperparameters vary like nested loops in the order they are listed (the last one fastest);
across modules, the first module listed varies slowest. Each case gets a stable id (a hash of everything that
determines its results), so a rerun finds the cases it already finished.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from cepr.compat.class_factory import ClassType, lookup
from cepr.errors import CeprError
from cepr.runner.config import AlgorithmSpec, BenchmarkingJob, ModuleSpec
from cepr.runner.paradigm import check_mining_mode, import_module_file, policy_capabilities


@dataclass
class TestCase:
    __test__ = False  # not a pytest class

    algorithm: AlgorithmSpec
    modules: dict[str, ModuleSpec]  # by module type, in the algorithm's order
    id: str
    output_dir: Path

    @property
    def hyperparameters(self) -> dict:
        """All modules' hyperparameters in one dict, as Ianvs's leaderboard shows them (later modules win)."""
        out = {}
        for m in self.modules.values():
            out.update(m.hyperparameters)
        return out

    def describe(self) -> dict:
        return {"id": self.id, "algorithm": self.algorithm.name, "paradigm": self.algorithm.paradigm_type,
                "algorithm_file": str(self.algorithm.file),
                "modules": {t: m.describe() for t, m in self.modules.items()}}


def _combinations(pairs: list[tuple[str, list]], base: dict) -> list[dict]:
    if not pairs:
        return [dict(base)]
    names = [n for n, _ in pairs]
    return [{**base, **dict(zip(names, combo))} for combo in itertools.product(*(v for _, v in pairs))]


def case_id(description: dict, context: dict) -> str:
    blob = json.dumps({"case": description, "context": context}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def build_test_cases(job: BenchmarkingJob, context: dict | None = None) -> list[TestCase]:
    """``context``: run settings that change results (dataset, mining mode, limit) and so belong in the id."""
    context = context or {}
    cases = []
    for algo in job.algorithms:
        per_module = []
        for mtype, name, url, pairs, base in algo.modules:
            per_module.append([ModuleSpec(mtype, name, url, hps) for hps in _combinations(pairs, base)])
        for combo in itertools.product(*per_module):
            modules = {m.type: m for m in combo}
            tc = TestCase(algo, modules, "", Path())
            desc = tc.describe()
            desc.pop("id")
            tc.id = case_id(desc, context)
            tc.output_dir = job.workspace / job.name / algo.name / tc.id
            cases.append(tc)
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
