"""Training checkpoints shared by ``cepr llm finetune`` and ``cepr vlm train``: one ``checkpoint.pt`` per output
folder, refused when it would be overwritten or when a resumed run's settings differ, loaded without pickled code
(``weights_only=True``), written atomically."""

from __future__ import annotations

from pathlib import Path

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
