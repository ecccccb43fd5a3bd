"""``cepr llm``: language-model work that is not serving: LoRA fine-tuning of the edge model."""

from __future__ import annotations

import importlib.util
import logging

from pydantic import ValidationError

from cepr.cli.formatting import HelpFormatter
from cepr.errors import CeprError
from cepr.training.finetune import FinetuneConfig, finetune


def add_parser(sub) -> None:
    p = sub.add_parser("llm", help="fine-tune the edge language model (LoRA)",
                       description="Language-model training. Needs the `llm` extra.")
    lsub = p.add_subparsers(dest="llm_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    f = lsub.add_parser(
        "finetune", formatter_class=HelpFormatter,
        help="LoRA fine-tuning on the training split's scene summaries and answers (torch, CPU)",
        description=(
            "LoRA fine-tuning of a causal language model on exactly what the llamacpp edge reasoner scores:\n"
            "the frame prompt (scene summary), each task's question with lettered options, and the true\n"
            "answer's letter. One step = one training frame and its five tasks. Stops at --steps or after\n"
            "--max-minutes of wall time, whichever is first, and writes in --out:\n"
            "  adapter.gguf      GGUF LoRA adapter for llama.cpp (edge setting llm_lora)\n"
            "  peft/             PEFT folder (adapter_config.json, adapter_model.safetensors) for vLLM\n"
            "  checkpoint.pt     LoRA + optimizer + step: --resume continues from it\n"
            "  examples.jsonl    the training frames' prompts and answers, made on first use\n"
            "  train_log.json    loss and time per step\n"
            "Example:\n"
            "  cepr llm finetune --out runs/gemma-lora --max-minutes 30\n"
            "  cepr llm finetune --out runs/gemma-lora --max-minutes 10 --steps 200 --resume"),
    )
    f.add_argument("--out", required=True, help="output folder")
    f.add_argument("--base", default="gemma3-270m",
                   help="Hugging Face folder (config.json) or the shipped name gemma3-270m (converted from its "
                        "GGUF once, cached in ~/.cache/cepr)")
    f.add_argument("--data", default="datasets/cloud-robotics-synth", help="dataset root, resolution dir or index")
    f.add_argument("--split", default="train", help="the split trained on (never test)")
    f.add_argument("--summaries", default="edge", choices=["edge", "truth"],
                   help="scene summaries from the edge pipeline (what the reasoner reads) or the true mask")
    f.add_argument("--frames", type=int, default=None, help="use at most this many (shuffled) training frames")
    f.add_argument("--steps", type=int, default=1000, help="optimizer steps (one frame each)")
    f.add_argument("--max-minutes", type=float, default=25.0, help="wall-time budget of this run")
    f.add_argument("--rank", type=int, default=16, help="LoRA rank r")
    f.add_argument("--alpha", type=float, default=32.0, help="LoRA alpha (update scaled by alpha / r)")
    f.add_argument("--targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                    "up_proj", "down_proj"], help="projections that get LoRA")
    f.add_argument("--last-layers", type=int, default=6,
                   help="LoRA on the last N decoder layers only (a cheaper backward pass); 0: all layers")
    f.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    f.add_argument("--warmup", type=int, default=3, help="linear warm-up steps")
    f.add_argument("--seed", type=int, default=0, help="seed of the frame order and the LoRA initialisation")
    f.add_argument("--threads", type=int, default=1, help="torch threads (1 measured faster on the shared 2-core machine)")
    f.add_argument("--checkpoint-every", type=int, default=5, help="steps between checkpoints")
    f.add_argument("--resume", action="store_true", help="continue from --out's checkpoint.pt")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_finetune)


_FLAG = {"r": "rank"}  # config field -> its flag where the names differ


def cmd_finetune(a) -> int:


    missing = [m for m in ("torch", "transformers", "safetensors", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise CeprError(f"cepr llm finetune needs {', '.join(missing)}: pip install -e '.[llm]'")
    if a.split == "test":
        raise CeprError("--split test: fine-tuning on the test split would make its evaluation meaningless")


    logging.getLogger("gguf").setLevel(logging.WARNING)  # GGUFWriter logs every file it writes at INFO

    try:
        cfg = FinetuneConfig(base=a.base, data=a.data, split=a.split, out=a.out, summaries=a.summaries,
                             frames=a.frames, steps=a.steps, max_minutes=a.max_minutes, r=a.rank, alpha=a.alpha,
                             targets=tuple(a.targets), last_layers=a.last_layers or None, lr=a.lr, warmup=a.warmup, seed=a.seed, threads=a.threads,
                             checkpoint_every=a.checkpoint_every, progress=not a.no_progress)
    except ValidationError as e:
        raise CeprError("cepr llm finetune: " + "; ".join(
            f"--{_FLAG.get(str(err['loc'][0]), str(err['loc'][0]).replace('_', '-'))}: {err['msg']}" for err in e.errors())) from None
    r = finetune(cfg, resume=a.resume)
    loss = r["loss"]
    k = max(1, min(20, len(loss) // 2))
    if len(loss) >= 2:
        print(f"loss: first {k} steps {sum(loss[:k]) / k:.3f}, last {k} {sum(loss[-k:]) / k:.3f}; "
              f"{r['steps']} steps, {r['minutes_this_run']:.1f} min this run")
    return 0
