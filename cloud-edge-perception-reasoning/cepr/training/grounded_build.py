"""``cepr vlm build``: rebuild every shipped grounded VLM from the segmentation encoders that ship.

For each grounded VLM (``cepr.edge.models.SHIPPED_GROUNDED``: its name and the encoder it reads): cache the
encoder's vision tokens on the train split (plus the train split of any ``extra`` data set) and on val, train the
projector and decoder (``cepr.training.grounded_train``), and install the folder the edge reasoner loads:
``grounded.json``, ``projector.npz``, ``tokenizer.json`` and ``decoder-{q8_0,q4_0}.gguf``, with ``build.json``
(the command's settings, the encoders' sha256, the training figures). Feature caches are keyed by the encoder
file's sha256, so retraining an encoder and running the command again rebuilds on the new encoder; a training
interrupted part-way resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cepr.errors import CeprError
from cepr.training.grounded_train import check_decoder_shape

INSTALLED = ("grounded.json", "projector.npz", "decoder-q8_0.gguf", "decoder-q4_0.gguf")


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = "datasets/cloud-robotics-synth"
    extra: list[str] = Field(default_factory=list)  # more rendered data sets whose train split is added
    models: list[str] | None = None  # default: every shipped grounded VLM
    work: str = "runs/grounded-build"
    install: str | None = None  # default: the package's assets folder
    max_minutes: float = Field(40.0, gt=0)  # per model
    steps: int = Field(100000, ge=1)  # per model (the wall-time budget usually stops it first)
    hidden: int = Field(256, ge=64)
    layers: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(2, ge=1)
    head_dim: int = Field(64, ge=32)
    ffn: int = Field(768, ge=64)
    batch_frames: int = Field(8, ge=1)
    frames: int | None = Field(None, ge=1)  # only the first N frames of each split (tests)
    risk_summary: bool = True  # also train the one-sentence risk summary
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    progress: bool = True

    @model_validator(mode="after")
    def _heads_fill_the_width(self):
        return check_decoder_shape(self)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _features(cfg: BuildConfig, encoder: str, sha: str, data: str, split: str, log) -> Path:
    """The cached feature file of ``encoder`` on ``data``'s ``split`` (made when missing or stale)."""
    from cepr.training.grounded_train import FeatureSet, extract_features

    tag = hashlib.sha256(f"{Path(data).resolve()}|{split}|{cfg.frames}".encode()).hexdigest()[:10]
    path = Path(cfg.work) / "features" / f"{encoder}-{split}-{sha[:12]}-{tag}.npz"
    if path.is_file():
        fs = FeatureSet.load(path)
        if fs.meta.get("encoder_sha256") == sha and fs.risk is not None:
            log(f"features {encoder} {data} {split}: cached ({len(fs)} frames) {path}")
            return path
    fs = extract_features(data, split, encoder, cfg.frames, progress=cfg.progress)
    fs.meta["encoder_sha256"] = sha
    fs.save(path)
    log(f"features {encoder} {data} {split}: {len(fs)} frames in {fs.meta['seconds']:.0f} s -> {path}")
    return path


def build(cfg: BuildConfig, log=print) -> list[dict]:
    """Build (or resume) every grounded VLM of ``cfg.models``; returns one summary per model."""
    from cepr.edge.models import SHIPPED_GROUNDED, grounded_assets, model_path
    from cepr.training.grounded_train import TrainGroundedConfig, train

    names = cfg.models or list(SHIPPED_GROUNDED)
    unknown = [n for n in names if n not in SHIPPED_GROUNDED]
    if unknown:
        raise CeprError(f"unknown grounded VLM(s) {unknown}; the shipped ones: {', '.join(SHIPPED_GROUNDED)}")
    install_root = Path(cfg.install) if cfg.install else grounded_assets()
    out = []
    for name in names:
        encoder = SHIPPED_GROUNDED[name]
        enc_file = model_path(encoder)
        sha = _sha256(enc_file)
        t0 = time.perf_counter()
        trains = [str(_features(cfg, encoder, sha, d, "train", log)) for d in [cfg.data, *cfg.extra]]
        val = str(_features(cfg, encoder, sha, cfg.data, "val", log))
        settings = {"train": trains, "val": val, "threads": cfg.threads, "progress": cfg.progress,
                    **cfg.model_dump(include={"hidden", "layers", "heads", "kv_heads", "head_dim", "ffn",
                                              "batch_frames", "max_minutes", "steps", "seed", "risk_summary"})}
        key = hashlib.sha256(json.dumps({k: v for k, v in settings.items() if k not in ("threads", "progress")},
                                        sort_keys=True).encode()).hexdigest()[:8]
        run = Path(cfg.work) / f"{name}-{sha[:12]}-{key}"  # a new encoder or new settings: a new run
        tcfg = TrainGroundedConfig(out=str(run), **settings)
        done = run / "grounded.json"
        if done.is_file() and json.loads(done.read_text()).get("extra", {}).get("config") == tcfg.model_dump():
            log(f"{name}: already trained in {run}")
            spec = json.loads(done.read_text())
        else:
            spec = train(tcfg, resume=(run / "checkpoint.pt").is_file(), log=log)
        dest = install_root / name
        tmp = install_root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in INSTALLED:
            shutil.copy2(run / f, tmp / f)
        shutil.copy2(run / "decoder" / "tokenizer.json", tmp / "tokenizer.json")
        record = {"name": name, "encoder": encoder, "encoder_file": enc_file.name, "encoder_sha256": sha,
                  "data": cfg.data, "extra": cfg.extra, "train_frames": spec["extra"].get("train_frames"),
                  "val_acc": spec["extra"]["val_acc"], "steps": spec["extra"]["steps"],
                  "minutes": spec["extra"]["minutes"], "temperature": spec["temperature"],
                  "parameters": spec["extra"]["parameters"], "build": cfg.model_dump(exclude={"progress"}),
                  "files": {f: _sha256(tmp / f) for f in (*INSTALLED, "tokenizer.json")},
                  "seconds": round(time.perf_counter() - t0, 1)}
        (tmp / "build.json").write_text(json.dumps(record, indent=1) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.replace(dest)
        log(f"{name}: val accuracy {record['val_acc']}, {record['steps']} steps, {record['minutes']} min -> {dest}")
        out.append(record)
    write_readme(install_root)
    return out


def write_readme(root: Path) -> Path:
    """``README.md`` of an install folder: every grounded VLM in it, from its ``build.json``."""
    rows = []
    for b in sorted(root.glob("*/build.json")):
        r = json.loads(b.read_text())
        rows.append(f"| `{r['name']}` | `{r['encoder']}` (`{r['encoder_sha256'][:12]}`) | {r['train_frames']} | "
                    f"{r['steps']} | {r['minutes']} | {r['val_acc']} | {r['temperature']} | "
                    f"`{r['files']['decoder-q8_0.gguf'][:12]}` |")
    text = ("# Grounded VLMs\n\n"
            "Built by `cepr vlm build` from the segmentation encoders that ship (docs/llm.md, \"The grounded VLM\");\n"
            "each folder's `build.json` holds the settings, the sha256 of the encoder and of every file, and the\n"
            "training figures. Rebuild them after retraining an encoder: `cepr vlm build` (same arguments).\n\n"
            "| name | encoder (sha256) | train frames | steps | minutes | val accuracy | temperature | "
            "decoder-q8_0 sha256 |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    path = root / "README.md"
    path.write_text(text)
    return path
