"""Validate a Cloud-Robotics-layout dataset before a benchmark trips over it, and count its classes.

``check_dataset`` reads every indexed frame (or an evenly spaced subset) and collects *all* problems
instead of stopping at the first, so one run tells the user everything to fix. Problems make the check
fail; warnings (a missing train index, frames on disk that no index lists, ...) do not.
"""

from __future__ import annotations

import sys
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cepr.data import layout
from cepr.data.classes import CLASS_NAMES, IGNORE_ID, NUM_CLASSES
from cepr.data.cloud_robotics import (
    CloudRoboticsDataset,
    Frame,
    IndexEntry,
    bad_label_ids,
    find_index,
    load_depth,
    load_label,
    load_rgb,
    load_sidecar,
    parse_index,
    resolution_dirs,
)
from cepr.errors import DatasetError

__all__ = ["CheckReport", "ClassStats", "check_dataset", "class_pixel_frequencies", "class_statistics"]

MAX_LISTED_PER_KIND = 20
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class CheckReport:
    """Outcome of :func:`check_dataset`. ``problems`` fail the check; ``warnings`` are advisory."""

    path: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frames_checked: int = 0
    resolutions: list[str] = field(default_factory=list)  # resolution directories (or index dirs) checked
    problem_counts: dict[str, int] = field(default_factory=dict)  # per kind, before capping the lists
    warning_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """Human-readable report for the CLI."""
        where = ", ".join(self.resolutions) or "-"
        n_prob = sum(self.problem_counts.values())
        n_warn = sum(self.warning_counts.values())
        head = (f"{'OK' if self.ok else 'FAILED'}: {self.path} ({where}): {self.frames_checked} frame(s) "
                f"checked, {n_prob} problem(s), {n_warn} warning(s)")
        lines = [head]
        if self.problems:
            lines += ["problems:"] + [f"  {p}" for p in self.problems]
        if self.warnings:
            lines += ["warnings:"] + [f"  {w}" for w in self.warnings]
        return "\n".join(lines)

    __str__ = summary


class _Collector:
    """Issues grouped by kind, so that one flood (e.g. 5000 missing files) cannot hide other kinds."""

    def __init__(self) -> None:
        self.items: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, message: str) -> None:
        self.items[kind].append(message)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.items.items()}

    def capped(self, limit: int = MAX_LISTED_PER_KIND) -> list[str]:
        out: list[str] = []
        for kind, msgs in self.items.items():
            out += msgs[:limit]
            if len(msgs) > limit:
                out.append(f"... and {len(msgs) - limit} more ({kind})")
        return out


def _subsample(items: Sequence, max_items: int | None) -> list:
    """Evenly spaced subset (first and last included): indexes list sequences in order, so the first N
    frames would all come from one recording."""
    n = len(items)
    if max_items is None or max_items >= n:
        return list(items)
    if max_items <= 0:
        return []
    if max_items == 1:
        return [items[0]]
    idx = np.round(np.linspace(0, n - 1, max_items)).astype(int)
    return [items[i] for i in idx]


def _looks_like_resolution_dir(d: Path) -> bool:
    if _is_res_name(d.name) or (d / "rgb").is_dir():
        return True
    return any((d / f"{s}-index.txt").is_file() for s in layout.SPLITS)


def _is_res_name(name: str) -> bool:
    try:
        layout.parse_resolution(name)
    except ValueError:
        return False
    return True


def _wh(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _progress(iterable: Iterable, total: int, enabled: bool, desc: str):
    if not enabled or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="frame", leave=False)


@dataclass
class _Job:
    index: Path
    entry: IndexEntry
    expected: str | None  # '<W>x<H>' the files must have, from the resolution directory's name


