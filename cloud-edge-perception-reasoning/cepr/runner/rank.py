"""Ianvs-format leaderboards: ``rank/all_rank.csv`` and ``rank/selected_rank.csv``, and the printed table.

The CSVs are what Ianvs 0.1.0 writes (pandas ``to_csv``), so a script that reads one runner's reads the other's:

* comma-separated, header ``rank, algorithm, <metrics>, paradigm, <module types>, <hyperparameters>, time, url``;
* ``rank`` counts from 1; module columns hold module names; a hyperparameter column is named
  ``{module type}-{hyperparameter}`` (e.g. ``hard_example_mining-threshold``) and holds ``str(value)``;
* NaN and missing values are empty cells; ``time`` is the case's end, ``%Y-%m-%d %H:%M:%S``;
* ``url`` is the case's output folder as Ianvs spells it: ``<workspace as written>/<job>/<algorithm>/<case id>``;
* ``selected_rank.csv`` has exactly the columns ``selected_dataitem`` lists (``["all"]`` = every one), in that
  order, and drops rows that repeat all but ``time`` and ``url``.

Differences, on purpose (docs/runner.md), none of which changes the format: ``all_rank.csv``'s metric columns keep
testenv.yaml's order (Ianvs's come out of a set); earlier runs' rows are merged by ``url`` instead of piling up
as duplicates; failed cases are left out (Ianvs stops the job at the first failure).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

FIXED_FRONT = ("rank", "algorithm")
FIXED_BACK = ("time", "url")


def hp_column(module_type: str, name: str) -> str:
    """Ianvs's column name for a module hyperparameter."""
    return f"{module_type}-{name}"


def case_hyperparameters(modules: dict) -> dict[str, str]:
    """``{module type}-{hyperparameter}: str(value)`` over a case's modules, in module then listing order, as
    Ianvs's ``Rank._get_algorithm_hyperparameters``."""
    out = {}
    for mtype, m in modules.items():
        for name, value in (m.get("hyperparameters") or {}).items():
            out[hp_column(mtype, name)] = str(value)
    return out


def case_url(workspace: str, job: str, algorithm: str, case_id: str) -> str:
    """The case folder as Ianvs writes it in ``url``: joined onto the workspace exactly as the YAML (or
    ``--workspace``) spells it, so ``./workspace`` gives a relative url."""
    return os.path.join(workspace, job, algorithm, case_id)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def case_row(record: dict) -> dict:
    """One leaderboard row from a finished test case's record."""
    row = {"algorithm": record["algorithm"], **record["metrics"], "paradigm": record["paradigm"]}
    for mtype, m in record["modules"].items():
        row[mtype] = m["name"]
    row.update(case_hyperparameters(record["modules"]))
    row["time"] = record["finished"]
    row["url"] = record.get("url") or record["output_dir"]
    return row


def _union(lists) -> list[str]:
    out = []
    for names in lists:
        for n in names:
            if n not in out:
                out.append(n)
    return out


def sort_rows(rows: list[dict], sort_by: list[tuple[str, str]], metric_names: list[str]) -> list[dict]:
    """Stable multi-key sort over the metrics of this run; NaN and missing values last, as pandas does."""
    out = list(rows)
    for metric, order in reversed([(m, o) for m, o in sort_by if m in metric_names]):
        def key(r, m=metric, order=order):
            v = r.get(m)
            try:
                v = float(v)
            except (TypeError, ValueError):
                return (1, 0.0)
            return (1, 0.0) if math.isnan(v) else (0, v if order == "ascend" else -v)
        out.sort(key=key)
    return out


def read_rank_csv(path: Path) -> tuple[list[str], list[dict]]:
    """Header and rows of an Ianvs-format rank CSV; ([], []) when absent or not in that format."""
    if not path.is_file():
        return [], []
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return [], []
    header = rows[0]
    if header[:1] != ["rank"] or not set(FIXED_BACK) <= set(header):
        log.warning("%s is not an Ianvs-format rank file (comma-separated, rank ... time,url): its rows are not "
                    "merged and the file is rewritten", path)
        return [], []
    return header, [dict(zip(header, r)) for r in rows[1:]]


def write_rank_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")  # pandas' to_csv: comma, minimal quoting, "\n"
        w.writerow(["rank", *header])
        for i, r in enumerate(rows, 1):
            w.writerow([i, *(_fmt(r.get(h)) for h in header)])
    tmp.replace(path)


