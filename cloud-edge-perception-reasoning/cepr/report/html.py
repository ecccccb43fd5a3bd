"""``cepr report``: one self-contained HTML page (figures inlined as base64 PNG, no script, no network) and a
markdown summary for a job's workspace folder.

Sections (ids in the page): ``leaderboard`` (the rank CSV), ``call-performance`` (accuracy against cloud share:
the cases' own points with Random and Oracle references, and every ``cepr sweep`` result found with its APGR /
CPT table), ``latency`` (per-case CDFs of end-to-end latency), ``bytes`` (uplink/downlink per sample),
``per-task`` (accuracy per task with 95% Wilson intervals), ``examples`` (frames with the recomputed edge mask,
edge answer, cloud answer, truth) and ``notes`` (what was left out and why). docs/report.md describes each.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cepr.bench.stream import FIGURE, find_stream_results, report_rows
from cepr.errors import CeprError
from cepr.metrics.joint import wilson_interval
from cepr.report import examples as ex_mod
from cepr.report import plots
from cepr.report.workspace import Case, Workspace, load_workspace
from cepr.sweep import curves
from cepr.sweep.curves import oracle_curve

log = logging.getLogger(__name__)

HIDDEN_COLUMNS = ("time", "url", "paradigm")  # in the CSVs, not worth a column on the page
SECTIONS = (("leaderboard", "Leaderboard"), ("call-performance", "Accuracy against cloud share"),
            ("latency", "Latency"), ("bytes", "Bytes per sample"), ("per-task", "Accuracy per task"),
            ("examples", "Example frames"), ("notes", "Notes"))
MODULE_TYPES = ("dataset_processor", "edgemodel", "cloudmodel", "hard_example_mining")
TASK_ORDER = ("path_hazard", "action", "people_count", "nearest_obstacle", "traversable")


@dataclass
class Report:
    html: Path
    markdown: Path
    figures: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ---- formatting ------------------------------------------------------------------------------------------------

def fmt(v, column: str = "") -> str:
    """A cell: numbers rounded for reading (the CSV keeps them whole), missing and NaN as an en dash."""
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return "–"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if isinstance(v, bool):
        return str(v)
    if math.isnan(f):
        return "–"
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if column in ("rank", "n") or column.startswith("n_") or (f.is_integer() and abs(f) >= 100):
        return f"{f:,.0f}"
    if abs(f) >= 1000:
        return f"{f:,.0f}"
    if abs(f) >= 10:
        return f"{f:.1f}"
    return f"{f:.3f}"


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _ci(k: int, n: int) -> str:
    if n == 0:
        return "–"
    lo, hi = wilson_interval(k, n)
    return f"{k / n:.3f} [{lo:.2f}, {hi:.2f}]"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


def _numeric(x) -> bool:
    """A cell read as a number (right-aligned): digits with separators, or the missing-value dash."""
    t = str(x).replace(",", "").replace("–", "").strip()
    if not t:
        return True
    try:
        float(t.split(" ")[0])
    except ValueError:
        return False
    return True


def _html_table(header: list[str], rows: list[list[str]], classes: list[str] | None = None, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h).replace('_', '_<wbr>').replace('-', '-<wbr>')}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        rc = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{rc}>" + "".join(f"<td>{_e(x)}</td>" if _numeric(x) else f'<td class="t">{_e(x)}</td>'
                                          for x in r) + "</tr>")
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>' + "".join(body)
            + "</tbody></table></div>")


# ---- the data behind each section --------------------------------------------------------------------------------

def _tasks(cases: list[Case]) -> list[str]:
    seen = {t for c in cases for t in c.per_task()}
    return [t for t in TASK_ORDER if t in seen] + sorted(seen - set(TASK_ORDER))


def _share_acc(c: Case) -> tuple[float, float, float, float]:
    corr = c.correct()
    corr = corr[~np.isnan(corr)]
    if corr.size == 0:
        return c.cloud_share(), math.nan, math.nan, math.nan
    k, n = int(corr.sum()), int(corr.size)
    lo, hi = wilson_interval(k, n)
    return c.cloud_share(), k / n, lo, hi


def _oracle_from_cases(cases: list[Case]) -> tuple[list | None, str]:
    """The Oracle curve from a case that sent every sample (both answers known per sample), else None."""
    for c in cases:
        s = c.samples
        if s and all(x.get("cloud") is not None and x.get("truth") is not None for x in s):
            edge = [(x.get("edge") or {}).get("answer") == x["truth"] for x in s]
            cloud = [x.get("answer") == x["truth"] for x in s]
            return oracle_curve(edge, cloud), c.label
    return None, ""


def _policy_curves(ws: Workspace, acc_w: float, acc_s: float) -> dict[str, dict]:
    """Per algorithm of the job (deployable ones, EdgeOnly and CloudOnly aside): its settings (test cases) joined
    into a call-performance curve, with APGR / CPT as cepr sweep computes them."""
    by: dict[str, list[tuple[float, float]]] = {}
    for c in ws.cases:
        if c.upper_bound or c.policy in ("EdgeOnly", "CloudOnly"):
            continue
        share, acc, _, _ = _share_acc(c)
        if math.isnan(acc) or math.isnan(share):
            continue
        by.setdefault(c.algorithm, []).append((share, acc))
    out = {}
    for name, pts in by.items():
        pts_closed = curves.curve([p[0] for p in pts], [p[1] for p in pts], acc_w, acc_s)
        out[name] = {"settings": len(pts), **curves.summary(pts_closed, acc_w, acc_s)}
    return out


# ---- the report ----------------------------------------------------------------------------------------------------

class _Page:
    def __init__(self, out: Path):
        self.out = out
        self.figdir = out / "figures"
        self.html: list[str] = []
        self.md: list[str] = []
        self.figures: list[Path] = []
        self.warnings: list[str] = []

    def figure(self, name: str, alt: str, make) -> None:
        """Render one figure; a failure is said in the page (and returned as a warning), never fatal."""
        try:
            data = make()
        except CeprError:
            raise
        except Exception as e:  # noqa: BLE001 - one broken figure must not lose the rest of the report
            msg = f"figure {name} could not be drawn: {type(e).__name__}: {e}"
            log.warning("report: %s", msg)
            self.warnings.append(msg)
            self.html.append(f'<p class="warn">{_e(msg)}</p>')
            self.md.append(f"> {msg}\n")
            return
        self.figdir.mkdir(parents=True, exist_ok=True)
        p = self.figdir / f"{name}.png"
        p.write_bytes(data)
        self.figures.append(p)
        b64 = base64.b64encode(data).decode("ascii")
        self.html.append(f'<figure><img class="fig" id="fig-{_e(name)}" alt="{_e(alt)}" '
                         f'src="data:image/png;base64,{b64}"><figcaption>{_e(alt)}</figcaption></figure>')
        self.md.append(f"![{alt}](figures/{name}.png)\n")

    def section(self, sid: str, title: str) -> None:
        if self.html:
            self.html.append("</section>")
        self.html.append(f'<section id="{sid}"><h2>{_e(title)}</h2>')
        self.md.append(f"\n## {title}\n")

    def para(self, text: str, md: str | None = None, cls: str = "") -> None:
        c = f' class="{cls}"' if cls else ""
        self.html.append(f"<p{c}>{_e(text)}</p>")
        self.md.append((text if md is None else md) + "\n")

    def table(self, header, rows, classes=None, cls: str = "") -> None:
        self.html.append(_html_table(header, rows, classes, cls))
        self.md.append(_md_table(header, rows) + "\n")


def write_report(workspace: str | Path, out: str | Path | None = None, examples: int = 4,
                 sweeps: list[Path] | None = None) -> Report:
    """Write ``report.html``, ``report.md`` and ``figures/*.png`` for a job folder into ``out`` (default
    ``<job folder>/report``); returns their paths. ``examples``: how many example frames (0: none)."""
    if examples < 0:
        raise CeprError(f"--examples must be >= 0, got {examples}")
    ws = load_workspace(workspace, sweeps)
    out = Path(out) if out is not None else ws.dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CeprError(f"cannot write the report into {out}: {e.strerror or type(e).__name__}") from None
    from cepr.report import plots  # matplotlib: only now

    page = _Page(out)
    cols = dict(zip([c.id for c in ws.cases], plots.colours(len(ws.cases))))
    _leaderboard(page, ws)
    _call_performance(page, ws, cols)
    for sid, make in (("latency", _latency), ("bytes", _bytes), ("per-task", _per_task)):
        if ws.cases:
            make(page, ws, cols)
        else:
            page.section(sid, dict(SECTIONS)[sid])
            page.para("No finished test case in this workspace.")
    _examples(page, ws, examples)
    _stream(page, ws)
    _notes(page, ws)
    page.html.append("</section>")
    title = f"cepr report: {ws.job}"
    doc = _document(title, _header(ws), "\n".join(page.html))
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(doc, encoding="utf-8")
    md_path.write_text(f"# {title}\n\n{_header_md(ws)}\n" + "\n".join(page.md) + "\n", encoding="utf-8")
    return Report(html_path, md_path, page.figures, page.warnings)


# ---- sections --------------------------------------------------------------------------------------------------

def _first_record(ws: Workspace) -> dict:
    return (ws.cases or ws.other_cases or [Case(ws.dir, {}, [])])[0].record


def _dataset(ws: Workspace) -> tuple[str, bool | None]:
    m = _first_record(ws).get("metrics") or {}
    fp = (_first_record(ws).get("fingerprints") or {}).get("data") or {}
    name = m.get("dataset") or fp.get("name") or "?"
    syn = m.get("synthetic", fp.get("synthetic"))
    return str(name), (None if syn is None else bool(syn))


def _meta(ws: Workspace) -> list[tuple[str, str]]:
    rec = _first_record(ws)
    name, syn = _dataset(ws)
    ns = sorted({len(c.samples) for c in ws.cases})
    git = rec.get("git") or {}
    commit = (git.get("commit") or "")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
    return [("workspace", str(ws.dir)), ("job file", str(rec.get("job_file") or "–")),
            ("data set", name + ("  (SYNTHETIC data)" if syn else "  (real data)" if syn is False else "")),
            ("samples per case", (", ".join(map(str, ns)) or "–")
             + (f" (--limit {rec['limit']})" if rec.get("limit") else "")),
            ("test cases", f"{len(ws.cases)} on the leaderboard" + (f", {len(ws.other_cases)} other finished"
                                                                     if ws.other_cases else "")
             + (f", {len(ws.failed)} not finished" if ws.failed else "")),
            ("cases run", (f"{min((c.record.get('started') or '~') for c in ws.cases) if ws.cases else '–'} to "
                          f"{max((c.record.get('finished') or '') for c in ws.cases) if ws.cases else '–'}")),
            ("code", f"cepr {(rec.get('versions') or {}).get('cepr', '?')}, git {commit or '–'}"),
            ("report made", time.strftime("%Y-%m-%d %H:%M:%S"))]


def _header(ws: Workspace) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in _meta(ws))
    nav = " · ".join(f'<a href="#{sid}">{_e(t)}</a>' for sid, t in SECTIONS)
    _, syn = _dataset(ws)
    warn = ('<p class="warn">SYNTHETIC data: these numbers describe the generated test set, not camera '
            "frames.</p>") if syn else ""
    return f'<table class="meta">{rows}</table>{warn}<nav>{nav}</nav>'


def _header_md(ws: Workspace) -> str:
    return "\n".join(f"- **{k}**: {v}" for k, v in _meta(ws)) + "\n\nThe page with the figures: `report.html`.\n"


def _leaderboard(page: _Page, ws: Workspace) -> None:
    page.section("leaderboard", "Leaderboard")
    if not ws.rank_rows:
        page.para("No rank CSV in this workspace (rank/selected_rank.csv): the finished cases below are sorted by "
                  "accuracy.")
        header = ["case", "policy", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "edge_ratio",
                  "latency_p95", "uplink_bytes"]
        rows = [[c.label, c.policy, *(fmt(c.metric(m), m) for m in header[2:])] for c in ws.cases]
        page.table(["#", *header], [[str(i), *r] for i, r in enumerate(rows, 1)], cls="rank")
        return
    header = [h for h in ws.rank_header if h not in HIDDEN_COLUMNS]
    same = {}
    if len(ws.rank_rows) > 1:  # a column with one value in every row is said once, above the table
        for h in header[2:]:
            vals = {str(r.get(h, "")) for r in ws.rank_rows}
            if len(vals) == 1:
                same[h] = fmt(next(iter(vals)), h)
    header = [h for h in header if h not in same]
    rows, classes, bounds = [], [], []
    for r in ws.rank_rows:  # the CSV's order, its bounds last (as cepr run prints the leaderboard)
        case = ws.case_of(r)
        bound = case is not None and case.upper_bound or "upper bound" in str(r.get("hard_example_mining", ""))
        row = [(fmt(r.get(h), h), "–" if r.get(h) in (None, "") else str(r.get(h))) for h in header]
        if bound:
            bounds.append(row)
        else:
            rows.append(row)
            classes.append("")
    rows += bounds
    raw = [[c[1] for c in r] for r in rows]  # hyperparameters as the CSV spells them (6, not 6.000)
    rows = [[c[0] for c in r] for r in rows]
    classes += ["bound"] * len(bounds)
    page.para(f"From {ws.rank_file.relative_to(ws.dir)} ({len(ws.rank_rows)} rows, in its order: the job's "
              "rank sort_by; rank is the CSV's). Rows marked 'bound', last, read the labels (the Oracle): a bound, "
              "not a deployable policy. "
              "Numbers are rounded for reading; the CSV keeps them whole. – = not measured or undefined.")
    if same:
        page.para("The same in every row: " + "; ".join(f"{k} = {v}" for k, v in same.items()) + ".")
    # two tables side by side in the CSV's row order: the metrics, then what each row ran (module names and
    # hyperparameters), so a wide job (many metrics, many grid columns) still fits the page
    setting = [i for i, h in enumerate(header) if h in MODULE_TYPES or h.split("-", 1)[0] in MODULE_TYPES]
    keys = [i for i, h in enumerate(header) if h in ("rank", "algorithm")]
    metric_cols = [i for i in range(len(header)) if i not in setting]
    page.html.append(_html_table([header[i] for i in metric_cols], [[r[i] for i in metric_cols] for r in rows],
                                 classes, cls="rank"))
    md_rows = [[raw_r[i] if i in setting else r[i] for i in range(len(header))] for r, raw_r in zip(rows, raw)]
    for r, c in zip(md_rows, classes):
        if c == "bound" and "algorithm" in header:
            r[header.index("algorithm")] += " (bound)"
    page.md.append(_md_table(header, md_rows) + "\n")
    if setting:
        shown = [header[i].split("-", 1)[1] if "-" in header[i] else header[i] for i in keys + setting]
        page.html.append("<h3>What each row ran</h3>")
        page.html.append(_html_table(shown, [[r[i] for i in keys + setting] for r in raw], classes, cls="rank"))
        page.html.append('<p class="muted">Module and hyperparameter columns of the same CSV (a hyperparameter by '
                         "its name alone; the CSV says '&lt;module type&gt;-&lt;name&gt;').</p>")


def _call_performance(page: _Page, ws: Workspace, cols: dict) -> None:
    page.section("call-performance", "Accuracy against cloud share")
    points = []
    for c in ws.cases:
        share, acc, lo, hi = _share_acc(c)
        points.append({"label": c.label, "share": share, "accuracy": acc, "lo": lo, "hi": hi,
                       "colour": cols[c.id], "bound": c.upper_bound})
    edge, cloud = ws.reference("EdgeOnly"), ws.reference("CloudOnly")
    random_line = None
    acc_w = acc_s = math.nan
    if edge is not None and cloud is not None:
        acc_w, acc_s = _share_acc(edge)[1], _share_acc(cloud)[1]
        random_line = [(0.0, acc_w), (1.0, acc_s)]
    oracle, oracle_src = _oracle_from_cases(ws.cases)
    per_policy = {}
    if random_line and not (math.isnan(acc_w) or math.isnan(acc_s)):
        per_policy = _policy_curves(ws, acc_w, acc_s)
    if not ws.cases:
        page.para("No finished test case in this workspace: only the cepr sweep results below.")
    else:
        page.para("The job's own test cases: one point per case (cloud share = share of samples its dispatcher "
                  "sent; accuracy of the final answers, with the 95% Wilson interval). "
                  + (f"Random: the straight line from {edge.label} to {cloud.label} (mixing the two at random). "
                     if random_line else "Random: not drawn (the job has no EdgeOnly and CloudOnly case). ")
                  + (f"Oracle: from the per-sample edge and cloud answers of {oracle_src} (edge-wrong samples sent "
                     "first; it reads the labels). " if oracle else "Oracle: not drawn (no case sent every "
                                                                  "sample). ")
                  + "Grey lines join the settings (test cases) of one algorithm.")
        page.figure("call_performance_cases", "Accuracy against cloud share, the job's test cases",
                    lambda: plots.call_performance(points, random_line, oracle,
                                                   {k: v["points"] for k, v in per_policy.items()}))
    if per_policy and acc_s <= acc_w:
        page.para(f"APGR and CPT are undefined here (–): the cloud-only accuracy ({acc_s:.3f}) is not above the "
                  f"edge-only accuracy ({acc_w:.3f}) on these samples, so there is no gap for a router to recover.",
                  cls="warn")
    if per_policy:
        page.para(f"APGR and CPT from the job's own settings (edge-only accuracy {acc_w:.3f}, cloud-only "
                  f"{acc_s:.3f}): a policy with one or two settings gives a coarse curve, so these are far from "
                  "its sweep's; `cepr sweep` evaluates a grid (below, when one was run).")
        rows = [[k, str(v["settings"]), fmt(v["apgr"]), fmt(v["cpt50"]), fmt(v["cpt80"])]
                for k, v in sorted(per_policy.items(), key=lambda kv: -(kv[1]["apgr"] if kv[1]["apgr"] is not None
                                                                       and not math.isnan(kv[1]["apgr"]) else -9))]
        page.table(["algorithm", "settings", "APGR", "CPT(50%)", "CPT(80%)"], rows)
    if not ws.sweeps:
        page.para("No cepr sweep result in this workspace (sweep-cache/<key>/sweep/sweep.json). Run `cepr sweep "
                  "-f <job yaml>` for the curves over a grid of settings with APGR, CPT and the Pareto front, "
                  "then this report again (or pass --sweep PATH).", cls="muted")
    models = {k: v for c in ws.cases for k, v in ((c.record.get("fingerprints") or {}).get("models") or {}).items()}
    for i, sw in enumerate(ws.sweeps, 1):
        _sweep(page, ws, sw, i, models)


def _sweep(page: _Page, ws: Workspace, sw, i: int, case_models: dict) -> None:
    doc = sw.doc
    cache = doc.get("cache") or {}
    rel = sw.path.relative_to(ws.dir) if sw.path.is_relative_to(ws.dir) else sw.path
    ds = cache.get("dataset") or {}
    page.html.append(f"<h3>cepr sweep: {_e(rel)}</h3>")
    page.md.append(f"\n### cepr sweep: {rel}\n")
    text = (f"{cache.get('samples', '?')} cached samples of {ds.get('name', '?')}"
            + (" (SYNTHETIC)" if ds.get("synthetic") else "") + f", {len(doc.get('settings') or [])} settings, "
            f"made {doc.get('created', '?')}, cache key {cache.get('key', '?')}.")
    if cache.get("replicated") or cache.get("note"):
        text += f" {cache.get('note') or 'replicated'}."
    sw_models = cache.get("models") or {}
    differ = sorted(k for k in set(sw_models) & set(case_models) if sw_models[k] != case_models[k])
    if differ:
        text += (f" Made with other model files than the test cases above ({', '.join(differ)} differ): its "
                 "curves describe those models.")
    page.para(text, cls="warn" if differ else "")
    page.figure(f"sweep_{i}", f"cepr sweep call-performance curves ({rel})", lambda: plots.sweep_curves(doc))
    refs = doc.get("references") or {}
    rows = []
    for name, c in sorted((doc.get("curves") or {}).items(),  # deployable curves by APGR, bounds after them
                          key=lambda kv: (bool(kv[1].get("upper_bound")),
                                          -(kv[1].get("apgr") if kv[1].get("apgr") is not None else -9))):
        rows.append([name + (" (reads the labels)" if c.get("upper_bound") else ""), str(c.get("settings", "–")),
                     fmt(c.get("apgr")), fmt(c.get("cpt50")), fmt(c.get("cpt80"))])
    for key, title in (("random", "Random (reference)"), ("oracle", "Oracle (reference, reads the labels)")):
        r = refs.get(key) or {}
        rows.append([title, "–", fmt(r.get("apgr")), fmt(r.get("cpt50")), fmt(r.get("cpt80"))])
    page.table(["curve", "settings", "APGR", "CPT(50%)", "CPT(80%)"], rows)
    pareto = [s for s in doc.get("settings") or [] if s.get("pareto")]
    if pareto:
        page.para(f"Pareto front (accuracy up, p95 latency down, uplink bytes down): {len(pareto)} setting(s).")
        page.table(["setting", "cloud share", "accuracy", "p95 latency ms", "uplink B/sample"],
                   [[s["id"], fmt(s.get("cloud_share")), fmt(s.get("accuracy")), fmt(s.get("latency_p95")),
                     fmt(s.get("uplink_bytes"))] for s in pareto[:25]])
        if len(pareto) > 25:
            page.para(f"... and {len(pareto) - 25} more in {rel.parent / 'settings.csv'}.")


def _latency(page: _Page, ws: Workspace, cols: dict) -> None:
    page.section("latency", "Latency")
    series = [(c.label, c.latencies(), cols[c.id]) for c in ws.cases]
    page.para("Per case, the share of samples answered end to end within a given time (edge compute + cloud "
              "round trip with the modelled link, as the latency_* metrics). Dotted: 150 ms and 300 ms, and the "
              "95th percentile.")
    page.figure("latency_cdf", "End-to-end latency CDF per case", lambda: plots.latency_cdfs(series))
    rows = []
    for label, lat, _ in series:
        ok = lat[np.isfinite(lat)]
        missing = int(lat.size - ok.size)
        q = (lambda p, ok=ok: fmt(np.percentile(ok, p)) if ok.size else "–")
        rows.append([label, str(ok.size) + (f" ({missing} without a latency)" if missing else ""), q(50), q(95),
                     q(99), fmt(ok.max() if ok.size else math.nan)])
    page.table(["case", "samples", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)


def _bytes(page: _Page, ws: Workspace, cols: dict) -> None:
    page.section("bytes", "Bytes per sample")
    rows, table = [], []
    for c in ws.cases:
        up, down, sent = c.bytes("bytes_up"), c.bytes("bytes_down"), c.sent()
        up_m = float(np.mean(up)) if up.size else math.nan
        down_m = float(np.mean(down)) if down.size else math.nan
        per_req = float(np.mean(up[sent])) if sent.any() else math.nan
        rows.append((c.label, up_m, down_m, per_req, cols[c.id]))
        table.append([c.label, f"{int(sent.sum())} of {len(sent)}", fmt(up_m), fmt(per_req), fmt(down_m),
                      fmt(c.metric("bandwidth_saving"))])
    page.para("Mean bytes per sample over all samples (a sample kept on the edge counts 0), as the uplink_bytes "
              "and downlink_bytes metrics; beside each bar, the mean per request actually sent.")
    page.figure("bytes_per_sample", "Uplink and downlink bytes per sample per case",
                lambda: plots.bytes_per_sample(rows))
    page.table(["case", "sent to the cloud", "uplink B/sample", "uplink B/request", "downlink B/sample",
                "bandwidth saving"], table)


def _per_task(page: _Page, ws: Workspace, cols: dict) -> None:
    page.section("per-task", "Accuracy per task")
    tasks = _tasks(ws.cases)
    series = [(c.label, c.per_task(), cols[c.id]) for c in ws.cases]
    if not tasks:
        page.para("No sample carries its truth (the ground truth was not known): no per-task accuracy.")
        return
    page.para("Accuracy of the final answers per task, with the 95% Wilson interval (n per task in the table): "
              "where two cases' intervals overlap widely, this test set does not tell them apart on that task.")
    page.figure("per_task_accuracy", "Accuracy per task with 95% Wilson intervals",
                lambda: plots.per_task_accuracy(tasks, series))
    rows = []
    for label, per, _ in series:
        rows.append([label, *(_ci(*per[t]) + f" n={per[t][1]}" if t in per else "–" for t in tasks)])
    page.table(["case", *tasks], rows)


def _examples(page: _Page, ws: Workspace, n: int) -> None:
    page.section("examples", "Example frames")
    if n == 0:
        page.para("None asked for (--examples 0).")
        return
    exs = ex_mod.pick(ws.cases, n)
    if not exs:
        page.para("No sample with a frame path and a known truth to show.")
        return
    ex_mod.render(exs)
    src = exs[0].case
    page.para(f"{len(exs)} test samples from {src.label} (the case with the most cloud answers, so both answers "
              "are known), chosen to show each outcome in turn. The edge mask is recomputed by running the edge "
              "model named in the record on the frame again (records keep no masks). Below each: how every other "
              "case of the leaderboard routed the same sample.")
    for i, ex in enumerate(exs, 1):
        s = ex.sample
        edge, cloud = s.get("edge") or {}, s.get("cloud") or {}
        conf = edge.get("confidence")
        edge_txt = f"{edge.get('answer', '–')}" + (f" (confidence {conf:.2f})" if isinstance(conf, float) else "")
        if s.get("cloud") is None:
            cloud_txt = "not sent"
        else:
            status = cloud.get("status", "ok")
            cloud_txt = f"{cloud.get('cloud_answer', cloud.get('answer', '–'))}"
            if status != "ok":
                cloud_txt = f"{status} (the edge answer stood)"
            if cloud.get("reason"):
                cloud_txt += f" — {cloud['reason']}"
        facts = [("task", s.get("task", "–")), ("truth", s.get("truth", "–")), ("edge answer", edge_txt),
                 ("cloud answer", cloud_txt), ("outcome", ex.outcome),
                 ("frame", f"{s.get('key', '–')} (sample {s.get('index', '–')})"),
                 ("edge mask", f"{ex.mask_model}, recomputed" if ex.mask_model else "not available")]
        page.html.append(f'<div class="example"><h3>Example {i}: {_e(s.get("task", ""))} — {_e(ex.outcome)}</h3>')
        page.md.append(f"\n### Example {i}: {s.get('task', '')} — {ex.outcome}\n")
        page.html.append('<div class="ex-row"><div class="ex-img">')
        if ex.png is not None:
            name = f"example_{i}"
            page.figure(name, f"Example {i}: frame, edge mask, label ({s.get('key', '')})", lambda d=ex.png: d)
        page.html.append('</div><div class="ex-facts">')
        page.html.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>")
        page.md.append("\n".join(f"- **{k}**: {v}" for k, v in facts) + "\n")
        for note in ex.notes:
            page.para(note, cls="warn")
        if ex.routed:
            page.table(["case", "sent to the cloud", "final answer", "correct"],
                       [[lab, "yes" if sent else "no", str(ans), "–" if ok is None else ("yes" if ok else "no")]
                        for lab, sent, ans, ok in ex.routed], cls="small")
        page.html.append("</div></div></div>")


def _stream(page: _Page, ws: Workspace) -> None:
    """``cepr bench stream`` results in (or beside) the job folder: a table and their latency/queue figures."""
    found = find_stream_results(ws.dir)
    if not found:
        return
    page.section("stream", "Stream replay (cepr bench stream)")
    page.para("Sequences replayed through the edge service at a frame rate (docs/stream-bench.md): latency from "
              "capture to the final answer, accuracy against each frame's ground truth (live: the answer the robot "
              "held at each capture instant), and the cloud requests' counts.")
    page.table(*report_rows(found))
    for i, p in enumerate(found, 1):
        png = p.parent / FIGURE
        if png.is_file():
            page.figure(f"stream_{i}", f"latency, accuracy and queue depth over time ({p.parent.name})",
                        png.read_bytes)


def _notes(page: _Page, ws: Workspace) -> None:
    page.section("notes", "Notes")
    notes = []
    for rec in ws.failed:
        notes.append(f"test case {rec.get('algorithm', '?')}/{rec.get('id', '?')} ended {rec.get('status')!r}: "
                     f"{rec.get('error', 'no error recorded')} ({rec.get('output_dir')}); left out")
    for c in ws.other_cases:
        notes.append(f"test case {c.algorithm}/{c.id} finished ({c.record.get('finished', '?')}) but is not on the "
                     "leaderboard (an earlier run's, or rank CSVs from another run): left out of the figures")
    for c in ws.cases:
        if c.failed_lines:
            notes.append(f"{c.label}: {c.failed_lines} sample(s) failed and are not scored (see its record.json)")
        if c.record.get("degraded"):
            notes.append(f"{c.label} is DEGRADED: {(c.record.get('cloud') or {}).get('why', '')}")
        if c.record.get("metric_errors"):
            notes.append(f"{c.label}: metrics that failed: " + "; ".join(
                f"{k}: {v}" for k, v in c.record["metric_errors"].items()))
    notes += ws.problems + page.warnings
    if not notes:
        page.para("Nothing left out: every finished case is on the leaderboard and in every figure.")
        return
    page.html.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    page.md.append("\n".join(f"- {n}" for n in notes) + "\n")


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1320px;padding:18px 28px;color:#1d2330;background:#fff;font-size:14px;line-height:1.45}
h1{font-size:24px;margin:4px 0 10px}h2{font-size:19px;border-bottom:2px solid #d8dde6;padding-bottom:4px;
margin-top:34px}h3{font-size:15px;margin:20px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}th,td{border:1px solid #d8dde6;padding:3px 7px;
text-align:right;white-space:nowrap}th{background:#eef1f6;font-weight:600;white-space:normal;vertical-align:bottom;
text-align:left}td.t{text-align:left}table.rank{font-size:12px}table.rank td,table.rank th{padding:3px 5px}
table.rank td.t{white-space:normal;min-width:92px;max-width:170px}td:first-child,th:first-child{
text-align:left}tr.bound td{color:#6b7280;font-style:italic;
background:#fafafa}tr.bound td:nth-child(2)::after{content:" (bound)";font-weight:600;color:#9a3412}
table.meta th{text-align:left;background:none;border:none;padding:1px 12px 1px 0;color:#4b5563}
table.meta td{text-align:left;border:none;padding:1px 0;white-space:normal}
.scroll{overflow-x:auto}figure{margin:10px 0}img.fig{max-width:100%;height:auto;border:1px solid #e5e7eb}
figcaption{font-size:12px;color:#6b7280}nav{margin:10px 0 0;font-size:13px}nav a{color:#1d4ed8}
.warn{color:#9a3412;background:#fff7ed;border-left:3px solid #fb923c;padding:4px 8px}.muted{color:#6b7280}
.example{border:1px solid #e5e7eb;border-radius:6px;padding:4px 14px 10px;margin:14px 0}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:6px 0}dt{font-weight:600;color:#4b5563}
dd{margin:0;white-space:normal}table.small{font-size:12px}
.ex-row{display:flex;flex-wrap:wrap;gap:6px 22px;align-items:flex-start}.ex-img{flex:0 1 auto;max-width:100%}
.ex-facts{flex:1 1 320px;min-width:300px}
"""


def _document(title: str, header: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body><h1>{_e(title)}</h1>{header}\n{body}\n</body></html>\n")
