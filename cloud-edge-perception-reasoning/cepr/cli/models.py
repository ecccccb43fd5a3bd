"""``cepr models``: language models built or converted offline (tiny test models, GGUF export)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path

from cepr.cli.formatting import HelpFormatter
from cepr.errors import CeprError
from cepr.llm.gemma_hf import build_gemma_hf, check_against_llamacpp
from cepr.llm.gguf_export import export_gguf
from cepr.llm.vlm import export_mmproj
from cepr.training.tiny_set import build_tiny


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="build tiny test language models; convert Hugging Face Llama to GGUF",
                       description="Language models made offline, for tests and engines: tiny random Llama models "
                                   "(Hugging Face and GGUF) and a Llama -> GGUF converter. Needs the `llm` extra.")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    fmt = HelpFormatter
    t = msub.add_parser(
        "tiny", formatter_class=fmt,
        help="build a tiny random Llama, its draft and their byte-level BPE tokenizer (HF + GGUF)",
        description=(
            "Build, offline and deterministically (same seed, same bytes), tiny language models for tests.\n"
            "Written in --out:\n"
            "  tokenizer.json, corpus.txt   byte-level BPE (vocab 1024; <s> </s> <pad> <unk>) trained on\n"
            "                               the suite's own texts: task prompts, JSON answers, scene summaries\n"
            "  hf/                          target LlamaForCausalLM: hidden 64, 2 layers, 2 query heads and\n"
            "                               1 KV head of head_dim 32, 2048 positions, random weights\n"
            "                               (safetensors, tokenizer, chat template)\n"
            "  tiny-f32.gguf, tiny-q8_0.gguf     the target as GGUF, for llama.cpp\n"
            "  draft/hf/, draft-{f32,q8_0}.gguf  a 1-layer draft sharing the tokenizer (speculative decoding)\n"
            "  vlm/hf/, vlm/tiny-vlm-{f32,q8_0}.gguf, vlm/mmproj-f32.gguf   a tiny LLaVA (64 px SigLIP-style\n"
            "                               ViT, MLP projector, the target's shape as decoder): HF folder,\n"
            "                               decoder GGUF and llama.cpp vision projector (image input)\n"
            "  manifest.json                shapes, files and their SHA-256\n"
            "The weights are random, so the models write nonsense, but transformers and llama.cpp compute the\n"
            "same logits from them (tests/llm, docs/llm.md). Takes a few seconds; needs the `llm` extra."),
    )
    t.add_argument("--out", required=True, default=argparse.SUPPRESS, help="output directory (created; files in it are overwritten)")
    t.add_argument("--seed", type=int, default=0, help="seed of the corpus and the weights")
    t.add_argument("--quant", nargs="+", default=["f32", "q8_0"], choices=["f32", "q8_0", "q4_0"],
                   help="GGUF variants to write")
    t.set_defaults(func=cmd_tiny)

    g = msub.add_parser("gguf", formatter_class=fmt, help="convert a Hugging Face Llama folder to GGUF",
                        description="Write a Hugging Face LlamaForCausalLM folder (safetensors, byte-level BPE "
                                    "tokenizer.json) as GGUF for llama.cpp: F32, or Q8_0 weights with F32 norms.")
    g.add_argument("hf_dir", help="Hugging Face model folder (config.json, *.safetensors, tokenizer.json)")
    g.add_argument("--out", required=True, help="GGUF file to write")
    g.add_argument("--quant", default="f32", choices=["f32", "q8_0", "q4_0"])
    g.add_argument("--name", default=None, help="general.name in the GGUF (default: the folder's name)")
    g.set_defaults(func=cmd_gguf)

    mp = msub.add_parser("mmproj", formatter_class=fmt,
                         help="write a Hugging Face LLaVA folder's vision tower and projector as a llama.cpp mmproj",
                         description="Write the vision tower (SigLIP or CLIP) and 2-layer MLP projector of a Hugging "
                                     "Face LlavaForConditionalGeneration folder as a llama.cpp clip GGUF (F32), the "
                                     "--mmproj of cepr serve llamacpp. Its decoder: cepr models gguf on the same "
                                     "folder. Example: cepr models mmproj /tmp/tiny/vlm/hf --out mmproj.gguf")
    mp.add_argument("hf_dir", help="Hugging Face LLaVA folder (config.json, *.safetensors, processor_config.json)")
    mp.add_argument("--out", required=True, help="GGUF file to write")
    mp.add_argument("--name", default=None, help="general.name in the GGUF (default: the folder's name)")
    mp.set_defaults(func=cmd_mmproj)

    gh = msub.add_parser(
        "gemma-hf", formatter_class=fmt,
        help="the shipped Gemma 3 270M GGUF as a Hugging Face folder (dequantized, float32)",
        description=(
            "Write the shipped Gemma 3 270M (Q4_K_M GGUF) as a Hugging Face folder, offline: transformers\n"
            "dequantizes the GGUF (needs accelerate); the folder gets float32 safetensors (about 1 GB), the\n"
            "tokenizer and a Gemma chat template (<start_of_turn>user ... <end_of_turn>), which the GGUF lacks.\n"
            "transformers, vLLM and cepr llm finetune load it. --check compares its next-token logits and\n"
            "greedy tokens with llama.cpp's on the GGUF (an edge reasoner prompt)."),
    )
    gh.add_argument("--out", required=True, help="output folder")
    gh.add_argument("--model", default="gemma3-270m", help="shipped name or a Gemma 3 GGUF path")
    gh.add_argument("--check", action="store_true", help="then compare with llama.cpp and print the differences")
    gh.set_defaults(func=cmd_gemma_hf)


def _need(*modules: str) -> None:

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CeprError(f"this command needs {', '.join(missing)}: pip install -e '.[llm]'")


def _quiet_gguf(a) -> None:
    if not getattr(a, "verbose", False):  # GGUFWriter logs every file it writes at INFO
        logging.getLogger("gguf").setLevel(logging.WARNING)


def cmd_tiny(a) -> int:
    _need("torch", "transformers", "tokenizers", "gguf", "safetensors")


    _quiet_gguf(a)
    m = build_tiny(a.out, seed=a.seed, quant=tuple(dict.fromkeys(a.quant)))
    out = Path(a.out)
    print(f"tiny models (seed {m['seed']}, vocab {m['vocab_size']}) in {out}:")
    for key, rel in m["files"].items():
        p = out / rel
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        print(f"  {key:12s} {rel:24s} {size / 1024:8.1f} KiB")
    return 0


def cmd_gemma_hf(a) -> int:

    out = build_gemma_hf(a.out, a.model, log=print)
    if a.check:
        r = check_against_llamacpp(out, a.model)
        print(json.dumps(r, indent=1, ensure_ascii=False))
    return 0


def cmd_mmproj(a) -> int:
    _need("gguf", "safetensors")

    _quiet_gguf(a)
    path = export_mmproj(a.hf_dir, a.out, name=a.name)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB, f32)")
    return 0


def cmd_gguf(a) -> int:
    _need("gguf", "safetensors")

    _quiet_gguf(a)
    path = export_gguf(a.hf_dir, a.out, a.quant, name=a.name)
    print(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB, {a.quant})")
    return 0
