"""The training loop ``cepr llm finetune`` (LoRA) and ``cepr vlm train`` share: a step budget and a wall-time
budget, a progress bar with the step's figures, a per-step log, a checkpoint every so many steps and at the end,
and resume. Checkpoints: one ``checkpoint.pt`` per output folder, refused when it would be overwritten or when a
resumed run's settings differ, loaded without pickled code (``weights_only=True``), written atomically. What a
step computes (the loss, the learning rate, validation) is the caller's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cepr.errors import CeprError

NAME = "checkpoint.pt"


def open_checkpoint(out: str | Path, key: dict, resume: bool) -> tuple[Path, dict | None]:
    """(the checkpoint's path, its contents when resuming else None); CeprError when ``--resume`` finds none,
    when a fresh run would overwrite one, or when the settings ``key`` differ from the checkpoint's."""
    import torch

    out = Path(out)
    path = out / NAME
    if resume and not path.is_file():
        raise CeprError(f"--resume: no checkpoint in {out} ({NAME}); start without --resume")
    if not resume and path.is_file():
        raise CeprError(f"{out} already holds a checkpoint: pass --resume to continue it, or choose another --out")
    if not resume:
        return path, None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    if ckpt["key"] != key:
        diff = {k: (ckpt["key"].get(k), v) for k, v in key.items() if ckpt["key"].get(k) != v}
        raise CeprError(f"--resume: settings differ from the checkpoint's (checkpoint, now): {diff}")
    return path, ckpt


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` through a temporary file, so a run killed mid-write keeps the last checkpoint."""
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@dataclass
class LoopResult:
    step: int  # the steps done in all, this run and the ones resumed from
    stopped: str  # "steps" or "max_minutes"
    seconds: float  # this run's wall time


def train_loop(step_fn: Callable[[int], dict | None], *, steps: int, start_step: int = 0, max_minutes: float,
               checkpoint_every: int, save: Callable[[int], None], desc: str, progress: bool = True,
               on_step: Callable[[int, dict], None] | None = None, t_start: float | None = None) -> LoopResult:
    """Call ``step_fn(step)`` (one optimiser step at 0-based ``step``; it returns the figures to show, e.g.
    ``{"loss": "0.812"}``) until ``steps`` are done or ``max_minutes`` of wall time have passed since ``t_start``
    (default: now). After each step, ``on_step(step, figures)`` (1-based: steps done) logs or validates, and every
    ``checkpoint_every`` steps ``save(step)`` writes a checkpoint; ``save`` runs once more at the end."""
    t_start = time.perf_counter() if t_start is None else t_start
    budget = max_minutes * 60
    step, stopped = start_step, "steps"
    bar = tqdm(total=steps, initial=step, desc=desc, unit="step", disable=not progress)
    try:
        while step < steps:
            if time.perf_counter() - t_start >= budget:
                stopped = "max_minutes"
                break
            figures = step_fn(step) or {}
            step += 1
            if figures:
                bar.set_postfix(**{k: v for k, v in figures.items() if not k.startswith("_")})
            bar.update(1)
            if on_step is not None:
                on_step(step, figures)
            if step % checkpoint_every == 0:
                save(step)
    finally:
        bar.close()
    save(step)
    return LoopResult(step, stopped, time.perf_counter() - t_start)
