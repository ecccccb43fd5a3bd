"""The three Ianvs YAML files (benchmarkingjob, testenv, algorithm) as typed, strict config objects.

Each file maps onto a pydantic model with ``extra="forbid"`` (``JobDoc``, ``TestEnvDoc``, ``AlgorithmDoc``): keys
Ianvs reads are accepted with Ianvs's meaning; anything else is an error that names the file, the place and the
closest known key ("did you mean"), or says where a misplaced key belongs (e.g. ``hard_example_mining_mode``
only works in testenv.yaml). The validated documents are then resolved into the runtime specs below (paths,
hyperparameter lists, rank). Paths resolve against the current directory, as in Ianvs; a path found only next to
the YAML file is accepted with a warning.
"""

from __future__ import annotations

import logging
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cepr.errors import CeprError, did_you_mean
from cepr.runner.names import check_path_name

log = logging.getLogger(__name__)

MiningMode = Literal["mining-then-inference", "inference-then-mining", "self-design"]
ModuleType = Literal["edgemodel", "cloudmodel", "hard_example_mining", "dataset_processor"]
SaveMode = Literal["selected_and_all", "selected_only", "all_only", "none"]
MINING_MODES = typing.get_args(MiningMode)
MODULE_TYPES = typing.get_args(ModuleType)
SAVE_MODES = typing.get_args(SaveMode)
# keys that are valid somewhere, and where; used to explain misplaced keys
HOME = {
    "hard_example_mining_mode": "testenv.yaml, under `testenv:` (Ianvs ignores it anywhere else)",
    "metrics": "testenv.yaml, under `testenv:`",
    "dataset": "testenv.yaml, under `testenv:`",
    "train_index": "testenv.yaml, under `testenv: dataset:`",
    "test_index": "testenv.yaml, under `testenv: dataset:`",
    "sort_by": "benchmarkingjob.yaml, under `benchmarkingjob: rank:`",
    "selected_dataitem": "benchmarkingjob.yaml, under `benchmarkingjob: rank:`",
    "visualization": "benchmarkingjob.yaml, under `benchmarkingjob: rank:`",
    "save_mode": "benchmarkingjob.yaml, under `benchmarkingjob: rank:`",
    "algorithms": "benchmarkingjob.yaml, under `benchmarkingjob: test_object:`",
    "paradigm_type": "the algorithm yaml, under `algorithm:`",
    "modules": "the algorithm yaml, under `algorithm:`",
    "hyperparameters": "a module of the algorithm yaml (or `rank: selected_dataitem:`)",
    "workspace": "benchmarkingjob.yaml, under `benchmarkingjob:`",
    "testenv": "benchmarkingjob.yaml, under `benchmarkingjob:` (a path to testenv.yaml)",
}


