"""A sweep's results: per-setting metrics, per-policy curves with APGR / CPT, the Random and Oracle references, the
Pareto front; written as ``sweep.json`` (self-describing: definitions, units, the cache it came from),
``settings.csv`` and ``curves.csv``, and printed as tables. ``write_algorithm`` turns chosen settings back into
Ianvs algorithm YAML files (and optionally a benchmarking job that runs them)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from cepr.errors import CeprError, did_you_mean
from cepr.runner.config import load_yaml
from cepr.sweep import curves
from cepr.sweep.cache import CachedSet
from cepr.sweep.evaluate import Outcome, Timing, decide, expand, score
from cepr.sweep.spec import SweepSpec

COLUMNS = {  # name -> what it is (the JSON carries this, so a plotting helper needs nothing else)
    "id": "the setting: curve(parameter=value,...)", "curve": "the curve (policy or spec label) it belongs to",
    "policy": "the registered dispatch policy", "params": "its parameters (JSON)",
    "upper_bound": "reads the labels: a bound, never ranked nor on the Pareto front",
    "path": "vectorised (a closed form on cached columns) or per-sample (the policy called on each edge result)",
    "cloud_share": "share of samples sent to the cloud, [0, 1]", "sent": "samples sent to the cloud",
    "accuracy": "share of final answers equal to the truth (cloud answer where sent, else edge)",
    "accuracy_ci_low": "Wilson 95% interval, low", "accuracy_ci_high": "Wilson 95% interval, high",
    "pgr": "performance gap recovered: (accuracy - edge-only) / (cloud-only - edge-only)",
    "vs_random": "accuracy minus Random's at the same cloud share (the analytic Random: edge-only + share x "
                 "(cloud-only - edge-only)); > 0: the policy picks better samples than chance",
    "latency_p50": "median per-sample latency, ms (edge + cloud where sent)",
    "latency_p95": "95th-percentile per-sample latency, ms (edge + cloud where sent)",
    "latency_mean": "mean per-sample latency, ms", "uplink_bytes": "mean bytes sent to the cloud per sample",
    "safety_recall": "share of truly hazardous path_hazard/action samples answered cautiously",
    "pareto": "on the Pareto front (accuracy up, p95 latency down, uplink bytes down)",
    "error": "why the setting could not be evaluated (its policy raised)",
}
CSV_COLUMNS = ["id", "curve", "policy", "params", "upper_bound", "path", "cloud_share", "sent", "accuracy",
               "accuracy_ci_low", "accuracy_ci_high", "pgr", "vs_random", "latency_p50", "latency_p95", "latency_mean",
               "uplink_bytes", "safety_recall", "pareto", "error"]


@dataclass
class SweepResult:
    data: CachedSet
    spec: SweepSpec
    rows: list[dict]
    curves: dict[str, dict]
    references: dict[str, dict]
    pareto: list[str]
    timing: Timing
    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)

    def row(self, pick: str) -> dict:
        """A setting by id or by its 1-based row number."""
        ids = [r["id"] for r in self.rows]
        if pick.isdigit() and 1 <= int(pick) <= len(self.rows):
            return self.rows[int(pick) - 1]
        for r in self.rows:
            if r["id"] == pick or r["id"].replace(" ", "") == pick.replace(" ", ""):
                return r
        raise CeprError(f"--pick: no setting {pick!r}" + did_you_mean(pick, ids)
                        + f" (settings are numbered 1-{len(ids)} in settings.csv order, or use best / pareto)")

    def best(self, max_share: float | None = None) -> dict:
        """The deployable setting with the highest accuracy (then the lowest cloud share, p95 latency, bytes),
        within ``max_share`` when given."""
        ok = [r for r in self.rows if not r["upper_bound"] and r["error"] is None
              and (max_share is None or r["cloud_share"] <= max_share + 1e-12)]
        if not ok:
            raise CeprError("--pick best: no deployable setting" + (f" with cloud share <= {max_share}"
                                                                    if max_share is not None else ""))
        return min(ok, key=lambda r: (-r["accuracy"], r["cloud_share"], r["latency_p95"], r["uplink_bytes"]))


def _f(v):
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(float(v)) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def run_sweep(data: CachedSet, spec: SweepSpec, progress: bool = False, vectorise: bool | None = None
              ) -> SweepResult:
    """Evaluate every setting of ``spec`` on ``data`` (no model is called)."""
    t0 = time.perf_counter()
    settings = expand(spec)
    timing = Timing()
    outcomes = decide(settings, data, spec.vectorize if vectorise is None else vectorise, progress, timing)
    t = time.perf_counter()
    ok = [o for o in outcomes if o.decisions is not None]
    m = score(np.stack([o.decisions for o in ok]), data) if ok else {}
    ref = score(np.stack([np.zeros(data.n, bool), np.ones(data.n, bool)]), data)
    acc_w, acc_s = float(ref["accuracy"][0]), float(ref["accuracy"][1])
    rows, j = [], 0
    for o in outcomes:
        s = o.setting
        r = {"id": s.id, "curve": s.curve, "policy": s.policy, "params": s.params, "upper_bound": s.upper_bound,
             "path": o.path, "error": o.error}
        if o.decisions is not None:
            r.update({k: _f(v[j]) for k, v in m.items()})
            r["sent"] = int(r["sent"])
            r["pgr"] = _f(curves.pgr(r["accuracy"], acc_w, acc_s))
            r["vs_random"] = _f(r["accuracy"] - (acc_w + r["cloud_share"] * (acc_s - acc_w)))
            j += 1
        rows.append(r)
    good = [r for r in rows if r["error"] is None]
    deploy = [r for r in good if not r["upper_bound"]]
    front = curves.pareto_front([r["accuracy"] for r in deploy], [r["latency_p95"] for r in deploy],
                                [r["uplink_bytes"] for r in deploy]) if deploy else np.zeros(0, bool)
    pareto = {r["id"] for r, keep in zip(deploy, front) if keep}
    for r in rows:
        r["pareto"] = r["id"] in pareto
    per_curve: dict[str, dict] = {}
    for name in dict.fromkeys(r["curve"] for r in rows):
        mine = [r for r in good if r["curve"] == name]
        first = next(r for r in rows if r["curve"] == name)
        entry = {"policy": first["policy"], "upper_bound": first["upper_bound"], "settings": len(mine),
                 "failed": sum(1 for r in rows if r["curve"] == name and r["error"] is not None)}
        if mine:
            pts = curves.curve([r["cloud_share"] for r in mine], [r["accuracy"] for r in mine], acc_w, acc_s)
            entry.update(curves.summary(pts, acc_w, acc_s))
        per_curve[name] = entry
    oracle = curves.oracle_curve(data.edge_correct, data.cloud_correct)
    references = {
        "edge_only": {"cloud_share": 0.0, **{k: _f(v[0]) for k, v in ref.items() if k != "sent"}},
        "cloud_only": {"cloud_share": 1.0, **{k: _f(v[1]) for k, v in ref.items() if k != "sent"}},
        "random": {"analytic": "linear from edge-only (share 0) to cloud-only (share 1)",
                   **curves.summary(curves.random_curve(acc_w, acc_s), acc_w, acc_s)},
        "oracle": {"analytic": "edge-wrong samples first (cloud-right ones first); reads the labels: an upper "
                               "bound", **curves.summary(oracle, acc_w, acc_s)},
    }
    timing.metrics_s += time.perf_counter() - t
    return SweepResult(data, spec, rows, per_curve, references, sorted(pareto, key=[r["id"] for r in rows].index),
                       timing, time.perf_counter() - t0, outcomes)


# ---- writing --------------------------------------------------------------------------------------------------

def _clean(v):
    """JSON-ready: NaN becomes null, numpy scalars plain numbers, recursively."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return _f(v)


