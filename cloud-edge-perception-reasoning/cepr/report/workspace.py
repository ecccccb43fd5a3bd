"""A job's workspace folder read back for the report: the leaderboard (``rank/*.csv``), every finished test case
(``<algorithm>/<case id>/record.json`` + ``samples.jsonl``) and any ``cepr sweep`` output (``sweep.json``).

Everything here is derived from the saved files alone (no model runs): per-sample end-to-end latency, uplink
bytes, cloud share and per-task correctness, with the same definitions as the testenv metrics
(:mod:`cepr.metrics.joint`). A value a case did not record stays missing (NaN), never a 0.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cepr.errors import CeprError, did_you_mean
from cepr.runner.case import read_record
from cepr.runner.rank import read_rank_csv

log = logging.getLogger(__name__)

RECORD = "record.json"
SAMPLES = "samples.jsonl"
SWEEP_JSON = "sweep.json"


@dataclass
class Case:
    """One finished test case: its record and its scored samples (failed sample lines left out)."""

    dir: Path
    record: dict
    samples: list[dict]
    failed_lines: int = 0
    rank_row: dict | None = None  # its leaderboard row (selected_rank.csv), when it has one
    label: str = ""

    @property
    def id(self) -> str:
        return str(self.record.get("id") or self.dir.name)

    @property
    def algorithm(self) -> str:
        return str(self.record.get("algorithm") or self.dir.parent.name)

    @property
    def policy(self) -> str:
        """The hard-example-mining (dispatch) module's name, e.g. ``Threshold``."""
        hem = (self.record.get("modules") or {}).get("hard_example_mining") or {}
        return str(hem.get("name") or "")

    @property
    def policy_params(self) -> dict:
        hem = (self.record.get("modules") or {}).get("hard_example_mining") or {}
        return dict(hem.get("hyperparameters") or {})

    @property
    def upper_bound(self) -> bool:
        """Reads the labels (the Oracle): a bound, not a deployable policy."""
        return bool(self.record.get("upper_bound"))

    @property
    def metrics(self) -> dict:
        return self.record.get("metrics") or {}

    def metric(self, name: str) -> float:
        v = self.metrics.get(name)
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan

    # ---- per-sample values, from samples.jsonl -------------------------------------------------------------

    def latencies(self) -> np.ndarray:
        """End to end per sample (ms): edge compute + cloud round trip where each ran (the ``latency_*`` metrics'
        definition); NaN where a side that ran reported no latency."""
        out = []
        for s in self.samples:
            total = 0.0
            for side in (s.get("edge"), s.get("cloud")):
                if side is None:
                    continue
                v = side.get("latency_ms")
                total = math.nan if v is None else total + float(v)
            out.append(total)
        return np.asarray(out, np.float64)

    def sent(self) -> np.ndarray:
        """Per sample: whether the dispatcher sent it to the cloud (a cloud result exists)."""
        return np.asarray([s.get("cloud") is not None for s in self.samples], bool)

    def cloud_share(self) -> float:
        return float(self.sent().mean()) if self.samples else math.nan

    def bytes(self, key: str) -> np.ndarray:
        """Per sample: the cloud result's ``bytes_up``/``bytes_down`` (0 where not sent, NaN where not reported)."""
        out = []
        for s in self.samples:
            c = s.get("cloud")
            out.append(0.0 if c is None else (math.nan if c.get(key) is None else float(c[key])))
        return np.asarray(out, np.float64)

    def correct(self) -> np.ndarray:
        """Per sample: 1.0 / 0.0 where the truth is known, NaN otherwise."""
        return np.asarray([math.nan if s.get("correct") is None else float(bool(s["correct"]))
                           for s in self.samples], np.float64)

    def per_task(self) -> dict[str, tuple[int, int]]:
        """Task -> (correct, scored) over the samples whose truth is known."""
        out: dict[str, list[int]] = {}
        for s in self.samples:
            if s.get("correct") is None or not s.get("task"):
                continue
            k = out.setdefault(str(s["task"]), [0, 0])
            k[0] += int(bool(s["correct"]))
            k[1] += 1
        return {t: (v[0], v[1]) for t, v in out.items()}


@dataclass
class Sweep:
    """One ``cepr sweep`` output (its sweep.json)."""

    path: Path
    doc: dict


