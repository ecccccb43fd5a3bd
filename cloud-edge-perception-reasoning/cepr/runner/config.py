"""The three Ianvs YAML files (benchmarkingjob, testenv, algorithm) as typed, strict config objects.

Keys Ianvs reads are accepted with Ianvs's meaning; anything else is an error that names the file, the place
and the closest known key ("did you mean"), or says where a misplaced key belongs (e.g.
``hard_example_mining_mode`` only works in testenv.yaml). Paths resolve against the current directory, as in
Ianvs; a path found only next to the YAML file is accepted with a warning.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cepr.errors import CeprError

log = logging.getLogger(__name__)

MINING_MODES = ("mining-then-inference", "inference-then-mining", "self-design")
MODULE_TYPES = ("edgemodel", "cloudmodel", "hard_example_mining", "dataset_processor")
SAVE_MODES = ("selected_and_all", "selected_only", "all_only", "none")
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


def _check_keys(d: Any, allowed, where: str, file: Path, required=()) -> dict:
    if not isinstance(d, dict):
        raise CeprError(f"{file}: {where} must be a mapping, got {type(d).__name__}: {d!r}")
    for k in d:
        if k in allowed:
            continue
        msg = f"{file}: unknown key {k!r} in {where}"
        hint = difflib.get_close_matches(str(k), list(allowed), n=1)
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        elif k in HOME:
            msg += f"; it belongs in {HOME[k]}"
        raise CeprError(msg + f" (allowed here: {', '.join(allowed)})")
    for k in required:
        if k not in d or d[k] in (None, ""):
            raise CeprError(f"{file}: {where} needs the key {k!r}")
    return d


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


@dataclass
class MetricSpec:
    name: str
    url: Path | None


@dataclass
class SynthSpec:
    """cepr extension under ``testenv: dataset: synthetic:`` (Ianvs ignores it): generate the synthetic set
    when the index is missing."""
    frames: int = 2000
    seed: int = 0
    splits: tuple[str, ...] = ("test",)
    resolutions: tuple[str, ...] = ("640x480",)
    out: str | None = None


@dataclass
class TestEnv:
    file: Path
    train_index: Path | None
    test_index: Path
    metrics: list[MetricSpec]
    mining_mode: str = "mining-then-inference"
    extra: dict = field(default_factory=dict)
    synthetic: SynthSpec | None = None


def parse_testenv(path: Path) -> TestEnv:
    doc = load_yaml(path, "testenv file")
    _check_keys(doc, ["testenv"], "the top level", path, required=["testenv"])
    te = doc["testenv"]
    known = ["dataset", "metrics", "hard_example_mining_mode", "shot_nums", "model_eval", "incremental_rounds"]
    # Ianvs passes any extra testenv key to the paradigm; only these mean something to joint inference
    _check_keys(te, known, "`testenv:`", path, required=["dataset", "metrics"])
    ds = _check_keys(te["dataset"], ["train_index", "test_index", "train_url", "test_url", "label", "synthetic"],
                     "`testenv: dataset:`", path)
    test = ds.get("test_index") or ds.get("test_url")
    if not test:
        raise CeprError(f"{path}: `testenv: dataset:` needs test_index (the txt index of the test split)")
    train = ds.get("train_index") or ds.get("train_url")
    synth = None
    if ds.get("synthetic") is not None:
        s = _check_keys(ds["synthetic"] or {}, ["frames", "seed", "splits", "resolutions", "out"],
                        "`testenv: dataset: synthetic:`", path)
        synth = SynthSpec(int(s.get("frames", 2000)), int(s.get("seed", 0)), tuple(s.get("splits", ("test",))),
                          tuple(s.get("resolutions", ("640x480",))), s.get("out"))
    mode = te.get("hard_example_mining_mode", "mining-then-inference")
    if mode not in MINING_MODES:
        hint = difflib.get_close_matches(str(mode), MINING_MODES, n=1)
        raise CeprError(f"{path}: hard_example_mining_mode {mode!r} is not one of {', '.join(MINING_MODES)}"
                        + (f"; did you mean {hint[0]!r}?" if hint else ""))
    metrics = []
    if not isinstance(te["metrics"], list) or not te["metrics"]:
        raise CeprError(f"{path}: `testenv: metrics:` must be a non-empty list of {{name, url}}")
    for i, m in enumerate(te["metrics"]):
        _check_keys(m, ["name", "url"], f"`testenv: metrics[{i}]`", path, required=["name"])
        url = resolve_path(m["url"], path, f"metric {m['name']!r} url") if m.get("url") else None
        metrics.append(MetricSpec(str(m["name"]), url))
    test_p = resolve_path(test, path, "test_index", must_exist=synth is None)
    train_p = resolve_path(train, path, "train_index", must_exist=synth is None) if train else None
    extra = {k: v for k, v in te.items() if k not in ("dataset", "metrics", "hard_example_mining_mode")}
    return TestEnv(path, train_p, test_p, metrics, mode, extra, synth)


@dataclass
class ModuleSpec:
    type: str
    name: str
    url: Path
    hyperparameters: dict  # one combination

    def describe(self) -> dict:
        return {"type": self.type, "name": self.name, "url": str(self.url), "hyperparameters": self.hyperparameters}


@dataclass
class AlgorithmSpec:
    name: str
    file: Path
    paradigm_type: str
    modules: list[tuple[str, str, Path, list[tuple[str, list]], dict]]  # type, name, url, [(hp, values)], base


def _parse_hyperparameters(items, where: str, file: Path) -> tuple[list[tuple[str, list]], dict]:
    """Ianvs's module hyperparameters: ``[{name: {values: [...]}}, ...]``; ``other_hyperparameters`` names YAML
    files whose keys become fixed hyperparameters."""
    if items is None:
        return [], {}
    if not isinstance(items, list):
        raise CeprError(f"{file}: {where} hyperparameters must be a list of {{name: {{values: [...]}}}}")
    pairs, base = [], {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise CeprError(f"{file}: {where} hyperparameters[{i}] must be a one-key mapping "
                            f"{{name: {{values: [...]}}}}, got {item!r}")
        (hp, spec), = item.items()
        _check_keys(spec, ["values"], f"{where} hyperparameter {hp!r}", file, required=["values"])
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise CeprError(f"{file}: {where} hyperparameter {hp!r}: values must be a non-empty list")
        if hp == "other_hyperparameters":
            for v in values:
                extra = load_yaml(resolve_path(v, file, "other_hyperparameters file"), "other_hyperparameters file")
                base.update(extra)
            continue
        pairs.append((str(hp), list(values)))
    return pairs, base


def parse_algorithm(name: str, path: Path) -> AlgorithmSpec:
    doc = load_yaml(path, f"algorithm {name!r} file")
    _check_keys(doc, ["algorithm"], "the top level", path, required=["algorithm"])
    a = _check_keys(doc["algorithm"], ["paradigm_type", "modules", "incremental_learning_data_setting",
                                      "initial_model_url", "third_party_packages"],
                    "`algorithm:`", path, required=["paradigm_type", "modules"])
    if a["paradigm_type"] != "jointinference":
        raise CeprError(f"{path}: paradigm_type {a['paradigm_type']!r} is not supported by cepr run "
                        "(only jointinference; run other paradigms with ianvs)")
    mods = []
    seen = set()
    for i, m in enumerate(a["modules"] or []):
        where = f"`algorithm: modules[{i}]`"
        _check_keys(m, ["type", "name", "url", "hyperparameters"], where, path, required=["type", "name", "url"])
        if m["type"] not in MODULE_TYPES:
            hint = difflib.get_close_matches(str(m["type"]), MODULE_TYPES, n=1)
            raise CeprError(f"{path}: {where} type {m['type']!r} is not a jointinference module type"
                            + (f"; did you mean {hint[0]!r}?" if hint else "")
                            + f" (types: {', '.join(MODULE_TYPES)})")
        if m["type"] in seen:
            raise CeprError(f"{path}: two modules of type {m['type']!r}; a jointinference algorithm has one each")
        seen.add(m["type"])
        url = resolve_path(m["url"], path, f"module {m['name']!r} url")
        pairs, base = _parse_hyperparameters(m.get("hyperparameters"), where, path)
        mods.append((m["type"], str(m["name"]), url, pairs, base))
    missing = {"edgemodel", "cloudmodel", "hard_example_mining"} - seen
    if missing:
        raise CeprError(f"{path}: jointinference needs modules of type {', '.join(sorted(missing))}")
    return AlgorithmSpec(name, path, a["paradigm_type"], mods)


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


def _as_list(v, file: Path, where: str) -> list[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise CeprError(f"{file}: {where} must be a non-empty list (or [\"all\"])")
    return [str(x) for x in v]


def parse_rank(r: dict, path: Path) -> RankSpec:
    _check_keys(r, ["sort_by", "visualization", "selected_dataitem", "save_mode"], "`benchmarkingjob: rank:`",
                path, required=["sort_by"])
    sort_by = []
    for i, s in enumerate(r["sort_by"] or []):
        if not isinstance(s, dict) or len(s) != 1 or next(iter(s.values())) not in ("ascend", "descend"):
            raise CeprError(f"{path}: rank sort_by[{i}] must look like {{metric: ascend|descend}}, got {s!r}")
        (k, v), = s.items()
        sort_by.append((str(k), v))
    vis = _check_keys(r.get("visualization") or {}, ["mode", "method"], "`rank: visualization:`", path)
    if vis.get("mode", "selected_only") != "selected_only":
        raise CeprError(f"{path}: rank visualization mode must be selected_only (the only mode Ianvs has)")
    if vis.get("method", "print_table") != "print_table":
        raise CeprError(f"{path}: rank visualization method {vis.get('method')!r} is unknown; use print_table")
    if "selected_dataitem" not in r:
        raise CeprError(f"{path}: rank needs selected_dataitem with paradigms, modules, hyperparameters and "
                        "metrics (Ianvs crashes without hyperparameters); use [\"all\"] to select everything")
    sd = _check_keys(r["selected_dataitem"], ["paradigms", "modules", "hyperparameters", "metrics"],
                     "`rank: selected_dataitem:`", path,
                     required=["paradigms", "modules", "hyperparameters", "metrics"])
    save = r.get("save_mode", "selected_and_all")
    if save not in SAVE_MODES:
        raise CeprError(f"{path}: rank save_mode {save!r} is not one of {', '.join(SAVE_MODES)}")
    return RankSpec(sort_by, "selected_only", "print_table",
                    *(_as_list(sd[k], path, f"selected_dataitem {k}")
                      for k in ("paradigms", "modules", "hyperparameters", "metrics")), save)


def _unknown(kind: str, name: str, known: list[str], path: Path) -> CeprError:
    hint = next(iter(difflib.get_close_matches(name, known, n=1)), None)
    return CeprError(f"{path}: rank {kind} {name!r} names no column of this job"
                     + (f"; did you mean {hint!r}?" if hint else "")
                     + f" (known: {', '.join(known) or 'none'})")


def check_rank_names(rank: RankSpec, te: TestEnv, algos: list[AlgorithmSpec], path: Path) -> None:
    """Every name in ``sort_by`` and ``selected_dataitem`` must name a column of this job. Ianvs silently
    skips an unknown sort metric and leaves an unknown selected column empty. Hyperparameter columns are named
    ``{module type}-{hyperparameter}``, as Ianvs names them; a bare name gets that hint."""
    metrics = [m.name for m in te.metrics]
    modules, hps = [], []
    for a in algos:
        for mtype, _name, _url, pairs, base in a.modules:
            modules.append(mtype)
            hps += [f"{mtype}-{hp}" for hp in [*base, *(n for n, _ in pairs)]]
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
    doc = load_yaml(path, "benchmarking job file")
    _check_keys(doc, ["benchmarkingjob"], "the top level", path, required=["benchmarkingjob"])
    b = _check_keys(doc["benchmarkingjob"], ["name", "workspace", "testenv", "test_object", "rank"],
                    "`benchmarkingjob:`", path, required=["name", "workspace", "testenv", "test_object", "rank"])
    te = parse_testenv(resolve_path(b["testenv"], path, "testenv"))
    to = _check_keys(b["test_object"], ["type", "algorithms"], "`benchmarkingjob: test_object:`", path,
                     required=["algorithms"])
    if to.get("type", "algorithms") != "algorithms":
        raise CeprError(f"{path}: test_object type must be algorithms")
    algos, names = [], set()
    for i, a in enumerate(to["algorithms"] or []):
        _check_keys(a, ["name", "url"], f"`test_object: algorithms[{i}]`", path, required=["name", "url"])
        if a["name"] in names:
            raise CeprError(f"{path}: two algorithms are named {a['name']!r}; names must be unique")
        names.add(a["name"])
        algos.append(parse_algorithm(str(a["name"]), resolve_path(a["url"], path, f"algorithm {a['name']!r} url")))
    if not algos:
        raise CeprError(f"{path}: test_object lists no algorithms")
    ws_text = str(workspace if workspace is not None else b["workspace"])
    rank = parse_rank(b["rank"], path)
    check_rank_names(rank, te, algos, path)
    return BenchmarkingJob(path, str(b["name"]), Path(ws_text).expanduser().absolute(), te, algos, rank, ws_text)