def load_yaml(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CeprError(f"{what} {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CeprError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise CeprError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
    return doc


def resolve_path(value: str, yaml_file: Path, what: str, must_exist: bool = True) -> Path:
    """Ianvs resolves paths against the current directory; fall back to the YAML file's folder (with a warning)."""
    p = Path(str(value)).expanduser()
    if p.is_absolute() or p.exists() or not must_exist:
        return p.resolve() if p.exists() else p.absolute()
    alt = (yaml_file.parent / p)
    if alt.exists():
        log.warning("%s: %s %r is not found from the current directory; using %s (Ianvs resolves paths against "
                    "the current directory only)", yaml_file, what, value, alt.resolve())
        return alt.resolve()
    raise CeprError(f"{yaml_file}: {what} {value!r} not found (relative paths resolve against the current "
                    f"directory {Path.cwd()})")


# ---- the YAML documents, as written ---------------------------------------------------------------------------

class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricDoc(_Doc):
    name: str
    url: str | None = None


class SynthDoc(_Doc):
    """cepr extension under ``testenv: dataset: synthetic:`` (Ianvs ignores it): generate the synthetic set when
    the index is missing."""
    frames: int = 2000
    seed: int = 0
    splits: list[str] = ["test"]
    resolutions: list[str] = ["640x480"]
    out: str | None = None


class DatasetDoc(_Doc):
    train_index: str | None = None
    test_index: str | None = None
    train_url: str | None = None
    test_url: str | None = None
    label: Any = None
    synthetic: SynthDoc | None = None


class TestEnvBody(_Doc):
    __test__ = False
    dataset: DatasetDoc
    metrics: list[MetricDoc] = Field(min_length=1)
    hard_example_mining_mode: MiningMode = "mining-then-inference"
    # Ianvs passes any other testenv key to the paradigm; only these mean something to joint inference
    shot_nums: Any = None
    model_eval: Any = None
    incremental_rounds: Any = None


class TestEnvDoc(_Doc):
    __test__ = False
    testenv: TestEnvBody


class ValuesDoc(_Doc):
    values: list = Field(min_length=1)


class ModuleDoc(_Doc):
    type: ModuleType
    name: str
    url: str
    # Ianvs's shape: [{name: {values: [...]}}, ...], one key per item
    hyperparameters: list[dict[str, ValuesDoc]] | None = None

    @field_validator("hyperparameters")
    @classmethod
    def _one_key_each(cls, v):
        for i, item in enumerate(v or []):
            if len(item) != 1:
                raise ValueError(f"item {i} must be a one-key mapping {{name: {{values: [...]}}}}, got {item!r}")
        return v


class AlgorithmBody(_Doc):
    paradigm_type: str
    modules: list[ModuleDoc]
    incremental_learning_data_setting: Any = None
    initial_model_url: Any = None
    third_party_packages: Any = None


class AlgorithmDoc(_Doc):
    algorithm: AlgorithmBody


class VisualizationDoc(_Doc):
    mode: Literal["selected_only"] = "selected_only"  # the only mode Ianvs has
    method: Literal["print_table"] = "print_table"


class SelectedDataitemDoc(_Doc):
    # all four are required: Ianvs crashes without hyperparameters; ["all"] selects everything
    paradigms: list[str] | str
    modules: list[str] | str
    hyperparameters: list[str] | str
    metrics: list[str] | str


class RankDoc(_Doc):
    sort_by: list[dict[str, Literal["ascend", "descend"]]]
    visualization: VisualizationDoc = VisualizationDoc()
    selected_dataitem: SelectedDataitemDoc
    save_mode: SaveMode = "selected_and_all"

    @field_validator("sort_by")
    @classmethod
    def _one_metric_each(cls, v):
        for i, item in enumerate(v):
            if len(item) != 1:
                raise ValueError(f"sort_by[{i}] must look like {{metric: ascend|descend}}, got {item!r}")
        return v


class AlgorithmRefDoc(_Doc):
    name: str
    url: str


class TestObjectDoc(_Doc):
    __test__ = False
    type: Literal["algorithms"] = "algorithms"
    algorithms: list[AlgorithmRefDoc] = Field(min_length=1)


class JobBody(_Doc):
    name: str
    workspace: str
    testenv: str
    test_object: TestObjectDoc
    rank: RankDoc


class JobDoc(_Doc):
    benchmarkingjob: JobBody


def _field_model(annotation):
    """The pydantic model inside an annotation such as ``X | None``, ``list[X]`` or ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _field_model(arg)
        if found is not None:
            return found
    return None


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The document model that holds the value at ``loc`` (string keys descend; list indexes and dict keys that
    are not fields are skipped)."""
    for part in loc:
        if isinstance(part, str) and part in model.model_fields:
            inner = _field_model(model.model_fields[part].annotation)
            if inner is None:
                return model
            model = inner
    return model


def _where(loc: tuple) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in loc]
    text = ""
    for p in parts:
        text += p if p.startswith("[") or not text else f": {p}"
    return f"`{text}:`" if text else "the top level"


def doc_error(path: Path, e: ValidationError, root: type[BaseModel]) -> CeprError:
    """One clear line for the first problem pydantic found: file, place, key, and a hint. An unknown key is
    reported before a missing one, since a misspelt key is usually why the other is missing."""
    err = min(e.errors(), key=lambda x: {"extra_forbidden": 0, "missing": 1}.get(x["type"], 2))
    loc, kind = tuple(err["loc"]), err["type"]
    if kind == "extra_forbidden":
        key, holder = str(loc[-1]), _model_at(root, loc[:-1])
        allowed = list(holder.model_fields)
        msg = f"{path}: unknown key {key!r} in {_where(loc[:-1])}"
        hint = did_you_mean(key, allowed)
        if hint:
            msg += hint
        elif key in HOME:
            msg += f"; it belongs in {HOME[key]}"
        return CeprError(msg + f" (allowed here: {', '.join(allowed)})")
    if kind == "missing":
        return CeprError(f"{path}: {_where(loc[:-1])} needs the key {loc[-1]!r}")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", err["ctx"]["expected"])
        given = str(err.get("input"))
        return CeprError(f"{path}: {_where(loc)} {given!r} is not one of {', '.join(choices)}"
                         + did_you_mean(given, choices))
    return CeprError(f"{path}: {_where(loc)} {err['msg']} (got {err.get('input')!r:.120})")


def load_doc(path: Path, model: type[BaseModel], what: str):
    """A YAML file validated against its document model; errors name the file and the key."""
    raw = load_yaml(path, what)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise doc_error(path, e, model) from None


# ---- the resolved job -------------------------------------------------------------------------------------

@dataclass
class MetricSpec:
    name: str
    url: Path | None


@dataclass
class TestEnv:
    file: Path
    train_index: Path | None
    test_index: Path
    metrics: list[MetricSpec]
    mining_mode: str = "mining-then-inference"
    extra: dict = field(default_factory=dict)
    synthetic: SynthDoc | None = None  # cepr extension: render the synthetic set when the index is missing


def parse_testenv(path: Path) -> TestEnv:
    te = load_doc(path, TestEnvDoc, "testenv file").testenv
    ds = te.dataset
    test = ds.test_index or ds.test_url
    if not test:
        raise CeprError(f"{path}: `testenv: dataset:` needs test_index (the txt index of the test split)")
    train = ds.train_index or ds.train_url
    synth = ds.synthetic
    metrics = [MetricSpec(m.name, resolve_path(m.url, path, f"metric {m.name!r} url") if m.url else None)
               for m in te.metrics]
    test_p = resolve_path(test, path, "test_index", must_exist=synth is None)
    train_p = resolve_path(train, path, "train_index", must_exist=synth is None) if train else None
    extra = {k: v for k, v in te.model_dump(exclude={"dataset", "metrics", "hard_example_mining_mode"}).items()
             if v is not None}
    return TestEnv(path, train_p, test_p, metrics, te.hard_example_mining_mode, extra, synth)


@dataclass
class ModuleSpec:
    type: str
    name: str
    url: Path
    hyperparameters: dict  # one combination

    def describe(self) -> dict:
        return {"type": self.type, "name": self.name, "url": str(self.url), "hyperparameters": self.hyperparameters}


@dataclass(frozen=True)
class ModuleGrid:
    """One module of an algorithm file with every value its hyperparameters list: ``grid`` is Ianvs's
    ``[(hyperparameter, [values])]`` (test cases are their Cartesian product), ``base`` the fixed ones (from
    ``other_hyperparameters`` files)."""

    type: str
    name: str
    url: Path
    grid: list[tuple[str, list]]
    base: dict

    def names(self) -> list[str]:
        """Every hyperparameter this module sets, fixed ones first."""
        return list(dict.fromkeys([*self.base, *(hp for hp, _ in self.grid)]))

    def first_point(self) -> dict:
        """The hyperparameters with each listed one at its first value."""
        return {**self.base, **{hp: values[0] for hp, values in self.grid}}


@dataclass
class AlgorithmSpec:
    name: str
    file: Path
    paradigm_type: str
    modules: list[ModuleGrid]

    def module(self, module_type: str) -> ModuleGrid | None:
        return next((m for m in self.modules if m.type == module_type), None)


def _hyperparameters(module: ModuleDoc, file: Path) -> tuple[list[tuple[str, list]], dict]:
    """Ianvs's module hyperparameters as ``[(name, values)]``; ``other_hyperparameters`` names YAML files whose
    keys become fixed hyperparameters."""
    pairs, base = [], {}
    for item in module.hyperparameters or []:
        (hp, spec), = item.items()
        if hp == "other_hyperparameters":
            for v in spec.values:
                base.update(load_yaml(resolve_path(v, file, "other_hyperparameters file"),
                                      "other_hyperparameters file"))
            continue
        pairs.append((str(hp), list(spec.values)))
    return pairs, base


def parse_algorithm(name: str, path: Path) -> AlgorithmSpec:
    a = load_doc(path, AlgorithmDoc, f"algorithm {name!r} file").algorithm
    if a.paradigm_type != "jointinference":
        raise CeprError(f"{path}: paradigm_type {a.paradigm_type!r} is not supported by cepr run "
                        "(only jointinference; run other paradigms with ianvs)")
    mods, seen = [], set()
    for m in a.modules:
        if m.type in seen:
            raise CeprError(f"{path}: two modules of type {m.type!r}; a jointinference algorithm has one each")
        seen.add(m.type)
        url = resolve_path(m.url, path, f"module {m.name!r} url")
        pairs, base = _hyperparameters(m, path)
        mods.append(ModuleGrid(m.type, m.name, url, pairs, base))
    missing = {"edgemodel", "cloudmodel", "hard_example_mining"} - seen
    if missing:
        raise CeprError(f"{path}: jointinference needs modules of type {', '.join(sorted(missing))}")
    return AlgorithmSpec(name, path, a.paradigm_type, mods)


@dataclass
class RankSpec:
    sort_by: list[tuple[str, str]]
    mode: str = "selected_only"
    method: str = "print_table"
    paradigms: list[str] = field(default_factory=lambda: ["all"])
    modules: list[str] = field(default_factory=lambda: ["all"])
    hyperparameters: list[str] = field(default_factory=lambda: ["all"])
    metrics: list[str] = field(default_factory=lambda: ["all"])
    save_mode: str = "selected_and_all"


@dataclass
class BenchmarkingJob:
    file: Path
    name: str
    workspace: Path
    testenv: TestEnv
    algorithms: list[AlgorithmSpec]
    rank: RankSpec
    workspace_text: str = ""  # the workspace as written (YAML or --workspace): Ianvs's rank urls start with it


def _as_list(v) -> list[str]:
    return [v] if isinstance(v, str) else [str(x) for x in v]


def parse_rank(r: RankDoc) -> RankSpec:
    sd = r.selected_dataitem
    return RankSpec([next(iter(s.items())) for s in r.sort_by], r.visualization.mode, r.visualization.method,
                    _as_list(sd.paradigms), _as_list(sd.modules), _as_list(sd.hyperparameters),
                    _as_list(sd.metrics), r.save_mode)


def _unknown(kind: str, name: str, known: list[str], path: Path) -> CeprError:
    return CeprError(f"{path}: rank {kind} {name!r} names no column of this job" + did_you_mean(name, known)
                     + f" (known: {', '.join(known) or 'none'})")


def check_rank_names(rank: RankSpec, te: TestEnv, algos: list[AlgorithmSpec], path: Path) -> None:
    """Every name in ``sort_by`` and ``selected_dataitem`` must name a column of this job. Ianvs silently
    skips an unknown sort metric and leaves an unknown selected column empty. Hyperparameter columns are named
    ``{module type}-{hyperparameter}``, as Ianvs names them; a bare name gets that hint."""
    metrics = [m.name for m in te.metrics]
    modules, hps = [], []
    for a in algos:
        for m in a.modules:
            modules.append(m.type)
            hps += [f"{m.type}-{hp}" for hp in m.names()]
    modules, hps = list(dict.fromkeys(modules)), list(dict.fromkeys(hps))
    for m, _ in rank.sort_by:
        if m not in metrics:
            raise _unknown("sort_by metric", m, metrics, path)
    for kind, selected, known in (("selected_dataitem metric", rank.metrics, metrics),
                                  ("selected_dataitem module", rank.modules, modules),
                                  ("selected_dataitem hyperparameter", rank.hyperparameters, hps)):
        if selected == ["all"]:
            continue
        for name in selected:
            if name in known:
                continue
            bare = [h for h in hps if h.split("-", 1)[1] == name] if kind.endswith("hyperparameter") else []
            if bare:
                raise CeprError(
                    f"{path}: rank selected_dataitem hyperparameter {name!r}: Ianvs names hyperparameter columns "
                    f"{{module type}}-{{hyperparameter}}; did you mean {' or '.join(repr(b) for b in bare)}?")
            raise _unknown(kind, name, known, path)


def parse_job(path: str | Path, workspace: str | None = None) -> BenchmarkingJob:
    path = Path(path)
    b = load_doc(path, JobDoc, "benchmarking job file").benchmarkingjob
    check_path_name(b.name, "benchmarkingjob name", path)  # names become folders: {workspace}/{job}/{algorithm}
    for a in b.test_object.algorithms:
        check_path_name(a.name, "algorithm name", path)
    te = parse_testenv(resolve_path(b.testenv, path, "testenv"))
    algos = []
    for a in b.test_object.algorithms:
        if a.name in {x.name for x in algos}:
            raise CeprError(f"{path}: two algorithms are named {a.name!r}; names must be unique")
        algos.append(parse_algorithm(a.name, resolve_path(a.url, path, f"algorithm {a.name!r} url")))
    ws_text = str(workspace if workspace is not None else b.workspace)
    rank = parse_rank(b.rank)
    check_rank_names(rank, te, algos, path)
    return BenchmarkingJob(path, b.name, Path(ws_text).expanduser().absolute(), te, algos, rank, ws_text)
