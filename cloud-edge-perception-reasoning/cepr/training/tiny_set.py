"""The tiny language-model set for tests and examples, built offline and deterministically (``cepr models tiny``):
a tokenizer trained on the suite's own texts, a target and a draft model, their GGUF files and the tiny
vision-language model. The models are random (see :mod:`cepr.llm.tiny`); the set is here, above the engines,
because its tokenizer is trained on the corpus of scene summaries and prompts (:mod:`cepr.training.corpus`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from cepr.llm.gguf_export import export_gguf
from cepr.llm.tiny import (
    CHAT_TEMPLATE,
    DRAFT,
    SPECIAL_TOKENS,
    TARGET,
    _hf_tokenizer,
    _save_hf,
    _sha256,
    build_hf_model,
    train_tokenizer,
)
from cepr.llm.vlm import build_tiny_vlm
from cepr.training.corpus import build_corpus


def build_tiny(out: str | Path, seed: int = 0, quant: tuple[str, ...] = ("f32", "q8_0")) -> dict:
    """Build the tiny set in ``out``; returns (and writes as ``manifest.json``) what was built, with SHA-256s.

    Layout: ``hf/`` (target, Hugging Face), ``tiny-<quant>.gguf``, ``draft/hf/``, ``draft-<quant>.gguf``,
    ``tokenizer.json`` (the trained tokenizer), ``corpus.txt`` (what it was trained on)."""
    import torch  # optional heavy dependency (the llm extra)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # nothing should draw from it (init_weights uses NumPy), but be sure
    texts = build_corpus(seed)
    (out / "corpus.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    tok = train_tokenizer(texts)
    tok.save(str(out / "tokenizer.json"))
    hf_tok = _hf_tokenizer(tok)
    vocab = tok.get_vocab_size()
    files = {"corpus": "corpus.txt", "tokenizer": "tokenizer.json"}
    models = {}
    for role, spec, sub, mseed in (("target", TARGET, "hf", seed), ("draft", DRAFT, "draft/hf", seed + 1_000_003)):
        model = build_hf_model(spec, vocab, mseed)
        _save_hf(model, hf_tok, out / sub)
        files[f"{role}_hf"] = sub
        stem = "tiny" if role == "target" else "draft"
        for q in quant:
            name = f"{stem}-{q}.gguf"
            export_gguf(out / sub, out / name, q, name=f"cepr-tiny-{role}")
            files[f"{role}_{q}"] = name
        models[role] = asdict(spec)
    # the tiny vision-language model (vlm/): its own seed, so the files above keep their bytes
    vlm = build_tiny_vlm(out / "vlm", tok, TARGET, seed + 2_000_003, quant)
    files.update(vlm["files"])
    models["vlm"] = vlm["model"]
    manifest = {"seed": seed, "vocab_size": vocab, "special_tokens": list(SPECIAL_TOKENS),
                "chat_template": CHAT_TEMPLATE, "models": models, "files": files,
                "sha256": {p: _sha256(out / p) for p in sorted(set(files.values())) if (out / p).is_file()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