def build_rank(records: list[dict], rank, rank_dir: Path, metric_names: list[str]) -> dict[str, list]:
    """Write the CSVs the rank's save_mode asks for; returns {"header": selected header, "rows": selected rows}.

    ``records``: the finished cases of this run, each with ``url`` set (see :func:`case_url`)."""
    rows = [case_row(rec) for rec in records]
    modules = _union(rec["modules"] for rec in records)
    hp_names = _union(case_hyperparameters(rec["modules"]) for rec in records)
    all_header = ["algorithm", *metric_names, "paradigm", *modules, *hp_names, *FIXED_BACK]
    # merge earlier runs' rows (same columns where they overlap), replacing those of re-run cases
    _, old_rows = read_rank_csv(rank_dir / "all_rank.csv")
    urls = {r["url"] for r in rows}
    for r in old_rows:
        if r.get("url") not in urls:
            r.pop("rank", None)
            rows.append(r)
            for k in r:
                if k not in all_header:
                    all_header.insert(all_header.index("time"), k)
    all_rows = sort_rows(rows, rank.sort_by, metric_names)

    def pick(sel, available):
        return list(available) if sel == ["all"] else list(sel)  # Ianvs keeps a listed column even when empty

    sel_header = ["algorithm", *pick(rank.metrics, metric_names), "paradigm", *pick(rank.modules, modules),
                  *pick(rank.hyperparameters, hp_names), *FIXED_BACK]
    sel_rows, seen = [], set()
    for r in all_rows:
        sig = tuple(_fmt(r.get(h)) for h in sel_header[:-2])
        if sig in seen:  # Ianvs drops duplicates over all but time and url
            continue
        seen.add(sig)
        if rank.paradigms != ["all"] and r.get("paradigm") not in rank.paradigms:
            continue
        sel_rows.append(r)
    if rank.save_mode in ("selected_and_all", "all_only"):
        write_rank_csv(rank_dir / "all_rank.csv", all_header, all_rows)
    if rank.save_mode in ("selected_and_all", "selected_only"):
        write_rank_csv(rank_dir / "selected_rank.csv", sel_header, sel_rows)
    return {"header": sel_header, "rows": sel_rows}


# the printed leaderboard fits this many columns; the CSVs keep every column whole
TABLE_WIDTH = 120
# short headings for the printed table (the CSVs keep the metric names)
HEADINGS = {"hard_example_mining": "policy", "accuracy": "accuracy [95% CI]", "latency_p50": "p50 ms",
            "latency_p95": "p95 ms", "latency_p99": "p99 ms", "latency_mean": "mean ms", "safety_recall": "safety",
            "edge_ratio": "edge", "throughput": "samples/s", "uplink_bytes": "up B", "downlink_bytes": "down B",
            "bandwidth_saving": "bw saved", "cloud_tokens": "tokens", "cloud_fallback": "fallback",
            "cloud_error": "error", "ttft_mean": "ttft ms", "spec_acceptance": "spec acc"}
# columns that describe the data set rather than the case: printed once above the table when every row agrees
_CONSTANT_FIRST = ("dataset", "synthetic", "n")


