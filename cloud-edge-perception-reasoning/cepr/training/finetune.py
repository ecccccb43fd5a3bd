"""``cepr llm finetune``: LoRA fine-tuning of the edge language model on the training split, with torch on CPU.

Each training example is exactly what the ``llamacpp`` edge reasoner scores (``cepr.llm.prompts``): the frame
part (preamble and the scene summary's text form, BOS first), the task part (question and lettered options,
tokenized on its own as llama.cpp does), and the true answer's option letter (`` A``, one token) as the target.
The loss is the next-token cross-entropy of that letter over the whole vocabulary.

A step is one training frame and its five tasks: the frame part is run once, its key/value cache (with the
gradient) repeated for the five task parts, which run as one batch (right-padded: padding comes after every real
token, so a causal model never sees it); only the five answer positions go through the output layer. The
summaries come from the edge pipeline (INT8 RFNet, what the reasoner reads at run time; ``summaries: edge``) or
from the ground-truth mask (``truth``). The train split's frames are shuffled by the seed; each one's summary
and answers are computed when first needed and kept in ``examples.jsonl`` in the output folder.

Output folder: ``checkpoint.pt`` (LoRA, optimizer, step, RNG: ``--resume`` continues from it), ``peft/`` (the
adapter for vLLM), ``adapter.gguf`` (for llama.cpp), ``train_log.json`` (losses, time). Training stops at
``steps`` or when ``max_minutes`` of this run's wall time are spent, whichever comes first, and saves.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cepr.data.cloud_robotics import CloudRoboticsDataset, find_index
from cepr.data.tasks import TASK_NAMES, answers_for_sample, camera_for, get_task
from cepr.edge.models import auto_model, calibration_for, model_path
from cepr.edge.pipeline import EdgePipeline
from cepr.edge.planner import Planner
from cepr.edge.summary import summarize
from cepr.errors import CeprError
from cepr.llm.gemma_hf import cached_gemma_hf
from cepr.llm.hf_cache import cache_keyword, output_cache
from cepr.llm.prompts import frame_prompt, option_continuation, option_letters, task_prompt
from cepr.training.loop import open_checkpoint, save_checkpoint, train_loop

SHIPPED_BASES = {"gemma3-270m"}


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field("gemma3-270m", description="Hugging Face folder, or a shipped model's name")
    data: str = "datasets/cloud-robotics-synth"
    split: str = "train"
    out: str
    summaries: Literal["edge", "truth"] = "edge"
    frames: int | None = Field(None, ge=1, description="use at most this many training frames")
    steps: int = Field(1000, ge=1, description="optimizer steps (one frame, five tasks, each)")
    max_minutes: float = Field(30.0, gt=0)
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    last_layers: int | None = Field(None, ge=1, description="LoRA on the last N decoder layers only (None: all); "
                                    "the backward pass then stops there, which makes a step cheaper")
    dropout: float = Field(0.0, ge=0, lt=1)
    lr: float = Field(2e-4, gt=0)
    warmup: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(25, ge=1)
    progress: bool = True

    def training_key(self) -> dict:
        """What a resumed run must share with the checkpoint (the budget and step count may change)."""
        return self.model_dump(exclude={"steps", "max_minutes", "threads", "progress", "checkpoint_every", "out"})


# ---- the base model ----------------------------------------------------------------------------------------------
def base_folder(base: str) -> Path:
    """A Hugging Face folder for ``base``: a folder with config.json, or a shipped name (converted once, cached)."""
    if base in SHIPPED_BASES:
        return cached_gemma_hf(base)
    p = Path(base).expanduser()
    if not (p / "config.json").is_file():
        raise CeprError(f"base model {base!r}: neither a Hugging Face folder (with config.json) nor a shipped "
                        f"name ({', '.join(sorted(SHIPPED_BASES))}); `cepr models gemma-hf --out DIR` makes one")
    return p


def load_base(base: str):
    """(model in float32, tokenizer, folder)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = base_folder(base)
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()  # no dropout in the base model; LoRA's own dropout is set by its spec
    return model, tok, folder


# ---- examples ----------------------------------------------------------------------------------------------------
def frame_example(summary, answers: dict[str, str], params=None) -> dict:
    """The texts the reasoner scores for one frame: {frame, tasks: [[task text, answer continuation]]}."""
    tasks = []
    for t in TASK_NAMES:
        allowed = get_task(t).answers
        if answers[t] not in allowed:
            raise CeprError(f"task {t}: answer {answers[t]!r} is not one of {allowed}")
        letter = option_letters(len(allowed))[allowed.index(answers[t])]
        tasks.append([task_prompt(t, params), option_continuation(letter)])
    return {"frame": frame_prompt(summary), "tasks": tasks, "task_names": list(TASK_NAMES)}


