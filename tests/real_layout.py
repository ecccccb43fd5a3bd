"""A tiny data set in EXACTLY the layout of the real Cloud-Robotics release (KubeEdge Ianvs), for the tests that
run the real-set job and the dataset commands on it:

    <root>/2048x1024/{rgb,gtFine,viz}/{train,test}/<scene>/<stem>{.png,_TrainIds.png,.png}
    <root>/640x480/...                                          the same frames, resized per axis
    <root>/<res>/train-index.txt, test-index.txt                "rgb_path label_path", relative to <res>/

with uint16 ``*_TrainIds.png`` labels (255 = ignore), scene folders such as ``20220420_front/``, no depth, no
sidecar, no val split and no val index; ``640x480/test-index.txt`` has CRLF line endings (a Windows copy).
Frame contents come from ``helpers`` (a pure function of size and frame number).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers import make_label, make_rgb, write_gray, write_rgb

REAL_RESOLUTIONS = ("2048x1024", "640x480")
SCENES = ("20220420_front", "20220420_garden")


def frame_files(split: str, scene: str, stem: str) -> tuple[str, str, str]:
    """(rgb, label, viz) paths of one frame, relative to a resolution folder."""
    return (f"rgb/{split}/{scene}/{stem}.png", f"gtFine/{split}/{scene}/{stem}_TrainIds.png",
            f"viz/{split}/{scene}/{stem}.png")


def make_real_layout(root: str | Path, n_test: int = 4, n_train: int = 2,
                     resolutions: tuple[str, ...] = REAL_RESOLUTIONS, crlf_index: str = "640x480/test-index.txt"
                     ) -> Path:
    """Write the fixture under ``root`` and return ``root``. Frame ``k`` of a split sits in scene
    ``SCENES[k % 2]``; frame numbers are shared across resolutions, so each copy is the same scene."""
    from cepr.data.classes import palette

    root = Path(root)
    colours = np.asarray(palette(), np.uint8)
    for res in resolutions:
        w, h = (int(v) for v in res.split("x"))
        rdir = root / res
        for split, n in (("train", n_train), ("test", n_test)):
            lines = []
            for k in range(n):
                scene = SCENES[k % len(SCENES)]
                stem = f"{scene}_{k:06d}" if split == "test" else f"{scene}_{100 + k:06d}"
                rgb_rel, lab_rel, viz_rel = frame_files(split, scene, stem)
                label = make_label(w, h, k)
                write_rgb(rdir / rgb_rel, make_rgb(w, h, k))
                write_gray(rdir / lab_rel, label.astype(np.uint16))  # the release's labels are 16-bit
                write_rgb(rdir / viz_rel, colours[np.minimum(label, len(colours) - 1)])
                lines.append(f"{rgb_rel} {lab_rel}")
            index = rdir / f"{split}-index.txt"
            eol = "\r\n" if index == root / crlf_index else "\n"
            index.write_bytes((eol.join(lines) + eol).encode())
    return root
