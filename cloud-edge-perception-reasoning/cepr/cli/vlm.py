"""``cepr vlm``: our own vision-language model."""

from __future__ import annotations

import importlib.util
import logging

from pydantic import ValidationError

from cepr.cli.formatting import HelpFormatter
from cepr.errors import CeprError
from cepr.training.vlm_train import VlmTrainConfig, curves, train


def add_parser(sub) -> None:
    p = sub.add_parser("vlm", help="train our own LLaVA-style vision-language model on the robot scenes",
                       description="Our own vision-language model: a SigLIP-style ViT, an MLP projector "
                                   "and a Llama decoder on the project's tokenizer, trained on CPU.")
    s = p.add_subparsers(dest="vlm_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    t = s.add_parser(
        "train", formatter_class=HelpFormatter,
        help="train the VLM on the train split's frames, questions and JSON answers (torch, CPU)",
        description=(
            "Trains from scratch (seeded): each example is a frame, a task's question with its allowed answers,\n"
            "and the target JSON {\"answer\", \"reason\" (from the labels), \"confidence\"}; the loss covers the\n"
            "target's tokens only. One step = one frame and all its tasks. Stops at --steps or after\n"
            "--max-minutes of wall time, validates on the val split (or held-out train frames), and writes in --out:\n"
            "  hf/                        LlavaForConditionalGeneration + processor (transformers)\n"
            "  vlm-f32.gguf, vlm-q8_0.gguf  the decoder (llama.cpp), mmproj-f32.gguf  the vision projector\n"
            "  checkpoint.pt              weights + optimizer + step: --resume continues from it\n"
            "  log.jsonl                  train loss per step, val loss/accuracy per validation\n"
            "  tokenizer.json, train_log.json\n"
            "Example:\n"
            "  cepr vlm train --out runs/vlm-small --max-minutes 60\n"
            "  cepr vlm train --out runs/vlm-small --max-minutes 30 --resume"),
    )
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--data", default="datasets/cloud-robotics-synth", help="dataset root, resolution dir or index")
    t.add_argument("--size", default="auto", choices=["auto", "tiny", "small", "base", "large"],
                   help="model preset: small (6.1M parameters, the edge model), base (15.8M, the cloud's larger "
                        "variant), large (~50M, 224 px: for a GPU), tiny (for tests); auto: large on a GPU, "
                        "small on the CPU")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to train (auto: a CUDA GPU when torch sees one)")
    t.add_argument("--frames", type=int, default=None, help="use at most this many (shuffled) training frames")
    t.add_argument("--steps", type=int, default=100000, help="optimizer steps (one frame each)")
    t.add_argument("--max-minutes", type=float, default=60.0, help="wall-time budget of this run")
    t.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    t.add_argument("--warmup", type=int, default=20, help="linear warm-up steps")
    t.add_argument("--decay-fraction", type=float, default=0.2,
                   help="the learning rate stays at --lr, then decays linearly to 2%% of it over this last share "
                        "of --max-minutes (warm-up, stable, decay); 1 decays over the whole run, e.g. a short "
                        "--resume that cools a run down")
    t.add_argument("--seed", type=int, default=0, help="seed of the tokenizer corpus, weights and frame order")
    t.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    t.add_argument("--aux-weight", type=float, default=0.5,
                   help="weight of the auxiliary per-patch class loss (labels' classes per image patch) on the "
                        "vision tower; 0 turns it off")
    t.add_argument("--answer-weight", type=float, default=1.0,
                   help="loss weight of the answer prefix's tokens ({\"answer\": \"X\",) against the rest of the "
                        "target's; 1 = the plain mean (the answer is about 1 token in 45); 10 was tried: no gain "
                        "in 35 minutes (docs/llm.md)")
    t.add_argument("--val-every", type=int, default=500, help="steps between validations")
    t.add_argument("--val-frames", type=int, default=32, help="validation frames")
    t.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    t.add_argument("--quant", nargs="+", default=["f32", "q8_0"], choices=["f32", "q8_0", "q4_0"],
                   help="decoder GGUF types to write (q4_0: layers in Q4_0, embeddings and head in Q8_0)")
    t.add_argument("--resume", action="store_true", help="continue from --out's checkpoint.pt")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)
    c = s.add_parser("curves", formatter_class=HelpFormatter,
                     help="print a run's training and validation curves (from its log.jsonl) as a table",
                     description="Per --every steps: the mean answer loss and auxiliary loss, the learning rate at\n"
                                 "the end, the cumulative step time, and the last validation (loss, choice\n"
                                 "accuracy) in that range.\nExample:\n  cepr vlm curves runs/vlm-small --every 500")
    c.add_argument("run", help="a cepr vlm train output folder")
    c.add_argument("--every", type=int, default=500, help="steps per row")
    c.set_defaults(func=cmd_curves)
    _add_grounded(s)