@dataclass
class Workspace:
    """A job folder ``<workspace>/<job name>/`` read back."""

    dir: Path
    job: str
    rank_header: list[str] = field(default_factory=list)  # selected_rank.csv (else all_rank.csv)
    rank_rows: list[dict] = field(default_factory=list)
    rank_file: Path | None = None
    cases: list[Case] = field(default_factory=list)  # the leaderboard's cases, in its order
    other_cases: list[Case] = field(default_factory=list)  # finished cases on disk but not on the leaderboard
    failed: list[dict] = field(default_factory=list)  # records of cases that did not finish (failed, interrupted)
    sweeps: list[Sweep] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # unreadable files, skipped lines: said in the report

    def case_of(self, row: dict) -> Case | None:
        key = _url_key(row.get("url"))
        for c in self.cases:
            if (c.algorithm, c.id) == key:
                return c
        return None

    def reference(self, policy: str) -> Case | None:
        """The first case of a dispatch policy (``EdgeOnly``, ``CloudOnly``...)."""
        return next((c for c in self.cases if c.policy == policy), None)


def _url_key(url) -> tuple[str, str] | None:
    """(algorithm, case id) from a rank row's url (``<workspace>/<job>/<algorithm>/<case id>``)."""
    if not url:
        return None
    parts = Path(str(url).replace("\\", "/")).parts
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


def _read_samples(path: Path, problems: list[str]) -> tuple[list[dict], int]:
    out, failed, bad = [], 0, 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        problems.append(f"{path}: unreadable ({e.strerror or type(e).__name__})")
        return [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(d, dict):
            bad += 1
        elif d.get("status") == "failed":
            failed += 1
        else:
            out.append(d)
    if bad:
        problems.append(f"{path}: {bad} unreadable line(s) skipped (a run cut short?)")
    return out, failed


def _job_folders(root: Path) -> list[str]:
    """Sub-folders of ``root`` that look like job folders (they hold rank/ or <algorithm>/<case>/record.json)."""
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "rank").is_dir() or any(d.glob(f"*/*/{RECORD}")):
            out.append(d.name)
    return out


def find_sweeps(job_dir: Path, extra: list[Path] | None = None) -> list[Sweep]:
    """Every ``sweep.json`` under the job folder (``sweep-cache/<key>/sweep/`` by default), plus ``extra``."""
    paths = sorted(job_dir.glob(f"sweep-cache/*/sweep/{SWEEP_JSON}")) + sorted(job_dir.glob(f"*/{SWEEP_JSON}"))
    for p in extra or []:
        p = Path(p)
        p = p / SWEEP_JSON if p.is_dir() else p
        if not p.is_file():
            raise CeprError(f"--sweep {p}: no such file (give a sweep.json or the folder cepr sweep --out wrote)")
        paths.append(p)
    out, seen = [], set()
    for p in paths:
        if p.resolve() in seen:
            continue
        seen.add(p.resolve())
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            log.warning("report: %s is not readable JSON (%s): left out", p, e)
            continue
        if not isinstance(doc, dict) or "references" not in doc or "curves" not in doc:
            log.warning("report: %s is not a cepr sweep result (no references/curves): left out", p)
            continue
        out.append(Sweep(p, doc))
    return out


