"""Which algorithm of a job, at which hyperparameter point, one deployment runs: the one rule behind the edge
service, the stream worker and replay, ``cepr sweep`` and the deploy entrypoint (a benchmark runs every case).

The rule (docs/runner.md, "One algorithm of a job"):

1. ``algorithm`` names it (a misspelt name gets "did you mean" and the list of names);
2. else the first algorithm, in the file's order, whose dispatch policy is ``Threshold``, the confidence
   threshold a robot deploys first;
3. else the first whose policy is deployable and mixed: not ``EdgeOnly`` or ``CloudOnly``, not one that reads the
   labels (an upper bound such as the Oracle);
4. else the first algorithm.

Each hyperparameter that lists several values takes its first, unless ``point`` names another value, keyed as
the rank columns are (``{module type}-{hyperparameter}``, e.g. ``hard_example_mining-threshold``). A file that
is an algorithm file rather than a job is that one algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cepr.dispatch import POLICY_REGISTRY
from cepr.errors import CeprError, did_you_mean
from cepr.runner.config import (
    AlgorithmSpec,
    JobDoc,
    ModuleSpec,
    load_doc,
    load_yaml,
    parse_algorithm,
    resolve_path,
)

HEM = "hard_example_mining"


@dataclass(frozen=True)
class ResolvedAlgorithm:
    """One algorithm of a job at one hyperparameter point: a :class:`ModuleSpec` per module type."""

    file: Path  # the job (or algorithm) file it came from
    algorithm: AlgorithmSpec
    modules: dict[str, ModuleSpec]

    @property
    def name(self) -> str:
        return self.algorithm.name

    @property
    def policy(self) -> str:
        return self.modules[HEM].name

    @property
    def policy_hyperparameters(self) -> dict:
        return dict(self.modules[HEM].hyperparameters)

    def hyperparameters(self, module_type: str) -> dict:
        """One module's hyperparameters at this point; a clear error when the algorithm has no such module."""
        if module_type not in self.modules:
            raise CeprError(f"{self.file}: algorithm {self.name!r} has no {module_type} module")
        return dict(self.modules[module_type].hyperparameters)


def algorithms_of(path: str | Path) -> list[AlgorithmSpec]:
    """The algorithms a job file lists (its testenv and data set need not exist), or the one algorithm of an
    algorithm file."""
    path = Path(path)
    if not path.is_file():
        raise CeprError(f"job file {str(path)!r} not found (relative paths resolve against {Path.cwd()})")
    doc = load_yaml(path, "job or algorithm file")
    if "benchmarkingjob" in doc:
        b = load_doc(path, JobDoc, "benchmarking job file").benchmarkingjob
        return [parse_algorithm(x.name, resolve_path(x.url, path, f"algorithm {x.name!r} url"))
                for x in b.test_object.algorithms]
    if "algorithm" in doc:
        return [parse_algorithm(path.stem, path)]
    raise CeprError(f"{path}: neither a benchmarkingjob nor an algorithm file (top-level keys: {sorted(doc)})")


def _policy(a: AlgorithmSpec) -> str:
    m = a.module(HEM)
    return m.name if m is not None else ""


def _deployable_and_mixed(a: AlgorithmSpec) -> bool:
    name = _policy(a)
    try:
        caps = POLICY_REGISTRY.capabilities(name)
        canonical = POLICY_REGISTRY.canonical(name)
    except CeprError:  # a policy of the user's own, registered by its module file: not known yet, so not chosen
        return False
    return not caps.get("needs_labels") and canonical not in ("EdgeOnly", "CloudOnly")


def choose_algorithm(algorithms: list[AlgorithmSpec], algorithm: str | None = None,
                     where: str | Path = "") -> AlgorithmSpec:
    """Steps 1-4 of the rule above."""
    if not algorithms:
        raise CeprError(f"{where}: the job lists no algorithm")
    if algorithm is not None:
        names = [a.name for a in algorithms]
        found = next((a for a in algorithms if a.name == algorithm), None)
        if found is None:
            raise CeprError(f"{where}: no algorithm named {algorithm!r}{did_you_mean(algorithm, names)} (this job "
                            f"has: {', '.join(names)})")
        return found

    def is_threshold(a: AlgorithmSpec) -> bool:
        try:
            return POLICY_REGISTRY.canonical(_policy(a)) == "Threshold"
        except CeprError:
            return False

    return (next((a for a in algorithms if is_threshold(a)), None)
            or next((a for a in algorithms if _deployable_and_mixed(a)), None) or algorithms[0])


def at_point(algorithm: AlgorithmSpec, point: dict | None = None, where: str | Path = "") -> dict[str, ModuleSpec]:
    """Every module of ``algorithm`` at its first values, or at the values ``point`` names."""
    point = dict(point or {})
    modules = {}
    for m in algorithm.modules:
        hps = m.first_point()
        for hp, values in m.grid:
            key = f"{m.type}-{hp}"
            if key in point:
                hps[hp] = point.pop(key)
        modules[m.type] = ModuleSpec(m.type, m.name, m.url, hps)
    if point:
        known = [f"{m.type}-{hp}" for m in algorithm.modules for hp, _ in m.grid]
        bad = next(iter(point))
        raise CeprError(f"{where}: algorithm {algorithm.name!r} lists no hyperparameter {bad!r}"
                        f"{did_you_mean(bad, known)} (it lists: {', '.join(known) or 'none'})")
    return modules


def resolve_algorithm(path: str | Path, algorithm: str | None = None, point: dict | None = None) -> ResolvedAlgorithm:
    """The algorithm of the job (or algorithm) file ``path`` that the rule above picks, at ``point``."""
    path = Path(path)
    algo = choose_algorithm(algorithms_of(path), algorithm, path)
    return ResolvedAlgorithm(path.resolve(), algo, at_point(algo, point, path))
