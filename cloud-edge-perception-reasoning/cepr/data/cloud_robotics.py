"""Reader for the Ianvs Cloud-Robotics layout (the real set and our synthetic copy of it).

An Ianvs txt index lists one frame per line, ``rgb_path label_path``, relative to the index file. Ianvs
drops any further columns; we keep them in ``Frame.extra``. Everything else about a frame (depth, sidecar
annotation, the same frame at another resolution) is derived from its paths via :mod:`cepr.data.layout`.

Images are decoded with OpenCV from bytes read by numpy, so non-ASCII paths work and a file that cannot be
read is told apart from one that cannot be decoded. RGB comes back in RGB order, labels as uint8 TrainIds,
depth as float32 metres. Every failure is a :class:`~cepr.errors.DatasetError` naming the file.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cepr.data import layout
from cepr.data.classes import IGNORE_ID, NUM_CLASSES
from cepr.errors import DatasetError

__all__ = [
    "CloudRoboticsDataset",
    "Frame",
    "IndexEntry",
    "Sample",
    "bad_label_ids",
    "find_index",
    "load_depth",
    "load_label",
    "load_rgb",
    "load_sample",
    "load_sidecar",
    "parse_index",
    "read_index",
    "resolution_dirs",
]

_RES_RE = re.compile(r"^(\d+)x(\d+)$")
_MAX_LISTED = 10  # how many offending lines / files / ids an error message lists before "... and N more"


def _more(total: int, listed: int) -> str:
    return f"\n  ... and {total - listed} more" if total > listed else ""


# ---- frames ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """One index entry: an RGB image and its TrainIds label (absolute or index-relative-resolved paths)."""

    rgb_path: Path
    label_path: Path
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept str paths and lists for convenience; keep the dataclass hashable and comparable.
        object.__setattr__(self, "rgb_path", Path(self.rgb_path))
        object.__setattr__(self, "label_path", Path(self.label_path))
        object.__setattr__(self, "extra", tuple(str(x) for x in self.extra))

    @property
    def stem(self) -> str:
        return layout.frame_stem(self.rgb_path)

    @property
    def resolution(self) -> str | None:
        """The '<W>x<H>' directory the frame sits under, or None when the paths do not follow the layout."""
        return layout.resolution_of(self.rgb_path) or layout.resolution_of(self.label_path)

    def _sibling(self, kind: str) -> Path | None:
        for p in (self.rgb_path, self.label_path):
            try:
                return layout.sibling_path(p, kind)
            except ValueError:
                continue
        return None

    @property
    def depth_path(self) -> Path | None:
        """The uint16 depth PNG next to the frame (synthetic set only), or None if there is none."""
        p = self._sibling("depth")
        return p if p is not None and p.is_file() else None

    @property
    def sidecar_path(self) -> Path | None:
        """The JSON annotation next to the frame (synthetic set only), or None if there is none."""
        p = self._sibling("annotations")
        return p if p is not None and p.is_file() else None

    def _after(self, kind: str, path: Path) -> tuple[str | None, str | None]:
        parts = path.parts[:-1]  # directories only
        for i in range(len(parts) - 1, -1, -1):
            if parts[i] == kind:
                rest = parts[i + 1:]
                if rest and rest[0] in layout.SPLITS:
                    return rest[0], (rest[1] if len(rest) > 1 else None)
                return None, None
        return None, None

    @property
    def split(self) -> str | None:
        """train/val/test when the path reads ``rgb/<split>/...`` (or ``gtFine/<split>/...``), else None."""
        return self._after("rgb", self.rgb_path)[0] or self._after("gtFine", self.label_path)[0]

    @property
    def sequence(self) -> str | None:
        """The directory right below the split (the recording sequence), or None when there is none."""
        return self._after("rgb", self.rgb_path)[1] or self._after("gtFine", self.label_path)[1]

    def at_resolution(self, resolution: str) -> Frame:
        """The same frame in another resolution's tree; both files must exist there."""
        try:
            layout.parse_resolution(resolution)
            rgb = layout.at_resolution(self.rgb_path, resolution)
            label = layout.at_resolution(self.label_path, resolution)
        except ValueError as e:
            raise DatasetError(f"cannot switch frame {self.rgb_path} to {resolution}: {e}") from None
        missing = [f"{what} {p}" for what, p in (("rgb", rgb), ("label", label)) if not p.is_file()]
        if missing:
            raise DatasetError(f"frame {self.stem} is not available at {resolution}: missing "
                               + " and ".join(missing))
        return Frame(rgb, label, self.extra)

    def _dataset_root(self) -> Path | None:
        """The directory holding the '<W>x<H>' directories (the parent of this frame's resolution dir)."""
        parts = self.rgb_path.parts
        for i in range(len(parts) - 2, -1, -1):
            if _RES_RE.match(parts[i]):
                return Path(*parts[:i]) if i > 0 else Path(".")
        return None

    def available_resolutions(self) -> list[str]:
        """Resolutions holding this frame (rgb and label), largest first; [] when not in a '<W>x<H>' tree."""
        root = self._dataset_root()
        if root is None:
            return []
        candidates = set(layout.RESOLUTIONS)
        if root.is_dir():
            candidates.update(d.name for d in root.iterdir() if d.is_dir() and _RES_RE.match(d.name))
        found = []
        for res in candidates:
            try:
                rgb = layout.at_resolution(self.rgb_path, res)
                label = layout.at_resolution(self.label_path, res)
            except ValueError:  # the label is not in a resolution tree: only rgb can move
                return []
            if rgb.is_file() and label.is_file():
                found.append(res)
        return sorted(found, key=_res_key)


