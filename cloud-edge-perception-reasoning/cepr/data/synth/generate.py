"""Write a synthetic set in the Cloud-Robotics layout (plus depth and one sidecar JSON per frame).

Deterministic: frame ``i`` of seed ``s`` is the same image whatever the frame count, worker count or
resolution list, and its split is a pure function of (s, i). Frames are independent, so generation runs
in worker processes and an interrupted run resumes where it stopped (a frame is done once its sidecar,
written last, exists at every resolution).
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cepr import __version__
from cepr.data.classes import CLASSES, DYNAMIC_IDS, NUM_CLASSES, colorize
from cepr.data.geometry import extract_objects
from cepr.data.layout import LABEL_SUFFIX, SPLITS, format_resolution, parse_resolution
from cepr.data.tasks import TaskParams, answer_tasks
from cepr.errors import CeprError

GENERATOR_VERSION = 1
# Splits interleave in a fixed 20-frame pattern (14 train, 3 val, 3 test): a frame's split never depends on
# how many frames were asked for, and any set of 4 or more frames has all three splits. Scenes are drawn at
# random per frame, so the pattern correlates with nothing in them.
_SPLIT_PATTERN = "tsvt" "ttttsvtt" "ttsvtttt"
SPLIT_FRACTIONS = tuple(_SPLIT_PATTERN.count(c) / len(_SPLIT_PATTERN) for c in "tvs")


def frame_split(seed: int, index: int) -> str:
    """train / val / test for frame ``index`` (the same for every seed)."""
    return {"t": "train", "v": "val", "s": "test"}[_SPLIT_PATTERN[index % len(_SPLIT_PATTERN)]]


def frame_stem(seed: int, index: int) -> str:
    return f"synth{seed}_{index:06d}"


@dataclass
class FrameRecord:
    index: int
    split: str
    sequence: str
    stem: str
    class_pixels: list[int]  # at the first resolution
    answers: dict[str, str]
    seconds: float


@dataclass
class GenerationReport:
    out: Path
    frames: int
    generated: int
    skipped: int
    seconds: float
    resolutions: list[str]
    split_counts: dict[str, int] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else float("nan")


def _rel(kind: str, split: str, seq: str, stem: str, suffix: str) -> str:
    return f"{kind}/{split}/{seq}/{stem}{suffix}"


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise CeprError(f"could not write {path} (disk full or no permission?)")


def _objects_record(rendered, spec) -> list[dict]:
    """Visible instances with bbox, visible pixels, occlusion (dynamic classes) and ground range/bearing."""
    inst = rendered.instance
    cam = rendered.camera
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    out = []
    for iid, n in zip(ids.tolist(), counts.tolist()):
        meta = spec.instances.get(iid)
        if meta is None:
            continue
        vs, us = np.nonzero(inst == iid)
        d = rendered.depth[vs, us]
        ok = d > 0
        rec = {"instance_id": iid, "class_id": meta["class_id"], "class": CLASSES[meta["class_id"]].name,
               "bbox": [int(us.min()), int(vs.min()), int(us.max() - us.min() + 1), int(vs.max() - vs.min() + 1)],
               "pixels": int(n)}
        if ok.any():
            P = cam.backproject(us[ok], vs[ok], d[ok])
            rng = np.hypot(P[:, 0], P[:, 2])
            rec["distance_m"] = round(float(rng.min()), 3)
            rec["bearing_deg"] = round(float(np.degrees(np.arctan2(P[:, 0].mean(), P[:, 2].mean()))), 2)
        else:
            rec["distance_m"] = None
            rec["bearing_deg"] = round(float(np.degrees(np.arctan2(us.mean() + 0.5 - cam.cx, cam.fx))), 2)
        if meta["class_id"] in DYNAMIC_IDS and rendered.drawn.get(iid):
            rec["occlusion"] = round(max(0.0, 1.0 - n / rendered.drawn[iid]), 3)
        out.append(rec)
    return out


def _difficulty(spec, objects: list[dict], width: int, height: int) -> dict:
    c = spec.conditions
    dyn = [o for o in objects if o["class_id"] in DYNAMIC_IDS]
    people = [o for o in objects if o["class_id"] in (11, 12)]
    return {
        "lighting": c.lighting, "weather": c.weather,
        "fog_visibility_m": round(c.fog_visibility_m, 2) or None,
        "rain_intensity": round(c.rain_intensity, 3),
        "motion_blur_px": round(c.motion_blur_px * width / 2048, 2),
        "noise_sigma": round(c.noise_sigma, 4),
        "objects": len(objects), "dynamic_objects": len(dyn),
        "max_occlusion": max((o.get("occlusion", 0.0) for o in dyn), default=0.0),
        "nearest_dynamic_m": min((o["distance_m"] for o in dyn if o["distance_m"] is not None), default=None),
        "smallest_person_px": min((o["bbox"][3] for o in people), default=None),
    }


def _generate_one(args) -> FrameRecord:
    from cepr.data.synth.scene import (  # here: scene imports this package, which imports this module
        render_spec,
        sample_scene,
    )

    out, seed, index, resolutions, params = args
    t0 = time.perf_counter()
    spec = sample_scene(seed, index)
    split, seq, stem = frame_split(seed, index), spec.scene_type, frame_stem(seed, index)
    first = None
    for res in resolutions:
        w, h = parse_resolution(res)
        r = render_spec(spec, w, h)
        root = Path(out) / res
        _write_png(root / _rel("rgb", split, seq, stem, ".png"), cv2.cvtColor(r.rgb, cv2.COLOR_RGB2BGR))
        _write_png(root / _rel("gtFine", split, seq, stem, LABEL_SUFFIX + ".png"), r.label)
        _write_png(root / _rel("viz", split, seq, stem, ".png"), cv2.cvtColor(colorize(r.label), cv2.COLOR_RGB2BGR))
        depth_mm = np.clip(np.round(r.depth * 1000.0), 0, 65535).astype(np.uint16)
        _write_png(root / _rel("depth", split, seq, stem, ".png"), depth_mm)
        # answers come from the stored (millimetre-rounded) depth so that re-reading the files reproduces them
        depth_m = depth_mm.astype(np.float32) / 1000.0
        answers = answer_tasks(extract_objects(r.label, depth_m, r.camera, clearance=params.clearance), params)
        answers_gp = answer_tasks(extract_objects(r.label, None, r.camera, clearance=params.clearance), params)
        objects = _objects_record(r, spec)
        sidecar = {
            "synthetic": True, "generator": "cepr.data.synth", "generator_version": GENERATOR_VERSION,
            "cepr_version": __version__, "seed": seed, "index": index, "frame": stem, "split": split,
            "sequence": seq, "resolution": res, "scene_type": spec.scene_type, "scenario": spec.scenario,
            "camera": r.camera.to_dict(),
            "depth": {"unit": "mm", "kind": "z-depth along the optical axis", "no_return": 0, "max_m": 65.535},
            "conditions": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(spec.conditions).items()},
            "difficulty": _difficulty(spec, objects, w, h),
            "objects": objects,
            "task_params": params.to_dict(),
            "answers": answers,
            "answers_ground_plane": answers_gp,
        }
        sc = root / _rel("annotations", split, seq, stem, ".json")
        sc.parent.mkdir(parents=True, exist_ok=True)
        tmp = sc.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(sidecar, indent=1))
        os.replace(tmp, sc)
        if first is None:
            first = (np.bincount(r.label.ravel(), minlength=256)[:NUM_CLASSES].tolist(), answers)
    return FrameRecord(index, split, seq, stem, first[0], first[1], time.perf_counter() - t0)


def _frame_done(out: Path, seed: int, index: int, resolutions) -> bool:
    split, stem = frame_split(seed, index), frame_stem(seed, index)
    for res in resolutions:
        hits = list((out / res / "annotations" / split).glob(f"*/{stem}.json"))
        if not hits:
            return False
    return True


def _existing_manifest_check(out: Path, seed: int, resolutions: list[str], overwrite: bool) -> None:
    man = out / "dataset.json"
    if not man.exists():
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise CeprError(f"{out} exists, is not empty and holds no dataset.json: refusing to write into it "
                            "(pick another --out, or pass --overwrite)")
        return
    old = json.loads(man.read_text())
    if overwrite:
        return
    if old.get("seed") != seed or old.get("generator_version") != GENERATOR_VERSION:
        raise CeprError(f"{out} holds a synthetic set with seed={old.get('seed')}, generator_version="
                        f"{old.get('generator_version')}; asked for seed={seed}, generator_version="
                        f"{GENERATOR_VERSION}. Use another --out or --overwrite.")


def write_index_files(out: Path, resolutions: list[str]) -> dict[str, int]:
    """(Re)write {res}/{split}-index.txt from the frames on disk, in frame order."""
    counts = {}
    for res in resolutions:
        root = out / res
        for split in SPLITS:
            rgbs = sorted((root / "rgb" / split).glob("*/*.png"), key=lambda p: p.stem)
            lines = []
            for p in rgbs:
                seq, stem = p.parent.name, p.stem
                lines.append(f"{_rel('rgb', split, seq, stem, '.png')} "
                             f"{_rel('gtFine', split, seq, stem, LABEL_SUFFIX + '.png')}")
            (root / f"{split}-index.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            counts[split] = len(lines)
    return counts


def generate_dataset(out: str | Path, frames: int, seed: int = 0, resolutions=("640x480",), workers: int | None = None,
                     progress: bool = True, overwrite: bool = False, params: TaskParams | None = None,
                     splits=SPLITS) -> GenerationReport:
    """Generate (or complete) ``frames`` synthetic frames under ``out``.

    ``splits`` renders only the frames of ``range(frames)`` that fall in those splits (the split of frame i is
    fixed), e.g. just the test frames of the 2000-frame set the shipped models were evaluated on."""
    if frames <= 0:
        raise CeprError(f"--frames must be positive, got {frames}")
    try:
        resolutions = [format_resolution(*parse_resolution(r)) for r in resolutions]
    except ValueError as e:
        raise CeprError(str(e)) from None
    out = Path(out)
    _existing_manifest_check(out, seed, resolutions, overwrite)
    previous = _manifest(out)  # an earlier run's frame count and resolutions are kept in the new manifest
    out.mkdir(parents=True, exist_ok=True)
    params = params or TaskParams()
    bad = sorted(set(splits) - set(SPLITS))
    if bad or not splits:
        raise CeprError(f"unknown split(s) {bad}; splits are {', '.join(SPLITS)}")
    wanted = [i for i in range(frames) if frame_split(seed, i) in splits]
    todo = [i for i in wanted if overwrite or not _frame_done(out, seed, i, resolutions)]
    workers = workers or min(os.cpu_count() or 1, 8)
    t0 = time.perf_counter()
    jobs = [(str(out), seed, i, resolutions, params) for i in todo]
    bar = None
    if progress and todo:
        bar = tqdm(total=len(todo), unit="frame", desc=f"synth {','.join(resolutions)}")
    if workers <= 1 or len(todo) <= 1:
        for j in jobs:
            _generate_one(j)
            if bar:
                bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for _ in ex.map(_generate_one, jobs, chunksize=max(1, min(8, math.ceil(len(jobs) / (workers * 4))))):
                if bar:
                    bar.update()
    if bar:
        bar.close()
    seconds = time.perf_counter() - t0
    counts = write_index_files(out, resolutions)
    manifest = {
        "name": "cloud-robotics-synth", "synthetic": True,
        "description": "Procedural Cloud-Robotics-format scenes generated by cepr (not real camera data).",
        "generator_version": GENERATOR_VERSION, "cepr_version": __version__, "seed": seed,
        "frames": max(frames, int(previous.get("frames", 0))),
        "resolutions": sorted(set(resolutions) | set(previous.get("resolutions", []))),
        "split_fractions": SPLIT_FRACTIONS, "split_counts": counts,
        "classes": [{"id": c.id, "name": c.name, "color": list(c.color), "group": c.group} for c in CLASSES],
        "task_params": params.to_dict(),
        "command": f"cepr datasets synth --out {out} --frames {frames} --seed {seed} --resolutions "
                   + " ".join(resolutions) + ("" if set(splits) == set(SPLITS) else " --splits " + " ".join(splits)),
    }
    (out / "dataset.json").write_text(json.dumps(manifest, indent=1))
    return GenerationReport(out, len(wanted), len(todo), len(wanted) - len(todo), seconds, resolutions, counts)


def _manifest(out: Path) -> dict:
    p = out / "dataset.json"
    return json.loads(p.read_text()) if p.exists() else {}
