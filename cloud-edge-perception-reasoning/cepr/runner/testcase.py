"""Test cases: the Cartesian product of every module's hyperparameter values, in Ianvs's order.

Within a module the hyperparameters vary like nested loops in the order they are listed (the last one fastest);
across modules, the first module listed varies slowest. Each case gets a stable id (a hash of everything that
determines its results), so a rerun finds the cases it already finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from cepr.runner.config import AlgorithmSpec, BenchmarkingJob, ModuleSpec


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