# ---- index files -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IndexEntry:
    """A parsed index line, kept with its line number so errors can point at it."""

    line: int
    frame: Frame


def parse_index(index_path: str | Path) -> tuple[list[IndexEntry], list[str]]:
    """Parse an index without raising on bad lines: (entries, problems). The index file itself must exist.

    Shared by :func:`read_index` (which raises) and the dataset checker (which collects every problem).
    """
    path = Path(index_path)
    if not path.exists():
        raise DatasetError(f"index file not found: {path}")
    if path.is_dir():
        raise DatasetError(f"{path} is a directory, expected an index file such as "
                           f"{path / 'test-index.txt'} (find_index() resolves directories)")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read index file {path}: {e}") from None
    base = path.absolute().parent
    entries: list[IndexEntry] = []
    problems: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cols = line.split()
        if len(cols) < 2:
            problems.append(f"{path}:{lineno}: expected 'rgb_path label_path', found one column {line!r}")
            continue
        rgb, label = (base / c for c in cols[:2])  # an absolute column replaces the base
        entries.append(IndexEntry(lineno, Frame(rgb, label, tuple(cols[2:]))))
    return entries, problems


def read_index(index_path: str | Path, check_files: bool = True) -> list[Frame]:
    """Frames listed in an Ianvs txt index, paths resolved against the index file's directory."""
    path = Path(index_path)
    entries, problems = parse_index(path)
    if problems:
        raise DatasetError(f"{path}: {len(problems)} malformed line(s):\n  "
                           + "\n  ".join(problems[:_MAX_LISTED]) + _more(len(problems), _MAX_LISTED))
    if not entries:
        raise DatasetError(f"index file {path} has no entries (only blank or '#' comment lines)")
    if check_files:
        missing = [f"line {e.line}: {p}" for e in entries
                   for p in (e.frame.rgb_path, e.frame.label_path) if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{path}: {len(missing)} referenced file(s) missing (paths are relative to "
                f"{path.absolute().parent}):\n  " + "\n  ".join(missing[:_MAX_LISTED])
                + _more(len(missing), _MAX_LISTED))
    return [e.frame for e in entries]


def _res_key(name: str) -> tuple[int, int]:
    w, h = layout.parse_resolution(name)
    return (-w * h, -w)


def resolution_dirs(root: str | Path) -> list[Path]:
    """The '<W>x<H>' directories directly under a dataset root, largest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if d.is_dir() and _RES_RE.match(d.name)]
    return sorted(dirs, key=lambda d: _res_key(d.name))


def find_index(path: str | Path, split: str = "test") -> Path:
    """Resolve a user-given path to an index file.

    ``path`` may be the index itself, a resolution directory holding ``{split}-index.txt``, or a dataset
    root holding resolution directories (640x480 preferred, as the benchmark's working size; then the
    standard resolutions; then any other '<W>x<H>' directory).
    """
    if split not in layout.SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(layout.SPLITS)}")
    p = Path(path)
    name = f"{split}-index.txt"
    if p.is_file():
        return p
    if not p.exists():
        raise DatasetError(f"dataset path not found: {p} (expected an index file, a <W>x<H> resolution "
                           f"directory or a dataset root)")
    if (p / name).is_file():
        return p / name
    preferred = ["640x480"] + [r for r in layout.RESOLUTIONS if r != "640x480"]
    others = [d.name for d in resolution_dirs(p) if d.name not in preferred]
    looked = []
    for res in preferred + others:
        cand = p / res / name
        looked.append(str(cand))
        if cand.is_file():
            return cand
    present = [d.name for d in resolution_dirs(p)]
    raise DatasetError(
        f"no {name} found for {p}; looked for {p / name} and " + ", ".join(looked)
        + (f" (resolution directories present: {', '.join(present)})" if present
           else " (no <W>x<H> resolution directories present)"))


# ---- file loaders ------------------------------------------------------------------------------------

def _read_bytes(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise DatasetError(f"{what} file not found: {path}")
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"cannot read {what} file {path}: {e}") from None
    if buf.size == 0:
        raise DatasetError(f"{what} file is empty: {path}")
    return buf


def _decode(buf: np.ndarray, flags: int, path: Path, what: str) -> np.ndarray:
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as e:  # pragma: no cover - OpenCV raises only on odd inputs
        raise DatasetError(f"cannot decode {what} file {path}: {e}") from None
    if img is None:
        raise DatasetError(f"cannot decode {what} file {path}: not a readable image (corrupt, truncated "
                           f"or unsupported format, {buf.size} bytes)")
    return img


def _is_palette_png(buf: np.ndarray) -> bool:
    # PNG signature (8 bytes), IHDR length+type (8), width, height (8), bit depth (1), colour type at 25.
    return buf.size > 25 and bytes(buf[:8]) == b"\x89PNG\r\n\x1a\n" and int(buf[25]) == 3


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 in RGB order; grayscale is expanded and alpha dropped.

    EXIF orientation is ignored so pixels stay aligned with the label as stored (as PIL does in Ianvs).
    """
    path = Path(path)
    buf = _read_bytes(path, "rgb")
    img = _decode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION, path, "rgb")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:  # pragma: no cover - IMREAD_COLOR
        raise DatasetError(f"rgb file {path}: unexpected decoded shape {img.shape} {img.dtype}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def bad_label_ids(label: np.ndarray) -> dict[int, int]:
    """{id: pixel count} for ids that are neither a class (0..NUM_CLASSES-1) nor IGNORE_ID."""
    bad = label[(label >= NUM_CLASSES) & (label != IGNORE_ID)]
    if bad.size == 0:
        return {}
    ids, counts = np.unique(bad, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts, strict=True)}


