"""The test set as Ianvs hands it over: ``x`` (RGB paths) and ``y`` (label paths), both absolute.

Ianvs's txt parser splits each line on whitespace, keeps the first two columns and rewrites both to absolute
paths against the index file's folder; extra columns are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cepr.data.cloud_robotics import load_label, load_rgb
from cepr.data.tasks import TASK_NAMES, get_task
from cepr.errors import CeprError, DatasetError
from cepr.hyperparameters import check_known
from cepr.records import SampleRef


@dataclass
class IndexDataset:
    x: object  # np.ndarray of str, or the processor's list of samples
    y: np.ndarray
    index_file: Path

    def __len__(self) -> int:
        return len(self.y)


def load_index(path: str | Path, limit: int | None = None) -> IndexDataset:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"index file {path} does not exist")
    xs, ys = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cols = line.split()
        if len(cols) < 2:
            raise DatasetError(f"{path}:{n}: expected 'rgb_path label_path', got {line!r}")
        rgb, lab = (Path(c) if Path(c).is_absolute() else (path.parent / c) for c in cols[:2])
        xs.append(str(rgb.resolve()))
        ys.append(str(lab.resolve()))
        if limit is not None and len(xs) >= limit:
            break
    if not xs:
        raise DatasetError(f"index file {path} lists no samples")
    return IndexDataset(np.array(xs), np.array(ys), path)


def frame_problems(data: IndexDataset, progress: bool = False) -> dict[int, str]:
    """The pre-flight check of ``cepr run``: ``{position: reason}`` for every listed frame a case could not score,
    found with the loaders ``cepr datasets check`` uses (cepr/data/check.py) before any model runs: a missing or
    undecodable RGB file, a missing, truncated or corrupt label, label ids outside the class set, or an RGB and
    label of different sizes. Reads every frame once (about 10 ms a frame at 640x480)."""

    out: dict[int, str] = {}
    pairs = list(zip(np.asarray(data.x).tolist(), data.y.tolist(), strict=True))
    for i, (rgb, lab) in enumerate(tqdm(pairs, desc="checking frames", unit="frame", disable=not progress,
                                        leave=False)):
        missing = [f"missing {what} file {p}" for what, p in (("rgb", rgb), ("label", lab)) if not Path(p).is_file()]
        if missing:
            out[i] = "; ".join(missing)
            continue
        try:
            h, w = load_rgb(rgb).shape[:2]
            label = load_label(lab)  # validates: ids outside the class set (and not 255) are an error
        except DatasetError as e:
            out[i] = str(e)
            continue
        if label.shape != (h, w):
            out[i] = f"size mismatch: rgb {w}x{h} vs label {label.shape[1]}x{label.shape[0]} ({lab})"
    return out


# ---- the dataset processor module ------------------------------------------------------------------------

class TaskDatasetProcessor:
    """``processor(dataset) -> dataset`` with ``x`` replaced by SampleRefs. ``tasks``: a task name, a list, or
    "all"; frame i is asked ``tasks[i % len(tasks)]``, so every task gets an equal share of the frames."""

    def __init__(self, tasks="all", **kwargs):
        check_known("dataset_processor", kwargs, [])
        if tasks in ("all", None):
            tasks = list(TASK_NAMES)
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        for t in tasks:
            try:
                get_task(t)
            except KeyError as e:
                raise CeprError(f"dataset_processor: {e.args[0]}") from None
        if not tasks:
            raise CeprError("dataset_processor: tasks is empty")
        self.tasks = list(tasks)

    def samples(self, xs, ys) -> list[SampleRef]:
        ys = list(ys) if ys is not None and len(ys) else [None] * len(xs)
        if len(ys) != len(xs):
            raise CeprError(f"dataset has {len(xs)} inputs but {len(ys)} labels")
        out = []
        for i, (x, y) in enumerate(zip(xs, ys)):
            rgb = str(x[0] if isinstance(x, (list, tuple, np.ndarray)) else x)
            out.append(SampleRef(key=Path(rgb).stem, rgb=rgb, label=None if y is None else str(y),
                                 task=self.tasks[i % len(self.tasks)], index=i))
        return out

    def __call__(self, dataset):
        dataset.x = self.samples(list(dataset.x), getattr(dataset, "y", None))
        return dataset
