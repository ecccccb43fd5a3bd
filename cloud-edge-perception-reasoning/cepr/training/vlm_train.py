"""``cepr vlm train``: train our own LLaVA-style vision-language model on the robot scenes, on CPU.

The model is ``cepr.llm.vlm``'s architecture (a SigLIP-style ViT, an MLP projector, a Llama decoder) on the
project's byte-level BPE tokenizer (``cepr.llm.tiny.train_tokenizer`` over ``cepr.training.corpus``, plus ``<image>``),
in a size preset, initialized from the seed and trained from scratch: ``small`` (6.1M parameters, the edge
model), ``base`` (15.8M, the cloud's larger variant), ``large`` (~50M, 224 px images: for a GPU) and ``tiny`` (the
shapes of ``cepr models tiny``, for tests). ``--size auto`` and ``--device auto`` train ``large`` on a CUDA GPU when
torch sees one, ``small`` on the CPU otherwise.

One example is one frame and one task: the user turn holds the frame (one image token per patch) and the task's
question with its allowed answers; the target is the JSON the suite parses, ``{"answer": ..., "reason": ...,
"confidence": 1.0}`` then ``</s>``, the reason a short sentence built from the labels (the true answers of the
frame's tasks, not free invention). The loss is the cross-entropy of the target's tokens only (the prompt and
padding are masked). A step is one frame with all its tasks as one batch.

Validation (every ``val_every`` steps and at the end) on the val split's frames (or, without a val index, the last
``val_frames`` of the shuffled training frames, which are then held out): the mean target loss and the accuracy of
choice scoring (the most likely ``{"answer": "<option>"`` prefix among the allowed options).

Output folder: ``checkpoint.pt`` (weights, optimizer, step, RNG; ``--resume`` continues; loaded with
``weights_only=True``), ``tokenizer.json``, ``log.jsonl`` (one line per step: loss, lr, seconds; one per validation:
val_loss, val_acc), ``hf/`` (``LlavaForConditionalGeneration`` + ``LlavaProcessor``), ``vlm-<quant>.gguf`` (the
decoder, ``cepr.llm.gguf_export``) and ``mmproj-f32.gguf`` (``cepr.llm.vlm.export_mmproj``), ``train_log.json``.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cepr.data.classes import NUM_CLASSES
from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import answers_for_sample, get_task
from cepr.errors import CeprError, DatasetError
from cepr.llm.gguf_export import export_gguf
from cepr.llm.tiny import TARGET, TinySpec, _save_hf, train_tokenizer
from cepr.llm.vlm import (
    VISION,
    VisionSpec,
    build_hf_vlm,
    export_mmproj,
    vlm_answer_prefix,
    vlm_question,
    vlm_tokenizer,
)
from cepr.training.corpus import build_corpus
from cepr.training.loop import open_checkpoint, save_checkpoint, train_loop

MIN_LR_RATIO = 0.02


def presets():
    # small: the edge model (~5M parameters); base: the cloud's larger variant (~2.5x). 128 px images in 16 px
    # patches: 64 image tokens. Every width a multiple of 32 (GGUF Q8_0/Q4_0 blocks); ViT FFN != hidden
    return {"tiny": (TARGET, VISION),
            "small": (TinySpec(hidden=256, layers=6, heads=4, kv_heads=2, head_dim=64, ffn=768),
                      VisionSpec(image_size=128, patch_size=16, hidden=128, layers=4, heads=2, ffn=384)),
            "base": (TinySpec(hidden=384, layers=8, heads=6, kv_heads=2, head_dim=64, ffn=1024),
                     VisionSpec(image_size=128, patch_size=16, hidden=192, layers=6, heads=3, ffn=512)),
            # large: what --size auto trains on a GPU (~50M parameters, 224 px images: 196 image tokens)
            "large": (TinySpec(hidden=512, layers=12, heads=8, kv_heads=4, head_dim=64, ffn=1536),
                      VisionSpec(image_size=224, patch_size=16, hidden=384, layers=8, heads=6, ffn=1152))}


def resolve_device_and_size(device: str, size: str) -> tuple[str, str]:
    """``auto``: CUDA when torch sees a GPU, else the CPU; size ``auto``: large on a GPU, small on the CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise CeprError("--device cuda: torch sees no CUDA GPU (this torch is "
                        f"{torch.__version__}; use --device cpu or auto)")
    if size == "auto":
        size = "large" if device == "cuda" else "small"
    return device, size


class VlmTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = "datasets/cloud-robotics-synth"
    out: str
    size: Literal["auto", "tiny", "small", "base", "large"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    frames: int | None = Field(None, ge=1, description="use at most this many training frames")
    steps: int = Field(100000, ge=1, description="optimizer steps (one frame, all its tasks, each)")
    max_minutes: float = Field(60.0, gt=0, description="wall-time budget of this run")
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(20, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    aux_weight: float = Field(0.5, ge=0, description="weight of the per-patch class loss on the vision tower")
    answer_weight: float = Field(1.0, gt=0, description="loss weight of the answer's tokens against the rest of "
                                                         "the target's (1): the answer is 1 token in ~45")
    val_every: int = Field(500, ge=1)
    val_frames: int = Field(32, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    decay_fraction: float = Field(0.2, ge=0, le=1, description="the last share of this run's time budget over "
                                                                   "which the learning rate decays")
    quant: tuple[str, ...] = ("f32", "q8_0")
    progress: bool = True

    def training_key(self) -> dict:
        """What a resumed run must share with the checkpoint (budget, step count and bookkeeping may change)."""
        return self.model_dump(exclude={"steps", "max_minutes", "threads", "progress", "checkpoint_every", "out",
                                        "device", "decay_fraction",
                                        "val_every", "quant"})


# ---- examples ----------------------------------------------------------------------------------------------------
def question(task: str) -> str:
    t = get_task(task)
    return vlm_question(t.render_prompt(), t.answers)


def reason(task: str, answers: dict[str, str]) -> str:
    """A short sentence from the labels: the frame's other true answers that bear on ``task``."""
    others = "; ".join(f"{k} {v}" for k, v in answers.items() if k != task)
    return f"From the scene: {others}." if others else "From the scene."


def target(task: str, answers: dict[str, str]) -> str:
    return json.dumps({"answer": answers[task], "reason": reason(task, answers), "confidence": 1.0})


def answer_prefix(option: str) -> str:
    """The start of a target up to the comma after the answer: what choice scoring compares."""
    return vlm_answer_prefix(option)


def _split_frames(data: str, split: str):
    return CloudRoboticsDataset(find_index(data, split=split))


class Frames:
    """The training and validation frames, each loaded once into (PIL image, answers, patch class targets)."""

    def __init__(self, cfg: VlmTrainConfig):
        self.vision = presets()[cfg.size][1]
        try:
            self.train = _split_frames(cfg.data, "train")
        except Exception as e:  # noqa: BLE001 - a missing dataset surfaces as several error types
            raise CeprError(f"training data {cfg.data!r} (split train): {e}") from None
        if len(self.train) == 0:
            raise CeprError(f"training data {cfg.data!r}: the train split has no frames")
        order = list(range(len(self.train)))
        random.Random(cfg.seed).shuffle(order)
        order = order[:cfg.frames] if cfg.frames else order
        try:
            if Path(cfg.data).is_file():  # an index file stands for every split: no val split of its own
                raise DatasetError("an index file")
            self.val = _split_frames(cfg.data, "val")
            if len(self.val) == 0:
                raise DatasetError("empty")
            self.val_order = list(range(len(self.val)))[:cfg.val_frames]
            self.val_source = "val split"
        except DatasetError:
            if len(order) < 2:
                raise CeprError(f"training data {cfg.data!r}: no val split and too few training frames "
                                f"({len(order)}) to hold some out") from None
            n = min(cfg.val_frames, len(order) // 2)
            self.val, self.val_order, order = self.train, order[-n:], order[:-n]
            self.val_source = f"{n} held-out train frames"
        self.order = order
        self._cache: dict[tuple[int, int], tuple] = {}

    def _load(self, ds, i: int):
        from PIL import Image


        key = (id(ds), i)
        if key not in self._cache:
            s = ds[i]
            if s.rgb is None:
                raise CeprError(f"frame {i} of {ds.index_path} has no RGB image")
            self._cache[key] = (Image.fromarray(s.rgb), answers_for_sample(s), patch_targets(s.label, self.vision))
        return self._cache[key]

    def train_item(self, step: int):
        return self._load(self.train, self.order[step % len(self.order)])

    def val_items(self):
        return [self._load(self.val, i) for i in self.val_order]


def patch_targets(label, vision):
    """Per-patch class frequencies (grid*grid, classes) of the TrainIds ``label`` resized (nearest) to the model's
    square input as the image processor resizes the frame; ignored pixels are left out (a patch of only ignored
    pixels is all zeros and carries no loss). The auxiliary target of the vision tower."""

    size, p = vision.image_size, vision.patch_size
    h, w = label.shape
    ys = (np.arange(size) * h // size).clip(0, h - 1)
    xs = (np.arange(size) * w // size).clip(0, w - 1)
    lab = label[ys][:, xs].astype(np.int64)
    g = size // p
    patches = lab.reshape(g, p, g, p).transpose(0, 2, 1, 3).reshape(g * g, p * p)
    out = np.zeros((g * g, NUM_CLASSES), np.float32)
    valid = patches < NUM_CLASSES
    rows = np.broadcast_to(np.arange(g * g)[:, None], patches.shape)
    np.add.at(out, (rows[valid], patches[valid]), 1.0)
    return out / np.maximum(out.sum(1, keepdims=True), 1.0)


# ---- model and batches -------------------------------------------------------------------------------------------
def build_model(size: str, seed: int, tok=None):
    """(model, processor, tokenizer) of a preset; the tokenizer is trained from the corpus unless given."""
    text_spec, vision = presets()[size]
    if tok is None:
        tok = vlm_tokenizer(train_tokenizer(build_corpus(seed)))
    model, proc = build_hf_vlm(tok, text_spec, vision, seed)
    return model, proc, tok


def prompt_text(proc, task: str) -> str:
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question(task)}]}]
    return proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def batch(proc, image, answers: dict[str, str], tasks=None, answer_weight: float | None = None):
    """Inputs and labels for one frame's tasks: the prompt and padding masked (-100), the target + </s> kept.
    With ``answer_weight``, a ``weights`` tensor gives the answer prefix's tokens (``{"answer": "X",``) that
    weight in the loss and the rest of the target 1 (``target_loss``)."""
    import torch

    tasks = list(tasks or answers)
    prompts = [prompt_text(proc, t) for t in tasks]
    eos = proc.tokenizer.eos_token
    full = [p + target(t, answers) + eos for p, t in zip(prompts, tasks)]
    enc = _labelled(proc, image, prompts, full)
    if answer_weight is not None:
        weights = (enc["labels"] != -100).float()
        for i, t in enumerate(tasks):
            start = int((enc["labels"][i] != -100).nonzero()[0])
            k = len(proc.tokenizer(answer_prefix(answers[t]), add_special_tokens=False)["input_ids"])
            weights[i, start:start + k] = float(answer_weight)
        assert torch.all(weights[enc["labels"] == -100] == 0)  # the answer lies inside the target
        enc["weights"] = weights
    return enc


def _labelled(proc, image, prompts, full):
    tok = proc.tokenizer
    tok.padding_side = "right"
    enc = proc(text=full, images=[image] * len(full), padding=True, return_tensors="pt")
    n_prompt = [len(proc(text=[p], images=[image], return_tensors="pt")["input_ids"][0]) for p in prompts]
    labels = enc["input_ids"].clone()
    for i, n in enumerate(n_prompt):
        labels[i, :n] = -100
    labels[enc["attention_mask"] == 0] = -100
    enc["labels"] = labels
    return enc


def target_loss(model, enc):
    """Mean cross-entropy over the target tokens; weighted by ``enc["weights"]`` when the batch has them."""
    weights = enc.pop("weights", None)
    if weights is None:
        return model(**enc).loss
    import torch

    logits = model(**{k: v for k, v in enc.items() if k != "labels"}).logits[:, :-1]
    labels = enc["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                           ignore_index=-100, reduction="none").view(labels.shape)
    w = weights[:, 1:]
    return (ce * w).sum() / w.sum()


def choice_scores(model, proc, image, task: str):
    """Log-likelihood of each allowed option's answer prefix after the prompt (a list in option order)."""
    import torch


    opts = get_task(task).answers
    p = prompt_text(proc, task)
    enc = _labelled(proc, image, [p] * len(opts), [p + answer_prefix(o) for o in opts]).to(model.device)
    with torch.no_grad():
        logits = model(**{k: v for k, v in enc.items() if k != "labels"}).logits
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    lab = enc["labels"][:, 1:]
    mask = lab != -100
    picked = lp.gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1).tolist()


def validate(model, proc, items) -> dict:
    import torch


    losses, right, n = [], 0, 0
    model.eval()
    with torch.no_grad():
        for image, answers, _ in items:
            losses.append(target_loss(model, batch(proc, image, answers).to(model.device)).item())
            for t, a in answers.items():
                s = choice_scores(model, proc, image, t)
                right += int(get_task(t).answers[max(range(len(s)), key=s.__getitem__)] == a)
                n += 1
    model.train()
    return {"val_loss": round(sum(losses) / len(losses), 5), "val_acc": round(right / max(1, n), 4)}


# ---- training ----------------------------------------------------------------------------------------------------
def _lr(cfg: VlmTrainConfig, step: int, elapsed_s: float = 0.0) -> float:
    """Warm-up, stable, decay (WSD): linear warm-up over ``warmup`` steps, ``lr`` until the last ``decay_fraction``
    of this run's wall-time budget (``max_minutes``), then linearly down to ``lr * MIN_LR_RATIO`` at its end. The
    decay follows the clock because the budget is time: the steps it will reach are not known in advance."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    budget = cfg.max_minutes * 60
    start = budget * (1 - cfg.decay_fraction)
    if cfg.decay_fraction <= 0 or elapsed_s <= start:
        return cfg.lr * warm
    frac = min(1.0, (elapsed_s - start) / max(budget - start, 1e-9))
    return cfg.lr * warm * (1 - (1 - MIN_LR_RATIO) * frac)


def train(cfg: VlmTrainConfig, resume: bool = False, log=print) -> dict:
    """Train (or continue) and save; returns the training summary."""
    import torch
    from tokenizers import Tokenizer


    device, size = resolve_device_and_size(cfg.device, cfg.size)
    cfg = cfg.model_copy(update={"size": size})  # the checkpoint keeps the preset auto chose
    out = Path(cfg.out)
    ckpt_path, ckpt = open_checkpoint(out, cfg.training_key(), resume)
    frames = Frames(cfg)  # a bad data path fails before the model is built
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    tok = Tokenizer.from_file(str(out / "tokenizer.json")) if resume else None
    model, proc, tok = build_model(cfg.size, cfg.seed, tok)
    if not resume:
        tok.save(str(out / "tokenizer.json"))
    model.train()

    vision = presets()[cfg.size][1]
    aux_head = torch.nn.Linear(vision.hidden, NUM_CLASSES)  # trained, not exported: it only shapes the tower
    model.to(device)
    aux_head.to(device)
    captured = {}
    model.model.vision_tower.register_forward_hook(
        lambda mod, args, out: captured.__setitem__("h", out.hidden_states[-1] if out.hidden_states else
                                                    out.last_hidden_state))
    params = list(model.parameters()) + list(aux_head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, spent_before = 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        aux_head.load_state_dict(ckpt["aux_head"])
        opt.load_state_dict(ckpt["optim"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, spent_before = ckpt["step"], ckpt["seconds"]
        log(f"resuming at step {step} ({spent_before / 60:.1f} min trained before)")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"VLM {cfg.size}: {n_params:,} parameters; {len(frames.order)} train frames, validation on "
        f"{frames.val_source}; " + (f"{torch.get_num_threads()} threads" if device == "cpu" else
                                     f"GPU {torch.cuda.get_device_name()}"))
    log_path = out / "log.jsonl"

    def write(rec):
        with log_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    def save(step: int) -> None:
        save_checkpoint(ckpt_path, {
            "key": cfg.training_key(), "step": step, "model": model.state_dict(), "aux_head": aux_head.state_dict(),
            "optim": opt.state_dict(),
            "torch_rng": torch.get_rng_state(), "seconds": spent_before + time.perf_counter() - t_start})

    def one_step(step: int) -> dict:
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_now = _lr(cfg, step, time.perf_counter() - t_start)
        image, answers, patches = frames.train_item(step)
        answer_loss = target_loss(model, batch(proc, image, answers, answer_weight=cfg.answer_weight).to(device))
        loss = answer_loss
        aux = None
        if cfg.aux_weight:
            tgt = torch.from_numpy(patches).to(device)
            logp = torch.log_softmax(aux_head(captured["h"][0]), -1)
            valid = tgt.sum(-1) > 0
            aux = -(tgt * logp).sum(-1)[valid].mean() if valid.any() else logp.sum() * 0
            loss = answer_loss + cfg.aux_weight * aux
        if not math.isfinite(loss.item()):
            raise CeprError(f"step {step}: the loss is {loss.item()} (lower --lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        write({"step": step + 1, "loss": round(answer_loss.item(), 5),
               **({"aux_loss": round(aux.item(), 5)} if aux is not None else {}), "lr": round(lr_now, 8),
               "seconds": round(time.perf_counter() - t0, 3)})
        return {"loss": f"{answer_loss.item():.3f}"}

    last_val = None

    def validate_every(step: int, _figures: dict) -> None:
        nonlocal last_val
        if step % cfg.val_every == 0:
            last_val = {"step": step, **validate(model, proc, frames.val_items())}
            write(last_val)

    done = train_loop(one_step, steps=cfg.steps, start_step=step, max_minutes=cfg.max_minutes,
                      checkpoint_every=cfg.checkpoint_every, save=save, desc="vlm train", progress=cfg.progress,
                      on_step=validate_every, t_start=t_start)
    step, stopped = done.step, done.stopped
    if last_val is None or last_val["step"] != step:
        last_val = {"step": step, **validate(model, proc, frames.val_items())}
        write(last_val)
    model.eval()
    files = export(model.to("cpu"), proc, out, cfg.quant)
    result = {"config": cfg.model_dump(), "device": device, "steps": step, "stopped": stopped, "parameters": n_params,
              "minutes_this_run": round((time.perf_counter() - t_start) / 60, 2),
              "minutes_total": round((spent_before + time.perf_counter() - t_start) / 60, 2),
              "validation": last_val, "val_source": frames.val_source, "files": files}
    (out / "train_log.json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"stopped by {stopped} at step {step}; val loss {last_val['val_loss']}, acc {last_val['val_acc']}; "
        f"{out / 'hf'}, {', '.join(files['gguf'])}, {files['mmproj']}")
    return result


def export(model, proc, out: Path, quant=("f32",)) -> dict:
    """hf/ (transformers), the decoder GGUFs and the mmproj (llama.cpp)."""
    _save_hf(model, proc, out / "hf")
    ggufs = []
    for q in quant:
        export_gguf(out / "hf", out / f"vlm-{q}.gguf", q, name=f"cepr-vlm-{out.name}")
        ggufs.append(f"vlm-{q}.gguf")
    export_mmproj(out / "hf", out / "mmproj-f32.gguf", name=f"cepr-vlm-{out.name}-mmproj")
    return {"hf": "hf", "gguf": ggufs, "mmproj": "mmproj-f32.gguf"}


def curves(out: str | Path, every: int = 500) -> list[dict]:
    """The training and validation curves of a run from its ``log.jsonl``: per ``every`` steps the mean train
    loss (answer and auxiliary), the learning rate and the cumulative step time, and each validation point."""
    path = Path(out) / "log.jsonl"
    if not path.is_file():
        raise CeprError(f"{path} not found: not a `cepr vlm train` output folder")
    steps, vals = [], {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "val_loss" in rec:
            vals[rec["step"]] = rec
        else:
            steps.append(rec)
    rows, seconds = [], 0.0
    for i in range(0, len(steps), every):
        chunk = steps[i:i + every]
        seconds += sum(r["seconds"] for r in chunk)
        last = chunk[-1]["step"]
        row = {"steps": f"{chunk[0]['step']}-{last}", "loss": round(sum(r["loss"] for r in chunk) / len(chunk), 4),
               "lr": chunk[-1]["lr"], "step_minutes": round(seconds / 60, 1)}
        aux = [r["aux_loss"] for r in chunk if "aux_loss" in r]
        if aux:
            row["aux_loss"] = round(sum(aux) / len(aux), 3)
        v = [vals[s] for s in sorted(vals) if chunk[0]["step"] <= s <= last]
        if v:
            row["val_loss"], row["val_acc"] = v[-1]["val_loss"], v[-1]["val_acc"]
        rows.append(row)
    return rows