def _bad_ids_message(path: Path, bad: dict[int, int]) -> str:
    items = sorted(bad.items())
    listed = ", ".join(f"{i} ({c} px)" for i, c in items[:_MAX_LISTED])
    more = f", ... and {len(items) - _MAX_LISTED} more ids" if len(items) > _MAX_LISTED else ""
    return (f"label file {path}: ids outside the {NUM_CLASSES}-class TrainIds set "
            f"(valid 0-{NUM_CLASSES - 1}, {IGNORE_ID} = ignore): {listed}{more}")


def load_label(path: str | Path, validate: bool = True) -> np.ndarray:
    """(H, W) uint8 TrainIds from a single-channel uint8 or uint16 PNG.

    With ``validate``, ids other than 0..NUM_CLASSES-1 and 255 raise. uint16 labels are always checked
    before narrowing to uint8, since a value above 255 cannot be narrowed without changing its meaning.
    """
    path = Path(path)
    buf = _read_bytes(path, "label")
    img = _decode(buf, cv2.IMREAD_UNCHANGED, path, "label")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim != 2:
        hint = ("it is a palette PNG, which OpenCV expands to colours; save the ids as a single-channel "
                "8-bit grayscale PNG" if _is_palette_png(buf)
                else "expected single-channel TrainIds (*_TrainIds.png), not the colour viz/ image")
        raise DatasetError(f"label file {path} has {img.shape[2]} channels and looks like a colour viz "
                           f"image, expected TrainIds: {hint}")
    if img.dtype == np.uint16:
        bad = bad_label_ids(img)
        if bad and (validate or max(bad) > 255):
            raise DatasetError(_bad_ids_message(path, bad))
        return img.astype(np.uint8)
    if img.dtype != np.uint8:
        raise DatasetError(f"label file {path} has pixel type {img.dtype}, expected uint8 or uint16 TrainIds")
    if validate:
        bad = bad_label_ids(img)
        if bad:
            raise DatasetError(_bad_ids_message(path, bad))
    return img


