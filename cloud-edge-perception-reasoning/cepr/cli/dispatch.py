"""``cepr dispatch``: tools for the routing policies (train the Learned router, list the policies)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cepr.dispatch import POLICY_REGISTRY
from cepr.dispatch.learned import train_learned
from cepr.dispatch.training import collect_edge_results, cross_validate, dedupe, read_records, write_jsonl
from cepr.errors import CeprError


def add_parser(sub) -> None:
    p = sub.add_parser("dispatch", help="routing policies: train the Learned router, list the policies",
                       description="Tools for the dispatch (routing) policies of docs/dispatch.md.")
    dsub = p.add_subparsers(dest="dispatch_command", metavar="DISPATCH")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    t = dsub.add_parser(
        "train-learned", help="fit the Learned router (P(edge answer wrong)) on edge results with labels",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit the Learned router: a logistic regression, from the edge result's confidence and "
                    "features, of 'the edge answer is wrong'. --data is any mix of: an Ianvs index txt of a "
                    "labelled split (the edge is run on its frames, every task of each frame), a samples.jsonl "
                    "(of `cepr run`, or what --save-edge wrote), or a workspace folder (every samples.jsonl in "
                    "it; a sample seen by several cases counts once). Prints a frame-grouped cross-validation "
                    "against the constant predictor, then writes the model JSON (policy parameter `model: PATH`).",
        epilog="Examples:\n"
               "  cepr dispatch train-learned --data datasets/cloud-robotics-synth/640x480/train-index.txt \\\n"
               "      --frames 500 --out models/router-learned.json --save-edge models/train-edge.jsonl\n"
               "  cepr dispatch train-learned --data models/train-edge.jsonl --out models/router-l2.json --l2 10\n"
               "  cepr dispatch train-learned --data workspace/cepr-default --out router.json\n")
    t.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="index txt, samples.jsonl or workspace folder (several allowed)")
    t.add_argument("--out", required=True, help="the model JSON to write")
    t.add_argument("--frames", type=int, default=None, help="index txt: only the first N frames (default all)")
    t.add_argument("--tasks", default="all", help="index txt: comma-separated tasks asked of every frame")
    t.add_argument("--edge-model", default="auto", help="index txt: the edge module's `model` (default auto)")
    t.add_argument("--l2", type=float, default=1.0, help="ridge penalty on the standardised weights")
    t.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: skip)")
    t.add_argument("--save-edge", default=None, metavar="JSONL",
                   help="also write the edge results collected from index files (reusable as --data)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train_learned)
    ls = dsub.add_parser("list", help="the registered policies and what each reads",
                         description="Every registered dispatch policy with its capabilities and the first line "
                                     "of its documentation.", epilog="Example:\n  cepr dispatch list\n",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.set_defaults(func=cmd_list)


def cmd_train_learned(a) -> int:

    records, collected = [], []
    for d in a.data:
        p = Path(d)
        if p.is_file() and p.suffix == ".txt":
            tasks = "all" if a.tasks == "all" else [t.strip() for t in a.tasks.split(",") if t.strip()]
            got = collect_edge_results(p, tasks=tasks, frames=a.frames, edge={"model": a.edge_model},
                                       progress=not a.no_progress)
            collected.extend(got)
            records.extend(got)
        else:
            records.extend(read_records([p]))
    records = dedupe(records)
    if not records:
        raise CeprError("no edge results with a truth in --data")
    if a.save_edge and collected:
        print(f"edge results: {write_jsonl(collected, a.save_edge)} ({len(collected)} lines)")
    if a.folds:
        cv = cross_validate(records, folds=a.folds, l2=a.l2)
        print(f"{cv['n']} edge results on {cv['frames']} frames, edge wrong {cv['wrong_rate']:.1%}; "
              f"{cv['folds']}-fold cross-validation (folds by frame):")
        for name in ("learned", "constant"):
            m = cv[name]
            print(f"  {name:9s} log-loss {m['log_loss']:.4f}  Brier {m['brier']:.4f}  AUC {m['auc']}")
        print(f"  1 - confidence AUC {cv['one_minus_confidence_auc']}")
    model = train_learned(records, l2=a.l2, source=", ".join(a.data))
    if a.folds:
        model["cross_validation"] = cv
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(model, indent=1) + "\n")
    print(f"model: {out} (Learned policy: `model: {out}`)")
    return 0


def cmd_list(a) -> int:
    for name in POLICY_REGISTRY.names():
        cls = POLICY_REGISTRY.get(name)
        caps = POLICY_REGISTRY.capabilities_of(cls)
        flags = ",".join(k for k, v in caps.items() if v) or "-"
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:14s} {flags:40s} {doc}")
    return 0
