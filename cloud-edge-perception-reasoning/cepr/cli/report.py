"""``cepr report WORKSPACE``: an HTML page and a markdown summary of a job's results."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write an HTML report (figures inlined) and a markdown summary of a job's workspace folder",
        description="Read a job's workspace folder (what `cepr run` or `ianvs -f` wrote: <algorithm>/<case id>/"
                    "record.json + samples.jsonl, rank/*.csv, and any `cepr sweep` output) and write report.html "
                    "(one self-contained page: PNG figures inlined, no script, no network needed), report.md (the "
                    "tables, figures linked from figures/) and figures/*.png. Sections: the leaderboard, accuracy "
                    "against cloud share (the cases' points with Random and Oracle references; every sweep's "
                    "curves with APGR/CPT), latency CDFs, bytes per sample, accuracy per task with 95% Wilson "
                    "intervals, and example frames with the recomputed edge mask, the edge answer, the cloud "
                    "answer and the truth. `cepr run` writes it at the end of every job (--no-report skips it).",
        epilog="Examples:\n"
               "  cepr report workspace/cepr-default\n"
               "  cepr report workspace/cepr-default --out /tmp/report --examples 6\n"
               "  cepr report workspace/cepr-real --sweep sweep-out/sweep.json\n"
               "  chromium --headless --no-sandbox --screenshot=shot.png --window-size=1400,5000 "
               "file://$PWD/workspace/cepr-default/report/report.html")
    p.add_argument("workspace", metavar="WORKSPACE",
                   help="the job's results folder: <workspace>/<job name>, e.g. workspace/cepr-default")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write (default WORKSPACE/report)")
    p.add_argument("--examples", type=int, default=4, metavar="N",
                   help="example frames to show, their edge mask recomputed with the edge model (default 4; 0: "
                        "none)")
    p.add_argument("--sweep", action="append", default=[], metavar="PATH",
                   help="a cepr sweep result (sweep.json, or the folder --out wrote) outside the workspace; "
                        "repeatable. Those under WORKSPACE/sweep-cache/*/sweep/ are found without it")
    p.set_defaults(func=cmd_report)


def cmd_report(a) -> int:
    from cepr.report.html import write_report

    r = write_report(a.workspace, a.out, a.examples, a.sweep)
    print(f"report: {r.html} (summary: {r.markdown}; {len(r.figures)} figure(s) in {r.html.parent / 'figures'})")
    for w in r.warnings:
        print(f"report: warning: {w}")
    return 0
