"""The KV cache of a Hugging Face model's forward pass under both spellings transformers 5.x has used: the
keyword and output field ``past_key_values`` (up to 5.19, the version vLLM's CPU build pins) and ``cache`` (later
releases). Every caller that reuses a cache goes through these two functions."""

from __future__ import annotations

import inspect


def cache_keyword(model) -> str:
    """The keyword that hands ``model``'s forward pass its KV cache."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache a forward pass with ``use_cache=True`` returned."""
    return out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