def to_json(res: SweepResult) -> dict:
    return _clean({
        "what": "cepr sweep: dispatch policies evaluated offline on cached edge and cloud results (no model called)",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "definitions": {
            "weak": "the edge (edge-only: cloud share 0)", "strong": "the cloud (cloud-only: cloud share 1)",
            "pgr": "(accuracy - acc_edge_only) / (acc_cloud_only - acc_edge_only)",
            "curve": "a policy's settings as (cloud_share, accuracy) sorted by share, the best accuracy at a tied "
                     "share, closed by (0, edge-only) and (1, cloud-only), linear in between",
            "apgr": "area under PGR against cloud share over [0, 1] (trapezoidal rule on the curve), RouteLLM",
            "cpt50": "smallest cloud share at which the curve's PGR reaches 0.5 (linear within a segment); null "
                     "if never", "cpt80": "the same for PGR 0.8",
            "random": "analytic: APGR 0.5, CPT(x%) = x/100", "oracle": "upper bound: edge-wrong samples sent first",
            "pareto": "non-dominated deployable settings over accuracy (up), latency_p95 (down), uplink_bytes "
                      "(down)", "source": "cepr/sweep/curves.py, docs/sweep.md"},
        "columns": COLUMNS,
        "cache": res.data.describe(),
        "spec": res.spec.model_dump(),
        "references": res.references,
        "curves": res.curves,
        "settings": [{k: r.get(k) for k in CSV_COLUMNS} for r in res.rows],
        "pareto": res.pareto,
        "timing": {"seconds": round(res.seconds, 4), "samples": res.data.n, "settings": len(res.rows),
                   **res.timing.as_dict()},
    })


