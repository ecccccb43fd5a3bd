"""Training the RFNet-style model on Cloud-Robotics-format data (needs the ``train`` extra: torch).

A run directory holds ``config.json`` (the full recipe), ``train_log.jsonl`` (one line per logged step and
per validation), ``last.pt`` (resumable) and ``best.pt`` (best validation mIoU). Re-running with the same
``--out`` resumes from ``last.pt``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cepr.data.classes import IGNORE_ID, NUM_CLASSES
from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.edge.preprocess import DEPTH_MAX_M, RGB_MEAN, RGB_STD, prepare_depth, prepare_rgb, upsample_argmax
from cepr.errors import CeprError
from cepr.metrics.segmentation import ConfusionMatrix

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str = "datasets/cloud-robotics-synth"
    out: str = "runs/edge"
    width: int = 16
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    use_depth: bool = True
    input_size: tuple[int, int] = (320, 240)  # network input (w, h); frames are resized to it
    crop: tuple[int, int] | None = None  # train on random crops of this (w, h) at full frame size instead
    steps: int = 3000
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    max_train_frames: int | None = None
    val_frames: int = 60
    val_every: int = 500
    log_every: int = 25
    threads: int = 2
    device: str = "auto"  # auto: CUDA when torch sees a GPU, else the CPU
    notes: dict = field(default_factory=dict)

    def model_config(self):
        from cepr.edge.rfnet import RFNetConfig  # torch

        size = self.input_size if self.crop is None else self.crop
        return RFNetConfig(width=self.width, blocks=tuple(self.blocks), use_depth=self.use_depth,
                           input_size=tuple(size))


def _load_split(data: str, split: str, limit: int | None, size, use_depth: bool, progress: bool, seed: int):
    """Frames of one split, resized to ``size`` (or kept at full size when None), as compact arrays."""
    ds = CloudRoboticsDataset(find_index(data, split=split))
    idx = np.arange(len(ds))
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    rgbs, depths, labels = [], [], []
    for i in tqdm(idx, desc=f"load {split}", unit="frame", disable=not progress):
        s = ds[int(i)]
        if use_depth and s.depth is None:
            raise CeprError(f"{s.frame.rgb_path}: no depth file, but the model uses depth "
                            "(train an RGB-only model with --no-depth)")
        rgb, label, depth = s.rgb, s.label, s.depth
        if size is not None:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
            if depth is not None:
                depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
        rgbs.append(rgb)
        labels.append(label)
        depths.append(depth.astype(np.float16) if (use_depth and depth is not None) else None)
    if not rgbs:
        raise CeprError(f"no {split} frames found under {data}")
    return rgbs, depths, labels, ds


def class_weights(labels, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """1/sqrt(frequency), normalised to mean 1 over present classes and clipped, so rare classes count."""
    counts = np.zeros(num_classes, np.float64)
    for lab in labels:
        counts += np.bincount(lab.ravel(), minlength=256)[:num_classes]
    freq = counts / max(1.0, counts.sum())
    w = np.where(freq > 0, 1.0 / np.sqrt(freq + 1e-6), 0.0)
    w /= w[freq > 0].mean()
    return np.clip(w, 0.0, 10.0).astype(np.float32)


def _draws(rng, shapes, cfg: TrainConfig) -> list[tuple[int, int, int, bool, float, float]]:
    """The random choices of one batch: (frame, crop x0, crop y0, flip, contrast, brightness) per sample.

    Drawn in one fixed order whichever device assembles the batch, so the CPU and GPU recipes see the same
    frames, crops, flips and jitter for the same seed."""
    pick = rng.integers(0, len(shapes), cfg.batch_size)
    out = []
    for i in pick:
        x0 = y0 = 0
        if cfg.crop is not None:
            h, w = shapes[i]
            cw, ch = cfg.crop
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        flip = bool(rng.random() < 0.5)
        out.append((int(i), x0, y0, flip, float(rng.uniform(0.75, 1.25)), float(rng.uniform(-0.3, 0.3))))
    return out


def _batch(rng, rgbs, depths, labels, cfg: TrainConfig):
    """One training batch assembled with numpy on the CPU (the CPU recipe)."""
    size = cfg.input_size if cfg.crop is None else cfg.crop
    xs, ds, ys = [], [], []
    for i, x0, y0, flip, contrast, bright in _draws(rng, [lab.shape for lab in labels], cfg):
        rgb, lab, dep = rgbs[i], labels[i], depths[i]
        if cfg.crop is not None:
            cw, ch = cfg.crop
            rgb, lab = rgb[y0:y0 + ch, x0:x0 + cw], lab[y0:y0 + ch, x0:x0 + cw]
            dep = None if dep is None else dep[y0:y0 + ch, x0:x0 + cw]
        if flip:
            rgb, lab = rgb[:, ::-1], lab[:, ::-1]
            dep = None if dep is None else dep[:, ::-1]
        x = prepare_rgb(np.ascontiguousarray(rgb), size)
        # photometric jitter in normalised space: contrast and brightness
        x = x * contrast + bright
        xs.append(x)
        ys.append(np.ascontiguousarray(lab))
        if dep is not None:
            ds.append(prepare_depth(np.ascontiguousarray(dep).astype(np.float32), size))
    return np.stack(xs), (np.stack(ds) if ds else None), np.stack(ys).astype(np.int64)


class DeviceBatcher:
    """Assembles training batches on the training device (a GPU) from uint8 frames uploaded once, with the
    same draws and arithmetic as :func:`_batch`: no per-step host work or host-to-device copies of floats."""

    def __init__(self, rgbs, depths, labels, cfg: TrainConfig, device):
        import torch

        self.cfg, self.torch = cfg, torch
        self.shapes = [lab.shape for lab in labels]
        for r in rgbs:
            if (r.shape[1], r.shape[0]) != tuple(cfg.input_size) and cfg.crop is None:
                raise CeprError("DeviceBatcher expects frames already resized to the input size")
        self.rgbs = [torch.from_numpy(np.ascontiguousarray(r)).to(device) for r in rgbs]
        self.labels = [torch.from_numpy(np.ascontiguousarray(lab)).to(device) for lab in labels]
        self.depths = [None if d is None else torch.from_numpy(np.ascontiguousarray(d)).to(device) for d in depths]
        self.mean = torch.from_numpy(RGB_MEAN).to(device).view(3, 1, 1)
        self.std = torch.from_numpy(RGB_STD).to(device).view(3, 1, 1)
        self.depth_max = DEPTH_MAX_M

    def __call__(self, rng):
        torch, cfg = self.torch, self.cfg
        xs, ds, ys = [], [], []
        for i, x0, y0, flip, contrast, bright in _draws(rng, self.shapes, cfg):
            rgb, lab, dep = self.rgbs[i], self.labels[i], self.depths[i]
            if cfg.crop is not None:
                cw, ch = cfg.crop
                rgb, lab = rgb[y0:y0 + ch, x0:x0 + cw], lab[y0:y0 + ch, x0:x0 + cw]
                dep = None if dep is None else dep[y0:y0 + ch, x0:x0 + cw]
            if flip:
                rgb, lab = rgb.flip(1), lab.flip(1)
                dep = None if dep is None else dep.flip(1)
            x = (rgb.permute(2, 0, 1).float() * (1.0 / 255.0) - self.mean) / self.std
            xs.append(x * contrast + bright)
            ys.append(lab)
            if dep is not None:
                ds.append((dep.float().clamp(0.0, self.depth_max) * (1.0 / self.depth_max))[None])
        return torch.stack(xs), (torch.stack(ds) if ds else None), torch.stack(ys).long()


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise CeprError("--device cuda, but torch sees no CUDA GPU (torch.cuda.is_available() is False: no GPU "
                        f"is visible, or torch {torch.__version__} is a CPU-only build)")
    if name not in ("cpu", "cuda"):
        raise CeprError(f"--device must be auto, cpu or cuda, not {name!r}")
    return name


def evaluate_torch(model, frames, cfg: TrainConfig) -> ConfusionMatrix:
    """Validation at the frames' own resolution with the same post-processing as ONNX inference."""
    from cepr.edge.rfnet import predict_logits  # torch

    cm = ConfusionMatrix()
    model.eval()
    for s in frames:
        h, w = s.label.shape
        cm.update(s.label, upsample_argmax(predict_logits(model, s.rgb, s.depth, tuple(cfg.input_size)), w, h))
    model.train()
    return cm


