"""Builders for tiny on-disk datasets in the Cloud-Robotics layout, written with cv2 for the data tests.

Every frame's content is a pure function of (width, height, frame number), so tests can recompute what a
file should hold without reading it back through the code under test.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

SPLITS = ("train", "val", "test")
PERSON, SKY, BUILDING, VEGETATION, ROAD, SIDEWALK = 11, 10, 2, 8, 0, 1


def make_label(w: int, h: int, i: int) -> np.ndarray:
    """Sky on top, building | vegetation in the middle, road | sidewalk below, an ignore strip on the left,
    and a person in even-numbered frames."""
    lab = np.empty((h, w), np.uint8)
    t1, t2 = h // 3, 2 * h // 3
    lab[:t1] = SKY
    lab[t1:t2, : w // 2] = BUILDING
    lab[t1:t2, w // 2:] = VEGETATION
    lab[t2:, : 3 * w // 4] = ROAD
    lab[t2:, 3 * w // 4:] = SIDEWALK
    lab[:, : max(1, w // 16)] = 255
    if i % 2 == 0:
        lab[h // 2: h // 2 + max(2, h // 6), w // 2 - max(1, w // 16): w // 2 + max(1, w // 16)] = PERSON
    return lab


def make_rgb(w: int, h: int, i: int) -> np.ndarray:
    """RGB (not BGR) image: a colour per label region plus seeded noise."""
    lab = make_label(w, h, i)
    rng = np.random.default_rng(1000 + i)
    base = (lab.astype(np.int32)[..., None] * np.array([7, 13, 23]) + i * 5) % 200
    return (base + rng.integers(0, 50, size=(h, w, 3))).astype(np.uint8)


def make_depth(w: int, h: int, i: int) -> np.ndarray:
    """uint16 millimetres: 0 (no return) on sky, growing towards the horizon elsewhere."""
    rows = np.linspace(20000, 1000, h).astype(np.uint16)
    d = np.repeat(rows[:, None], w, axis=1) + np.uint16(i)
    d[make_label(w, h, i) == SKY] = 0
    return d


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_gray(path: Path, arr: np.ndarray) -> None:
    """Single-channel PNG (uint8 or uint16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)


def palette_png(ids: np.ndarray) -> bytes:
    """A palette (colour type 3) PNG whose indices are ``ids``; cv2 cannot write these itself."""
    h, w = ids.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + ids[y].astype(np.uint8).tobytes() for y in range(h))
    plte = np.repeat(np.arange(256, dtype=np.uint8), 3).tobytes()  # grey ramp: colour k = (k, k, k)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + chunk(b"PLTE", plte) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def frame_rel(split: str, stem: str, kind: str = "rgb", sequence: str = "seq0") -> str:
    """Path of a frame's file relative to its resolution directory."""
    suffix = {"rgb": ".png", "gtFine": "_TrainIds.png", "depth": ".png", "annotations": ".json"}[kind]
    return f"{kind}/{split}/{sequence}/{stem}{suffix}"