def write_outputs(res: SweepResult, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "sweep.json", "settings": out / "settings.csv", "curves": out / "curves.csv"}
    doc = to_json(res)
    paths["json"].write_text(json.dumps(doc, indent=1, allow_nan=False, default=_f))
    with paths["settings"].open("w", newline="") as fh:
        w = csv.DictWriter(fh, CSV_COLUMNS)
        w.writeheader()
        for r in doc["settings"]:
            w.writerow({k: json.dumps(v) if isinstance(v, dict) else ("" if v is None else v) for k, v in r.items()})
    with paths["curves"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["curve", "kind", "apgr", "cpt50", "cpt80", "settings", "points"])
        for name, c in res.curves.items():
            w.writerow([name, "upper bound" if c["upper_bound"] else "policy", c.get("apgr"), c.get("cpt50"),
                        c.get("cpt80"), c["settings"], json.dumps(c.get("points"))])
        for name in ("random", "oracle"):
            c = res.references[name]
            w.writerow([name.capitalize(), "reference", c["apgr"], c["cpt50"], c["cpt80"], "", json.dumps(c["points"])])
    return paths


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, bool):
            return "yes" if v else ""
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3f}"
        return str(v)
    body = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(b[j]) for b in body)) if body else len(h) for j, h in enumerate(header)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |", line]
    out += ["| " + " | ".join(v.ljust(w) for v, w in zip(b, widths)) + " |" for b in body]
    out.append(line)
    return "\n".join(out)


def format_tables(res: SweepResult, all_settings: bool = False) -> str:
    ref = res.references
    head = (f"cepr sweep: {len(res.rows)} setting(s) over {res.data.n} cached sample(s) in {res.seconds:.2f} s "
            f"(no model called); edge-only accuracy {ref['edge_only']['accuracy']:.3f}, cloud-only "
            f"{ref['cloud_only']['accuracy']:.3f}")
    if not ref["cloud_only"]["accuracy"] > ref["edge_only"]["accuracy"]:
        head += ("\nthe cloud is not more accurate than the edge on these samples: no gap to recover, so APGR and "
                 "CPT are undefined (shown as -)")
    if res.data.note:
        head += f"\n{res.data.note}"
    curve_rows = []
    def order(kv):
        a = kv[1].get("apgr")
        return -a if a is not None and not math.isnan(a) else math.inf
    for name, c in sorted(res.curves.items(), key=order):
        curve_rows.append([name + (" (upper bound)" if c["upper_bound"] else ""), c["settings"], c.get("apgr"),
                           c.get("cpt50"), c.get("cpt80")])
    for name in ("random", "oracle"):
        c = ref[name]
        curve_rows.append([f"{name.capitalize()} (reference{', upper bound' if name == 'oracle' else ''})", "-",
                           c["apgr"], c["cpt50"], c["cpt80"]])
    parts = [head, "call-performance curves (RouteLLM measures; CPT = cloud share needed):",
             _table(["curve", "settings", "APGR", "CPT(50%)", "CPT(80%)"], curve_rows)]
    cols = ["#", "setting", "cloud share", "accuracy", "vs Random", "PGR", "p95 ms", "uplink B", "safety recall"]

    def line(k, r):
        return [k, r["id"] + (" *" if r["upper_bound"] else ""), r.get("cloud_share"), r.get("accuracy"),
                r.get("vs_random"), r.get("pgr"), r.get("latency_p95"), r.get("uplink_bytes"), r.get("safety_recall")]
    number = {r["id"]: k for k, r in enumerate(res.rows, 1)}
    shown = [r for r in res.rows if r["error"] is None and (all_settings or r["pareto"])]
    shown = sorted(shown, key=lambda r: (r["cloud_share"], -r["accuracy"], number[r["id"]]))
    body = []
    if all_settings:
        body = [line(number[r["id"]], r) for r in shown]
    else:  # settings that decide alike have the same figures: one line, the others counted
        groups: dict[tuple, list[dict]] = {}
        for r in shown:
            groups.setdefault((r["sent"], r["accuracy"], r["latency_p95"], r["uplink_bytes"]), []).append(r)
        for g in groups.values():
            row = line(number[g[0]["id"]], g[0])
            if len(g) > 1:
                row[1] += f" (+{len(g) - 1} alike)"
            body.append(row)
    parts.append(("every setting (* reads the labels)" if all_settings else
                  "Pareto front (accuracy up, p95 latency down, uplink bytes down; deployable settings only; "
                  "'alike': other settings with the same figures, listed in settings.csv)") + ":")
    parts.append(_table(cols, body))
    failed = [r for r in res.rows if r["error"] is not None]
    for r in failed:
        parts.append(f"FAILED setting {r['id']}: {r['error']}")
    t = res.timing
    parts.append(f"timing: {t.vectorised_settings} vectorised setting(s) in {t.vectorised_s:.3f} s, "
                 f"{t.per_sample_settings} per-sample setting(s) in {t.per_sample_s:.3f} s "
                 f"({t.per_sample_calls} policy calls), metrics {t.metrics_s:.3f} s")
    return "\n".join(parts)