def load_depth(path: str | Path) -> np.ndarray:
    """(H, W) float32 metres from a uint16 millimetre PNG; 0 stays 0 (no return, e.g. sky)."""
    path = Path(path)
    buf = _read_bytes(path, "depth")
    img = _decode(buf, cv2.IMREAD_UNCHANGED, path, "depth")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim != 2 or img.dtype != np.uint16:
        chans = 1 if img.ndim == 2 else img.shape[2]
        raise DatasetError(f"depth file {path} is {img.dtype} with {chans} channel(s), expected a "
                           f"single-channel uint16 PNG in millimetres")
    return img.astype(np.float32) * np.float32(0.001)


def load_sidecar(path: str | Path) -> dict[str, Any]:
    """The frame's JSON annotation (objects, distances, cached task answers)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"sidecar file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"sidecar file {path} is not valid JSON: {e.msg} at line {e.lineno} "
                           f"column {e.colno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read sidecar file {path}: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"sidecar file {path} holds a JSON {type(data).__name__}, expected an object")
    return data


# ---- samples -----------------------------------------------------------------------------------------

@dataclass
class Sample:
    """A loaded frame: ``depth``/``sidecar`` are None where the dataset has none; the real set has neither."""

    frame: Frame
    rgb: np.ndarray | None  # None when loaded with rgb=False (statistics need only labels and depth)
    label: np.ndarray
    depth: np.ndarray | None = None
    sidecar: dict[str, Any] | None = field(default=None)


def _wh(a: np.ndarray) -> str:
    return f"{a.shape[1]}x{a.shape[0]}"


def load_sample(frame: Frame, depth: bool = True, sidecar: bool = True, validate: bool = True,
                rgb: bool = True) -> Sample:
    """Load a frame's files and check that they line up pixel for pixel."""
    label = load_label(frame.label_path, validate=validate)
    image = load_rgb(frame.rgb_path) if rgb else None
    if image is not None and image.shape[:2] != label.shape:
        raise DatasetError(f"size mismatch: rgb {_wh(image)} vs label {_wh(label)} "
                           f"({frame.rgb_path} vs {frame.label_path})")
    d = None
    if depth:
        dp = frame.depth_path
        if dp is not None:
            d = load_depth(dp)
            if d.shape != label.shape:
                ref, ref_path, ref_name = ((image, frame.rgb_path, "rgb") if image is not None
                                           else (label, frame.label_path, "label"))
                raise DatasetError(f"size mismatch: {ref_name} {_wh(ref)} vs depth {_wh(d)} "
                                   f"({ref_path} vs {dp})")
    s = None
    if sidecar:
        sp = frame.sidecar_path
        if sp is not None:
            s = load_sidecar(sp)
    return Sample(frame, image, label, d, s)


class CloudRoboticsDataset:
    """The frames of one index file, loaded on access (random access, no caching)."""

    def __init__(self, index_path: str | Path, check_files: bool = True) -> None:
        self.index_path = Path(index_path)
        self.frames: list[Frame] = read_index(self.index_path, check_files=check_files)

    @classmethod
    def from_path(cls, path: str | Path, split: str = "test",
                  check_files: bool = True) -> CloudRoboticsDataset:
        """Open from an index file, a resolution directory or a dataset root (see :func:`find_index`)."""
        return cls(find_index(path, split), check_files=check_files)

    @property
    def root(self) -> Path:
        """The index file's directory, which relative index paths are resolved against."""
        return self.index_path.absolute().parent

    @property
    def resolution(self) -> str | None:
        return layout.resolution_of(self.index_path.absolute()) or self.frames[0].resolution

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Sample:
        return load_sample(self.frames[operator.index(i)])

    def __iter__(self) -> Iterator[Sample]:
        for frame in self.frames:
            yield load_sample(frame)

    def __repr__(self) -> str:
        return f"CloudRoboticsDataset({str(self.index_path)!r}, frames={len(self.frames)})"