def _check_frame(job: _Job, problems: _Collector, presence: dict[str, list[int]]) -> None:
    frame, where = job.entry.frame, f"{job.index}:{job.entry.line}"
    missing = [f"{what} {p}" for what, p in (("rgb", frame.rgb_path), ("label", frame.label_path))
               if not p.is_file()]
    if missing:
        problems.add("missing-file", f"{where}: missing " + " and ".join(missing))
        return
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        shapes["rgb"] = load_rgb(frame.rgb_path).shape[:2]
    except DatasetError as e:
        problems.add("unreadable-rgb", f"{where}: {e}")
    try:
        label = load_label(frame.label_path, validate=False)
    except DatasetError as e:  # colour label, wrong dtype, corrupt, or uint16 ids > 255
        problems.add("label", f"{where}: {e}")
    else:
        shapes["label"] = label.shape
        bad = bad_label_ids(label)
        if bad:
            ids = ", ".join(f"{i} ({c} px)" for i, c in sorted(bad.items())[:10])
            problems.add("label", f"{where}: label {frame.label_path} has ids outside 0-{NUM_CLASSES - 1} "
                                  f"and {IGNORE_ID}: {ids}")
    if "rgb" in shapes and "label" in shapes and shapes["rgb"] != shapes["label"]:
        problems.add("size", f"{where}: size mismatch: rgb {_wh(shapes['rgb'])} vs label "
                             f"{_wh(shapes['label'])} ({frame.rgb_path} vs {frame.label_path})")

    dp = frame.depth_path
    presence["depth"].append(dp is not None)
    if dp is not None:
        try:
            depth = load_depth(dp)
        except DatasetError as e:
            problems.add("depth", f"{where}: {e}")
        else:
            shapes["depth"] = depth.shape
            ref = shapes.get("label", shapes.get("rgb"))
            if ref is not None and depth.shape != ref:
                problems.add("size", f"{where}: size mismatch: depth {_wh(depth.shape)} vs rgb/label "
                                     f"{_wh(ref)} ({dp})")
    sp = frame.sidecar_path
    presence["sidecar"].append(sp is not None)
    if sp is not None:
        try:
            load_sidecar(sp)
        except DatasetError as e:
            problems.add("sidecar", f"{where}: {e}")

    if job.expected is not None:
        wrong = sorted({_wh(s) for s in shapes.values()} - {job.expected})
        if wrong:
            kinds = ", ".join(f"{k} {_wh(s)}" for k, s in shapes.items() if _wh(s) != job.expected)
            problems.add("size", f"{where}: {kinds} but the frame sits under {job.expected}/ "
                                 f"({frame.rgb_path})")


def _frames_on_disk(directory: Path, split: str) -> int:
    d = directory / "rgb" / split
    if not d.is_dir():
        return 0
    return sum(1 for f in d.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file())


def _resolve_target(p: Path, problems: _Collector) -> list[tuple[Path, list[Path] | None]]:
    """[(directory, index files or None = the directory's standard train/val/test indexes)]."""
    if not p.exists():
        problems.add("path", f"dataset path not found: {p}")
        return []
    if p.is_file():
        return [(p.absolute().parent, [p])]
    if _looks_like_resolution_dir(p):
        return [(p, None)]
    dirs = resolution_dirs(p)
    if not dirs:
        problems.add("path", f"{p}: no <W>x<H> resolution directories (e.g. {p / '640x480'}) and no "
                             f"train/val/test-index.txt found")
    return [(d, None) for d in dirs]


def _standard_indexes(directory: Path, problems: _Collector, warns: _Collector) -> list[Path]:
    """The train/val/test index files a resolution directory has, with a word on each one it lacks.

    A missing test index is a problem (the benchmark evaluates it); a missing train index is a warning (joint
    inference never reads train, but Ianvs's testenv names one); a missing val index is not worth a word, since
    the real set ships no val split, unless val frames sit on disk without it (a warning).
    """
    indexes = []
    for split in layout.SPLITS:
        idx = directory / f"{split}-index.txt"
        if idx.is_file():
            indexes.append(idx)
        elif split == "test":
            problems.add("index", f"{directory}: missing {idx.name} (the benchmark evaluates "
                                  f"the test split)")
        elif split == "val":  # the real release has no val split: only frames left out are worth a word
            on_disk = _frames_on_disk(directory, split)
            if on_disk:
                warns.add("index", f"{directory}: no {idx.name}, but {on_disk} frame(s) sit under "
                                   f"rgb/{split}/ (a val split without its index)")
        else:
            warns.add("index", f"{directory}: no {idx.name} ({split} split absent)")
    return indexes