# ---- back to Ianvs YAML -----------------------------------------------------------------------------------------

def _algorithm_doc(source, row: dict) -> dict:
    """The source algorithm's YAML with its hard_example_mining module replaced by this setting."""
    doc = load_yaml(Path(source.algorithm.file), "algorithm file")
    mods = doc["algorithm"]["modules"]
    hem = next((m for m in mods if m.get("type") == "hard_example_mining"), None)
    if hem is None:
        raise CeprError(f"{source.algorithm.file}: no hard_example_mining module to replace")
    url = row.get("url") or hem["url"]
    hem.clear()
    hem.update({"type": "hard_example_mining", "name": row["policy"], "url": url})
    if row["params"]:
        hem["hyperparameters"] = [{k: {"values": [v]}} for k, v in row["params"].items()]
    return doc


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower()


def write_algorithm(res: SweepResult, source, rows: list[dict], path: str | Path,
                    job_path: str | Path | None = None) -> list[Path]:
    """One algorithm YAML per chosen setting (``path`` itself for one; ``<stem>-<setting>.yaml`` beside it for
    several), each the source algorithm with its hard_example_mining module set to the setting; with
    ``job_path``, a benchmarking job (the source job's testenv and rank) that runs them all."""
    path = Path(path)
    urls = {s.id: s.url for s in (o.setting for o in res.outcomes)}
    written, names = [], []
    header = ("# Written by `cepr sweep` from {src} (algorithm {algo}): its modules, with the dispatch policy set to\n"
              "# the swept setting {id}: accuracy {acc:.4f}, cloud share {share:.4f}, p95 latency {p95:.1f} ms,\n"
              "# uplink {up:.0f} B/sample on {n} cached samples. Run it with `cepr run -f` or `ianvs -f` through a\n"
              "# benchmarkingjob.yaml that lists it.\n")
    for r in rows:
        target = path if len(rows) == 1 else path.with_name(f"{path.stem}-{_safe(r['id'])}{path.suffix or '.yaml'}")
        doc = _algorithm_doc(source, {**r, "url": urls.get(r["id"])})
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(header.format(src=source.algorithm.file, algo=source.algorithm.name, id=r["id"],
                                        acc=r["accuracy"], share=r["cloud_share"], p95=r["latency_p95"],
                                        up=r["uplink_bytes"], n=res.data.n)
                          + yaml.safe_dump(doc, sort_keys=False))
        written.append(target)
        names.append(_safe(f"sweep-{r['id']}"))
    if job_path is not None:
        written.append(_write_job(source, written, names, rows, Path(job_path)))
    return written