class Examples:
    """The shuffled training frames; each frame's example is made on first use and kept in ``cache``."""

    def __init__(self, data: str, split: str, summaries: str, seed: int, frames: int | None, cache: Path):
        try:
            self.ds = CloudRoboticsDataset(find_index(data, split=split))
        except Exception as e:  # noqa: BLE001 - a missing dataset surfaces as several error types
            raise CeprError(f"training data {data!r} (split {split}): {e}") from None
        if len(self.ds) == 0:
            raise CeprError(f"training data {data!r}: the {split} split has no frames")
        order = list(range(len(self.ds)))
        random.Random(seed).shuffle(order)
        self.order = order[:frames] if frames else order
        self.summaries = summaries
        self.cache = cache
        self._done: dict[int, dict] = {}
        if cache.is_file():
            for line in cache.read_text().splitlines():
                if line.strip():
                    e = json.loads(line)
                    self._done[e["index"]] = e
        self._pipe = None

    def __len__(self) -> int:
        return len(self.order)

    def _summary(self, sample):
        if self.summaries == "truth":
            h, w = sample.label.shape
            return summarize(sample.label, sample.depth, camera_for(sample.sidecar, w, h))
        if self._pipe is None:
            name = auto_model(sample.depth is not None)
            self._pipe = EdgePipeline(model_path(name), planner=Planner.from_file(calibration_for(model_path(name))))
        return self._pipe.run_sample(sample).summary

    def __getitem__(self, step: int) -> dict:
        """The example of a step (the frames cycle when there are more steps than frames)."""
        i = self.order[step % len(self.order)]
        if i not in self._done:
            sample = self.ds[i]
            e = {"index": i, "frame_id": sample.frame.stem if hasattr(sample, "frame") else str(i),
                 **frame_example(self._summary(sample), answers_for_sample(sample))}
            self._done[i] = e
            with self.cache.open("a") as f:
                f.write(json.dumps(e) + "\n")
        return self._done[i]


# ---- the loss ----------------------------------------------------------------------------------------------------
def encode(tok, example: dict) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """(frame ids with BOS, task ids per task, answer continuation ids per task), tokenized as llama.cpp does: each
    part on its own, special-token text not parsed."""
    bos = tok.bos_token_id
    if bos is None:
        raise CeprError("the tokenizer has no BOS token")
    frame = [bos, *tok.encode(example["frame"], add_special_tokens=False)]
    tasks, targets = [], []
    for text, cont in example["tasks"]:
        tasks.append(tok.encode(text, add_special_tokens=False))
        targets.append(tok.encode(cont, add_special_tokens=False))
        if not targets[-1]:
            raise CeprError(f"option continuation {cont!r} is no token for this tokenizer")
    return frame, tasks, targets


def answer_logits(model, frame: list[int], tasks: list[list[int]], targets: list[list[int]]):
    """Logits (n_target_tokens, vocab) that predict each task's answer tokens, teacher-forced after frame + task,
    the frame run once (see the module doc); rows in order of task, then answer token."""
    import torch

    n = len(tasks)
    dev = next(model.parameters()).device
    key = cache_keyword(model.model)
    cache = output_cache(model.model(input_ids=torch.tensor([frame], device=dev), use_cache=True))
    cache.batch_repeat_interleave(n)
    seqs = [t + c[:-1] for t, c in zip(tasks, targets)]
    width = max(len(s) for s in seqs)
    pad = 0 if model.config.pad_token_id is None else model.config.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=dev)
    pos = torch.arange(len(frame), len(frame) + width, device=dev)
    h = model.model(input_ids=ids, **{key: cache}, position_ids=pos.unsqueeze(0).expand(n, -1),
                    use_cache=True).last_hidden_state
    rows = [i for i, (t, c) in enumerate(zip(tasks, targets)) for _ in c]
    cols = [len(t) - 1 + j for t, c in zip(tasks, targets) for j in range(len(c))]
    logits = model.lm_head(h[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)])
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def example_loss(model, tok, example: dict):
    """(loss, right): the answers' negative log-likelihood (summed over an answer's tokens, averaged over the
    tasks) and how many tasks' true option is the most likely one (counted where every option is one token)."""
    import torch

    frame, tasks, targets = encode(tok, example)
    logits = answer_logits(model, frame, tasks, targets)
    flat = torch.tensor([t for c in targets for t in c], device=logits.device)
    loss = torch.nn.functional.cross_entropy(logits.float(), flat, reduction="sum") / len(tasks)
    right, row = 0, 0
    for i, t in enumerate(example.get("task_names") or ()):
        opts = option_tokens(tok, t)
        if opts is not None and len(targets[i]) == 1:
            right += int(opts[int(torch.argmax(logits[row, opts]))] == targets[i][0])
        row += len(targets[i])
    return loss, right