def _warmup_cosine(opt, steps: int):
    """The learning-rate schedule: linear warm-up over 5% of the steps, then cosine to zero."""
    import torch

    warm = max(1, steps // 20)

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def _resume(last: Path, model, opt, sched, device: str) -> tuple[int, float]:
    """Load ``last.pt`` into the model, optimiser and schedule if a previous run left one: (start step, best
    val mIoU so far); (0, -1.0) for a fresh run."""
    import torch

    if not last.exists():
        return 0, -1.0
    ck = torch.load(last, map_location=device, weights_only=True)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    start, best = ck["step"], ck.get("best_miou", -1.0)
    log.info("resuming %s at step %d (best mIoU %.4f)", last, start, best)
    return start, best


def _save(path: Path, step: int, best: float, model, opt, sched, cfg: TrainConfig) -> None:
    """A checkpoint that both resumes training and exports: model tensors on the CPU whatever the device."""
    import torch

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": step, "best_miou": best, "model_config": model.cfg.to_dict(),
                "input_size": list(cfg.input_size), "train_config": asdict(cfg)}, path)


def _train_step(model, opt, sched, x, d, y, weights, device: str) -> float:
    """One optimiser and schedule step on one batch (forward under bf16 autocast on CUDA); the loss."""
    import torch
    import torch.nn.functional as F

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        logits = model(x, d)
        logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits.float(), y, weight=weights, ignore_index=IGNORE_ID)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