def _short(v, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _fmt(v)
    if isinstance(v, bool) or (isinstance(v, str) and not _isnum(v)):
        return _fmt(v)
    if math.isnan(f):
        return ""
    if abs(f) >= 1000:
        return f"{f:,.0f}"
    return f"{f:.0f}" if f == int(f) and abs(f) >= 10 else f"{f:.{digits}g}"


def leaderboard(header: list[str], parts: list[list[dict]], module_types=(), sort_by=(),
                width: int = TABLE_WIDTH, marks: dict[int, str] | None = None,
                constants: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """The printed leaderboard, at most ``width`` characters wide, as one table per part (the ranked rows, then
    the bounds, unnumbered) with the same columns: rank, algorithm, the selected module columns (a policy's name
    up to its first parenthesis), the hyperparameters that are set (one ``setting`` cell), then the metrics, the
    ones ``sort_by`` ranks on first and an accuracy with its ``_ci_low``/``_ci_high`` columns as one
    ``0.873 [0.81, 0.92]`` cell, as many as fit. Returns the tables and the metric columns left out (the CSVs keep
    them). Data-set columns on which the rows differ come right after the sort columns. ``marks``: id() of a row -> a word such as ``DEGRADED``, shown in a ``status`` column. ``constants``:
    columns every row agrees on, which the caller says above the table; they are left out here."""
    marks, constants = marks or {}, constants or {}
    rows = [r for part in parts for r in part]
    def varies(h) -> bool:
        return len({_fmt(r.get(h)) for r in rows}) > 1

    # module and hyperparameter columns that are the same in every row tell no row from another: left out
    modules = [h for h in header if h in set(module_types) and (varies(h) or h == "hard_example_mining")]
    hp_all = [h for h in header if "-" in h and h.split("-", 1)[0] in set(module_types)]
    hp_cols = [h for h in hp_all if varies(h)]
    skip = {*FIXED_FRONT, *FIXED_BACK, "paradigm", *module_types, *hp_all, *constants}
    metric_cols = [h for h in header if h not in skip]
    # the columns that decide the ranking first, then the rest in the selection's order
    first = [m for m, _ in sort_by if m in metric_cols]
    first += [m for m in _CONSTANT_FIRST if m in metric_cols and m not in first]  # rows on different data sets
    ordered = first + [m for m in metric_cols if m not in first]
    merged = {m for m in ordered if f"{m}_ci_low" in metric_cols and f"{m}_ci_high" in metric_cols}
    ordered = [m for m in ordered if not any(m in (f"{x}_ci_low", f"{x}_ci_high") for x in merged)]

    def setting(r) -> str:
        parts_ = [f"{h.split('-', 1)[1]} {_short(r.get(h))}" for h in hp_cols if _short(r.get(h)) != ""]
        return ", ".join(parts_) or "-"

    def ci(v) -> str:
        try:
            return f"{float(v):.2f}"
        except (TypeError, ValueError):
            return "?"

    def metric(r, m) -> str:
        v = _short(r.get(m))
        if m in merged and v:
            v += f" [{ci(r.get(f'{m}_ci_low'))}, {ci(r.get(f'{m}_ci_high'))}]"
        return v

    cols: list[tuple[str, callable]] = [("rank", None)]
    if marks:
        cols.append(("status", lambda r: marks.get(id(r), "")))
    cols.append(("algorithm", lambda r: str(r.get("algorithm", ""))))
    cols += [(HEADINGS.get(m, m), lambda r, m=m: _fmt(r.get(m)).split(" (")[0]) for m in modules]
    if hp_cols:
        cols.append(("setting", setting))
    text = {h for h, _ in cols if h != "rank"}

    def widths(cs) -> list[int]:
        out = []
        for h, f in cs:
            if f is None:
                out.append(max(len(h), len(str(max((len(p) for p in parts), default=0)))))
            else:
                out.append(max([len(h), *(len(f(r)) for r in rows)]))
        return out

    # the sort_by columns always show: the text columns give up width to them if they must (cells cut with "~")
    caps: dict[str, int] = {}
    sort_cols = {m for m, _ in sort_by}
    required = [(HEADINGS.get(m, m), lambda r, m=m: metric(r, m)) for m in ordered if m in sort_cols]

    def total(cs) -> int:
        return 1 + sum(min(w, caps.get(h, w)) + 3 for (h, _), w in zip(cs, widths(cs)))

    for h, floor in (("setting", 16), ("algorithm", 16)):
        over = total(cols + required) - width
        w = dict(zip((c[0] for c in cols), widths(cols))).get(h)
        if over > 0 and w is not None:
            caps[h] = max(floor, min(w, w - over))
    cols = cols + required
    left_out = []
    for m in ordered:
        if any(h == HEADINGS.get(m, m) for h, _ in cols):
            continue
        cand = cols + [(HEADINGS.get(m, m), lambda r, m=m: metric(r, m))]
        if total(cand) <= width:
            cols = cand
        else:
            left_out.append(m)
    ws = [min(w, caps.get(h, w)) for (h, _), w in zip(cols, widths(cols))]

    def fit(v: str, w: int) -> str:
        return v if len(v) <= w else v[: w - 1] + "~"

    line = "+" + "+".join("-" * (w + 2) for w in ws) + "+"
    tables = []
    for k, part in enumerate(parts):
        out = [line, "| " + " | ".join(h.ljust(w) for (h, _), w in zip(cols, ws)) + " |", line]
        for i, r in enumerate(part, 1):
            cells = []
            for (h, f), w in zip(cols, ws):
                v = fit((str(i) if k == 0 else "-") if f is None else f(r), w)
                cells.append(v.ljust(w) if h in text else v.rjust(w))
            out.append("| " + " | ".join(cells) + " |")
        out.append(line)
        tables.append("\n".join(out))
    return tables, left_out


def constant_columns(header: list[str], rows: list[dict]) -> dict[str, str]:
    """Data-set columns (``dataset``, ``synthetic``, ``n``) on which every row agrees: said once above the table."""
    out = {}
    for h in _CONSTANT_FIRST:
        if h in header and rows:
            vals = {_fmt(r.get(h)) for r in rows}
            if len(vals) == 1:
                out[h] = vals.pop()
    return out


def _isnum(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
