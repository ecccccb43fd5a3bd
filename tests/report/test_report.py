"""`cepr report` end to end: a tiny default job run through `cepr run --limit` (the real edge models and the
reference cloud expert) writes the report at its end; every section's figures decode as PNG and its tables hold
the rank CSV's rows; a `cepr sweep` in the workspace adds its curves; missing metrics read "–"; the real
Cloud-Robotics layout (no depth); a report that cannot be written never fails the job; headless Chromium renders
the page (skipped where the binary is missing)."""

import base64
import csv
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from helpers import copy_default_job, update_yaml
from real_layout import make_real_layout

REPO = Path(__file__).resolve().parents[2]
N = 4
FIGURE_SECTIONS = ("call-performance", "latency", "bytes", "per-task", "examples")


def cepr(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cepr", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, check=False)


class Page(HTMLParser):
    """Sections by id, each with its images (src) and tables (rows of cell texts), and every script/link/src."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current = None
        self.row = None
        self.cell = None
        self.external = []
        self.tags = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v and not v.startswith(("data:", "#")):
                self.external.append(v)
        if tag == "section":
            self.current = self.sections.setdefault(a["id"], {"imgs": [], "tables": []})
        elif self.current is None:
            return
        elif tag == "img":
            self.current["imgs"].append(a)
        elif tag == "table":
            self.current["tables"].append([])
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None and self.current is not None and self.current["tables"]:
            self.current["tables"][-1].append(self.row)
            self.row = None
        elif tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def decode_png(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,"), src[:40]
    raw = base64.b64decode(src.split(",", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[0] > 50 and img.shape[1] > 50
    return img


def rank_rows(job: Path) -> list[dict]:
    with (job / "rank" / "selected_rank.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def job(tmp_path_factory, tiny_data, reference_expert):
    """The default job (9 cases) on the first N frames of the tiny synthetic set, its cloud the session's reference
    expert (reference_expert), the link's modelled transfer time added to the latencies but not waited out."""
    dest = tmp_path_factory.mktemp("report-job")
    copy_default_job(dest, tiny_data, cloud={**reference_expert, "emulate_link": False})
    run = cepr(dest, "run", "-f", "benchmarkingjob.yaml", "--limit", str(N), "--no-progress")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return dest, dest / "workspace" / "cepr-default", run


@pytest.fixture(scope="module")
def swept(job):
    """A `cepr sweep` of the job (its cache in the workspace), then a report of the workspace with 3 examples."""
    dest, ws, _ = job
    p = cepr(dest, "sweep", "-f", "benchmarkingjob.yaml", "--limit", str(N), "--no-progress")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = dest / "with-sweep"
    r = cepr(dest, "report", str(ws), "--out", str(out), "--examples", "3")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, next(ws.glob("sweep-cache/*/sweep/sweep.json"))


def test_cepr_run_writes_the_report_and_prints_its_path(job):
    _, ws, run = job
    html_path = ws / "report" / "report.html"
    printed = next((line for line in run.stdout.splitlines() if line.startswith("report: ")), None)
    assert printed is not None, run.stdout[-2000:]
    assert Path(printed.split()[1]).resolve() == html_path.resolve()
    assert (ws / "report" / "report.md").is_file()


def test_every_section_has_its_figures_and_tables(job):
    _, ws, _ = job
    page = Page((ws / "report" / "report.html").read_text())
    assert {"leaderboard", *FIGURE_SECTIONS, "notes"} <= set(page.sections)
    rows = rank_rows(ws)
    cases = len(rows)
    assert cases == 9  # the default job's test cases
    for sid in FIGURE_SECTIONS:
        imgs = page.sections[sid]["imgs"]
        assert imgs, f"section {sid} has no figure"
        for img in imgs:
            decode_png(img["src"])
            assert img.get("alt")
    # the leaderboard: exactly the rank CSV's rows, in its order
    table = page.sections["leaderboard"]["tables"][0]
    head, body = table[0], table[1:]
    bound = [r for r in rows if "upper bound" in r["hard_example_mining"]]
    assert len(bound) == 1  # the Oracle: shown last, as cepr run prints it
    ordered = [r for r in rows if r not in bound] + bound
    assert [r[head.index("rank")] for r in body] == [r["rank"] for r in ordered]
    assert [r[head.index("algorithm")] for r in body] == [r["algorithm"] for r in ordered]
    acc = [float(r[head.index("accuracy")]) for r in body]
    assert acc == pytest.approx([float(r["accuracy"]) for r in ordered], abs=5e-4)
    # one row per case in the latency, bytes and per-task tables; four examples by default
    for sid in ("latency", "bytes", "per-task"):
        assert len(page.sections[sid]["tables"][0]) == 1 + cases, sid
    assert len(page.sections["examples"]["imgs"]) == 4
    # per-task accuracy: every task of the default job, with an interval
    per_task = page.sections["per-task"]["tables"][0]
    tasks = {json.loads(x)["task"] for p in ws.glob("*/*/samples.jsonl") for x in p.read_text().splitlines()}
    assert set(per_task[0][1:]) == tasks
    assert all("[" in c for r in per_task[1:] for c in r[1:] if c != "–")


def test_page_is_self_contained(job):
    _, ws, _ = job
    text = (ws / "report" / "report.html").read_text()
    page = Page(text)
    assert page.external == []  # no file, no network: every image is a data URI
    assert "script" not in page.tags and "link" not in page.tags
    assert "http://" not in text and "https://" not in text


def test_markdown_summary_has_the_leaderboard_and_its_figures(job):
    _, ws, _ = job
    md = (ws / "report" / "report.md").read_text()
    rows = rank_rows(ws)
    lines = [x for x in md.splitlines() if x.startswith("| ")]
    for r in rows:
        bound = " (bound)" if "upper bound" in r["hard_example_mining"] else ""
        assert any(x.startswith(f"| {r['rank']} | {r['algorithm']}{bound} |") for x in lines), r["rank"]
    figs = [x.split("](", 1)[1].rstrip(")") for x in md.splitlines() if x.startswith("![")]
    assert len(figs) >= 8
    assert all((ws / "report" / f).is_file() for f in figs)


def test_the_numbers_match_the_records(job):
    """Cloud share, bytes and per-task counts in the page come from samples.jsonl: they agree with the metrics
    the runner computed for each case."""
    _, ws, _ = job
    from cepr.report.workspace import load_workspace

    w = load_workspace(ws)
    assert len(w.cases) == 9 and not w.other_cases and not w.failed
    for c in w.cases:
        assert len(c.samples) == c.metric("n") == N
        assert 1 - c.cloud_share() == pytest.approx(c.metric("edge_ratio"))  # the reference cloud never fails
        assert float(np.mean(c.bytes("bytes_up"))) == pytest.approx(c.metric("uplink_bytes"))
        assert float(np.percentile(c.latencies(), 95)) == pytest.approx(c.metric("latency_p95"))
        per = c.per_task()
        assert sum(k for k, _ in per.values()) / sum(n for _, n in per.values()) == pytest.approx(
            c.metric("accuracy"))


def test_sweep_curves_and_their_apgr_table(swept):
    out, sweep_json = swept
    doc = json.loads(sweep_json.read_text())
    page = Page((out / "report.html").read_text())
    sec = page.sections["call-performance"]
    assert len(sec["imgs"]) == 2  # the cases' points, the sweep's curves
    for img in sec["imgs"]:
        decode_png(img["src"])
    apgr = next(t for t in sec["tables"] if t[0][0] == "curve")
    names = [r[0].removesuffix(" (reads the labels)") for r in apgr[1:]]
    assert set(doc["curves"]) <= set(names) and "Random (reference)" in names
    for name, r in zip(names, apgr[1:]):
        if name in doc["curves"]:
            want = doc["curves"][name]["apgr"]
            assert r[2] == ("–" if want is None else f"{want:.3f}")
            assert (name != r[0]) == doc["curves"][name]["upper_bound"]  # a bound says so
    assert len(page.sections["examples"]["imgs"]) == 3  # --examples 3


def test_missing_metrics_read_as_a_dash(job, tmp_path):
    """A rank CSV with empty cells (a metric that was NaN) and a case whose edge model is gone still render."""
    _, ws, _ = job
    copy = tmp_path / "cepr-default"
    shutil.copytree(ws, copy, ignore=shutil.ignore_patterns("report"))
    path = copy / "rank" / "selected_rank.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    col = rows[0].index("latency_p95")
    rows[1][col] = ""
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    for p in copy.glob("*/*/samples.jsonl"):  # the edge model recorded by name no longer exists
        lines = [json.loads(x) for x in p.read_text().splitlines()]
        for x in lines:
            x["edge"]["model"] = "gone.onnx"
        p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = cepr(tmp_path, "report", str(copy), "--examples", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    text = (copy / "report" / "report.html").read_text()
    page = Page(text)
    table = page.sections["leaderboard"]["tables"][0]
    assert table[1][table[0].index("latency_p95")] == "–"
    assert "edge mask not recomputed" in text and "gone.onnx" in text
    assert len(page.sections["examples"]["imgs"]) == 1  # frame and label still shown


def test_no_report_and_a_report_failure_never_fail_the_job(job):
    """Both runs resume a copy of the job's workspace (its records, not its report or rank CSVs) in another
    workspace of the job's folder: every case is reused, nothing runs again, and the job ends as a full run does
    (rank CSVs, then the report unless --no-report)."""
    dest, ws, _ = job
    jobdir = dest / "ws-no-report" / ws.name
    shutil.copytree(ws, jobdir, ignore=shutil.ignore_patterns("report", "rank", "sweep-cache"))
    run = ("run", "-f", "benchmarkingjob.yaml", "--limit", str(N), "--no-progress", "--resume",
           "--workspace", "ws-no-report")
    p = cepr(dest, *run, "--no-report")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed: 9 finished test case(s) reused" in p.stdout
    assert not (jobdir / "report").exists() and "report: " not in p.stdout
    assert (jobdir / "rank" / "selected_rank.csv").is_file()
    shutil.rmtree(jobdir / "rank")
    (jobdir / "report").write_text("a file where the report folder should be")
    p = cepr(dest, *run)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "the report could not be written" in p.stderr and f"cepr report {jobdir}" in p.stderr
    assert (jobdir / "rank" / "selected_rank.csv").is_file()


def test_errors_name_the_problem(job):
    dest, ws, _ = job
    p = cepr(dest, "report", str(ws.parent))
    assert p.returncode == 2 and "cepr-default" in p.stderr and "give one of them" in p.stderr
    p = cepr(dest, "report", str(ws.parent / "cepr-defualt"))
    assert p.returncode == 2 and "does not exist" in p.stderr and "cepr-default" in p.stderr
    p = cepr(dest, "report", str(ws), "--examples", "-1")
    assert p.returncode == 2 and "--examples" in p.stderr


def test_import_cepr_does_not_pull_matplotlib():
    code = ("import sys, cepr, cepr.cli, cepr.report.html, cepr.report.workspace; "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_report_on_the_real_cloud_robotics_layout(tmp_path, reference_expert):
    """No depth, uint16 labels, no val index: the RGB-only edge model recomputes the mask."""
    make_real_layout(tmp_path / "datasets" / "Cloud-Robotics", n_test=3, n_train=1)
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(REPO / d, tmp_path / d)
    job = yaml.safe_load((REPO / "benchmarkingjob-real.yaml").read_text())
    algos = job["benchmarkingjob"]["test_object"]["algorithms"]
    job["benchmarkingjob"]["test_object"]["algorithms"] = [a for a in algos if a["name"] in
                                                           ("edge-only", "cloud-only", "threshold")]
    job["benchmarkingjob"]["rank"]["selected_dataitem"]["hyperparameters"] = ["hard_example_mining-threshold"]
    (tmp_path / "benchmarkingjob-real.yaml").write_text(yaml.safe_dump(job))
    # the session's reference expert; the link's time added to the latency, not waited out
    update_yaml(tmp_path / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml",
                {**reference_expert, "emulate_link": False})
    p = cepr(tmp_path, "run", "-f", "benchmarkingjob-real.yaml", "--no-progress")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    html_path = tmp_path / "workspace" / "cepr-real" / "report" / "report.html"
    text = html_path.read_text()
    page = Page(text)
    assert "(real data)" in text and "SYNTHETIC data:" not in text
    for sid in FIGURE_SECTIONS:
        for img in page.sections[sid]["imgs"]:
            decode_png(img["src"])
    assert "edge-rfnet-w16-rgb-int8.onnx, recomputed" in text  # the RGB-only model: the frames have no depth
    assert "edge mask not recomputed" not in text
    rows = rank_rows(tmp_path / "workspace" / "cepr-real")
    assert len(rows) == 4  # edge-only, cloud-only, threshold 0.6 and 0.8
    assert len(page.sections["leaderboard"]["tables"][0]) == 1 + len(rows)


def test_headless_chromium_renders_a_non_blank_page(job, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("no chromium binary (Debian: apt-get install chromium; .ci/run installs it where apt exists)")
    _, ws, _ = job
    shot = tmp_path / "shot.png"
    p = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={shot}", "--window-size=1400,5000",
                        (ws / "report" / "report.html").resolve().as_uri()],
                       capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), p.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (5000, 1400)
    ink = (img < 200).any(axis=2)
    assert ink.mean() > 0.02  # text, tables and plots, not a white page
    rows = np.where(ink.any(axis=1))[0]
    assert rows.max() > 3000  # the figures laid out down the page, not one error line
    colour = (img.max(axis=2).astype(int) - img.min(axis=2)) > 60
    assert colour.mean() > 0.005  # the coloured plot lines and example frames were drawn


def test_a_workspace_with_only_rank_csvs_or_only_a_sweep(swept, job, tmp_path):
    """What `ianvs -f` leaves (rank CSVs, no cepr records) and what `cepr sweep` alone leaves both render."""
    _, ws, _ = job
    ianvs = tmp_path / "ianvs-job"
    shutil.copytree(ws / "rank", ianvs / "rank")
    p = cepr(tmp_path, "report", str(ianvs))
    assert p.returncode == 0, p.stderr[-3000:]
    page = Page((ianvs / "report" / "report.html").read_text())
    assert len(page.sections["leaderboard"]["tables"][0]) == 1 + len(rank_rows(ws))
    assert "no finished cepr record" in (ianvs / "report" / "report.html").read_text()
    only_sweep = tmp_path / "sweep-job"
    shutil.copytree(ws / "sweep-cache", only_sweep / "sweep-cache")
    p = cepr(tmp_path, "report", str(only_sweep))
    assert p.returncode == 0, p.stderr[-3000:]
    page = Page((only_sweep / "report" / "report.html").read_text())
    assert len(page.sections["call-performance"]["imgs"]) == 1  # the sweep's curves
    decode_png(page.sections["call-performance"]["imgs"][0]["src"])
    empty = tmp_path / "empty"
    empty.mkdir()
    p = cepr(tmp_path, "report", str(empty))
    assert p.returncode == 2 and "no test case results" in p.stderr
