"""``cepr datasets``: generate the synthetic set, validate a dataset, print its statistics."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from tqdm import tqdm

from cepr.data.check import ClassStats, check_dataset
from cepr.data.classes import CLASSES
from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index, load_sample
from cepr.data.layout import SPLITS, format_resolution, parse_resolution
from cepr.data.stats import task_balance
from cepr.data.synth import generate_dataset
from cepr.data.synth.sequence import generate_sequence
from cepr.data.tasks import TASK_NAMES, TASKS
from cepr.errors import DatasetError


def add_parser(sub) -> None:
    p = sub.add_parser("datasets", help="generate, check and describe Cloud-Robotics-format datasets",
                       description="Generate, check and describe Cloud-Robotics-format datasets.")
    dsub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    s = dsub.add_parser(
        "synth", help="generate the synthetic Cloud-Robotics-format set",
        description="Render procedural industrial-park / campus scenes seen by a quadruped robot's camera "
                    "(~0.5 m high) in the Cloud-Robotics layout, plus 16-bit depth and one sidecar JSON per "
                    "frame. Deterministic for a seed; re-running completes a partial set.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--out", default="datasets/cloud-robotics-synth", help="output directory")
    s.add_argument("--frames", type=int, default=200, help="number of frames")
    s.add_argument("--seed", type=int, default=0, help="random seed (frame i of a seed is always the same)")
    s.add_argument("--resolutions", nargs="+", default=["640x480"], metavar="WxH", type=_resolution,
                   help="resolutions to render, e.g. 2048x1024 1280x760 640x480")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count, max 8)")
    s.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"],
                   help="render only the frames of these splits (a frame's split is fixed by its index)")
    s.add_argument("--overwrite", action="store_true", help="regenerate frames that already exist")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    q = s.add_argument_group("sequences (--sequence): one continuous walk instead of independent frames")
    q.add_argument("--sequence", action="store_true",
                   help="render a continuous walk (moving camera, moving people and vehicles) with ground truth "
                        "per frame, all in the test split in frame order, also written as an mp4 video; "
                        "e.g. cepr datasets synth --sequence --out datasets/walk0 --frames 300 --fps 10 --seed 0")
    q.add_argument("--fps", type=float, default=10.0, help="frame rate of the walk and its video")
    q.add_argument("--resolution", type=_resolution, default="640x480", metavar="WxH",
                   help="resolution of the walk's frames and video")
    s.set_defaults(func=cmd_synth)

    c = dsub.add_parser("check", help="validate a dataset's layout, files, sizes, ids and index files",
                        description="Validate a Cloud-Robotics-format dataset. Exits 1 and lists every problem "
                                    "found. PATH may be the dataset root, a resolution directory or an index file.")
    c.add_argument("path")
    c.add_argument("--max-frames", type=int, default=None, help="check at most this many frames per index")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_check)

    t = dsub.add_parser("stats", help="class pixel frequencies and task answer balance",
                        description="Print class pixel frequencies and the answer balance of every task, "
                                    "recomputed from labels (+ depth) by cepr.data.tasks. PATH may be the "
                                    "dataset root, a resolution directory or an index file.")
    t.add_argument("path")
    t.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="which index to read when PATH is a directory")
    t.add_argument("--max-frames", type=int, default=None)
    t.add_argument("--json", dest="json_out", metavar="FILE", help="also write the statistics as JSON ('-' = stdout)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_stats)


def _resolution(text: str) -> str:
    try:
        return format_resolution(*parse_resolution(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_synth(a) -> int:
    if a.sequence:
        r = generate_sequence(a.out, a.frames, fps=a.fps, seed=a.seed, resolution=a.resolution,
                              progress=not a.no_progress, overwrite=a.overwrite)
        print(f"walk of {r.frames} frame(s) at {r.fps:g} fps ({r.frames / r.fps:.1f} s, {r.scene_type}) rendered "
              f"in {r.seconds:.1f} s; path_hazard changes {r.hazard_flips} time(s)")
        print(f"index: {r.index}\nvideo: {r.video} -> {r.out}")
        return 0

    r = generate_dataset(a.out, a.frames, seed=a.seed, resolutions=a.resolutions, workers=a.workers,
                         progress=not a.no_progress, overwrite=a.overwrite, splits=a.splits)
    if r.generated:
        print(f"generated {r.generated} frame(s) at {', '.join(r.resolutions)} in {r.seconds:.1f} s "
              f"({r.frames_per_second:.2f} frames/s); {r.skipped} already present")
    else:
        print(f"all {r.frames} frame(s) already present at {', '.join(r.resolutions)}; nothing to do")
    print(f"splits: {r.split_counts} -> {r.out}")
    return 0


def cmd_check(a) -> int:
    rep = check_dataset(a.path, max_frames=a.max_frames, progress=not a.no_progress)
    for w in rep.warnings:
        print(f"warning: {w}")
    for p in rep.problems:
        print(f"problem: {p}")
    status = "OK" if rep.ok else f"FAILED ({len(rep.problems)} problem(s))"
    print(f"{a.path}: {rep.frames_checked} frame(s) checked, {len(rep.warnings)} warning(s): {status}")
    return 0 if rep.ok else 1


def _iter_samples(a):

    p = Path(a.path)
    if p.is_file():
        indexes = [p]
    elif a.split == "all":
        indexes = []
        for s in SPLITS:
            try:
                indexes.append(find_index(p, split=s))
            except DatasetError:
                continue  # a split without an index: stats over the others
        if not indexes:
            indexes = [find_index(p, split="test")]  # raises with the list of what it looked for
    else:
        indexes = [find_index(p, split=a.split)]
    datasets = [CloudRoboticsDataset(i) for i in indexes]
    return indexes, datasets


def cmd_stats(a) -> int:


    indexes, datasets = _iter_samples(a)
    frames = list(itertools.chain.from_iterable(d.frames for d in datasets))
    n = min(len(frames), a.max_frames) if a.max_frames else len(frames)
    classes = ClassStats.empty()

    def samples():  # one read of each label (and depth, sidecar) serves both statistics; rgb is not needed
        for frame in frames[:n]:
            s = load_sample(frame, rgb=False)
            classes.add(s.label)
            yield s

    bar = tqdm(samples(), total=n, unit="frame", desc="stats", disable=a.no_progress)
    bal = task_balance(bar)
    freq, present = classes.fractions, classes.frame_counts
    print(f"\n{n} frame(s) from {', '.join(str(i) for i in indexes)}")
    print(f"\n{'id':>3} {'class':<14} {'group':<13} {'pixels %':>9} {'frames':>7}")
    for c in CLASSES:
        print(f"{c.id:>3} {c.name:<14} {c.group:<13} {100 * freq[c.id]:>9.3f} {present[c.id]:>7}")
    missing = [c.name for c in CLASSES if present[c.id] == 0]
    print(f"classes present: {len(CLASSES) - len(missing)}/{len(CLASSES)}"
          + (f" (absent: {', '.join(missing)})" if missing else ""))
    print("\ntask answer balance (share of frames):")
    for t in TASK_NAMES:
        parts = [f"{ans}={bal.counts[t].get(ans, 0) / max(1, bal.frames):.2f}" for ans in TASKS[t].answers
                 if bal.counts[t].get(ans, 0)]
        print(f"  {t:<17} {'  '.join(parts)}   (majority {bal.majority_share(t):.2f})")
    if bal.sidecar_frames:
        agree = ", ".join(f"{t} {bal.sidecar_agree[t] / bal.sidecar_frames:.3f}" for t in TASK_NAMES)
        print(f"sidecar cache vs task functions ({bal.sidecar_frames} frames): {agree}")
    if bal.depth_frames:
        agree = ", ".join(f"{t} {bal.ground_plane_agree[t] / bal.depth_frames:.3f}" for t in TASK_NAMES)
        print(f"ground-plane (no depth) vs depth answers ({bal.depth_frames} frames): {agree}")
    if a.json_out:
        doc = {"frames": n, "indexes": [str(i) for i in indexes],
               "class_pixel_fraction": {c.name: float(freq[c.id]) for c in CLASSES},
               "class_frames": {c.name: int(present[c.id]) for c in CLASSES},
               "tasks": bal.to_dict()}
        text = json.dumps(doc, indent=1)
        if a.json_out == "-":
            sys.stdout.write(text + "\n")
        else:
            with open(a.json_out, "w") as f:
                f.write(text + "\n")
    return 0