def _log_line(logf, record: dict) -> None:
    """One line of ``train_log.jsonl``, flushed so that a crashed or running job's log is readable."""
    logf.write(json.dumps(record) + "\n")
    logf.flush()


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Train (or resume) the model ``cfg`` describes into ``cfg.out``; see the module docstring for its files."""
    try:
        import torch
    except ImportError as e:
        raise CeprError("training needs torch: pip install -e '.[train]' (pins torch==2.13.0, CPU)") from e

    from cepr.edge.rfnet import RFNet, count_parameters  # torch

    if cfg.batch_size < 2:
        raise CeprError("--batch-size must be at least 2 (batch norm on the globally pooled context branch)")
    if cfg.steps < 1:
        raise CeprError("--steps must be positive")
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    size = None if cfg.crop is not None else tuple(cfg.input_size)
    rgbs, depths, labels, _ = _load_split(cfg.data, "train", cfg.max_train_frames, size, cfg.use_depth, progress,
                                          cfg.seed)
    val_ds = CloudRoboticsDataset(find_index(cfg.data, split="val"))
    val_idx = np.linspace(0, len(val_ds) - 1, min(cfg.val_frames, len(val_ds))).round().astype(int)
    weights = torch.from_numpy(class_weights(labels)).to(device)

    model = RFNet(cfg.model_config()).to(device)
    # on a GPU the batch is assembled there from uint8 frames, and the forward pass runs under bf16 autocast
    gpu_batch = DeviceBatcher(rgbs, depths, labels, cfg, device) if device == "cuda" else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _warmup_cosine(opt, cfg.steps)
    last = out / "last.pt"
    start, best = _resume(last, model, opt, sched, device)
    rng = np.random.default_rng([cfg.seed, start])

    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", unit="step",
               disable=not progress)
    running = None
    with (out / "train_log.jsonl").open("a") as logf:
        for step in bar:
            if gpu_batch is not None:
                x, d, y = gpu_batch(rng)
            else:
                x, d, y = (None if a is None else torch.from_numpy(a)
                           for a in _batch(rng, rgbs, depths, labels, cfg))
            lv = _train_step(model, opt, sched, x, d, y, weights, device)
            if not math.isfinite(lv):
                raise CeprError(f"loss became {lv} at step {step + 1}; lower --lr")
            running = lv if running is None else 0.95 * running + 0.05 * lv
            bar.set_postfix(loss=f"{running:.3f}", best=f"{best:.3f}")
            done = step + 1
            if done % cfg.log_every == 0:
                _log_line(logf, {"step": done, "loss": round(running, 5), "lr": sched.get_last_lr()[0],
                                 "seconds": round(time.perf_counter() - t0, 1)})
            if done % cfg.val_every == 0 or done == cfg.steps:
                cm = evaluate_torch(model, (val_ds[int(i)] for i in val_idx), cfg)
                miou = cm.miou()
                _log_line(logf, {"step": done, "val_miou": round(miou, 5),
                                 "val_pixel_acc": round(cm.pixel_accuracy(), 5), "val_frames": len(val_idx)})
                if miou > best:
                    best = miou
                    _save(out / "best.pt", done, best, model, opt, sched, cfg)
                _save(last, done, best, model, opt, sched, cfg)
    return {"steps": cfg.steps, "best_val_miou": best, "parameters": count_parameters(model),
            "seconds": time.perf_counter() - t0, "out": str(out), "device": device}