def load_workspace(path: str | Path, sweeps: list[Path] | None = None) -> Workspace:
    """Read a job folder. A CeprError names what is wrong: not a folder, the workspace root instead of a job
    folder (with the jobs it holds), or a folder with no finished test case."""
    root = Path(path)
    if not root.exists():
        hint = ""
        if root.parent.is_dir():
            hint = did_you_mean(root.name, [p.name for p in root.parent.iterdir() if p.is_dir()], "the folder")
        raise CeprError(f"workspace {root} does not exist{hint}")
    if not root.is_dir():
        raise CeprError(f"workspace {root} is not a folder: give a job's folder, e.g. workspace/cepr-default")
    records = sorted(root.glob(f"*/*/{RECORD}"))
    found_sweeps = find_sweeps(root, sweeps)
    if not records and not (root / "rank").is_dir() and not found_sweeps:
        jobs = _job_folders(root)
        if jobs:
            raise CeprError(f"{root} holds the folders of {len(jobs)} job(s) ({', '.join(jobs)}), not one job's "
                            f"results: give one of them, e.g. cepr report {root / jobs[0]}")
        raise CeprError(f"{root} has no test case results (<algorithm>/<case id>/record.json), no rank/ folder and "
                        "no cepr sweep result: give the folder `cepr run` printed its results in, e.g. "
                        "workspace/cepr-default")
    ws = Workspace(root, root.name)
    for name in ("selected_rank.csv", "all_rank.csv"):
        header, rows = read_rank_csv(root / "rank" / name)
        if header:
            ws.rank_header, ws.rank_rows, ws.rank_file = header, rows, root / "rank" / name
            break
    finished: list[Case] = []
    for p in records:
        try:
            rec = read_record(p)
        except (OSError, json.JSONDecodeError) as e:
            ws.problems.append(f"{p}: unreadable record ({e})")
            continue
        except CeprError as e:  # not a record, or one of a version this cepr does not read
            ws.problems.append(str(e))
            continue
        if rec.get("status") != "ok":
            ws.failed.append({**rec, "output_dir": str(p.parent)})
            continue
        samples, failed = _read_samples(p.parent / SAMPLES, ws.problems)
        finished.append(Case(p.parent, rec, samples, failed))
    by_key = {(c.algorithm, c.id): c for c in finished}
    used = set()
    for row in ws.rank_rows:
        key = _url_key(row.get("url"))
        c = by_key.get(key)
        if c is None:
            ws.problems.append(f"leaderboard row {row.get('rank')} ({row.get('algorithm')}): no finished cepr "
                               f"record (record.json) for {row.get('url')} in this workspace (a run by Ianvs keeps "
                               "none): on the leaderboard only")
            continue
        if key in used:
            continue
        used.add(key)
        c.rank_row = row
        ws.cases.append(c)
    rest = [c for k, c in by_key.items() if k not in used]
    if not ws.rank_rows:  # no leaderboard: every finished case, best accuracy first
        ws.cases = sorted(rest, key=lambda c: -c.metric("accuracy") if not math.isnan(c.metric("accuracy"))
                          else math.inf)
    else:
        ws.other_cases = rest
    _label_cases(ws.cases + ws.other_cases)
    ws.sweeps = found_sweeps
    return ws


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "+".join(_short(x) for x in v)
    if isinstance(v, dict):
        return str(v["name"]) if "name" in v else ",".join(f"{k}={_short(x)}" for k, x in v.items())
    return str(v)


def _settings(c: Case) -> dict[str, object]:
    """Every module hyperparameter of a case, by name (``module-name`` where two modules share a name)."""
    out: dict[str, object] = {}
    mods = c.record.get("modules") or {}
    names = [n for m in mods.values() for n in ((m or {}).get("hyperparameters") or {})]
    for mtype, m in mods.items():
        for n, v in ((m or {}).get("hyperparameters") or {}).items():
            out[n if names.count(n) == 1 else f"{mtype}-{n}"] = v
    return out


def _label_cases(cases: list[Case]) -> None:
    """A short, unique label per case: the algorithm and the hyperparameters that differ between its cases
    (``threshold 0.8``, ``random 0.6``, ``fusion-rules safety_first``); a lone case shows its dispatch parameters;
    the case id where two would still read the same."""
    by_algo: dict[str, list[Case]] = {}
    for c in cases:
        by_algo.setdefault(c.algorithm, []).append(c)
    for c in cases:
        peers = by_algo[c.algorithm]
        mine = _settings(c)
        varying = [k for k in mine if len({_short(_settings(p).get(k)) for p in peers}) > 1]
        params = {k: mine[k] for k in varying} if varying else c.policy_params
        if len(params) == 1:
            c.label = f"{c.algorithm} {_short(next(iter(params.values())))}"
        elif params:
            c.label = f"{c.algorithm} " + ",".join(f"{k}={_short(v)}" for k, v in params.items())
        else:
            c.label = c.algorithm
        if len(c.label) > 48:
            c.label = c.label[:47] + "…"
    seen: dict[str, int] = {}
    for c in cases:
        seen[c.label] = seen.get(c.label, 0) + 1
    for c in cases:
        if seen[c.label] > 1:
            c.label = f"{c.label} [{c.id[:6]}]"