def _index_entries(idx: Path, problems: _Collector) -> list[IndexEntry]:
    """The parsed entries of one index file; unreadable files, malformed lines and empty indexes are problems."""
    try:
        entries, bad_lines = parse_index(idx)
    except DatasetError as e:
        problems.add("index", str(e))
        return []
    for msg in bad_lines:
        problems.add("index", msg)
    if not entries and not bad_lines:
        problems.add("index", f"index file {idx} has no entries")
    return entries


def _note_listed(idx: Path, entries: list[IndexEntry], split_of: dict[Path, str], listed: set[Path],
                 warns: _Collector) -> None:
    """Record the frames one index lists (``split_of``, ``listed``: shared by a directory's indexes), warning
    on a frame listed twice in this index or already listed by another split's."""
    seen: set[Path] = set()
    split = idx.name.removesuffix("-index.txt")
    for e in entries:
        key = e.frame.rgb_path.resolve()
        if key in seen:
            warns.add("duplicate", f"{idx}:{e.line}: {e.frame.rgb_path} listed more than once")
        seen.add(key)
        other = split_of.get(key)
        if other is not None and other != split:
            warns.add("split-overlap", f"{idx}:{e.line}: {e.frame.rgb_path} is in both the {other} "
                                       f"and the {split} index")
        split_of.setdefault(key, split)
        listed.add(key)


def _frame_jobs(idx: Path, entries: list[IndexEntry], expected: str | None, max_frames: int | None,
                problems: _Collector) -> list[_Job]:
    """Jobs for the frames to read (all, or an evenly spaced subset of ``max_frames``). The frames left out are
    still checked for missing files, which costs no decoding, so a capped run misses no absent file."""
    jobs = []
    chosen = {id(e) for e in _subsample(entries, max_frames)}
    for e in entries:
        if id(e) in chosen:
            jobs.append(_Job(idx, e, expected))
        elif not (e.frame.rgb_path.is_file() and e.frame.label_path.is_file()):
            problems.add("missing-file", f"{idx}:{e.line}: missing "
                         + " and ".join(f"{w} {q}" for w, q in (("rgb", e.frame.rgb_path),
                                                                 ("label", e.frame.label_path))
                                        if not q.is_file()))
    return jobs


