"""Path conventions of the Cloud-Robotics layout (and of our synthetic set, which mirrors it).

    <root>/<W>x<H>/{rgb,gtFine,viz}/{train,val,test}/<sequence>/<stem>.png      (real and synthetic)
    <root>/<W>x<H>/gtFine/.../<stem>_TrainIds.png                              label, TrainIds
    <root>/<W>x<H>/depth/.../<stem>.png                                        synthetic only: uint16 mm
    <root>/<W>x<H>/annotations/.../<stem>.json                                 synthetic only: sidecar
    <root>/<W>x<H>/{train,val,test}-index.txt                                  "rgb label" per line

Ianvs hands metrics the *label* path only, so every sibling (depth, sidecar, other resolutions) is
derivable from any one of the frame's paths.
"""

from __future__ import annotations

import re
from pathlib import Path

RESOLUTIONS: tuple[str, ...] = ("2048x1024", "1280x760", "640x480")
SPLITS: tuple[str, ...] = ("train", "val", "test")
KINDS: tuple[str, ...] = ("rgb", "gtFine", "viz", "depth", "annotations")
LABEL_SUFFIX = "_TrainIds"
_RES_RE = re.compile(r"^(\d+)x(\d+)$")
_SUFFIX = {"rgb": ".png", "gtFine": LABEL_SUFFIX + ".png", "viz": ".png", "depth": ".png", "annotations": ".json"}


def parse_resolution(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480); a clear ValueError otherwise."""
    m = _RES_RE.match(str(text).strip())
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ValueError(f"bad resolution {text!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    return int(m.group(1)), int(m.group(2))


def format_resolution(width: int, height: int) -> str:
    return f"{width}x{height}"


def frame_stem(path: str | Path) -> str:
    """The frame's stem, without the label suffix: '.../00012_TrainIds.png' -> '00012'."""
    stem = Path(path).stem
    return stem.removesuffix(LABEL_SUFFIX)


def _kind_index(parts: tuple[str, ...]) -> int:
    for i in range(len(parts) - 2, -1, -1):  # the last directory component that names a kind
        if parts[i] in KINDS:
            return i
    raise ValueError(f"{'/'.join(parts)}: no rgb/gtFine/viz/depth/annotations directory in the path")


def sibling_path(path: str | Path, kind: str) -> Path:
    """The same frame's file of another kind: rgb <-> gtFine label <-> viz <-> depth <-> annotations."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    p = Path(path)
    parts = p.parts
    i = _kind_index(parts)
    new = list(parts)
    new[i] = kind
    new[-1] = frame_stem(p) + _SUFFIX[kind]
    return Path(*new)


def resolution_of(path: str | Path) -> str | None:
    """The '<W>x<H>' directory the path sits under, or None."""
    for part in reversed(Path(path).parts[:-1]):
        if _RES_RE.match(part):
            return part
    return None


def at_resolution(path: str | Path, resolution: str) -> Path:
    """The same file in another resolution's tree (the path must sit under a '<W>x<H>' directory)."""
    parse_resolution(resolution)
    p = Path(path)
    parts = list(p.parts)
    for i in range(len(parts) - 2, -1, -1):
        if _RES_RE.match(parts[i]):
            parts[i] = resolution
            return Path(*parts)
    raise ValueError(f"{p}: not under a <W>x<H> resolution directory, cannot switch to {resolution}")