def _add_grounded(s) -> None:
    f = s.add_parser(
        "features", formatter_class=HelpFormatter,
        help="cache a split's vision tokens for the grounded VLM (one segmentation pass per frame)",
        description=("Runs the segmentation model once per frame of --split and writes, per frame, the vision\n"
                     "tokens (the encoder map, class probabilities and depth pooled to a grid), the tasks' true\n"
                     "answers, the planner's (or the reference expert's) answers on the same pass and the scene\n"
                     "summary's text, as one .npz that cepr vlm train-grounded reads.\n"
                     "Example:\n"
                     "  cepr vlm features --data datasets/cloud-robotics-synth --split train --encoder edge-int8 \\\n"
                     "      --out runs/features/edge-int8-train.npz"))
    f.add_argument("--data", default="datasets/cloud-robotics-synth", help="dataset root, resolution dir or index")
    f.add_argument("--split", default="train", help="train, val or test")
    f.add_argument("--encoder", default="edge-int8",
                   help="segmentation model: edge-int8 (RGB-D), edge-rgb-int8 (RGB), cloud (w32), or a path")
    f.add_argument("--frames", type=int, default=None, help="only the first N frames of the split")
    f.add_argument("--out", required=True, help="output .npz")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_features)
    t = s.add_parser(
        "train-grounded", formatter_class=HelpFormatter,
        help="train a grounded VLM (projector + Llama decoder) on cached vision tokens (torch, CPU)",
        description=("A projector and a Llama decoder, from scratch, on the vision tokens of cepr vlm features:\n"
                     "each example is a frame and a task, the target the true option's letter. Writes in --out:\n"
                     "  grounded.json  the token layout, the encoder, the confidence temperature (fitted on val)\n"
                     "  projector.npz  the projector (numpy), decoder/  the Llama decoder and tokenizer\n"
                     "  checkpoint.pt, log.jsonl  (--resume continues)\n"
                     "Example:\n"
                     "  cepr vlm train-grounded --train runs/features/edge-int8-train.npz \\\n"
                     "      --val runs/features/edge-int8-val.npz --out runs/grounded-edge --max-minutes 20"))
    t.add_argument("--train", required=True, nargs="+",
                   help="training features (.npz); several files are concatenated (e.g. extra rendered frames)")
    t.add_argument("--val", default=None, help="validation features (.npz); default: hold out training frames")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--with-summary", action="store_true", help="put the scene summary's text before the question")
    t.add_argument("--risk-summary", action="store_true",
                   help="also learn to write a one-sentence risk summary (objects in or beside the path, how far, "
                        "what to do), built from the labels in varied wordings")
    t.add_argument("--risk-weight", type=float, default=0.5, help="the risk summary's loss weight beside the tasks'")
    t.add_argument("--hidden", type=int, default=256, help="decoder width")
    t.add_argument("--layers", type=int, default=4, help="decoder layers")
    t.add_argument("--batch-frames", type=int, default=8, help="frames per step (each with all five tasks)")
    t.add_argument("--steps", type=int, default=100000, help="optimizer steps")
    t.add_argument("--max-minutes", type=float, default=20.0, help="wall-time budget (the learning rate's cosine "
                                                                  "runs over it)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    t.add_argument("--val-every", type=int, default=200, help="steps between validations")
    t.add_argument("--seed", type=int, default=0, help="seed of the tokenizer corpus, weights and batches")
    t.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    t.add_argument("--resume", action="store_true", help="continue from --out's checkpoint.pt")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train_grounded)
    b = s.add_parser(
        "build", formatter_class=HelpFormatter,
        help="rebuild every shipped grounded VLM from the segmentation encoders that ship (features, train, install)",
        description=("For each shipped grounded VLM (grounded-edge on edge-int8, grounded-edge-rgb on edge-rgb-int8,\n"
                     "grounded-cloud on the cloud's w32 encoder):\n"
                     "caches the encoder's vision tokens on the train split of --data (and of every --extra data\n"
                     "set) and on val, trains it for --max-minutes, and installs grounded.json, projector.npz,\n"
                     "tokenizer.json, decoder-q8_0.gguf, decoder-q4_0.gguf and build.json in the package's assets\n"
                     "(or --install). Caches are keyed by the encoder file's sha256: after retraining an encoder,\n"
                     "run it again. An interrupted training resumes. Needs torch (the training extra) and the llm\n"
                     "extra.\n"
                     "Example (the shipped models: 3,500 extra rendered train frames, 50 minutes each):\n"
                     "  cepr datasets synth --out datasets/cloud-robotics-synth-extra --frames 5000 --seed 1 \\\n"
                     "      --splits train\n"
                     "  cepr vlm build --extra datasets/cloud-robotics-synth-extra --max-minutes 50 --threads 1"))
    b.add_argument("--data", default="datasets/cloud-robotics-synth", help="the data set (its train and val splits)")
    b.add_argument("--extra", nargs="*", default=[], help="more data sets whose train split is added")
    b.add_argument("--models", nargs="+", default=None, help="only these (default: every shipped grounded VLM)")
    b.add_argument("--work", default="runs/grounded-build", help="feature caches and training runs")
    b.add_argument("--install", default=None, help="install folder (default: the package's assets/models/grounded)")
    b.add_argument("--max-minutes", type=float, default=40.0, help="training wall-time budget per model")
    b.add_argument("--hidden", type=int, default=256, help="decoder width")
    b.add_argument("--layers", type=int, default=4, help="decoder layers")
    b.add_argument("--heads", type=int, default=4, help="attention heads (heads x 64 = --hidden)")
    b.add_argument("--kv-heads", type=int, default=2, help="key/value heads (grouped-query attention)")
    b.add_argument("--frames", type=int, default=None, help="only the first N frames of each split (quick checks)")
    b.add_argument("--no-risk-summary", dest="risk_summary", action="store_false",
                   help="answers only: do not also train the one-sentence risk summary")
    b.add_argument("--seed", type=int, default=0, help="seed of the tokenizer corpus, weights and batches")
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)
    e = s.add_parser(
        "eval", formatter_class=HelpFormatter,
        help="accuracy, interval, calibration and the paired test against the planner, per grounded VLM "
             "(and its risk summaries' scores)",
        description=("Runs each model's encoder over --split, asks the five tasks, and prints a table, then one\n"
                     "JSON line per model: model, side, n, accuracy, accuracy_ci_low/high (Wilson 95%%),\n"
                     "planner_accuracy and majority_accuracy on the same samples (the planner: the edge's on the\n"
                     "same pass, or the reference expert's for the cloud encoder), ece, p_vs_planner (exact\n"
                     "McNemar), ms_per_answer and accuracy_<task>; for a model trained with risk summaries (in\n"
                     "llama.cpp) reason_hazard_precision/recall/f1, reason_distance_mae_m, reason_action_agreement\n"
                     "(its sentence's action against its own action answer) and ms_per_reason.\n"
                     "Examples:\n"
                     "  cepr vlm eval                    # every shipped grounded VLM, llama.cpp Q8_0\n"
                     "  cepr vlm eval grounded-edge --engine llamacpp-q8_0 llamacpp-q4_0\n"
                     "  cepr vlm eval grounded-cloud --engine transformers llamacpp-q8_0 vllm   # engines agree?\n"
                     "  cepr vlm eval --data datasets/cloud-robotics-synth --split test runs/grounded-edge"))
    e.add_argument("models", nargs="*", help="shipped grounded VLM names (grounded-edge, grounded-edge-rgb, "
                                             "grounded-cloud) or cepr vlm train-grounded folders; none: every "
                                             "shipped one")
    e.add_argument("--data", default="datasets/cloud-robotics-synth", help="dataset root, resolution dir or index")
    e.add_argument("--split", default="test", help="the split scored")
    e.add_argument("--frames", type=int, default=None, help="only the first N frames")
    e.add_argument("--engine", nargs="+", default=None,
                   choices=["transformers", "llamacpp-f32", "llamacpp-q8_0", "llamacpp-q4_0", "vllm"],
                   help="decoder engines (default: transformers for a training run's folder, llamacpp-q8_0 for a "
                        "shipped one). vllm: vLLM's OpenAI server on loopback, fed prompt embeddings (needs "
                        "scripts/install_vllm_cpu.sh); transformers and vllm read a shipped VLM's Q8_0 decoder "
                        "as a Hugging Face folder made once into ~/.cache/cepr. With transformers asked for (or a "
                        "run folder), every other engine's row reports its agreement with transformers and the "
                        "largest option log-probability gap; a llama.cpp row of a model trained with risk "
                        "summaries also scores them (reason_* columns)")
    e.add_argument("--threads", type=int, default=1, help="threads of each engine (ms_per_answer is measured "
                                                         "with them)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)


def _config(model, command: str, a, fields, **extra):
    """``model`` (a pydantic config) from the parsed options ``fields`` of ``a`` and ``extra``; a refused value
    is named by its option."""
    try:
        return model(**{k: getattr(a, k) for k in fields}, **extra, progress=not a.no_progress)
    except ValidationError as e:
        raise CeprError(f"{command}: " + "; ".join(
            (f"--{str(err['loc'][0]).replace('_', '-')}: " if err["loc"] else "") + err["msg"]
            for err in e.errors())) from None


def _needs(what: str, modules) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CeprError(f"{what} needs {', '.join(missing)}: pip install -e '.[llm]'")


def cmd_features(a) -> int:
    from cepr.training.grounded_train import extract_features

    fs = extract_features(a.data, a.split, a.encoder, a.frames, progress=not a.no_progress)
    path = fs.save(a.out)
    print(f"{len(fs)} frames, tokens {fs.tokens.shape[1]} x {fs.tokens.shape[2]}, "
          f"{fs.meta['seconds']:.1f} s: {path}")
    return 0


def cmd_train_grounded(a) -> int:
    from cepr.training.grounded_train import TrainGroundedConfig
    from cepr.training.grounded_train import train as train_grounded

    _needs("cepr vlm train-grounded", ("torch", "transformers", "tokenizers", "safetensors"))
    fields = ("train", "val", "out", "with_summary", "risk_summary", "risk_weight", "hidden", "layers",
              "batch_frames", "steps", "max_minutes", "lr", "val_every", "seed", "threads")
    cfg = _config(TrainGroundedConfig, "cepr vlm train-grounded", a, fields)
    train_grounded(cfg, resume=a.resume)
    return 0


def cmd_build(a) -> int:
    from cepr.training.grounded_build import BuildConfig, build

    _needs("cepr vlm build", ("torch", "transformers", "tokenizers", "safetensors", "llama_cpp"))
    fields = ("data", "extra", "models", "work", "install", "max_minutes", "hidden", "layers", "heads", "kv_heads",
              "frames", "risk_summary", "seed", "threads")
    for r in build(_config(BuildConfig, "cepr vlm build", a, fields)):
        print(f"{r['name']}: val accuracy {r['val_acc']} ({r['train_frames']} train frames, {r['steps']} steps, "
              f"{r['minutes']} min) on {r['encoder']} ({r['encoder_sha256'][:12]})")
    return 0


def cmd_eval(a) -> int:
    import json

    from cepr.training.grounded_eval import eval_models

    _needs("cepr vlm eval", ("torch", "transformers", "tokenizers", "safetensors"))
    rows = eval_models(a.models, a.data, a.split, a.frames, progress=not a.no_progress,
                       engines=tuple(a.engine) if a.engine else None, threads=a.threads)
    cols = ["model", "engine", "side", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "planner_accuracy",
            "majority_accuracy", "ece", "p_vs_planner", "ms_per_answer"]
    if any("agreement_with_transformers" in r for r in rows):
        cols += ["agreement_with_transformers", "max_logprob_gap"]
    if any("reason_hazard_f1" in r for r in rows):
        cols += ["reason_hazard_f1", "reason_distance_mae_m", "reason_action_agreement"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    for r in rows:
        print(json.dumps(r))
    return 0


def cmd_train(a) -> int:
    _needs("cepr vlm train", ("torch", "transformers", "tokenizers", "safetensors", "gguf"))
    logging.getLogger("gguf").setLevel(logging.WARNING)
    fields = ("out", "data", "size", "device", "frames", "steps", "max_minutes", "lr", "warmup", "seed", "threads",
              "aux_weight", "answer_weight", "decay_fraction", "val_every", "val_frames", "checkpoint_every")
    cfg = _config(VlmTrainConfig, "cepr vlm train", a, fields, quant=tuple(a.quant))
    r = train(cfg, resume=a.resume)
    print(f"{r['steps']} steps ({r['stopped']}), {r['minutes_this_run']:.1f} min this run; validation "
          f"{r['validation']}")
    return 0


def cmd_curves(a) -> int:
    rows = curves(a.run, a.every)
    cols = ["steps", "loss", "aux_loss", "lr", "step_minutes", "val_loss", "val_acc"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in cols) + " |")
    return 0
