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


def format_table(header: list[str], rows: list[dict], drop=FIXED_BACK, digits: int = 4, numbered: bool = True) -> str:
    """A plain-text table of the selected leaderboard (numbers rounded for reading; the CSVs keep them whole)."""
    cols = [h for h in header if h not in drop]

    def cell(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return _fmt(v)
        if isinstance(v, bool) or (isinstance(v, str) and not _isnum(v)):
            return _fmt(v)
        if math.isnan(f):
            return ""
        return f"{f:.0f}" if abs(f) >= 1000 else f"{f:.{digits}g}"

    body = [[str(i) if numbered else "-"] + [cell(r.get(c)) for c in cols] for i, r in enumerate(rows, 1)]
    head = ["rank", *cols]
    widths = [max(len(h), *(len(b[j]) for b in body)) if body else len(h) for j, h in enumerate(head)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |", line]
    for b in body:
        out.append("| " + " | ".join(v.rjust(w) if j and _isnum(v) else v.ljust(w)
                                     for j, (v, w) in enumerate(zip(b, widths))) + " |")
    out.append(line)
    return "\n".join(out)


def _isnum(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
