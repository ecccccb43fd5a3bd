"""The tiny language models (``cepr models tiny``), built once per session for the tests in tests/llm."""

from __future__ import annotations

import importlib.util

import pytest

# what building and running the tiny models needs (the `llm` extra); without one of them tests/llm is skipped
LLM_MODULES = ("torch", "transformers", "tokenizers", "gguf", "safetensors", "llama_cpp")


def missing_llm_modules() -> list[str]:
    return [m for m in LLM_MODULES if importlib.util.find_spec(m) is None]


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """The built set: its directory and manifest (tiny-f32.gguf, tiny-q8_0.gguf, hf/, draft/hf/, draft-*.gguf)."""
    missing = missing_llm_modules()
    if missing:
        pytest.skip(f"the llm extra is not installed (missing {', '.join(missing)}): pip install -e '.[llm]'")
    from cepr.training.tiny_set import build_tiny

    out = tmp_path_factory.mktemp("llm") / "tiny"
    manifest = build_tiny(out, seed=0)
    return {"dir": out, "manifest": manifest}