def _check_frames(jobs: list[_Job], problems: _Collector, warns: _Collector, progress: bool) -> None:
    """Read every chosen frame, then warn where depth or sidecars exist for only some of a directory's frames."""
    presence_by_dir: dict[Path, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for job in _progress(jobs, len(jobs), progress, "checking frames"):
        _check_frame(job, problems, presence_by_dir[job.index.parent])
    for directory, presence in presence_by_dir.items():
        for kind, flags in presence.items():
            if 0 < sum(flags) < len(flags):
                warns.add("partial", f"{directory}: {kind} present for only {sum(flags)} of {len(flags)} "
                                     f"checked frames")


def _warn_unindexed(directory: Path, listed: set[Path], warns: _Collector) -> None:
    """Warn on each frame under ``directory/rgb`` that no index lists: no benchmark will ever read it."""
    rgb_dir = directory / "rgb"
    if not rgb_dir.is_dir():
        return
    for f in sorted(rgb_dir.rglob("*")):
        if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file() and f.resolve() not in listed:
            warns.add("unindexed", f"{f}: frame on disk but listed in no index")


def check_dataset(path: str | Path, max_frames: int | None = None, progress: bool = True) -> CheckReport:
    """Check a dataset root, one resolution directory, or one index file; collect every problem.

    A resolution directory's indexes are its standard train/val/test ones (see :func:`_standard_indexes` for
    which missing ones count). ``max_frames`` limits the frames read per index file (evenly spaced); the index
    parsing, file existence of listed entries outside the subset, and unindexed-frame checks still cover
    everything.
    """
    p = Path(path)
    problems, warns = _Collector(), _Collector()
    jobs: list[_Job] = []
    unindexed_roots: list[tuple[Path, set[Path]]] = []
    report = CheckReport(path=p)

    for directory, indexes in _resolve_target(p, problems):
        expected = directory.name if _is_res_name(directory.name) else None
        report.resolutions.append(directory.name)
        split_of: dict[Path, str] = {}
        listed: set[Path] = set()
        if indexes is None:
            indexes = _standard_indexes(directory, problems, warns)
            unindexed_roots.append((directory, listed))  # filled in below, read once every index is parsed
        for idx in indexes:
            entries = _index_entries(idx, problems)
            _note_listed(idx, entries, split_of, listed, warns)
            jobs += _frame_jobs(idx, entries, expected, max_frames, problems)

    _check_frames(jobs, problems, warns, progress)
    report.frames_checked = len(jobs)
    for directory, listed in unindexed_roots:
        _warn_unindexed(directory, listed, warns)

    report.problems, report.warnings = problems.capped(), warns.capped()
    report.problem_counts, report.warning_counts = problems.counts(), warns.counts()
    return report


# ---- class statistics --------------------------------------------------------------------------------

@dataclass
class ClassStats:
    """Per-class pixel and frame counts over a set of labels (ignore pixels counted apart)."""

    frames: int
    pixel_counts: np.ndarray  # (NUM_CLASSES,) int64
    frame_counts: np.ndarray  # (NUM_CLASSES,) int64: frames in which the class appears at all
    ignore_pixels: int

    @classmethod
    def empty(cls) -> ClassStats:
        return cls(0, np.zeros(NUM_CLASSES, dtype=np.int64), np.zeros(NUM_CLASSES, dtype=np.int64), 0)

    def add(self, label: np.ndarray) -> None:
        """Count one frame's label map."""
        counts = np.bincount(label.ravel(), minlength=256)
        self.frames += 1
        self.pixel_counts += counts[:NUM_CLASSES]
        self.frame_counts += counts[:NUM_CLASSES] > 0
        self.ignore_pixels += int(counts[IGNORE_ID])

    @property
    def labelled_pixels(self) -> int:
        return int(self.pixel_counts.sum())

    @property
    def fractions(self) -> np.ndarray:
        """Share of labelled (non-ignore) pixels per class; NaN with a warning when nothing is labelled."""
        total = self.labelled_pixels
        if total == 0:
            warnings.warn("no labelled pixels (no frames, or every pixel is ignore): class fractions are NaN",
                          RuntimeWarning, stacklevel=2)
            return np.full(NUM_CLASSES, np.nan)
        return self.pixel_counts / float(total)

    def rows(self) -> list[dict]:
        """One dict per class for printing: id, name, pixel_fraction, frames."""
        frac = self.fractions
        return [{"id": i, "name": CLASS_NAMES[i], "pixel_fraction": float(frac[i]),
                 "frames": int(self.frame_counts[i])} for i in range(NUM_CLASSES)]


def _frames_of(dataset: CloudRoboticsDataset | Sequence[Frame] | str | Path) -> list[Frame]:
    if isinstance(dataset, CloudRoboticsDataset):
        return list(dataset.frames)
    if isinstance(dataset, (str, Path)):
        return list(CloudRoboticsDataset(find_index(dataset)).frames)
    return list(dataset)


def class_statistics(dataset: CloudRoboticsDataset | Sequence[Frame] | str | Path,
                     max_frames: int | None = None, progress: bool = True) -> ClassStats:
    """Count class pixels and per-class frame presence (labels only; rgb is not read).

    ``dataset`` is a :class:`CloudRoboticsDataset`, a list of frames, or a path for :func:`find_index`
    (test split). Labels with unknown ids raise :class:`DatasetError` naming the file.
    """
    frames = _subsample(_frames_of(dataset), max_frames)
    stats = ClassStats.empty()
    for frame in _progress(frames, len(frames), progress, "counting classes"):
        stats.add(load_label(frame.label_path))
    return stats


def class_pixel_frequencies(dataset: CloudRoboticsDataset | Sequence[Frame] | str | Path,
                            max_frames: int | None = None, progress: bool = True) -> np.ndarray:
    """(NUM_CLASSES,) share of labelled pixels per class, ignore excluded (see :func:`class_statistics`)."""
    return class_statistics(dataset, max_frames, progress).fractions
