"""Ianvs-format leaderboards: ``rank/all_rank.csv`` and ``rank/selected_rank.csv``, and the printed table.

Columns and order follow Ianvs: ``rank, algorithm, <metrics>, paradigm, <module types>, <hyperparameters>, time,
url``, space-separated, module columns holding module names, ``url`` the test case's output folder. Differences,
on purpose (listed in docs/runner.md): metric columns keep testenv.yaml's order (Ianvs's comes from a set); rows
of earlier runs are merged by ``url`` instead of piling up as duplicates; failed cases are left out and listed
separately; an upper-bound policy (Oracle) is marked in its module cell.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

UPPER_BOUND_MARK = " (upper bound: uses labels)"


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return repr(v)
    return str(v)


def case_row(record: dict) -> dict:
    """One leaderboard row from a finished test case's record."""
    row = {"algorithm": record["algorithm"], **record["metrics"], "paradigm": record["paradigm"]}
    for mtype, m in record["modules"].items():
        row[mtype] = m["name"] + (UPPER_BOUND_MARK if mtype == "hard_example_mining" and record.get("upper_bound")
                                  else "")
    row.update(record["hyperparameters"])
    row["time"] = record["finished"]
    row["url"] = record["output_dir"]
    return row


def _header(rows: list[dict], metric_names: list[str]) -> list[str]:
    modules, hps = [], []
    for r in rows:
        for k in r.get("_module_types", []):
            if k not in modules:
                modules.append(k)
        for k in r.get("_hp_names", []):
            if k not in hps:
                hps.append(k)
    return ["algorithm", *metric_names, "paradigm", *modules, *hps, "time", "url"]


def sort_rows(rows: list[dict], sort_by: list[tuple[str, str]], metric_names: list[str]) -> list[dict]:
    """Stable multi-key sort; NaN and missing values last, as pandas does."""
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
    if not path.is_file():
        return [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=" ")
        rows = list(reader)
    if not rows:
        return [], []
    header = rows[0]
    return header, [dict(zip(header, r)) for r in rows[1:]]


def write_rank_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=" ", lineterminator="\n")
        w.writerow(["rank", *header])
        for i, r in enumerate(rows, 1):
            w.writerow([i, *(_fmt(r.get(h)) for h in header)])
    tmp.replace(path)


def build_rank(records: list[dict], rank, rank_dir: Path, metric_names: list[str]) -> dict[str, list]:
    """Write the CSVs the rank's save_mode asks for; returns {"header": selected header, "rows": selected rows}."""
    rows = []
    for rec in records:
        r = case_row(rec)
        r["_module_types"] = list(rec["modules"])
        r["_hp_names"] = list(rec["hyperparameters"])
        rows.append(r)
    all_header = _header(rows, metric_names)
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
        return available if sel == ["all"] else [s for s in sel if s in available]

    modules = [h for h in all_header if h in {m for r in all_rows for m in r.get("_module_types", [])}]
    hp_names = [h for h in all_header if h in {m for r in all_rows for m in r.get("_hp_names", [])}]
    sel_header = ["algorithm", *pick(rank.metrics, metric_names), "paradigm", *pick(rank.modules, modules),
                  *pick(rank.hyperparameters, hp_names), "time", "url"]
    sel_rows, seen = [], set()
    for r in all_rows:
        if rank.paradigms != ["all"] and r.get("paradigm") not in rank.paradigms:
            continue
        sig = tuple(_fmt(r.get(h)) for h in sel_header[:-2])
        if sig in seen:  # Ianvs drops duplicates over all but time and url
            continue
        seen.add(sig)
        sel_rows.append(r)
    if rank.save_mode in ("selected_and_all", "all_only"):
        write_rank_csv(rank_dir / "all_rank.csv", all_header, all_rows)
    if rank.save_mode in ("selected_and_all", "selected_only"):
        write_rank_csv(rank_dir / "selected_rank.csv", sel_header, sel_rows)
    return {"header": sel_header, "rows": sel_rows}


def format_table(header: list[str], rows: list[dict], drop=("time", "url"), digits: int = 4) -> str:
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

    body = [[str(i)] + [cell(r.get(c)) for c in cols] for i, r in enumerate(rows, 1)]
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
