"""The test set as Ianvs hands it over: ``x`` (RGB paths) and ``y`` (label paths), both absolute.

Ianvs's txt parser splits each line on whitespace, keeps the first two columns and rewrites both to absolute
paths against the index file's folder; extra columns are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cepr.errors import DatasetError


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