def _write_job(source, algos: list[Path], names: list[str], rows: list[dict], job_path: Path) -> Path:


    doc = load_yaml(Path(source.job.file), "benchmarking job file")
    b = doc["benchmarkingjob"]
    b["name"] = f"{b['name']}-sweep"

    def rel(p: Path) -> str:  # as the source job spells paths: relative to the current directory
        r = os.path.relpath(p.resolve(), Path.cwd())
        return r if r.startswith("..") else f"./{r}"
    b["test_object"]["algorithms"] = [{"name": n, "url": rel(p)} for n, p in zip(names, algos)]
    hps = list(dict.fromkeys(f"hard_example_mining-{k}" for r in rows for k in r["params"]))
    b["rank"]["selected_dataitem"]["hyperparameters"] = hps
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(f"# Written by `cepr sweep`: the picked dispatch settings, each with the modules of "
                        f"{source.job.file}'s algorithm {source.algorithm.name}.\n"
                        f"# Run: cepr run -f {job_path}   (or ianvs -f {job_path})\n"
                        + yaml.safe_dump(doc, sort_keys=False))
    return job_path


# ---- several algorithms: one Pareto front -----------------------------------------------------------------------

FRONT_COLUMNS = ["algorithm", "id", "cloud_share", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "latency_p95",
                 "uplink_bytes", "payload", "pareto"]


def joint_front(results: dict[str, SweepResult]) -> list[dict]:
    """Every deployable setting of every algorithm's sweep (its own cache: other edge or cloud settings, e.g. another
    payload), marked ``pareto`` when no setting of any of them is at least as good on accuracy, p95 latency and
    uplink bytes and better on one."""
    rows = []
    for name, res in results.items():
        payload = res.data.meta.get("parts", {}).get("payload") or res.data.meta.get("payload")
        for r in res.rows:
            if r["error"] is None and not r["upper_bound"]:
                rows.append({"algorithm": name, "id": r["id"], "cloud_share": r["cloud_share"],
                             "accuracy": r["accuracy"], "accuracy_ci_low": r["accuracy_ci_low"],
                             "accuracy_ci_high": r["accuracy_ci_high"], "latency_p95": r["latency_p95"],
                             "uplink_bytes": r["uplink_bytes"], "payload": payload})
    keep = curves.pareto_front([r["accuracy"] for r in rows], [r["latency_p95"] for r in rows],
                               [r["uplink_bytes"] for r in rows]) if rows else []
    for r, k in zip(rows, keep):
        r["pareto"] = bool(k)
    return rows


def write_front(rows: list[dict], results: dict[str, SweepResult], out: str | Path) -> dict[str, Path]:
    """``front.json`` (every row, the caches it came from, the definitions) and ``front.csv``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"definitions": {"pareto": COLUMNS["pareto"] + ", over the settings of every algorithm listed",
                           "payload": "the cloud payload settings of the algorithm's cache"},
           "algorithms": {n: {"cache": str(r.data.dir) if r.data.dir else None, "samples": r.data.n}
                          for n, r in results.items()},
           "rows": rows}
    paths = {"json": out / "front.json", "csv": out / "front.csv"}
    paths["json"].write_text(json.dumps(doc, indent=1, default=str) + "\n")
    with paths["csv"].open("w", newline="") as f:
        w = csv.DictWriter(f, FRONT_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(r[k], sort_keys=True) if isinstance(r.get(k), dict) else r.get(k)
                        for k in FRONT_COLUMNS})
    return paths


def format_front(rows: list[dict]) -> str:
    """The front's rows, cheapest uplink first; settings of one algorithm that decide alike share a line."""
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: (r["uplink_bytes"], -r["accuracy"]))
    groups: dict[tuple, list[dict]] = {}
    for r in front:
        groups.setdefault((r["algorithm"], r["cloud_share"], r["accuracy"], r["latency_p95"], r["uplink_bytes"]),
                          []).append(r)
    body = [[g[0]["algorithm"], g[0]["id"] + (f" (+{len(g) - 1} alike)" if len(g) > 1 else ""), g[0]["cloud_share"],
             g[0]["accuracy"], g[0]["latency_p95"], g[0]["uplink_bytes"]] for g in groups.values()]
    return (f"Pareto front over {len(rows)} setting(s) of {len({r['algorithm'] for r in rows})} algorithm(s) "
            "(accuracy up, p95 latency down, uplink bytes down):\n"
            + _table(["algorithm", "setting", "cloud share", "accuracy", "p95 ms", "uplink B"], body))