def make_tiny_dataset(root: str | Path, resolutions: tuple[str, ...] = ("640x480",), n: int = 3,
                      depth: bool = True, sidecar: bool = True, splits: tuple[str, ...] = SPLITS,
                      sequence: str = "seq0", viz: bool = False) -> Path:
    """Write ``n`` frames per split per resolution under ``root``; returns ``root``.

    Frame ``k`` of split ``s`` has stem ``f"{s}{k:03d}"`` and content number ``k``; indexes use paths
    relative to the resolution directory, as the real dataset does.
    """
    root = Path(root)
    for res in resolutions:
        w, h = (int(v) for v in res.split("x"))
        rdir = root / res
        for split in splits:
            lines = []
            for k in range(n):
                stem = f"{split}{k:03d}"
                rgb_rel = frame_rel(split, stem, "rgb", sequence)
                lab_rel = frame_rel(split, stem, "gtFine", sequence)
                write_rgb(rdir / rgb_rel, make_rgb(w, h, k))
                write_gray(rdir / lab_rel, make_label(w, h, k))
                if viz:
                    write_rgb(rdir / f"viz/{split}/{sequence}/{stem}.png", make_rgb(w, h, k))
                if depth:
                    write_gray(rdir / frame_rel(split, stem, "depth", sequence), make_depth(w, h, k))
                if sidecar:
                    p = rdir / frame_rel(split, stem, "annotations", sequence)
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_text(json.dumps({"stem": stem, "synthetic": True, "objects": []}))
                lines.append(f"{rgb_rel} {lab_rel}")
            (rdir / f"{split}-index.txt").write_text("\n".join(lines) + "\n")
    return root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_default_job(dest: Path, tiny_data: Path, cloud: dict | None = None) -> dict:
    """The repository's default job, testenv and algorithm files copied into ``dest``, the testenv pointed at the
    tiny synthetic set; ``cloud``: keys set in the shared cloud settings (settings/cloud.yaml) of every algorithm.
    Returns the testenv document (already written) for callers that extend it."""
    import shutil

    import yaml

    repo = Path(__file__).resolve().parents[1]
    for d in ("testenv", "testalgorithms"):
        shutil.copytree(repo / d, dest / d)
    shutil.copy(repo / "benchmarkingjob.yaml", dest)
    if cloud:
        update_yaml(dest / "testalgorithms" / "perception-reasoning" / "settings" / "cloud.yaml", cloud)
    te_path = dest / "testenv" / "testenv.yaml"
    te = yaml.safe_load(te_path.read_text())
    res = tiny_data / "160x120"
    te["testenv"]["dataset"] = {"train_index": str(res / "train-index.txt"), "test_index": str(res / "test-index.txt")}
    te_path.write_text(yaml.safe_dump(te))
    return te


def update_yaml(path: Path, update: dict) -> None:
    """Set the top-level keys of ``update`` in the YAML mapping at ``path``."""
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    doc.update(update)
    path.write_text(yaml.safe_dump(doc))


def run_one_algorithm(dest: Path, tiny_data: Path, algorithm: str, edge: dict | None = None,
                      cloud: dict | None = None, replace_cloud: bool = False, limit: int = 3) -> list[dict]:
    """The default job reduced to one algorithm, its shared edge/cloud settings updated with ``edge``/``cloud``
    (``replace_cloud``: the cloud settings are ``cloud`` alone), run through `cepr run --limit`; the samples.jsonl
    records. Fails with the runner's stderr when it exits non-zero."""
    import json
    import subprocess
    import sys

    import yaml

    copy_default_job(dest, tiny_data)
    settings = dest / "testalgorithms" / "perception-reasoning" / "settings"
    for name, update, replace in (("edge.yaml", edge, False), ("cloud.yaml", cloud, replace_cloud)):
        if update:
            doc = {} if replace else yaml.safe_load((settings / name).read_text())
            doc.update(update)
            (settings / name).write_text(yaml.safe_dump(doc))
    job = dest / "benchmarkingjob.yaml"
    j = yaml.safe_load(job.read_text())
    algos = j["benchmarkingjob"]["test_object"]["algorithms"]
    j["benchmarkingjob"]["test_object"]["algorithms"] = [a for a in algos if a["name"] == algorithm]
    j["benchmarkingjob"]["rank"]["selected_dataitem"]["hyperparameters"] = []  # one policy: no grid columns
    job.write_text(yaml.safe_dump(j))
    p = subprocess.run([sys.executable, "-m", "cepr", "run", "-f", "benchmarkingjob.yaml", "--limit", str(limit),
                        "--no-progress"], cwd=dest, capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    return [json.loads(x) for f in (dest / "workspace").rglob("samples.jsonl") for x in f.read_text().splitlines()]