def option_tokens(tok, task: str) -> list[int] | None:
    """The options' tokens when each option is one token, else None."""
    ids = [tok.encode(option_continuation(c), add_special_tokens=False)
           for c in option_letters(len(get_task(task).answers))]
    return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None


# ---- training ----------------------------------------------------------------------------------------------------
def _lr(cfg: FinetuneConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr


def finetune(cfg: FinetuneConfig, resume: bool = False, log=print) -> dict:
    """Train (or continue) and save; returns the training log."""
    import torch

    from cepr.llm import lora  # torch

    out = Path(cfg.out)
    ckpt_path, ckpt = open_checkpoint(out, cfg.training_key(), resume)
    base_folder(cfg.base)  # a bad base or data path fails before anything is loaded
    data = Examples(cfg.data, cfg.split, cfg.summaries, cfg.seed, cfg.frames, out / "examples.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model, tok, folder = load_base(cfg.base)
    n_layers = len(lora.decoder_layers(model))
    if cfg.last_layers is not None and cfg.last_layers > n_layers:
        raise CeprError(f"last_layers {cfg.last_layers}: the model has {n_layers} decoder layers")
    chosen = tuple(range(n_layers - cfg.last_layers, n_layers)) if cfg.last_layers else None
    spec = lora.LoraSpec(r=cfg.r, alpha=cfg.alpha, targets=tuple(cfg.targets), dropout=cfg.dropout, layers=chosen)
    adapter = lora.inject(model, spec)  # PEFT's model: its LoRA layers sit inside ``model`` itself
    params = lora.trainable(adapter)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    hist = {"loss": [], "right": [], "tasks": [], "seconds": []}
    step, spent_before = 0, 0.0
    if ckpt is not None:
        lora.load_lora_state(adapter, ckpt["lora"])
        opt.load_state_dict(ckpt["optim"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, hist, spent_before = ckpt["step"], ckpt["hist"], ckpt["seconds"]
        log(f"resuming at step {step} ({spent_before / 60:.1f} min trained before)")
    n_train = sum(p.numel() for p in params)
    where = f"the last {cfg.last_layers} of {n_layers} layers" if cfg.last_layers else f"all {n_layers} layers"
    log(f"base {folder} ({sum(p.numel() for p in model.parameters()) - n_train:,} parameters, frozen); "
        f"LoRA r={cfg.r} alpha={cfg.alpha} on {', '.join(cfg.targets)} of {where}: {n_train:,} trainable; "
        f"{len(data)} {cfg.split} frames ({cfg.summaries} summaries); {torch.get_num_threads()} threads")

    def save(step: int) -> None:
        save_checkpoint(ckpt_path, {
            "key": cfg.training_key(), "step": step, "lora": lora.lora_state(adapter),
            "optim": opt.state_dict(), "torch_rng": torch.get_rng_state(), "hist": hist,
            "seconds": spent_before + time.perf_counter() - t_start})

    def one_step(step: int) -> dict:
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        example = data[step]
        loss, right = example_loss(model, tok, example)
        if not math.isfinite(loss.item()):
            raise CeprError(f"step {step}: the loss is {loss.item()} (lower --lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist["loss"].append(round(loss.item(), 5))
        hist["right"].append(right)
        hist["tasks"].append(len(example["tasks"]))
        hist["seconds"].append(round(time.perf_counter() - t0, 3))
        recent = hist["loss"][-20:]
        acc = sum(hist["right"][-20:]) / max(1, sum(hist["tasks"][-20:]))
        return {"loss": f"{sum(recent) / len(recent):.3f}", "acc": f"{acc:.2f}"}

    model.train()
    done = train_loop(one_step, steps=cfg.steps, start_step=step, max_minutes=cfg.max_minutes,
                      checkpoint_every=cfg.checkpoint_every, save=save, desc="finetune", progress=cfg.progress,
                      t_start=t_start)
    step, stopped = done.step, done.stopped
    model.eval()
    lora.save_peft(adapter, out / "peft", base_model=str(folder))
    lora.save_gguf(lora.lora_state(adapter), spec, model.config, out / "adapter.gguf", name=f"{Path(cfg.out).name}")
    result = {"config": cfg.model_dump(), "base_folder": str(folder), "steps": step, "stopped": stopped,
              "minutes_this_run": round((time.perf_counter() - t_start) / 60, 2),
              "minutes_total": round((spent_before + time.perf_counter() - t_start) / 60, 2),
              "trainable_parameters": n_train, "frames_seen": min(step, len(data)), **hist}
    (out / "train_log.json").write_text(json.dumps(result, indent=1) + "\n")
    log(f"stopped by {stopped} at step {step}; adapter: {out / 'adapter.gguf'} (llama.cpp), {out / 'peft'} (vLLM)")
    return result
